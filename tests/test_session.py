"""Participants end to end through an in-process relay on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from p2pchat.net.relay import Relay
from p2pchat.room.bus import EventBus
from p2pchat.room.events import (
    Delivered,
    Event,
    MessageReceived,
    PeerLeft,
    PeerRefused,
    RefusalKind,
    SessionBroken,
    SessionReady,
)
from p2pchat.room.participant import Participant
from p2pchat.store.identity import Identity, TrustStore

WAIT = 10.0


class Member:
    def __init__(self, participant: Participant, events: list[Event]) -> None:
        self.p = participant
        self.events = events

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    async def until(self, predicate: Callable[[], bool]) -> None:
        assert await self.p.bus.wait_for(predicate, WAIT), f"timed out; events: {self.events}"


@contextlib.asynccontextmanager
async def room(
    tmp_path: Path, keys: tuple[rsa.RSAPrivateKey, ...]
) -> AsyncIterator[Callable[..., object]]:
    relay = Relay(owner_key=Identity.from_key(keys[0]).public_der)
    (_, port), *_ = await relay.async_start(["127.0.0.1"], 0)
    members: list[Member] = []

    async def join(name: str, key_index: int, **kw: object) -> Member:
        events: list[Event] = []
        home = tmp_path / f"{name}-{key_index}"
        home.mkdir(exist_ok=True)
        bus: EventBus[Event] = EventBus()
        bus.add_sink(events.append)
        p = Participant(Identity.from_key(keys[key_index]), name, TrustStore.open(home), bus, **kw)
        await p.async_connect("127.0.0.1", port, WAIT)
        m = Member(p, events)
        members.append(m)
        return m

    join.port = port  # type: ignore[attr-defined]  # for tests that open raw connections
    try:
        yield join
    finally:
        for m in members:
            await m.p.async_close()
        await relay.async_close()


async def test_two_participants_chat_with_acks(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0)
        alice = await join("alice", 1)
        host = alice.p.host_id
        assert host == bob.p.my_id
        await alice.until(lambda: alice.p.is_ready(host))
        await bob.until(lambda: bool(bob.of(SessionReady)))
        (ra,), (rb,) = alice.of(SessionReady), bob.of(SessionReady)
        assert ra.sas == rb.sas and ra.trust == rb.trust == "new"
        assert ra.peer.fingerprint == Identity.from_key(rsa_keys[0]).fingerprint

        ids = [alice.p.send_text(f"line {i}") for i in range(5)]
        await alice.until(lambda: not alice.p.undelivered())
        got = [e.text for e in bob.of(MessageReceived)]
        assert got == [f"line {i}" for i in range(5)]
        complete = [e.msg_id for e in alice.of(Delivered) if e.complete]
        assert complete == ids
        bob.p.send_text("hi alice")
        await bob.until(lambda: not bob.p.undelivered())
        assert [e.text for e in alice.of(MessageReceived)] == ["hi alice"]


async def test_three_participants_every_pair_has_a_session(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0)
        alice = await join("alice", 1)
        carol = await join("carol", 2)
        for m in (bob, alice, carol):
            await m.until(lambda m=m: len(m.of(SessionReady)) == 2)
        carol.p.send_text("hello all")
        await carol.until(lambda: not carol.p.undelivered())
        for m in (bob, alice):
            assert [(e.peer.name, e.text) for e in m.of(MessageReceived)] == [
                ("carol", "hello all")
            ]


async def test_messages_typed_before_the_session_is_ready_are_queued(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0)
        alice = await join("alice", 1)
        # alice's handshake with bob is in flight: this must wait for it, not vanish
        alice.p.send_text("early")
        await alice.until(lambda: not alice.p.undelivered())
        assert [e.text for e in bob.of(MessageReceived)] == ["early"]


async def test_clean_leave_is_reported_and_drops_pending(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0)
        alice = await join("alice", 1)
        await bob.until(lambda: bool(bob.of(SessionReady)))
        await alice.until(lambda: bool(alice.of(SessionReady)))
        await alice.p.async_close()
        await bob.until(lambda: bool(bob.of(PeerLeft)))
        (left,) = bob.of(PeerLeft)
        assert left.clean and left.peer.name == "alice"
        assert bob.p.peers == []


async def test_pinned_name_with_new_key_is_refused_before_any_message(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0)
        # alice's home already pins "bob" under another key (key 2)
        home = tmp_path / "alice-1"
        home.mkdir()
        TrustStore.open(home).pin("bob", Identity.from_key(rsa_keys[2]).fingerprint)
        alice = await join("alice", 1)
        await alice.until(lambda: bool(alice.of(PeerRefused)))
        (refused,) = alice.of(PeerRefused)
        assert refused.mismatch and refused.pinned == (Identity.from_key(rsa_keys[2]).fingerprint,)
        assert not alice.p.is_ready(alice.p.host_id or 0)
        # a refusal is not a goodbye: bob is told why, authenticated, and does
        # not take alice for gone
        await bob.until(lambda: bool(bob.of(PeerRefused)))
        (told,) = bob.of(PeerRefused)
        assert told.by_peer and told.kind is RefusalKind.MISMATCH
        assert told.reason == "a pinned name presented a different key"
        assert not [e for e in bob.of(PeerLeft) if e.peer.name == "alice"]
        # what alice types now is sent to no one, and counted as not delivered to bob
        sent = alice.p.send_text("must not be sent")
        assert alice.p.undelivered() == {sent: ["bob"]}
        (missing,) = alice.p.missing()
        assert (missing.name, missing.count) == ("bob", 1)
        assert missing.why == "refused: a pinned name presented a different key"
        assert bob.of(MessageReceived) == []


async def test_expected_host_fingerprint_mismatch_is_refused(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    async with room(tmp_path, rsa_keys) as join:
        await join("bob", 0)
        wrong = Identity.from_key(rsa_keys[2]).fingerprint
        alice = await join("alice", 1, expected_host=wrong)
        await alice.until(lambda: bool(alice.of(PeerRefused)))
        assert alice.of(PeerRefused)[0].mismatch


async def test_require_known_refuses_new_peers(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    async with room(tmp_path, rsa_keys) as join:
        await join("bob", 0)
        alice = await join("alice", 1, require_known=True)
        await alice.until(lambda: bool(alice.of(PeerRefused)))
        assert not alice.of(PeerRefused)[0].mismatch


@pytest.mark.parametrize("corrupt", ["flip", "replay"])
async def test_a_bad_record_heals_that_session_and_disturbs_no_one(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...], corrupt: str
) -> None:
    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0)
        alice = await join("alice", 1)
        carol = await join("carol", 2)
        for m in (bob, alice, carol):
            await m.until(lambda m=m: len(m.of(SessionReady)) == 2)
        # alice's session keys towards bob, used to forge a bad record on her connection
        from p2pchat.proto.framing import pack
        from p2pchat.proto.messages import encode_send

        peer = alice.p.sessions.peers[bob.p.my_id or 0]
        assert peer.result is not None
        record = bytearray(peer.result.sender.seal(pack({"t": "ka", "reply": False})))
        if corrupt == "flip":
            record[-1] ^= 1
            alice.p.write(encode_send(bob.p.my_id or 0, bytes(record)))
        else:
            # deliver it twice: the second is a replay
            alice.p.write(encode_send(bob.p.my_id or 0, bytes(record)) * 2)
        # bob drops that session and starts a fresh handshake at once; alice answers
        await bob.until(lambda: any(e.renewed for e in bob.of(SessionReady)))
        await alice.until(lambda: any(e.renewed for e in alice.of(SessionReady)))
        (broken,) = bob.of(SessionBroken)
        assert broken.peer.name == "alice" and "authentication" in broken.reason
        assert not bob.of(PeerRefused) and not alice.of(PeerRefused)
        assert not bob.of(PeerLeft) and not alice.of(PeerLeft)
        # the renewed session carries messages both ways, each shown once
        alice.p.send_text("after the heal")
        bob.p.send_text("heard you")
        await alice.until(lambda: not alice.p.undelivered())
        await bob.until(lambda: not bob.p.undelivered())
        assert [e.text for e in bob.of(MessageReceived)] == ["after the heal"]
        assert [e.text for e in alice.of(MessageReceived)] == ["heard you"]
        # carol saw nothing of it: no refusal, no broken session, and she still talks
        assert not carol.of(SessionBroken) and not carol.of(PeerRefused)
        carol.p.send_text("after")
        await carol.until(lambda: not carol.p.undelivered())
        assert [e.text for e in bob.of(MessageReceived)][-1] == "after"


@pytest.fixture(scope="module")
def eleven_keys() -> tuple[rsa.RSAPrivateKey, ...]:
    return tuple(rsa.generate_private_key(65537, 3072) for _ in range(11))


async def test_room_of_eleven_fan_out_direct_messages_and_delivery_counts(
    tmp_path: Path, eleven_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    async with room(tmp_path, eleven_keys) as join:
        members = [await join("host", 0)]
        members += [await join(f"p{i}", i) for i in range(1, 11)]
        for m in members:
            await m.until(lambda m=m: len(m.of(SessionReady)) == 10)
        # every pair has its own session: 11 participants, 10 sessions each
        sender = members[3]
        mid = sender.p.send_text("to the whole room")
        await sender.until(lambda: not sender.p.undelivered())
        counts = [(e.delivered, e.total) for e in sender.of(Delivered) if e.msg_id == mid]
        assert sorted(counts) == [(i, 10) for i in range(1, 11)]
        assert [e for e in sender.of(Delivered) if e.msg_id == mid and e.complete][
            -1
        ].delivered == 10
        for m in members:
            texts = [e.text for e in m.of(MessageReceived)]
            assert texts == ([] if m is sender else ["to the whole room"])

        target = members[7]
        sender.p.send_text("just for p7", to=target.p.identity.fingerprint)
        await sender.until(lambda: not sender.p.undelivered())
        got = [e for e in target.of(MessageReceived) if e.text == "just for p7"]
        assert len(got) == 1 and got[0].direct and got[0].peer.name == "p3"
        for m in members:
            if m is not target:
                assert all(e.text != "just for p7" for e in m.of(MessageReceived))


async def test_nobody_else_is_pinned_or_shown_before_the_host_is_proven(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    async with room(tmp_path, rsa_keys) as join:
        await join("bob", 0)
        carol = await join("carol", 2)
        # alice expects another host key: the relay (and its 'carol') are not trusted
        wrong = bytes(32)
        alice = await join("alice", 1, expected_host=wrong)
        await alice.until(lambda: bool(alice.of(PeerRefused)))
        await carol.until(lambda: any(p.name == "alice" for p in carol.p.peers))
        sent = carol.p.send_text("hello from behind the wrong host")
        # bob acknowledges it; alice never even handshakes with carol
        await carol.until(lambda: carol.p.undelivered().get(sent) == ["alice"])
        assert alice.of(SessionReady) == []
        assert alice.of(MessageReceived) == []
        assert alice.p.trust.all() == []  # carol was not pinned


async def test_others_are_met_once_the_host_is_proven(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0)
        await join("carol", 2)
        alice = await join("alice", 1, expected_host=Identity.from_key(rsa_keys[0]).fingerprint)
        await alice.until(lambda: len(alice.of(SessionReady)) == 2)
        first = alice.of(SessionReady)[0]
        assert first.peer.peer_id == bob.p.my_id  # the host first, then the others


async def test_an_unknown_message_type_keeps_the_session(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    """A newer peer's message type is ignored: no refusal, and chat goes on."""
    import msgpack

    from p2pchat.proto.messages import send_head
    from p2pchat.proto.record import record_size

    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0)
        alice = await join("alice", 1)
        host = alice.p.host_id or 0
        await alice.until(lambda: alice.p.is_ready(host))
        await bob.until(lambda: bool(bob.of(SessionReady)))
        peer = alice.p.sessions.peers[host]
        assert peer.result is not None
        body = msgpack.packb({"t": "receipt", "ids": [b"\x00" * 16]})
        head = send_head(host, record_size(len(body)))
        alice.p.write(peer.result.sender.seal_after(head, body))
        alice.p.send_text("after the unknown one")
        await bob.until(lambda: bool(bob.of(MessageReceived)))
        assert bob.of(MessageReceived)[0].text == "after the unknown one"
        assert not bob.of(PeerRefused) and not alice.of(PeerRefused)
        await alice.until(lambda: bool(alice.of(Delivered)))


async def test_keepalives_keep_a_quiet_peer_and_drop_a_silent_one(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    """Probes after ``keepalive`` s of quiet are answered, so a quiet peer stays;
    one whose connection stops reading is presumed gone after ``dead_after`` s."""
    import time

    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0)
        carol = await join("carol", 2)
        alice = await join("alice", 1, keepalive=0.1, dead_after=0.5)
        for m in (alice, carol):
            await m.until(lambda m=m: len(m.of(SessionReady)) == 2)
        carol_id = carol.p.my_id
        start = time.monotonic()
        # three dead_after periods of quiet chat: the probes are answered
        await alice.until(lambda: time.monotonic() - start > 1.5 or bool(alice.of(PeerLeft)))
        assert not alice.of(PeerLeft), alice.events
        # carol stops reading: she answers nothing any more
        assert carol.p._writer is not None
        carol.p._writer.transport.pause_reading()
        await alice.until(lambda: bool(alice.of(PeerLeft)))
        (left,) = alice.of(PeerLeft)
        assert left.peer.peer_id == carol_id and not left.clean
        assert time.monotonic() - start > 1.5
        assert alice.p.is_ready(bob.p.my_id or 0)  # the host is still there


async def test_junk_handshakes_do_not_drain_the_budget(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    """Throw-away registrations that each send the host one byte 0x01 (a
    handshake tag and nothing else) used to spend the host's handshake budget
    (burst 40) and lock a real joiner out. The budget is now charged where the
    expensive work is, which junk never reaches."""
    import asyncio

    from proving import proof_for, remember

    from p2pchat.config import HANDSHAKE_BURST, SUPPORTED_VERSIONS
    from p2pchat.proto.framing import FrameDecoder
    from p2pchat.proto.messages import Challenge, Hello, Welcome, encode, encode_send, parse_body

    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0)
        host = bob.p.my_id or 0
        junk = []
        key = remember(rsa_keys[2])
        for i in range(int(HANDSHAKE_BURST) + 10):  # bounded: 50 connections
            reader, writer = await asyncio.open_connection("127.0.0.1", join.port)
            writer.write(encode(Hello(SUPPORTED_VERSIONS, f"junk{i}", key)))
            decoder = FrameDecoder(1 << 20, parse_body)
            frames: list[object] = []
            while not frames:
                frames = decoder.feed(await reader.read(65536))
            assert isinstance(frames[0], Challenge)
            writer.write(proof_for(key, frames[0]))
            frames = []
            while not frames:
                frames = decoder.feed(await reader.read(65536))
            assert isinstance(frames[0], Welcome)
            writer.write(encode_send(host, b"\x01"))
            junk.append(writer)
        await bob.until(lambda: len(bob.of(PeerRefused)) >= len(junk))
        assert all("too many handshakes" not in r.reason for r in bob.of(PeerRefused))
        alice = await join("alice", 1)
        await alice.until(lambda: alice.p.is_ready(host))
        await bob.until(lambda: any(r.peer.name == "alice" for r in bob.of(SessionReady)))
        for writer in junk:
            writer.close()


async def test_an_eviction_by_the_relay_is_reported_as_one_never_as_a_clean_end(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    async with room(tmp_path, rsa_keys) as join:
        await join("bob", 0)
        # one key registered five times: the relay keeps four, the newest
        # replacing the oldest, and tells the oldest why before closing it
        first = await join("alice", 1)
        for i in range(4):
            await join(f"alice{i}", 1)
        await first.until(lambda: first.p.disconnected is not None)
        gone = first.p.disconnected
        assert gone is not None and not gone.clean
        assert gone.reason == (
            "the relay closed our connection: replaced by a newer registration of the same key"
        )


async def test_the_end_of_the_relay_connection_is_clean_only_after_the_hosts_goodbye(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    relay = Relay(owner_key=Identity.from_key(rsa_keys[0]).public_der)
    (_, port), *_ = await relay.async_start(["127.0.0.1"], 0)
    events: list[Event] = []
    bus: EventBus[Event] = EventBus()
    bus.add_sink(events.append)
    home = tmp_path / "alice"
    home.mkdir()
    alice = Participant(Identity.from_key(rsa_keys[1]), "alice", TrustStore.open(home), bus)
    await alice.async_connect("127.0.0.1", port, WAIT)
    try:
        # no host participant here at all: the relay just goes away
        await relay.async_close()
        assert await bus.wait_for(lambda: alice.disconnected is not None, WAIT)
        gone = alice.disconnected
        assert gone is not None and not gone.clean
        assert "without the host's goodbye" in gone.reason
    finally:
        await alice.async_close()


async def _raw_register(port: int, key: rsa.RSAPrivateKey, name: str) -> asyncio.StreamWriter:
    """A registration (challenge answered) that never handshakes."""
    from proving import proof_for, remember

    from p2pchat.config import SUPPORTED_VERSIONS
    from p2pchat.proto.framing import FrameDecoder
    from p2pchat.proto.messages import Challenge, Hello, Welcome, encode, parse_body

    der = remember(key)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode(Hello(SUPPORTED_VERSIONS, name, der)))
    decoder = FrameDecoder(1 << 20, parse_body)
    for expected in (Challenge, Welcome):
        frames: list[object] = []
        while not frames:
            frames = decoder.feed(await reader.read(65536))
        assert isinstance(frames[0], expected)
        if expected is Challenge:
            writer.write(proof_for(der, frames[0]))
    return writer


async def test_a_twin_of_our_identity_is_not_a_recipient(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0)
        alice = await join("alice", 1)
        await alice.until(lambda: alice.p.is_ready(bob.p.my_id or 0))
        await join("alice", 1)  # the same key again: refused on both sides
        await alice.until(lambda: bool(alice.of(PeerRefused)))
        alice.p.send_text("hello bob")
        await bob.until(lambda: bool(bob.of(MessageReceived)))
        # bob, the only other participant, acknowledged it: delivered
        await alice.until(lambda: alice.p.outbox.all_delivered)
        assert alice.p.missing() == []


async def test_giving_up_on_a_session_tells_the_peer(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    from p2pchat.proto.framing import pack
    from p2pchat.proto.messages import encode_send
    from p2pchat.room.sessions import MAX_HEALS

    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0)
        alice = await join("alice", 1)
        carol = await join("carol", 2)
        for m in (bob, alice, carol):
            await m.until(lambda m=m: len(m.of(SessionReady)) == 2)
        cid = carol.p.my_id or 0
        # carol's view of alice: one more failure is the limit
        seen = carol.p.sessions.peers[alice.p.my_id or 0]
        seen.heals, seen.ready_since = MAX_HEALS, time.monotonic()
        mine = alice.p.sessions.peers[cid]
        assert mine.result is not None
        record = bytearray(mine.result.sender.seal(pack({"t": "ka", "reply": False})))
        record[-1] ^= 1
        alice.p.write(encode_send(cid, bytes(record)))
        await carol.until(lambda: bool(carol.of(PeerRefused)))
        assert "giving up" in carol.of(PeerRefused)[0].reason
        # alice is told (not left to find carol silent and call her gone)
        await alice.until(lambda: any(e.by_peer for e in alice.of(PeerRefused)))
        assert not [e for e in alice.of(PeerLeft) if e.peer.name == "carol"]


async def test_a_key_proven_earlier_stays_a_recipient_through_a_failed_reconnection(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0)
        alice = await join("alice", 1)
        await alice.until(lambda: alice.p.is_ready(bob.p.my_id or 0))
        await bob.until(lambda: bool(bob.of(SessionReady)))
        alice.p.lost("test: the wifi blips")  # no goodbye
        await bob.until(lambda: bool(bob.of(PeerLeft)))
        # she registers again, and that connection dies before its handshake too
        writer = await _raw_register(join.port, rsa_keys[1], "alice")  # type: ignore[attr-defined]
        await bob.until(lambda: len(bob.p.sessions.peers) == 1)
        bob.p.send_text("are you there?")
        writer.transport.abort()
        await bob.until(lambda: not bob.p.sessions.peers)
        assert not bob.p.outbox.all_delivered  # still owed to her key
        again = await join("alice", 1)
        await again.until(lambda: bool(again.of(MessageReceived)))
        assert [e.text for e in again.of(MessageReceived)] == ["are you there?"]


async def test_a_registration_that_never_handshakes_is_refused_at_its_deadline(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    from p2pchat.config import HANDSHAKE_TIMEOUT
    from p2pchat.room.peer import PeerState

    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0)
        writer = await _raw_register(join.port, rsa_keys[2], "mallory")  # type: ignore[attr-defined]
        await bob.until(lambda: len(bob.p.sessions.peers) == 1)
        for i in range(5):
            bob.p.send_text(f"m{i}")
        (peer,) = bob.p.sessions.peers.values()
        assert peer.state is PeerState.NEW and len(peer.unproven) == 5
        deadline = peer.deadline(5.0, 15.0)
        assert deadline is not None and deadline <= time.monotonic() + HANDSHAKE_TIMEOUT
        bob.p.sessions.handshakes.check_late(peer, deadline)  # as the timer would
        assert peer.state is PeerState.REFUSED and peer.unproven == []
        # it was never a participant: nothing is owed to it, and every face is told
        assert bob.p.outbox.all_delivered
        dropped = [e for e in bob.of(Delivered) if e.dropped]
        assert len(dropped) == 5 and all(e.complete and e.total == 0 for e in dropped)
        writer.close()


async def test_a_recipient_that_never_proves_its_key_leaves_the_count(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    async with room(tmp_path, rsa_keys) as join:
        bob = await join("bob", 0)
        alice = await join("alice", 1)
        await bob.until(lambda: bool(bob.of(SessionReady)))
        writer = await _raw_register(join.port, rsa_keys[2], "mallory")  # type: ignore[attr-defined]
        await bob.until(lambda: len(bob.p.sessions.peers) == 2)
        mid = bob.p.send_text("hi")
        await bob.until(lambda: any(e.msg_id == mid for e in bob.of(Delivered)))
        (first,) = [e for e in bob.of(Delivered) if e.msg_id == mid]
        assert (first.delivered, first.total, first.complete) == (1, 2, False)
        writer.transport.abort()  # mallory leaves, never having proved anything
        await bob.until(lambda: any(e.dropped for e in bob.of(Delivered)))
        (last,) = [e for e in bob.of(Delivered) if e.dropped]
        assert (last.msg_id, last.delivered, last.total, last.complete) == (mid, 1, 1, True)
        assert bob.p.outbox.all_delivered and alice.of(MessageReceived)
