"""File transfers between in-process participants through a relay on 127.0.0.1.

Three participants; files go from one to another while all of them chat. No
sleeps: every wait is for an event, bounded.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from p2pchat.net.relay import Relay, RelayLimits
from p2pchat.proto.transfer import Phase
from p2pchat.room import receiving
from p2pchat.room.bus import EventBus
from p2pchat.room.events import (
    Event,
    FileCompleted,
    FileFailed,
    FileOffered,
    FileProgress,
    MessageReceived,
    PauseReason,
    PeerInfo,
    SessionReady,
)
from p2pchat.room.participant import Participant
from p2pchat.room.receiving import NO_ROOM
from p2pchat.room.transfers import DiskLimits, FileTransfers, Policy
from p2pchat.store.identity import Identity, TrustStore

WAIT = 20.0
#: the relay's rate limit must not be what the test measures
FAST = RelayLimits(rate_bytes=1 << 30, rate_burst=1 << 28)


class Member:
    def __init__(
        self, participant: Participant, files: FileTransfers, events: list[Event], bus: EventBus
    ) -> None:
        self.p = participant
        self.files = files
        self.events = events
        self.bus = bus

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    async def until(self, predicate: Callable[[], bool], wait: float = WAIT) -> None:
        assert await self.bus.wait_for(predicate, wait), f"timed out; events: {self.events[-20:]}"

    def peer(self, other: Member) -> PeerInfo:
        return next(p for p in self.p.peers if p.fingerprint == other.p.identity.fingerprint)


async def reconnect(m: Member, port: int) -> Participant:
    """A new participant for ``m`` (same identity, same transfer service): what
    a joiner does after its connection drops."""
    again = Participant(m.p.identity, m.p.name, m.p.trust, m.bus, files=m.files)
    await again.async_connect("127.0.0.1", port, WAIT)
    m.p = again
    return again


@contextlib.asynccontextmanager
async def room(
    tmp_path: Path, keys: tuple[rsa.RSAPrivateKey, ...]
) -> AsyncIterator[Callable[..., object]]:
    relay = Relay(FAST, owner_key=Identity.from_key(keys[0]).public_der)
    (_, port), *_ = await relay.async_start(["127.0.0.1"], 0)
    members: list[Member] = []
    extra: list[Participant] = []

    async def join(
        name: str,
        key_index: int,
        policy: Policy = "refuse",
        directory: Path | None = None,
        *,
        disk: DiskLimits | None = None,
        limit_rate: float | None = None,
    ) -> Member:
        events: list[Event] = []
        home = tmp_path / f"home-{name}"
        home.mkdir(exist_ok=True)
        bus: EventBus = EventBus()
        bus.add_sink(events.append)
        files = FileTransfers(
            bus, policy=policy, directory=directory, disk=disk, limit_rate=limit_rate
        )
        participant = Participant(
            Identity.from_key(keys[key_index]),
            name,
            TrustStore.open(home),
            bus,
            files=files,
        )
        await participant.async_connect("127.0.0.1", port, WAIT)
        m = Member(participant, files, events, bus)
        members.append(m)
        return m

    async def rejoin(m: Member) -> None:
        extra.append(m.p)
        await reconnect(m, port)

    join.rejoin = rejoin  # type: ignore[attr-defined]
    try:
        yield join
    finally:
        for m in members:
            await m.p.async_close()
            await m.files.async_close()
        for p in extra:
            await p.async_close()
        await relay.async_close()


def write_random(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def has_received(m: Member, size: int) -> bool:
    """``m`` has written ``size`` bytes of an incoming file (or finished one)."""
    return bool(m.of(FileCompleted)) or any(
        t.incoming and t.done >= size for t in m.files.transfers()
    )


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def three(join: Callable[..., object], inbox: Path) -> tuple[Member, Member, Member]:
    bob = await join("bob", 0, "auto", inbox)  # type: ignore[misc]
    alice = await join("alice", 1)  # type: ignore[misc]
    carol = await join("carol", 2)  # type: ignore[misc]
    for m in (bob, alice, carol):
        await m.until(lambda m=m: len(m.of(SessionReady)) == 2)
    return bob, alice, carol


async def test_a_file_while_everyone_chats(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    # bob already has a file of that name: it must survive untouched
    (inbox / "photo.jpg").write_bytes(b"bob's own photo")
    src = tmp_path / "photo.jpg"
    digest = write_random(src, 16 * 1024 * 1024 + 12345)
    async with room(tmp_path, rsa_keys) as join:
        bob, alice, carol = await three(join, inbox)
        tid = await alice.files.async_send(src, alice.peer(bob))

        await bob.until(lambda: has_received(bob, src.stat().st_size // 4))
        # bob has a quarter of it: now everybody talks
        alice.p.send_text("from alice, mid-transfer")
        carol.p.send_text("from carol, mid-transfer")
        bob.p.send_text("from bob, mid-transfer")
        await bob.until(lambda: bool(bob.of(FileCompleted)))
        await alice.until(lambda: bool(alice.of(FileCompleted)))
        for m in (alice, bob, carol):
            await m.until(lambda m=m: not m.p.undelivered())

        # the chat went first: bob read both lines before the file was complete
        kinds = [
            e.text if isinstance(e, MessageReceived) else "done"
            for e in bob.events
            if isinstance(e, MessageReceived | FileCompleted)
        ]
        assert kinds.index("done") > kinds.index("from alice, mid-transfer")
        assert kinds.index("done") > kinds.index("from carol, mid-transfer")
        done_at = next(i for i, e in enumerate(alice.events) if isinstance(e, FileCompleted))
        bob_line = next(
            i
            for i, e in enumerate(alice.events)
            if isinstance(e, MessageReceived) and e.text == "from bob, mid-transfer"
        )
        assert bob_line < done_at
        # (two senders, two connections: no order between them)
        assert sorted(e.text for e in carol.of(MessageReceived)) == [
            "from alice, mid-transfer",
            "from bob, mid-transfer",
        ]

        (received,) = bob.of(FileCompleted)
        assert received.transfer_id == tid and received.incoming
        assert Path(received.path) == inbox / "photo (1).jpg"
        assert sha256_of(inbox / "photo (1).jpg") == digest
        assert (inbox / "photo.jpg").read_bytes() == b"bob's own photo"
        assert sorted(p.name for p in inbox.iterdir()) == ["photo (1).jpg", "photo.jpg"]
        (sent,) = alice.of(FileCompleted)
        assert not sent.incoming and sent.sha256.hex() == digest
        (offer,) = bob.of(FileOffered)
        assert offer.incoming and not offer.pending and offer.name == "photo.jpg"
        # carol saw nothing of it
        assert not carol.of(FileOffered)


async def test_an_offer_is_refused_without_a_policy_and_asked_with_one(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    src = tmp_path / "notes.txt"
    digest = write_random(src, 1000)
    downloads = tmp_path / "downloads"
    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0)  # refuses
        alice = await join("alice", 1, "ask", downloads)
        for m in (bob, alice):
            await m.until(lambda m=m: bool(m.of(SessionReady)))
        await alice.files.async_send(src, alice.peer(bob))
        await alice.until(lambda: bool(alice.of(FileFailed)))
        (failed,) = alice.of(FileFailed)
        assert failed.by_peer and failed.reason == "not accepting files"
        assert bob.of(FileFailed)[0].reason == "not accepting files"

        # the other way: alice is asked, and accepts
        await bob.files.async_send(src, bob.peer(alice))
        await alice.until(lambda: bool(alice.files.pending()))
        (offer,) = [e for e in alice.of(FileOffered) if e.incoming]
        assert offer.pending and offer.size == 1000
        (pending,) = alice.files.pending()
        await alice.files.async_accept(pending)
        await bob.until(lambda: bool(bob.of(FileCompleted)))
        assert sha256_of(downloads / "notes.txt") == digest


async def test_empty_file_and_a_declined_offer(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"")
    other = tmp_path / "other.dat"
    write_random(other, 70_000)
    downloads = tmp_path / "dl"
    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0, "ask", downloads)
        alice = await join("alice", 1)
        for m in (bob, alice):
            await m.until(lambda m=m: bool(m.of(SessionReady)))
        await alice.files.async_send(empty, alice.peer(bob))
        await alice.files.async_send(other, alice.peer(bob))
        await bob.until(lambda: len(bob.files.pending()) == 2)
        first, second = sorted(bob.files.pending(), key=lambda t: t.size)
        await bob.files.async_accept(first)
        bob.files.reject(second)
        await alice.until(lambda: bool(alice.of(FileCompleted)) and bool(alice.of(FileFailed)))
        assert (downloads / "empty.dat").read_bytes() == b""
        (failed,) = alice.of(FileFailed)
        assert failed.reason == "declined" and failed.by_peer
        assert sorted(p.name for p in downloads.iterdir()) == ["empty.dat"]
        assert bob.files.phase(alice.p.identity.fingerprint, first.transfer_id, incoming=True) is (
            Phase.DONE
        )


@pytest.mark.parametrize(("who", "cut"), [("sender", False), ("receiver", False), ("sender", True)])
async def test_resume_after_the_session_drops(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...], who: str, cut: bool
) -> None:
    """The sender's or the receiver's participant goes away mid-transfer (closed
    on purpose, or its connection cut) and a new one (same identity, same
    FileTransfers) comes back: it continues. Each side's pause says who left."""
    inbox = tmp_path / "inbox"
    src = tmp_path / "big.bin"
    digest = write_random(src, 12 * 1024 * 1024)
    size = src.stat().st_size
    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0, "auto", inbox)
        alice = await join("alice", 1)
        for m in (bob, alice):
            await m.until(lambda m=m: bool(m.of(SessionReady)))
        alice.files.limit_rate = 8 * 1024 * 1024  # slow enough to cut it mid-way
        await alice.files.async_send(src, alice.peer(bob))
        await bob.until(lambda: has_received(bob, size // 3))
        leaving = alice if who == "sender" else bob
        staying = bob if leaving is alice else alice
        if cut:
            leaving.p.lost("cut for the test")
        else:
            await leaving.p.async_close()
        await leaving.until(lambda: any(e.paused for e in leaving.of(FileProgress)))
        await staying.until(lambda: any(e.paused for e in staying.of(FileProgress)))
        ours = PauseReason.DISCONNECTED if cut else PauseReason.WE_LEFT
        assert [e.why for e in leaving.of(FileProgress) if e.paused] == [ours]
        assert [e.why for e in staying.of(FileProgress) if e.paused] == [PauseReason.PEER_LEFT]
        await join.rejoin(leaving)  # type: ignore[attr-defined]
        alice.files.limit_rate = None
        await bob.until(lambda: bool(bob.of(FileCompleted)))
        await alice.until(lambda: bool(alice.of(FileCompleted)))
        resumed = [e for e in bob.of(FileProgress) if e.start > 0]
        assert resumed and resumed[0].start >= size // 3
        assert sha256_of(inbox / "big.bin") == digest
        assert sorted(p.name for p in inbox.iterdir()) == ["big.bin"]


async def test_a_file_changed_while_sent_fails_the_hash_and_leaves_nothing(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    inbox = tmp_path / "inbox"
    src = tmp_path / "log.txt"
    write_random(src, 6 * 1024 * 1024)
    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0, "auto", inbox)
        alice = await join("alice", 1)
        for m in (bob, alice):
            await m.until(lambda m=m: bool(m.of(SessionReady)))
        alice.files.limit_rate = 8 * 1024 * 1024
        await alice.files.async_send(src, alice.peer(bob))
        await bob.until(lambda: has_received(bob, 1024 * 1024))
        with src.open("r+b") as f:  # the tail changes (same size) after it was hashed
            f.seek(-1000, os.SEEK_END)
            f.write(b"changed!" * 125)
        alice.files.limit_rate = None
        await alice.until(lambda: bool(alice.of(FileFailed)))
        (failed,) = alice.of(FileFailed)
        assert failed.by_peer and "SHA-256 does not match" in failed.reason
        await bob.until(lambda: bool(bob.of(FileFailed)))
        assert not bob.of(FileCompleted) and not bob.of(FileFailed)[0].by_peer
        assert list(inbox.iterdir()) == []  # neither the file nor its working files


async def test_a_peer_breaking_the_transfer_rules_ends_the_transfer_not_the_session(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    from p2pchat.proto.app import FileData

    inbox = tmp_path / "inbox"
    src = tmp_path / "x.bin"
    write_random(src, 4 * 1024 * 1024)
    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0, "auto", inbox)
        alice = await join("alice", 1)
        for m in (bob, alice):
            await m.until(lambda m=m: bool(m.of(SessionReady)))
        alice.files.limit_rate = 4 * 1024 * 1024
        tid = await alice.files.async_send(src, alice.peer(bob))
        await bob.until(lambda: has_received(bob, 256 * 1024))
        # alice's side "forgets" where it was and sends offset 0 again
        assert alice.p.send_app(alice.peer(bob).peer_id, FileData(tid, 0, b"again"))
        await alice.until(lambda: bool(alice.of(FileFailed)))
        assert "protocol violation: data at offset 0" in alice.of(FileFailed)[0].reason
        await bob.until(lambda: bool(bob.of(FileFailed)))
        assert list(inbox.iterdir()) == []
        # the session itself is fine
        alice.p.send_text("still friends?")
        await alice.until(lambda: not alice.p.undelivered())
        assert [e.text for e in bob.of(MessageReceived)] == ["still friends?"]
        assert bob.p.is_ready(alice.p.my_id or 0)


async def test_a_receiver_that_cannot_store_tells_no_local_details(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    not_a_dir = tmp_path / "secret-place"
    not_a_dir.write_text("a file where the inbox should be")
    src = tmp_path / "a.txt"
    write_random(src, 1000)
    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0, "auto", not_a_dir)
        alice = await join("alice", 1)
        for m in (bob, alice):
            await m.until(lambda m=m: bool(m.of(SessionReady)))
        await alice.files.async_send(src, alice.peer(bob))
        await alice.until(lambda: bool(alice.of(FileFailed)))
        assert alice.of(FileFailed)[0].reason == "the receiver cannot store the file"
        await bob.until(lambda: bool(bob.of(FileFailed)))
        assert "secret-place" in bob.of(FileFailed)[0].reason  # the details stay here


# ---------------------------------------------------------------- what files may take

MIB = 1 << 20


def pin_before(tmp_path: Path, receiver: str, sender: str, key: rsa.RSAPrivateKey) -> None:
    """``receiver`` met ``sender`` in an earlier run: pinned before this one."""
    home = tmp_path / f"home-{receiver}"
    home.mkdir(exist_ok=True)
    TrustStore.open(home).pin(sender, Identity.from_key(key).fingerprint)


def failed(m: Member, name: str) -> list[FileFailed]:
    return [e for e in m.of(FileFailed) if e.name == name]


async def test_strangers_share_part_of_the_quota_and_a_known_sender_has_the_rest(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    inbox = tmp_path / "inbox"
    slow, second, big = tmp_path / "slow.bin", tmp_path / "second.bin", tmp_path / "big.bin"
    write_random(slow, 900 * 1024)
    write_random(second, 200 * 1024)
    write_random(big, 2 * MIB)
    pin_before(tmp_path, "bob", "carol", rsa_keys[2])
    disk = DiskLimits(quota=4 * MIB, stranger_share=0.25, keep_free=0)
    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0, "auto", inbox, disk=disk)  # type: ignore[misc]
        alice = await join("alice", 1, limit_rate=64 * 1024)  # type: ignore[misc]
        carol = await join("carol", 2)  # type: ignore[misc]
        for m in (bob, alice, carol):
            await m.until(lambda m=m: len(m.of(SessionReady)) == 2)
        # alice, met in this run, holds 900 KiB of the 1 MiB strangers share
        await alice.files.async_send(slow, alice.peer(bob))
        await bob.until(lambda: any(e.name == "slow.bin" for e in bob.of(FileProgress)))
        await alice.files.async_send(second, alice.peer(bob))
        await alice.until(lambda: bool(failed(alice, "second.bin")))
        assert failed(alice, "second.bin")[0].reason == NO_ROOM
        (here,) = failed(bob, "second.bin")
        assert "senders met in this run share" in here.reason
        # carol was pinned before: 2 MiB is over the strangers' share, not over the quota
        await carol.files.async_send(big, carol.peer(bob))
        await bob.until(lambda: any(e.name == "big.bin" for e in bob.of(FileCompleted)))
        assert not failed(bob, "big.bin") and not failed(bob, "slow.bin")
        assert sha256_of(inbox / "big.bin") == sha256_of(big)


async def test_kept_part_files_count_and_stale_ones_expire(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    stale = [inbox / "old.bin.0123456789ab.part", inbox / "old.bin.0123456789ab.resume"]
    for path in stale:
        path.write_bytes(b"x" * (3 * MIB if path.suffix == ".part" else 10))
    kept = inbox / "kept.bin.abcdefabcdef.part"
    kept.write_bytes(b"k" * (3 * MIB // 2))
    theirs = inbox / "notes.part"  # not a name of ours: never touched
    theirs.write_bytes(b"mine")
    week_ago = time.time() - 8 * 24 * 3600
    for path in (*stale, theirs):
        os.utime(path, (week_ago, week_ago))
    src = tmp_path / "one.bin"
    write_random(src, MIB)
    disk = DiskLimits(quota=2 * MIB, stranger_share=1.0, keep_free=0)
    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0, "auto", inbox, disk=disk)  # type: ignore[misc]
        alice = await join("alice", 1)  # type: ignore[misc]
        for m in (bob, alice):
            await m.until(lambda m=m: bool(m.of(SessionReady)))
        # 1.5 MiB kept for resuming + 1 MiB offered > 2 MiB; the week-old 3 MiB is gone
        await alice.files.async_send(src, alice.peer(bob))
        await alice.until(lambda: bool(alice.of(FileFailed)))
        assert alice.of(FileFailed)[0].reason == NO_ROOM
        assert "quota for unfinished files" in bob.of(FileFailed)[0].reason
        assert not any(path.exists() for path in stale)
        assert kept.exists() and theirs.read_bytes() == b"mine"
        kept.unlink()  # the user clears it: the same offer now fits
        await alice.files.async_send(src, alice.peer(bob))
        await bob.until(lambda: bool(bob.of(FileCompleted)))
        assert sha256_of(inbox / "one.bin") == sha256_of(src)


async def test_accepting_leaves_the_reserve_of_free_space(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    src = tmp_path / "a.bin"
    write_random(src, 1000)
    disk = DiskLimits(keep_free=1 << 60)  # more than any disk has
    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0, "auto", tmp_path / "inbox", disk=disk)  # type: ignore[misc]
        alice = await join("alice", 1)  # type: ignore[misc]
        for m in (bob, alice):
            await m.until(lambda m=m: bool(m.of(SessionReady)))
        await alice.files.async_send(src, alice.peer(bob))
        await alice.until(lambda: bool(alice.of(FileFailed)))
        assert alice.of(FileFailed)[0].reason == "not enough disk space"
        await bob.until(lambda: bool(bob.of(FileFailed)))
        assert "kept free" in bob.of(FileFailed)[0].reason
        assert not list((tmp_path / "inbox").iterdir())


async def test_a_new_fingerprint_gets_no_new_transfer_slots(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(receiving, "MAX_INCOMING_PER_PEER", 1)
    src = tmp_path / "a.bin"
    write_random(src, 1000)
    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0, "ask", tmp_path / "inbox")  # type: ignore[misc]
        alice = await join("alice", 1)  # type: ignore[misc]
        carol = await join("carol", 2)  # type: ignore[misc]
        for m in (bob, alice, carol):
            await m.until(lambda m=m: len(m.of(SessionReady)) == 2)
        await alice.files.async_send(src, alice.peer(bob))
        await bob.until(lambda: bool(bob.files.pending()))
        # carol is as new as alice: the strangers' one slot is taken
        await carol.files.async_send(src, carol.peer(bob))
        await carol.until(lambda: bool(carol.of(FileFailed)))
        assert carol.of(FileFailed)[0].reason == "too many transfers at once"
        assert len(bob.files.pending()) == 1 and not alice.of(FileFailed)
