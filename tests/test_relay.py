"""The relay as a server: registration, routing, limits, and isolation of bad peers.

Real TCP on 127.0.0.1, in-process relay, raw clients that speak frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from proving import proof_for, remember

from p2pchat.net.relay import Relay, RelayLimits
from p2pchat.proto.framing import FrameDecoder
from p2pchat.proto.messages import (
    Challenge,
    Deliver,
    ErrorCode,
    ErrorFrame,
    Frame,
    Hello,
    Joined,
    Left,
    Ping,
    Pong,
    Proof,
    Send,
    Welcome,
    encode,
    parse_body,
)
from p2pchat.proto.oaep import OAEP_PADDING, oaep_decrypt
from p2pchat.proto.register import answer_challenge, make_challenge

WAIT = 5.0


class Client:
    """A raw relay client: writes frames, reads typed frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = FrameDecoder(parse=parse_body)
        self.pending: list[Frame] = []
        self.key: bytes | None = None  #: the key of our hello: challenges are answered

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, frame: Frame) -> None:
        if isinstance(frame, Hello):
            self.key = frame.key
        self.writer.write(encode(frame))

    async def recv(self) -> Frame:
        """The next frame; a registration challenge is answered on the way."""
        while True:
            while not self.pending:
                data = await asyncio.wait_for(self.reader.read(65536), WAIT)
                if not data:
                    raise ConnectionError("closed by relay")
                self.pending.extend(self.decoder.feed(data))
            frame = self.pending.pop(0)
            if isinstance(frame, Challenge) and self.key is not None:
                self.writer.write(proof_for(self.key, frame))
                continue
            return frame

    async def closed(self) -> bool:
        """True once the relay has closed this connection (EOF or reset)."""
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), WAIT)
                if not data:
                    return True
                self.pending.extend(self.decoder.feed(data))
        except ConnectionError:
            return True

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
def keys(rsa_keys: tuple[rsa.RSAPrivateKey, ...]) -> list[bytes]:
    return [remember(k) for k in rsa_keys]


@contextlib.asynccontextmanager
async def running(
    limits: RelayLimits | None = None, owner: bytes | None = None
) -> AsyncIterator[tuple[Relay, int]]:
    relay = Relay(limits, owner_key=owner)
    (_, port), *_ = await relay.async_start(["127.0.0.1"], 0)
    try:
        yield relay, port
    finally:
        await relay.async_close()


async def register(port: int, name: str, key: bytes) -> tuple[Client, Welcome]:
    client = await Client.connect(port)
    client.send(Hello((1,), name, key))
    welcome = await client.recv()
    assert isinstance(welcome, Welcome)
    return client, welcome


async def test_registration_roster_routing_and_leave(keys: list[bytes]) -> None:
    async with running(owner=keys[0]) as (_relay, port):
        a, wa = await register(port, "alice", keys[0])
        assert wa.peers == () and wa.host == wa.peer_id
        b, wb = await register(port, "bob", keys[1])
        assert [p.name for p in wb.peers] == ["alice"] and wb.host == wa.peer_id
        joined = await a.recv()
        assert isinstance(joined, Joined) and joined.peer.peer_id == wb.peer_id
        assert joined.peer.key == keys[1]

        a.send(Send(wb.peer_id, b"\x02opaque"))
        got = await b.recv()
        assert got == Deliver(wa.peer_id, b"\x02opaque")

        b.close()
        left = await a.recv()
        assert left == Left(wb.peer_id)


async def test_send_to_unknown_peer_answers_left(keys: list[bytes]) -> None:
    async with running() as (_relay, port):
        a, wa = await register(port, "alice", keys[0])
        a.send(Send(999, b"x"))
        assert await a.recv() == Left(999)
        a.send(Send(wa.peer_id, b"to myself"))
        assert await a.recv() == Left(wa.peer_id)
        a.send(Ping(7))
        assert await a.recv() == Pong(7)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xff\xff\xff",  # length prefix far over the cap
        b"\x00\x00\x00\x00",  # zero length
        b"\x00\x00\x00\x05\xc1\xc1\xc1\xc1\xc1",  # invalid msgpack
        b"\x00\x00\x00\x05\xdd\x05\xf5\xe1\x00",  # array declaring 10**8 items
        b"\x00\x00\x00\x03\x93\x01\x02",  # truncated array inside a complete frame
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
async def test_malformed_input_closes_only_that_connection(
    keys: list[bytes], garbage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "p2pchat.net.relay")
    async with running() as (relay, port):
        a, wa = await register(port, "alice", keys[0])
        b, wb = await register(port, "bob", keys[1])
        await a.recv()  # bob joined
        bad = await Client.connect(port)
        bad.writer.write(garbage)
        assert await bad.closed()
        assert "closing connection 127.0.0.1:" in caplog.text
        # registered peers are undisturbed
        b.send(Send(wa.peer_id, b"\x02still here"))
        assert await a.recv() == Deliver(wb.peer_id, b"\x02still here")
        assert relay.participant_count == 2


async def test_malformed_frame_from_registered_peer_tells_others_it_left(
    keys: list[bytes],
) -> None:
    async with running() as (_relay, port):
        a, _ = await register(port, "alice", keys[0])
        b, wb = await register(port, "bob", keys[1])
        await a.recv()  # joined
        b.writer.write(b"\x00\x00\x00\x02\x91\xc1")
        assert await b.closed()
        assert await a.recv() == Left(wb.peer_id)


async def test_frames_before_hello_and_second_hello_are_refused(keys: list[bytes]) -> None:
    async with running() as (_relay, port):
        early = await Client.connect(port)
        early.send(Send(1, b"x"))
        assert await early.closed()
        a, _ = await register(port, "alice", keys[0])
        a.send(Hello((1,), "alice", keys[0]))
        assert await a.closed()


async def test_incompatible_version_and_bad_key_get_a_reason(keys: list[bytes]) -> None:
    async with running() as (_relay, port):
        c = await Client.connect(port)
        c.send(Hello((99,), "future", keys[0]))
        err = await c.recv()
        assert isinstance(err, ErrorFrame) and err.reason.startswith("incompatible version")
        assert await c.closed()

        ed = ed25519.Ed25519PrivateKey.generate().public_key()
        d = await Client.connect(port)
        d.send(
            Hello((1,), "edwards", ed.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
        )
        err = await d.recv()
        assert isinstance(err, ErrorFrame) and "key" in err.reason
        assert await d.closed()


async def test_room_full(keys: list[bytes]) -> None:
    async with running(RelayLimits(max_participants=1)) as (_relay, port):
        alice, _ = await register(port, "alice", keys[0])
        c = await Client.connect(port)
        c.send(Hello((1,), "bob", keys[1]))
        err = await c.recv()
        assert isinstance(err, ErrorFrame) and "full" in err.reason
        alice.close()


async def test_unregistered_deadline(keys: list[bytes]) -> None:
    async with running(RelayLimits(register_timeout=0.2)) as (relay, port):
        loop = asyncio.get_running_loop()
        t0 = loop.time()  # before connecting: the relay's clock starts after this
        idle = await Client.connect(port)
        assert await idle.closed()
        assert 0.15 <= loop.time() - t0 < 2.0
        assert relay.unregistered_count == 0


async def test_idle_flood_evicts_oldest_not_the_real_joiner(keys: list[bytes]) -> None:
    async with running(RelayLimits(max_unregistered=4)) as (relay, port):
        flood = [await Client.connect(port) for _ in range(12)]
        # the relay accepted them all but keeps at most four waiting
        alice, _ = await register(port, "alice", keys[0])
        assert relay.participant_count == 1
        assert relay.unregistered_count <= 4
        closed = [await c.closed() for c in flood[:8]]
        assert all(closed)
        for c in [*flood, alice]:
            c.close()


async def test_silent_participant_is_pinged_then_dropped(keys: list[bytes]) -> None:
    limits = RelayLimits(idle_ping=0.1, idle_timeout=0.5)
    async with running(limits) as (relay, port):
        silent, _ = await register(port, "silent", keys[0])
        lively, _ = await register(port, "lively", keys[1])
        # lively answers every ping; silent never does
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.5
        pinged = False
        while loop.time() < deadline:
            with contextlib.suppress(TimeoutError):
                frame = await asyncio.wait_for(lively.recv(), 0.2)
                if isinstance(frame, Ping):
                    pinged = True
                    lively.send(Pong(frame.token))
        assert pinged
        assert await silent.closed()
        assert relay.participant_count == 1
        lively.close()


async def test_rate_limit_slows_only_the_flooder(keys: list[bytes]) -> None:
    limits = RelayLimits(rate_bytes=200_000, rate_burst=20_000)
    async with running(limits) as (_relay, port):
        flooder, _ = await register(port, "flooder", keys[0])
        sink, ws = await register(port, "sink", keys[1])
        other, _ = await register(port, "other", keys[2])
        loop = asyncio.get_running_loop()
        chunk = b"\x02" + bytes(9_999)
        t0 = loop.time()
        for _ in range(60):  # 600 kB at 200 kB/s: about three seconds of reading
            flooder.send(Send(ws.peer_id, chunk))
        # meanwhile another participant's round trip through the relay is unaffected
        other.send(Ping(1))
        while not isinstance(await other.recv(), Pong):
            pass
        assert loop.time() - t0 < 1.0
        received = 0
        while received < 60:
            frame = await sink.recv()
            if isinstance(frame, Deliver):
                received += 1
        # the flooder was held to the rate: (600 kB - burst) / 200 kB/s
        assert loop.time() - t0 >= 2.0
        for c in (flooder, sink, other):
            c.close()


async def test_a_registered_peer_dribbling_a_frame_is_dropped_when_idle(keys: list[bytes]) -> None:
    limits = RelayLimits(idle_ping=0.2, idle_timeout=0.6)
    async with running(limits) as (_relay, port):
        slow, _ = await register(port, "slow", keys[0])
        frame = encode(Send(1, b"x" * 100))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for byte in frame[:-1]:  # bytes keep coming, but never a whole frame
            if slow.writer.is_closing() or loop.time() - t0 > 3:
                break
            slow.writer.write(bytes((byte,)))
            with contextlib.suppress(ConnectionError):
                await slow.writer.drain()
            with contextlib.suppress(TimeoutError, ConnectionError):
                data = await asyncio.wait_for(slow.reader.read(65536), 0.02)
                if not data:
                    break
        assert await slow.closed()
        assert loop.time() - t0 < 3


async def test_a_peer_that_does_not_read_holds_its_senders_back_in_bounded_memory(
    keys: list[bytes],
) -> None:
    """Offered 12 MB for a receiver that never reads, the relay stops reading
    from the sender once the receiver's buffer is full: what it holds for the
    receiver stays bounded, and the sender feels TCP backpressure."""
    import socket

    limits = RelayLimits(max_write_backlog=256 * 1024, backlog_grace=60.0)
    async with running(limits) as (relay, port):
        sender, _ = await register(port, "sender", keys[0])
        # a receiver that never reads, with a tiny kernel buffer
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)
        stuck = Client(reader, writer)
        stuck.send(Hello((1,), "stuck", keys[1]))
        while not isinstance(frame := await stuck.recv(), Welcome):
            pass
        stuck_id = frame.peer_id
        writer.transport.pause_reading()
        chunk = b"\x02" + bytes(60_000)
        offered = 0
        for _ in range(200):  # at most 12 MB offered
            sender.send(Send(stuck_id, chunk))
            offered += len(chunk)
            try:
                await asyncio.wait_for(sender.writer.drain(), 0.5)
            except TimeoutError:
                break  # backpressure reached the sender
        conn = relay._conns[stuck_id]
        held = sum(len(d) for d in conn.queue)
        buffered = conn.transport.get_write_buffer_size() if conn.transport else 0
        assert offered < 12_000_000  # the sender was held back before it was done
        assert held + buffered < 2 * 1024 * 1024, (held, buffered)
        assert relay.participant_count == 2  # nobody dropped before the grace
        stuck.close()
        sender.close()


async def test_a_send_at_the_cap_is_delivered_within_the_receivers_cap(keys: list[bytes]) -> None:
    """A send of exactly MAX_SEND_FRAME becomes a deliver that fits MAX_FRAME
    (it used to be 5 bytes over, and the receiver dropped the relay); one byte
    more closes the sender's connection, and the receiver is untouched."""
    from p2pchat.config import MAX_FRAME, MAX_SEND_FRAME
    from p2pchat.proto.framing import PREFIX_LEN
    from p2pchat.proto.messages import encode_deliver

    async with running() as (_, port):
        alice, wa = await register(port, "alice", keys[0])
        bob, wb = await register(port, "bob", keys[1])
        await alice.recv()  # joined bob
        overhead = len(encode(Send(wb.peer_id, b""))) - PREFIX_LEN
        alice.send(Send(wb.peer_id, b"x" * (MAX_SEND_FRAME - overhead - 3)))  # bin 32 header
        frame = encode(Send(wb.peer_id, b"x" * (MAX_SEND_FRAME - overhead - 3)))
        assert len(frame) - PREFIX_LEN == MAX_SEND_FRAME
        got = await bob.recv()
        assert isinstance(got, Deliver) and got.sender == wa.peer_id
        assert len(encode_deliver(wa.peer_id, got.payload)) - PREFIX_LEN <= MAX_FRAME
        alice.writer.write(encode(Send(wb.peer_id, b"x" * (MAX_SEND_FRAME - overhead - 2))))
        assert await alice.closed()
        bob.send(Ping(7))
        frame = await bob.recv()
        if frame == Left(wa.peer_id):  # alice's connection closed: bob is told, first
            frame = await bob.recv()
        assert frame == Pong(7)


async def test_a_flood_holds_the_flooders_back_and_never_drops_the_receiver(
    keys: list[bytes],
) -> None:
    """Four senders blast 40 frames of 256 KiB each at bob (who reads): the
    relay stops reading from them while bob's buffer is full instead of
    dropping bob, and carol's one message still gets through in its turn."""
    async with running() as (relay, port):
        bob, wb = await register(port, "bob", keys[0])
        carol, _ = await register(port, "carol", keys[1])
        flooders = [(await register(port, f"f{i}", keys[2]))[0] for i in range(4)]
        chunk = b"x" * (256 * 1024)
        for f in flooders:
            for _ in range(40):  # bounded: 40 MiB in all
                f.send(Send(wb.peer_id, chunk))
        carol.send(Send(wb.peer_id, b"carol's turn"))
        got, carol_at, frames = 0, None, 0
        while got < 160 or carol_at is None:
            frame = await bob.recv()
            if isinstance(frame, Deliver):
                frames += 1
                if frame.payload == b"carol's turn":
                    carol_at = frames
                else:
                    assert frame.payload == chunk
                    got += 1
        assert carol_at < 160, carol_at  # not after every flood frame
        assert wb.peer_id in relay._conns  # bob was never dropped
        bob.send(Ping(1))
        frame = await bob.recv()
        while not isinstance(frame, Pong):
            frame = await bob.recv()


async def test_a_receiver_that_takes_nothing_is_dropped_and_its_senders_released(
    keys: list[bytes],
) -> None:
    limits = RelayLimits(max_write_backlog=64 * 1024, backlog_grace=0.5)
    async with running(limits) as (relay, port):
        dave, wd = await register(port, "dave", keys[0])
        dave.writer.transport.pause_reading()  # dave reads nothing, ever
        alice, _ = await register(port, "alice", keys[1])
        for _ in range(64):  # bounded: 16 MiB towards dave, far more than buffers hold
            alice.send(Send(wd.peer_id, b"y" * (256 * 1024)))
        left = await alice.recv()
        while not (isinstance(left, Left) and left.peer_id == wd.peer_id):
            left = await alice.recv()
        assert wd.peer_id not in relay._conns
        alice.send(Ping(5))  # alice reads again: her held frames were for dave only
        frame = await alice.recv()
        while not isinstance(frame, Pong):
            frame = await alice.recv()


async def test_the_hosts_own_participant_is_never_dropped_for_reading_slowly(
    keys: list[bytes],
) -> None:
    limits = RelayLimits(max_write_backlog=64 * 1024, backlog_grace=0.2)
    async with running(limits, owner=keys[0]) as (relay, port):
        host, wh = await register(port, "host", keys[0])
        host.writer.transport.pause_reading()  # a slow host participant
        alice, _ = await register(port, "alice", keys[1])
        for _ in range(16):  # 4 MiB towards the host
            alice.send(Send(wh.peer_id, b"y" * (256 * 1024)))
        # nothing to await for "nothing happens": three grace periods pass
        await asyncio.sleep(0.6)
        assert wh.peer_id in relay._conns  # a participant with another key would be gone
        host.writer.transport.resume_reading()
        got = 0
        while got < 16:
            if isinstance(await host.recv(), Deliver):
                got += 1


# ---------------------------------------------------------------- who may register


async def test_registration_needs_the_private_key(
    keys: list[bytes], rsa_keys: tuple[rsa.RSAPrivateKey, ...]
) -> None:
    async with running() as (relay, port):
        # mallory names alice's public key (every member sees it) but cannot decrypt
        mallory = await Client.connect(port)
        mallory.writer.write(encode(Hello((1,), "alice", keys[0])))
        challenge = await mallory.recv()
        assert isinstance(challenge, Challenge)
        # the challenge is no handshake ciphertext: the empty label does not open it
        assert oaep_decrypt(rsa_keys[0], challenge.c) is None
        mallory.send(Proof(b"\0" * 32))
        refused = await mallory.recv()
        assert refused == ErrorFrame("the proof does not match the key in hello", ErrorCode.KEY)
        assert await mallory.closed() and relay.participant_count == 0
        # nothing but the proof is accepted while the challenge is out
        early = await Client.connect(port)
        early.writer.write(encode(Hello((1,), "alice", keys[0])))
        assert isinstance(await early.recv(), Challenge)
        early.send(Send(1, b"\x02x"))
        assert await early.closed() and relay.participant_count == 0
        # and the real alice gets in
        _, welcome = await register(port, "alice", keys[0])
        assert welcome.peer_id > 0 and relay.participant_count == 1


async def test_a_handshake_ciphertext_is_not_a_registration_answer(
    rsa_keys: tuple[rsa.RSAPrivateKey, ...],
) -> None:
    # the other direction: a relay handing a participant a handshake's wrapped
    # secret (empty label) as a "challenge" learns nothing
    wrapped = rsa_keys[0].public_key().encrypt(b"s" * 32, OAEP_PADDING)
    assert answer_challenge(rsa_keys[0], wrapped) is None
    secret = b"k" * 32
    assert answer_challenge(rsa_keys[0], make_challenge(rsa_keys[0].public_key(), secret)) == (
        secret
    )


async def test_one_key_registers_a_bounded_number_of_times(keys: list[bytes]) -> None:
    async with running(RelayLimits(max_per_key=2)) as (relay, port):
        first, w1 = await register(port, "m", keys[1])
        second, _ = await register(port, "m", keys[1])
        _, w3 = await register(port, "m", keys[1])  # replaces the oldest
        assert await first.closed()
        assert relay.participant_count == 2
        assert Left(w1.peer_id) in [await second.recv() for _ in range(2)]
        assert w1.peer_id not in {p.peer_id for p in w3.peers}


async def test_the_last_places_are_kept_for_pinned_keys(keys: list[bytes]) -> None:
    limits = RelayLimits(max_participants=4, reserved_slots=1, max_per_key=8)
    relay = Relay(limits, pinned=lambda key: key == keys[2])
    (_, port), *_ = await relay.async_start(["127.0.0.1"], 0)
    try:
        held = [await register(port, f"stranger{i}", keys[1]) for i in range(3)]
        late = await Client.connect(port)
        late.send(Hello((1,), "stranger3", keys[1]))
        refused = await late.recv()
        assert isinstance(refused, ErrorFrame) and refused.code is ErrorCode.FULL
        assert "kept for people the host knows" in refused.reason
        _, welcome = await register(port, "friend", keys[2])  # pinned: the kept place
        assert len(welcome.peers) == len(held) and relay.participant_count == 4
    finally:
        await relay.async_close()


async def test_caps_per_source_address(keys: list[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    from p2pchat.net import relay as relay_module

    # every test connection comes from 127.0.0.1, which is never capped: count it
    monkeypatch.setattr(relay_module, "_is_own", lambda address: False)
    limits = RelayLimits(max_per_source=2, max_unregistered_per_source=2, max_per_key=8)
    async with running(limits) as (relay, port):
        held = [await register(port, "a", keys[0]), await register(port, "b", keys[1])]
        third = await Client.connect(port)
        third.send(Hello((1,), "c", keys[2]))
        assert await third.recv() == ErrorFrame(
            "too many participants from 127.0.0.1", ErrorCode.FULL
        )
        idle = [await Client.connect(port) for _ in range(3)]
        assert await idle[0].closed()  # the oldest from that address
        assert relay.unregistered_count <= 2 and relay.participant_count == len(held)


async def test_frames_other_than_sends_are_counted(keys: list[bytes]) -> None:
    limits = RelayLimits(control_rate=50, control_burst=100)
    async with running(limits) as (relay, port):
        steady, _ = await register(port, "steady", keys[0])
        steady.writer.write(b"".join(encode(Ping(i)) for i in range(150)))  # over the burst
        pongs = [await steady.recv() for _ in range(150)]  # reading pauses; nothing is lost
        assert pongs == [Pong(i) for i in range(150)]
        flood, _ = await register(port, "flood", keys[1])
        flood.writer.write(b"".join(encode(Ping(i)) for i in range(1000)))  # 1,000 at once
        assert await flood.closed()
        assert relay.participant_count == 1


async def test_registrations_and_bytes_are_rated_per_source(
    keys: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    from p2pchat.net import relay as relay_module

    monkeypatch.setattr(relay_module, "_is_own", lambda address: False)
    limits = RelayLimits(
        source_connect_rate=0.01,
        source_connect_burst=3,
        source_rate_bytes=200_000,
        source_rate_burst=20_000,
        max_per_key=8,
    )
    async with running(limits) as (_relay, port):
        sink, ws = await register(port, "sink", keys[0])
        senders = [(await register(port, name, keys[1]))[0] for name in ("one", "two")]
        fourth = await Client.connect(port)  # refused before it can send anything
        assert await fourth.recv() == ErrorFrame(
            "too many connections from 127.0.0.1: retry later", ErrorCode.FULL
        )
        # two connections of one address share its rate: 600 kB at 200 kB/s
        # (the per-connection rate is the default 1 GiB/s: it never waits)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for client in senders:
            for _ in range(30):
                client.send(Send(ws.peer_id, b"\x02" + bytes(9_999)))
        received = 0
        while received < 60:
            if isinstance(await sink.recv(), Deliver):
                received += 1
        # about (600 kB - the 20 kB burst) / 200 kB/s; a read takes up to
        # 256 KiB before the pause, so at least 2 s whatever the chunking
        assert loop.time() - t0 >= 2.0


async def test_a_flood_of_bad_connections_is_one_warning_not_one_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # each closing is logged at INFO (the log file has them all); the host's
    # screen shows WARNING and above: one line, not one per attacker
    caplog.set_level(logging.INFO, "p2pchat.net.relay")
    async with running() as (_relay, port):
        for _ in range(30):  # bounded
            bad = await Client.connect(port)
            bad.writer.write(b"\x00\x00\x00\x00")
            assert await bad.closed()
    closing = [r for r in caplog.records if r.getMessage().startswith("relay: closing")]
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(closing) == 30 and all(r.levelno == logging.INFO for r in closing)
    assert len(warned) == 1 and "empty frame" in warned[0].getMessage()
