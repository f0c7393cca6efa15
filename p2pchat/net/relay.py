"""The relay role: routes opaque envelopes between registered participants.

The relay sees registration (names, public keys) and envelope routing
metadata; payloads are end-to-end handshake messages and records it cannot
read. Membership decisions live in :class:`Roster` (pure); :class:`Relay` is
the asyncio shell that moves bytes. A connection that sends anything
malformed is closed at once and only that connection is affected.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from p2pchat.config import MAX_FRAME_UNREGISTERED, MAX_SEND_FRAME, SUPPORTED_VERSIONS
from p2pchat.errors import P2PChatError, RemoteProtocolError
from p2pchat.proto.bucket import TokenBucket
from p2pchat.proto.framing import FrameDecoder
from p2pchat.proto.keys import load_peer_key
from p2pchat.proto.messages import (
    PROOF_LEN,
    Bye,
    Challenge,
    ErrorCode,
    ErrorFrame,
    Frame,
    Hello,
    Joined,
    Left,
    PeerEntry,
    Ping,
    Pong,
    Proof,
    Send,
    Welcome,
    encode,
    encode_deliver,
    parse_to_relay,
)
from p2pchat.proto.register import check_proof, make_challenge

__all__ = ["Relay", "RelayLimits", "Roster"]

log = logging.getLogger("p2pchat.net.relay")

#: seconds between two warnings that the relay closed misbehaving connections
CLOSED_WARN_EVERY = 10.0
#: seconds a connection told why it is closed may take to close its side
TOLD_GRACE = 2.0


@dataclass(frozen=True, slots=True)
class RelayLimits:
    """Every relay limit, with its default (docs/PROTOCOL.md lists them)."""

    max_participants: int = 64
    max_unregistered: int = 64
    #: of ``max_participants``, the slots only keys the host has pinned may
    #: take (at most a quarter of ``max_participants``)
    reserved_slots: int = 16
    #: registrations of one key at most; a newer one replaces the oldest (a
    #: reconnect before the old connection is seen dead; ``send`` beside a chat)
    max_per_key: int = 4
    #: registered participants from one address at most (loopback: no cap)
    max_per_source: int = 8
    #: unregistered connections from one address at most (its oldest is evicted)
    max_unregistered_per_source: int = 8
    #: to send ``hello`` and then the ``proof``
    register_timeout: float = 10.0
    #: a destination's write buffer above this many bytes holds back (stops
    #: reading) the connections that send to it, until it drains below a quarter
    max_write_backlog: int = 1024 * 1024
    #: a participant whose buffer does not drain below that quarter within
    #: this many seconds is dropped: for its own slow reading, never because
    #: others send it much (they wait)
    backlog_grace: float = 10.0
    #: a registered participant quiet this long is pinged ...
    idle_ping: float = 20.0
    #: ... and dropped when it has sent nothing for this long
    idle_timeout: float = 60.0
    #: per-connection rate: bytes per second, and the burst allowed above it;
    #: over it the relay stops reading from that connection until it is back
    #: under (TCP flow control slows the sender; nobody else waits)
    rate_bytes: float = 1024 * 1024 * 1024
    rate_burst: float = 64 * 1024 * 1024
    #: frames other than canonical sends (ping, pong, hello, a send in another
    #: layout: each decoded field by field) per second per connection, and the
    #: burst; over it reading pauses, and past twice the burst at once the
    #: connection is closed
    control_rate: float = 200.0
    control_burst: float = 400.0
    #: every connection from one address together (not this machine's own
    #: 127.0.0.1/::1): bytes per second and burst, about what a 2 Gbit/s
    #: link carries; over it reading pauses for all of them
    source_rate_bytes: float = 256 * 1024 * 1024
    source_rate_burst: float = 32 * 1024 * 1024
    #: new connections (each may cost the relay a public-key operation for its
    #: challenge) per second from one address, and the burst; over it one is
    #: refused at once
    source_connect_rate: float = 20.0
    source_connect_burst: float = 40.0


@dataclass
class Roster:
    """Who is registered. Pure: no I/O, ids are never reused within one relay."""

    owner_key: bytes | None = None
    members: dict[int, PeerEntry] = field(default_factory=dict)
    owner_id: int | None = None
    _next_id: int = 1

    def add(self, name: str, key: bytes) -> PeerEntry:
        entry = PeerEntry(self._next_id, name, key)
        self._next_id += 1
        if self.owner_id is None and self.owner_key is not None and key == self.owner_key:
            self.owner_id = entry.peer_id
        self.members[entry.peer_id] = entry
        return entry

    def remove(self, peer_id: int) -> PeerEntry | None:
        if peer_id == self.owner_id:
            self.owner_id = None
        return self.members.pop(peer_id, None)

    def others(self, peer_id: int) -> list[PeerEntry]:
        return [p for pid, p in self.members.items() if pid != peer_id]


def _is_own(address: str) -> bool:
    """This machine's own loopback address (127.0.0.1, ::1): its local tools
    (another identity, ``p2pchat send``) are not counted per source. Other
    127.0.0.0/8 addresses are sources like any other."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip in (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"))


class _SourceBuckets(NamedTuple):
    rate: TokenBucket  #: bytes per second over all its connections
    connections: TokenBucket  #: new connections per second


class _Sources:
    """Per source address: the bytes it sends and the registrations it starts,
    each a token bucket (its own machine is never counted). At most
    ``MAX_SOURCES`` are remembered, the least recently seen forgotten first."""

    MAX_SOURCES = 4096

    def __init__(self, limits: RelayLimits) -> None:
        self.limits = limits
        self._buckets: OrderedDict[str, _SourceBuckets] = OrderedDict()

    def of(self, source: str, now: float) -> _SourceBuckets:
        pair = self._buckets.get(source)
        if pair is None:
            limits = self.limits
            pair = _SourceBuckets(
                TokenBucket(limits.source_rate_bytes, limits.source_rate_burst, now),
                TokenBucket(limits.source_connect_rate, limits.source_connect_burst, now),
            )
            self._buckets[source] = pair
            while len(self._buckets) > self.MAX_SOURCES:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(source)
        return pair


def _negotiate(versions: Iterable[int]) -> int | None:
    common = set(versions) & set(SUPPORTED_VERSIONS)
    return max(common) if common else None


class _Conn(asyncio.Protocol):
    """One TCP connection to the relay."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(MAX_FRAME_UNREGISTERED, parse_to_relay)
        self.peer: PeerEntry | None = None
        self.label = "?"
        self.source = "?"  #: the peer's address: per-source caps count by it
        self.local = False  #: from this machine's own 127.0.0.1/::1 (no per-source cap)
        self.hello: Hello | None = None  #: its hello, while the challenge is out
        self.secret: bytes | None = None  #: what its proof must return
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False
        self.last_rx = time.monotonic()
        self.pinged = False
        limits = relay.limits
        self.bucket = TokenBucket(limits.rate_bytes, limits.rate_burst, self.last_rx)
        #: frames that are not canonical sends (decoded field by field)
        self.control = TokenBucket(limits.control_rate, limits.control_burst, self.last_rx)
        #: why reading from this connection is paused: "rate", or a destination
        #: it sends to that is congested (backpressure)
        self.holds: set[object] = set()
        self.full = False  #: our write buffer is over its high-water mark
        self.held: set[_Conn] = set()  #: senders held back because we are full
        self.queue: collections.deque[bytes] = collections.deque()  #: delivers waiting for us
        self._full_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        high = self.relay.limits.max_write_backlog
        transport.set_write_buffer_limits(high=high, low=high // 4)
        addr = transport.get_extra_info("peername")
        self.label = f"{addr[0]}:{addr[1]}" if addr else "?"
        if addr:
            self.source, self.local = str(addr[0]), _is_own(str(addr[0]))
        self.relay._accepted(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        now = time.monotonic()
        self.relay._meter(self, len(data), now)
        try:
            frames = self.decoder.feed(data)
            if frames:
                # only whole frames count as signs of life: a peer dribbling a
                # frame byte by byte is still dropped by the idle timeout
                self.last_rx = now
            for frame, fielded in frames:
                if fielded and self.relay._control(self, now):
                    return
                self._handle(frame)
                if self.closing:
                    return
        except RemoteProtocolError as exc:
            self.abort(f"protocol violation: {exc}")

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing and self.decoder.buffered:
            # the peer went away in the middle of a frame (a crash, or a probe):
            # nothing else would name this connection in the log
            log.info(
                "relay: %s ended in the middle of a frame (%d bytes of it received, %s)",
                self.describe(),
                self.decoder.buffered,
                "connection reset" if exc is not None else "closed by the peer",
            )
        self.closing = True
        if self.timer is not None:
            self.timer.cancel()
        self._unfull()
        self.queue.clear()
        self.relay._lost(self)

    def pause_writing(self) -> None:
        """Our buffer is over the high-water mark: senders to us are held back,
        and so are we (a peer that does not read our answers gets no more)."""
        self.full = True
        self.hold(self)
        if self._full_timer is None:
            grace = self.relay.limits.backlog_grace
            self._full_timer = asyncio.get_running_loop().call_later(grace, self._not_reading)

    def resume_writing(self) -> None:
        self.full = False
        self.release(self)
        if self._full_timer is not None:
            self._full_timer.cancel()
            self._full_timer = None
        self.relay._drain(self)

    def _not_reading(self) -> None:
        self._full_timer = None
        if self.full and not self.closing and not self._is_host():
            grace = self.relay.limits.backlog_grace
            self.abort(f"not reading: its buffer did not drain within {grace:g} s")

    def _is_host(self) -> bool:
        """The host's own participant (its key, from this machine): never
        dropped for reading slowly. It shares the relay's process, so dropping
        it would end the room; what waits for it stays bounded all the same
        (its senders are held back)."""
        owner = self.relay.roster.owner_key
        return self.local and self.peer is not None and owner is not None and self.peer.key == owner

    def _unfull(self) -> None:
        """Release every sender we held back (we are gone, or drained)."""
        if self._full_timer is not None:
            self._full_timer.cancel()
            self._full_timer = None
        held, self.held = self.held, set()
        for sender in held:
            sender.release(self)

    def hold(self, why: object) -> None:
        """Stop reading from this connection until every hold is released."""
        if not self.holds and self.transport is not None and not self.closing:
            self.transport.pause_reading()
        self.holds.add(why)

    def hold_for(self, why: str, seconds: float) -> None:
        """Stop reading for ``seconds`` (a rate's wait), unless already held so."""
        if seconds > 0 and why not in self.holds:
            self.hold(why)
            asyncio.get_running_loop().call_later(seconds, self.release, why)

    def release(self, why: object) -> None:
        if why in self.holds:
            self.holds.discard(why)
            if not self.holds and self.transport is not None and not self.closing:
                self.transport.resume_reading()

    # -- helpers

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(data)

    def describe(self) -> str:
        if self.peer is None:
            return f"connection {self.label} (unregistered)"
        return f"connection {self.label} (peer {self.peer.peer_id} {self.peer.name!r})"

    def abort(
        self, reason: str, *, tell: str | None = None, code: ErrorCode = ErrorCode.OTHER
    ) -> None:
        """Close this connection now; ``tell`` (with ``code``) is sent to the peer first."""
        if self.closing:
            return
        log.info("relay: closing %s: %s", self.describe(), reason)
        self.relay._closed_one(self.describe(), reason)
        if tell is not None and self.transport is not None:
            self.transport.write(encode(ErrorFrame(tell, code)))
        self.closing = True
        transport = self.transport
        if transport is None:
            return
        if tell is None:
            transport.abort()
        elif transport.can_write_eof():
            # the error frame, then our FIN; what the peer still sends is read
            # and dropped (closing a socket with unread input would send a
            # reset, which can destroy the error frame before it is read),
            # until it closes too, or TOLD_GRACE seconds
            transport.write_eof()
            asyncio.get_running_loop().call_later(TOLD_GRACE, transport.abort)
            self.relay._lost(self)  # out of the room now, whatever the peer does
        else:
            transport.close()  # flushes the error frame first

    def _handle(self, frame: Frame) -> None:
        if self.peer is None:
            if self.hello is None:
                if not isinstance(frame, Hello):
                    raise RemoteProtocolError(f"expected hello, got {type(frame).__name__}")
                self.relay._hello(self, frame)
            else:
                if not isinstance(frame, Proof):
                    raise RemoteProtocolError(f"expected proof, got {type(frame).__name__}")
                self.relay._proved(self, frame)
            return
        if isinstance(frame, Send):
            self.relay._route(self, frame)
        elif isinstance(frame, Ping):
            self.write(encode(Pong(frame.token)))
        elif isinstance(frame, Pong):
            pass
        elif isinstance(frame, Bye):
            log.info("relay: %s said goodbye", self.describe())
            self.closing = True
            if self.transport is not None:
                self.transport.close()
        else:
            raise RemoteProtocolError(f"unexpected {type(frame).__name__} from a participant")


class Relay:
    """The asyncio relay server."""

    def __init__(
        self,
        limits: RelayLimits | None = None,
        *,
        owner_key: bytes | None = None,
        pinned: Callable[[bytes], bool] | None = None,
    ):
        """``owner_key`` is the host's own key (its participant is the room's
        host); ``pinned`` says whether a key (SPKI DER) is one the host has
        pinned: only those may take the last ``reserved_slots``."""
        self.limits = limits or RelayLimits()
        self._pinned = pinned or (lambda key: False)
        self._sources = _Sources(self.limits)
        self._closed_count = 0  #: connections closed since the last warning
        self._closed_warned = -CLOSED_WARN_EVERY  #: when that warning was
        self.roster = Roster(owner_key=owner_key)
        self._conns: dict[int, _Conn] = {}
        self._unregistered: OrderedDict[_Conn, None] = OrderedDict()
        self._servers: list[asyncio.Server] = []
        self._idle_task: asyncio.Task[None] | None = None
        self.addresses: list[tuple[str, int]] = []

    # -- lifecycle

    async def async_start(self, hosts: list[str], port: int = 0) -> list[tuple[str, int]]:
        """Listen on each of ``hosts`` (one port for all: the first bind picks it
        when ``port`` is 0). Returns the (address, port) pairs served."""
        loop = asyncio.get_running_loop()
        for host in hosts:
            # a deep accept queue absorbs bursts of connections (the
            # unregistered cap and eviction then sort them out)
            server = await loop.create_server(lambda: _Conn(self), host, port, backlog=1024)
            self._servers.append(server)
            for sock in server.sockets:
                addr = sock.getsockname()
                port = addr[1]
                self.addresses.append((addr[0], addr[1]))
        if self._idle_task is None:
            self._idle_task = loop.create_task(self._idle_loop(), name="p2pchat-relay-idle")
        return self.addresses

    async def _idle_loop(self) -> None:
        """Ping quiet participants; drop the ones that stay silent."""
        limits = self.limits
        period = min(limits.idle_ping, limits.idle_timeout) / 2
        token = 0
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for conn in list(self._conns.values()):
                quiet = now - conn.last_rx
                if quiet >= limits.idle_timeout:
                    why = f"silent for {quiet:.0f} s, not answering pings"
                    conn.abort(why, tell=why)
                elif quiet >= limits.idle_ping:
                    token += 1
                    conn.write(encode(Ping(token)))

    def _closed_one(self, who: str, reason: str) -> None:
        """A connection was closed for what it did: each is logged at INFO;
        a WARNING says so at most every ``CLOSED_WARN_EVERY`` seconds, so
        that a flood of bad connections cannot flood the host's screen."""
        self._closed_count += 1
        now = time.monotonic()
        if now - self._closed_warned >= CLOSED_WARN_EVERY:
            more = (
                f" ({self._closed_count - 1} more since the last such line)"
                if (self._closed_count > 1)
                else ""
            )
            log.warning("relay: closed %s: %s%s", who, reason, more)
            self._closed_count, self._closed_warned = 0, now

    def _control(self, conn: _Conn, now: float) -> bool:
        """Count one frame that is not a canonical send; True if ``conn`` was
        closed for sending too many at once."""
        wait = conn.control.charge(now, 1.0)
        if conn.control.tokens < -self.limits.control_burst:
            conn.abort(
                f"over {2 * self.limits.control_burst:g} frames that are not routed sends at once"
            )
            return True
        conn.hold_for("control", wait)
        return False

    def _meter(self, conn: _Conn, size: int, now: float) -> None:
        """Token bucket per connection and per source; over either rate, pause
        reading it."""
        wait = conn.bucket.charge(now, size)
        if not conn.local:
            wait = max(wait, self._sources.of(conn.source, now).rate.charge(now, size))
        conn.hold_for("rate", wait)

    async def async_close(self) -> None:
        if self._idle_task is not None:
            self._idle_task.cancel()
        for server in self._servers:
            server.close()
        for conn in [*self._conns.values(), *self._unregistered]:
            conn.closing = True
            if conn.transport is not None:
                conn.transport.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    @property
    def participant_count(self) -> int:
        return len(self._conns)

    @property
    def unregistered_count(self) -> int:
        return len(self._unregistered)

    # -- called by connections

    def _accepted(self, conn: _Conn) -> None:
        now = time.monotonic()
        if not conn.local and not self._sources.of(conn.source, now).connections.take(now):
            # before anything is read: a flood of connections costs an accept each
            why = f"too many connections from {conn.source}: retry later"
            conn.abort(why, tell=why, code=ErrorCode.FULL)
            return
        self._unregistered[conn] = None
        if not conn.local:
            mine = [c for c in self._unregistered if c.source == conn.source]
            for oldest in mine[: max(0, len(mine) - self.limits.max_unregistered_per_source)]:
                self._unregistered.pop(oldest)
                oldest.abort("too many unregistered connections from its address: the oldest")
        while len(self._unregistered) > self.limits.max_unregistered:
            oldest = next(iter(self._unregistered))
            self._unregistered.pop(oldest)
            oldest.abort("too many unregistered connections: evicting the oldest")
        loop = asyncio.get_running_loop()
        conn.timer = loop.call_later(
            self.limits.register_timeout,
            conn.abort,
            f"did not register within {self.limits.register_timeout:g} s",
        )

    def _lost(self, conn: _Conn) -> None:
        self._unregistered.pop(conn, None)
        if conn.peer is None:
            return
        peer_id = conn.peer.peer_id
        if self._conns.get(peer_id) is conn:
            del self._conns[peer_id]
            self.roster.remove(peer_id)
            log.info("relay: %s left", conn.describe())
            self._broadcast(encode(Left(peer_id)), exclude=peer_id)

    def _refusal(self, conn: _Conn, key: bytes) -> str | None:
        """Why ``conn`` may not register ``key`` now (None: it may)."""
        limits = self.limits
        same_key = sum(1 for c in self._conns.values() if c.peer and c.peer.key == key)
        count = len(self._conns) - (1 if same_key >= limits.max_per_key else 0)
        if count >= limits.max_participants:
            return "the room is full"
        host = self.roster.owner_key is not None and key == self.roster.owner_key
        reserved = min(limits.reserved_slots, limits.max_participants // 4)
        if count >= limits.max_participants - reserved and not (host or self._pinned(key)):
            return "the room is full (the last places are kept for people the host knows)"
        if not conn.local:
            same = sum(1 for c in self._conns.values() if c.source == conn.source)
            if same >= limits.max_per_source:
                return f"too many participants from {conn.source}"
        return None

    def _hello(self, conn: _Conn, hello: Hello) -> None:
        """Check what can be checked for free, then challenge the key."""
        if _negotiate(hello.versions) is None:
            conn.abort(
                f"no common version in {list(hello.versions)}",
                tell=f"incompatible version: relay speaks {list(SUPPORTED_VERSIONS)}",
                code=ErrorCode.VERSION,
            )
            return
        try:
            key = load_peer_key(hello.key)
        except P2PChatError as exc:
            why = f"bad identity key: {exc}"
            conn.abort(why, tell=why, code=ErrorCode.KEY)
            return
        refusal = self._refusal(conn, hello.key)
        if refusal is not None:
            conn.abort(refusal, tell=refusal, code=ErrorCode.FULL)
            return
        conn.hello, conn.secret = hello, os.urandom(PROOF_LEN)
        conn.write(encode(Challenge(make_challenge(key, conn.secret))))

    def _proved(self, conn: _Conn, proof: Proof) -> None:
        hello, secret = conn.hello, conn.secret
        assert hello is not None and secret is not None
        conn.secret = None
        if not check_proof(secret, proof.n):
            why = "the proof does not match the key in hello"
            conn.abort(why, tell=why, code=ErrorCode.KEY)
            return
        refusal = self._refusal(conn, hello.key)  # (the room may have changed meanwhile)
        if refusal is not None:
            conn.abort(refusal, tell=refusal, code=ErrorCode.FULL)
            return
        same = [c for c in self._conns.values() if c.peer and c.peer.key == hello.key]
        for old in same[: max(0, len(same) + 1 - self.limits.max_per_key)]:
            # the newest proven registration replaces the oldest of that key
            why = "replaced by a newer registration of the same key"
            old.abort(why, tell=why, code=ErrorCode.KEY)
            self._lost(old)
        self._register(conn, hello)

    def _register(self, conn: _Conn, hello: Hello) -> None:
        version = _negotiate(hello.versions)
        assert version is not None
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        self._unregistered.pop(conn, None)
        conn.hello = None
        others = list(self.roster.members.values())
        entry = self.roster.add(hello.name, hello.key)
        conn.peer = entry
        conn.decoder.max_frame = MAX_SEND_FRAME  # its deliver then fits MAX_FRAME
        self._conns[entry.peer_id] = conn
        log.info("relay: %s registered", conn.describe())
        conn.write(encode(Welcome(version, entry.peer_id, tuple(others), self.roster.owner_id)))
        self._broadcast(encode(Joined(entry)), exclude=entry.peer_id)

    def _route(self, conn: _Conn, send: Send) -> None:
        assert conn.peer is not None
        target = self._conns.get(send.to)
        if target is None or send.to == conn.peer.peer_id:
            # the target is gone (a race with its Left): say so again
            conn.write(encode(Left(send.to)))
            return
        data = encode_deliver(conn.peer.peer_id, send.payload)
        if target.full or target.queue:
            # backpressure: the sender waits (its reading paused) until the
            # target drains; what it already sent waits here, in arrival order,
            # so every sender to that target gets its turn
            target.queue.append(data)
            target.held.add(conn)
            conn.hold(target)
            return
        target.write(data)
        if target.full:
            target.held.add(conn)
            conn.hold(target)

    def _drain(self, target: _Conn) -> None:
        """``target`` took what it had: write what waited for it, then let the
        senders it held back read again."""
        while target.queue and not target.full and not target.closing:
            target.write(target.queue.popleft())
        if not target.queue and not target.full:
            target._unfull()

    def _broadcast(self, data: bytes, *, exclude: int | None = None) -> None:
        for peer_id, conn in list(self._conns.items()):
            if peer_id == exclude:
                continue
            if conn.queue:
                conn.queue.append(data)  # after what waits: a Left never overtakes its delivers
            else:
                conn.write(data)
