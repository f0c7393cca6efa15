"""The outbox: pending messages and seen ids, encrypted at rest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from p2pchat.store.outbox import SEEN_PER_PEER, Outbox

A, B = b"a" * 32, b"b" * 32


def ids(n: int) -> list[bytes]:
    return [i.to_bytes(16, "big") for i in range(n)]


def test_acks_per_recipient_and_order(tmp_path: Path) -> None:
    box = Outbox()
    m1, m2, m3 = ids(3)
    box.add(m1, "one", {A, B})
    box.add(m2, "two", {A})
    box.add(m3, "three", {B}, direct=True)
    assert [m.text for m in box.for_peer(A)] == ["one", "two"]
    assert [m.text for m in box.for_peer(B)] == ["one", "three"]
    done = box.acked(A, m1)
    assert done is not None and done.recipients == {B} and done.total == 2
    assert box.acked(A, m1) is None  # a duplicate ack changes nothing
    assert box.acked(B, m2) is None  # B was never a recipient of m2
    box.drop_recipient(B)  # B left for good
    assert [m.text for m in box.pending()] == ["two"]
    assert box.add(b"x" * 16, "to nobody", set()) is not None and len(box) == 1


def test_persisted_encrypted_and_restored(tmp_path: Path) -> None:
    path, key = tmp_path / "outbox.bin", os.urandom(32)
    box = Outbox(path, key)
    m1, m2 = ids(2)
    box.add(m1, "secret sentinel text", {A, B})
    box.add(m2, "direct", {B}, direct=True)
    box.acked(A, m1)
    assert box.first_sighting(B, m2) and not box.first_sighting(B, m2)
    box.last_known = {A, B}
    box.save()
    raw = path.read_bytes()
    assert b"secret sentinel" not in raw and b"direct" not in raw
    again = Outbox(path, key)
    assert [(m.msg_id, m.text, m.recipients, m.total, m.direct) for m in again.pending()] == [
        (m1, "secret sentinel text", {B}, 2, False),
        (m2, "direct", {B}, 1, True),
    ]
    assert not again.first_sighting(B, m2)  # seen ids survive too
    assert again.last_known == {A, B}


@pytest.mark.parametrize("damage", ["wrong key", "flipped", "truncated", "garbage"])
def test_unreadable_file_is_moved_aside(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    path, key = tmp_path / "outbox.bin", os.urandom(32)
    box = Outbox(path, key)
    box.add(ids(1)[0], "x", {A})
    box.save()
    raw = bytearray(path.read_bytes())
    if damage == "flipped":
        raw[-1] ^= 1
    elif damage == "truncated":
        raw = raw[:20]
    elif damage == "garbage":
        raw = bytearray(b"not an outbox at all")
    path.write_bytes(bytes(raw))
    again = Outbox(path, os.urandom(32) if damage == "wrong key" else key)
    assert again.pending() == []
    assert (tmp_path / "outbox.bin.unreadable").exists()
    assert "unreadable" in caplog.text


def test_seen_ids_are_bounded_per_peer() -> None:
    box = Outbox()
    for mid in ids(SEEN_PER_PEER + 10):
        assert box.first_sighting(A, mid)
    # the oldest ten were forgotten, the rest are still known
    assert box.first_sighting(A, ids(1)[0])
    assert not box.first_sighting(A, ids(SEEN_PER_PEER + 10)[-1])


async def test_young_messages_reach_the_disk_only_when_they_wait(tmp_path: Path) -> None:
    import asyncio

    path, key = tmp_path / "outbox.bin", os.urandom(32)
    box = Outbox(path, key)
    saved = asyncio.Event()
    box.on_saved = saved.set
    (m1,) = ids(1)
    box.add(m1, "young", {A})
    box.first_sighting(B, b"s" * 16)  # something that is saved at once (a seen id)
    await asyncio.wait_for(saved.wait(), 5)
    # the scheduled save kept the seen id but not the message acknowledged-any-moment-now
    assert Outbox(path, key).pending() == []
    assert not Outbox(path, key).first_sighting(B, b"s" * 16)
    # once it has waited PERSIST_AFTER, a later scheduled save writes it
    saved.clear()
    await asyncio.wait_for(saved.wait(), 5)
    assert [m.text for m in Outbox(path, key).pending()] == ["young"]
    # an explicit save (close, connection lost) writes everything at once
    box.add(b"n" * 16, "newer", {A})
    box.save()
    assert [m.text for m in Outbox(path, key).pending()] == ["young", "newer"]


def test_seen_ids_kept_for_the_most_recent_peers_only() -> None:
    from p2pchat.store.outbox import SEEN_PEERS

    box = Outbox()
    peers = [i.to_bytes(32, "big") for i in range(SEEN_PEERS + 5)]
    (mid,) = ids(1)
    for fp in peers:
        assert box.first_sighting(fp, mid)
    # the five least recently active peers were forgotten, the others remembered
    assert box.first_sighting(peers[0], mid)
    assert not box.first_sighting(peers[-1], mid)
