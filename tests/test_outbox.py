"""The outbox: pending messages and seen ids, encrypted at rest."""

from __future__ import annotations

import asyncio
import os
import threading
import time
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


def test_a_recipient_refused_for_trust_counts_as_undelivered_and_is_never_saved(
    tmp_path: Path,
) -> None:
    path, key = tmp_path / "outbox.bin", os.urandom(32)
    box = Outbox(path, key)
    C = b"c" * 32
    m1, m2, m3 = ids(3)
    box.add(m1, "one", {A, B})
    assert box.fail(B, "refused: another key") == [m1]
    # m1 still waits for A; for B it is undelivered, with why
    (msg,) = box.undelivered()
    assert msg.recipients == {A} and msg.failed == {B: "refused: another key"}
    assert box.for_peer(B) == [] and not box.all_delivered
    # a message sent while C is present but refused: C is a recipient that fails
    box.add(m2, "two", {A, C}, failed={C: "it refused us"})
    assert box.get(m2) is not None and box.get(m2).total == 2  # type: ignore[union-attr]
    # A acknowledges everything: what B and C never got stays undelivered
    assert box.acked(A, m1) is not None and box.acked(A, m2) is not None
    assert [m.msg_id for m in box.undelivered()] == [m1, m2] and not box.all_delivered
    assert len(box) == 0  # nothing pending to send to anyone
    # to C alone, while C is refused: undelivered at once, nothing to send
    box.add(m3, "three", {C}, failed={C: "it refused us"})
    assert box.for_peer(C) == [] and box.get(m3) is not None
    box.save()
    again = Outbox(path, key)  # a refused key is nobody to resend to after a restart
    assert again.pending() == [] and again.all_delivered


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


# ------------------------------------------------------------ saves off the loop


class _GatedWrites:
    """Replaces the outbox's file write: counts writes, and can hold one in the
    worker until the test lets it go (from the loop, or after ``timeout``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, loop: asyncio.AbstractEventLoop) -> None:
        from p2pchat.store import saving as ob

        self.real = ob.write_private
        self.loop = loop
        self.writes = 0
        self.gate: threading.Event | None = None
        self.timeout = 5.0
        self.started = asyncio.Event()
        self.released_in_time: list[bool] = []
        self.on_loop: list[bool] = []
        monkeypatch.setattr(ob, "write_private", self.write)

    def write(self, path: Path, data: bytes) -> None:
        self.writes += 1
        self.on_loop.append(threading.current_thread() is threading.main_thread())
        gate = self.gate
        if gate is not None:
            self.loop.call_soon_threadsafe(self.started.set)
            self.released_in_time.append(gate.wait(self.timeout))
        self.real(path, data)


def _durable(tmp_path: Path) -> tuple[Path, bytes, Outbox]:
    path, key = tmp_path / "outbox.bin", os.urandom(32)
    return path, key, Outbox(path, key)


async def test_saves_run_in_a_worker_and_the_loop_stays_responsive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, box = _durable(tmp_path)
    gated = _GatedWrites(monkeypatch, asyncio.get_running_loop())
    gated.gate = threading.Event()
    saved = asyncio.Event()
    box.on_saved = saved.set
    box.first_sighting(A, b"1" * 16)
    box.request_save()
    await asyncio.wait_for(gated.started.wait(), 5)
    # the write is under way; a coroutine scheduled now runs before it completes
    assert not saved.is_set()
    ran = asyncio.Event()

    async def meanwhile() -> None:
        ran.set()
        gated.gate.set()  # only the loop lets the write finish

    task = asyncio.create_task(meanwhile())
    await asyncio.wait_for(saved.wait(), 5)
    await task
    assert ran.is_set() and gated.released_in_time == [True] and gated.on_loop == [False]


async def test_a_burst_of_requests_costs_at_most_two_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, key, box = _durable(tmp_path)
    gated = _GatedWrites(monkeypatch, asyncio.get_running_loop())
    gated.gate = threading.Event()
    saved = asyncio.Event()
    box.on_saved = saved.set
    first, second = ids(100)[:50], ids(100)[50:]
    for mid in first:
        box.first_sighting(A, mid)
        box.request_save()
    await asyncio.wait_for(gated.started.wait(), 5)
    for mid in second:  # while the first write runs
        box.first_sighting(A, mid)
        box.request_save()
        await asyncio.sleep(0.001)  # the save timers fire meanwhile
    gated.gate.set()
    await asyncio.wait_for(saved.wait(), 5)
    await asyncio.sleep(0.1)  # nothing else follows
    assert gated.writes == 2
    again = Outbox(path, key)
    assert not any(again.first_sighting(A, mid) for mid in first + second)


async def test_on_saved_only_once_every_seen_id_is_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, key, box = _durable(tmp_path)
    gated = _GatedWrites(monkeypatch, asyncio.get_running_loop())
    gated.gate = threading.Event()
    seen: list[bytes] = []
    checks: list[bool] = []
    done = asyncio.Event()

    def on_saved() -> None:
        again = Outbox(path, key)  # what a crash right now would leave
        checks.append(not any(again.first_sighting(A, mid) for mid in seen))
        done.set()

    box.on_saved = on_saved
    for mid in ids(3):
        seen.append(mid)
        box.first_sighting(A, mid)
        box.request_save()
    await asyncio.wait_for(gated.started.wait(), 5)
    # an id seen during the write: that write's completion must not release acks
    seen.append(b"late" * 4)
    box.request_save()
    box.first_sighting(A, b"late" * 4)
    gated.gate.set()
    await asyncio.wait_for(done.wait(), 5)
    assert checks == [True] and gated.writes == 2


async def test_close_time_save_is_complete_and_waits_for_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, key, box = _durable(tmp_path)
    gated = _GatedWrites(monkeypatch, asyncio.get_running_loop())
    gated.gate = threading.Event()
    box.first_sighting(A, b"1" * 16)
    box.request_save()
    await asyncio.wait_for(gated.started.wait(), 5)
    box.add(b"m" * 16, "young", {B})  # younger than PERSIST_AFTER
    box.first_sighting(A, b"2" * 16)
    threading.Timer(0.1, gated.gate.set).start()  # the worker's write ends on its own
    gated.gate = None  # the blocking save's own write is not held
    box.save()  # blocks until both writes are done, in order
    again = Outbox(path, key)
    assert [m.text for m in again.pending()] == ["young"]
    assert not again.first_sighting(A, b"1" * 16) and not again.first_sighting(A, b"2" * 16)
    await asyncio.sleep(0.05)  # the worker's completion runs: still the newer state on disk
    assert [m.text for m in Outbox(path, key).pending()] == ["young"]


async def test_close_time_save_with_nothing_new_still_releases_the_acks_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the worker's write took the dirty mark: the close-time save must not
    # skip, or the acks would go out after the goodbye (or never)
    path, key, box = _durable(tmp_path)
    gated = _GatedWrites(monkeypatch, asyncio.get_running_loop())
    gated.gate = threading.Event()
    released: list[bool] = []
    box.on_saved = lambda: released.append(not Outbox(path, key).first_sighting(A, b"1" * 16))
    box.first_sighting(A, b"1" * 16)
    box.request_save()
    await asyncio.wait_for(gated.started.wait(), 5)
    threading.Timer(0.1, gated.gate.set).start()
    gated.gate = None
    box.save()
    assert released == [True]  # during save(), with the id on disk


def test_an_older_snapshot_never_overwrites_a_newer_one(tmp_path: Path) -> None:
    path, key, box = _durable(tmp_path)
    box.first_sighting(A, b"1" * 16)  # no loop: saved at once
    assert box._saver is not None
    seq, _, state, _ = box._saver._snapshot(complete=True)  # taken, but its write is late
    box.first_sighting(A, b"2" * 16)
    assert box._saver._write(seq, state) is None  # skipped
    assert not Outbox(path, key).first_sighting(A, b"2" * 16)


async def test_a_reader_never_sees_a_half_written_file(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from p2pchat.store.saving import AAD, MAGIC

    path, key, box = _durable(tmp_path)
    box.first_sighting(A, b"0" * 16)
    box.save()
    stop = threading.Event()
    results: list[bool] = []

    def reader() -> None:
        aead = AESGCM(key)
        while not stop.is_set():
            blob = path.read_bytes()
            try:
                aead.decrypt(blob[len(MAGIC) : len(MAGIC) + 12], blob[len(MAGIC) + 12 :], AAD)
                results.append(True)
            except Exception:
                results.append(False)

    thread = threading.Thread(target=reader)
    thread.start()
    saved = asyncio.Event()
    box.on_saved = saved.set
    try:
        for i, mid in enumerate(ids(40)):
            for j in range(200):  # a bigger file each time
                box.first_sighting(i.to_bytes(32, "big"), j.to_bytes(4, "big") + mid[4:])
            saved.clear()
            box.request_save()
            await asyncio.wait_for(saved.wait(), 5)
    finally:
        stop.set()
        thread.join()
    assert results and all(results)
    assert os.listdir(tmp_path) == ["outbox.bin"]  # no temporary left over


async def test_acks_are_not_held_back_forever_by_a_steady_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from p2pchat.store import saving as ob

    _, _, box = _durable(tmp_path)
    real = ob.write_private

    def slow(path: Path, data: bytes) -> None:
        time.sleep(0.02)
        real(path, data)

    monkeypatch.setattr(ob, "write_private", slow)
    saved: list[float] = []
    box.on_saved = lambda: saved.append(time.monotonic())
    start = time.monotonic()
    for mid in ids(100):  # a new id every 5 ms: one arrives during every write
        box.first_sighting(A, mid)
        box.request_save()
        await asyncio.sleep(0.005)
        if saved:
            break
    assert saved and saved[0] - start < ob.MAX_ACK_WAIT + 0.2


# ------------------------------------------------------------ many identities


def test_strangers_cannot_evict_the_seen_ids_of_known_peers(tmp_path: Path) -> None:
    from p2pchat.store.outbox import SEEN_PEERS, SEEN_PER_STRANGER, SEEN_STRANGERS

    path, key = tmp_path / "outbox.bin", os.urandom(32)
    box = Outbox()
    box.is_known = lambda fp: fp == A
    mine = ids(SEEN_PER_PEER)
    for mid in mine:
        assert box.first_sighting(A, mid)
    for n in range(3 * SEEN_PEERS):  # throw-away identities, each sending a lot
        stranger = b"s" + n.to_bytes(31, "big")
        for mid in ids(SEEN_PER_STRANGER + 50):
            box.first_sighting(stranger, mid)
    assert not any(box.first_sighting(A, mid) for mid in mine)  # all still known
    total = sum(len(v) for v in box._seen.values()) + sum(len(v) for v in box._seen_new.values())
    assert len(box._seen_new) == SEEN_STRANGERS
    assert total == SEEN_PER_PEER + SEEN_STRANGERS * SEEN_PER_STRANGER
    # a stranger that becomes known keeps its ids, and then gets the full allowance
    last = b"s" + (3 * SEEN_PEERS - 1).to_bytes(31, "big")
    box.is_known = lambda fp: fp in (A, last)
    assert not box.first_sighting(last, ids(SEEN_PER_STRANGER + 50)[-1])
    for mid in ids(SEEN_PER_PEER + 1000)[1000:]:
        box.first_sighting(last, mid)
    assert len(box._seen[last]) == SEEN_PER_PEER
    # both tables survive a restart, each within its bound
    durable = Outbox(path, key)
    durable._seen, durable._seen_new = box._seen, box._seen_new
    durable._changed()  # no loop: saved at once
    again = Outbox(path, key)
    assert again._seen.keys() == box._seen.keys()
    assert again._seen_new.keys() == box._seen_new.keys()
