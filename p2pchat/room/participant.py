"""A participant: one connection to a relay, one end-to-end session per peer.

The participant registers with the relay and then only moves bytes: it reads
frames, hands each envelope to its :class:`~p2pchat.room.sessions.Sessions`
(handshakes, trust, messages; one sans-I/O :class:`~p2pchat.room.peer.Peer`
each), writes what they produce, and arms one timer for the earliest peer
deadline (keepalive probe, presumed gone, handshake too slow), in the manner
of aioquic's asyncio adapter. What happens goes to the room's bus; it never
prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Protocol

from p2pchat.config import KEEPALIVE_DEAD, KEEPALIVE_INTERVAL, MAX_FRAME, SUPPORTED_VERSIONS
from p2pchat.errors import (
    BrokenConnectionError,
    ClosedConnectionError,
    IncompatibleVersionError,
    LocalProtocolError,
    P2PChatError,
    RemoteProtocolError,
)
from p2pchat.proto.app import AppMessage, Chat, FileMessage, KeepAlive
from p2pchat.proto.framing import FrameDecoder
from p2pchat.proto.keys import format_fingerprint
from p2pchat.proto.messages import (
    Bye,
    Challenge,
    Deliver,
    ErrorCode,
    ErrorFrame,
    Hello,
    Joined,
    Left,
    Ping,
    Pong,
    Proof,
    Welcome,
    check_text,
    encode,
    parse_body,
)
from p2pchat.proto.register import answer_challenge
from p2pchat.proto.text import clean_reason
from p2pchat.room.bus import EventBus
from p2pchat.room.delivery import Missing, missing, owed_to
from p2pchat.room.events import Disconnected, Event, PeerInfo, PeerRefused, RefusalKind
from p2pchat.room.peer import Due, PeerState, Step
from p2pchat.room.sessions import Sessions
from p2pchat.store.identity import Identity, TrustStore
from p2pchat.store.outbox import Outbox

__all__ = ["BULK_WRITE_HIGH", "FileHandler", "Participant"]

log = logging.getLogger("p2pchat.room.participant")

#: The connection's write buffer above which bulk data (file chunks) waits;
#: chat never waits, so it only ever queues behind this much.
BULK_WRITE_HIGH = 64 * 1024
#: A timer never fires sooner than this after the last (seconds).
_MIN_TIMER = 0.001
#: Leaving: how long each step of letting the connection go may take (seconds).
CLOSE_GRACE = 1.0


class FileHandler(Protocol):
    """What a participant tells the file-transfer service
    (:class:`p2pchat.room.transfers.FileTransfers`)."""

    def session_ready(self, participant: Participant, peer: PeerInfo) -> None:
        """A session with ``peer`` is up (unfinished transfers to it are offered again)."""

    def session_lost(self, participant: Participant, peer_id: int) -> None:
        """The session with ``peer_id`` ended (its transfers pause)."""

    async def async_on_message(
        self, participant: Participant, peer: PeerInfo, msg: FileMessage
    ) -> None:
        """A file message from ``peer``. Awaited in order: writing a chunk to disk
        holds the connection's reader, which is the receiver's back-pressure."""


async def register(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    decoder: FrameDecoder,
    identity: Identity,
) -> tuple[Welcome, list[object]]:
    """After our hello: answer the relay's challenge (once, with the private
    key, off the loop: on a host that loop is the relay's), then wait for the
    welcome. Returns it and the frames that came behind it in the same read."""
    challenged = False
    while True:
        data = await reader.read(65536)
        if not data:
            raise BrokenConnectionError("the host closed the connection during registration")
        frames = decoder.feed(data)
        while frames:
            first, frames = frames[0], frames[1:]
            if isinstance(first, ErrorFrame):
                if first.code is ErrorCode.VERSION:
                    raise IncompatibleVersionError(f"the host refused us: {first.reason}")
                raise ClosedConnectionError(f"the host refused us: {first.reason}")
            if isinstance(first, Challenge) and not challenged:
                challenged = True
                proof = await asyncio.get_running_loop().run_in_executor(
                    None, answer_challenge, identity.private_key, first.c
                )
                if proof is None:
                    raise RemoteProtocolError("the relay's challenge is not for our key")
                writer.write(encode(Proof(proof)))
                continue
            if not isinstance(first, Welcome):
                raise RemoteProtocolError("the relay did not answer our hello with a welcome")
            return first, frames


async def connect_and_register(
    host: str,
    port: int,
    timeout: float,
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
    decoder: FrameDecoder,
    identity: Identity,
    name: str,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Welcome, list[object]]:
    """Open the TCP connection (or use ``streams``, one already open to it),
    say hello and register (see :func:`register`); the connection is closed
    if that fails. Returns the streams, the welcome and the frames behind it."""
    if streams is None:
        streams = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    reader, writer = streams
    # bulk data waits above this (async_writable); chat is written at once
    writer.transport.set_write_buffer_limits(high=BULK_WRITE_HIGH)
    try:
        writer.write(encode(Hello(SUPPORTED_VERSIONS, name, identity.public_der)))
        welcome, early = await asyncio.wait_for(
            register(reader, writer, decoder, identity), timeout
        )
    except BaseException:
        writer.close()
        raise
    if welcome.version not in SUPPORTED_VERSIONS:
        writer.close()
        raise IncompatibleVersionError(
            f"the host chose protocol version {welcome.version}, which we do not speak"
        )
    return reader, writer, welcome, early


async def let_go(writer: asyncio.StreamWriter, reading: asyncio.Task[None] | None) -> None:
    """After our goodbyes and bye: our FIN once they are out, then ``reading``
    (the reader task) reads what still comes until the relay closes (it does
    on our bye), at most ``CLOSE_GRACE`` s each. Closing with unread input (a
    peer's acks keep coming during a transfer) would reset the connection,
    and the reset destroys what is still unsent: the goodbyes behind the file
    data, so the others would see us drop instead of leave (seen by hand)."""
    with contextlib.suppress(ConnectionError, OSError, TimeoutError):
        await asyncio.wait_for(writer.drain(), CLOSE_GRACE)
        if writer.can_write_eof():
            writer.write_eof()
        if reading is not None:
            await asyncio.wait_for(asyncio.shield(reading), CLOSE_GRACE)
    writer.close()
    with contextlib.suppress(ConnectionError, OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), CLOSE_GRACE)


class Participant:
    """One participant's connection to a relay and its end-to-end sessions."""

    def __init__(
        self,
        identity: Identity,
        name: str,
        trust: TrustStore,
        bus: EventBus[Event],
        *,
        require_known: bool = False,
        expected_host: bytes | None = None,
        outbox: Outbox | None = None,
        keepalive: float = KEEPALIVE_INTERVAL,
        dead_after: float = KEEPALIVE_DEAD,
        files: FileHandler | None = None,
    ) -> None:
        self.identity, self.name, self.trust, self.bus = identity, name, trust, bus
        self.require_known = require_known
        self.expected_host = expected_host
        self.files = files
        self.outbox = outbox if outbox is not None else Outbox()
        #: peers pinned before this session: their seen ids are kept in full; a
        #: first contact's go to the small table (throw-away identities cannot
        #: push out a friend's)
        self.known_peers: set[bytes] = set()
        self.outbox.is_known = self.known_peers.__contains__
        self.sessions = Sessions(self)
        self.outbox.on_saved = self.sessions.flush_acks
        self.keepalive, self.dead_after = keepalive, dead_after
        self._clock = _Clock(self)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        # the 4 KiB pre-registration cap is the relay's; a welcome may list many peers
        self._decoder = FrameDecoder(MAX_FRAME, parse_body)
        self._early: list[object] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._shut = False  #: our bye is written (leaving): nothing is written after it
        self._relay_said = ""  #: the relay's error frame, if it sent one after we registered
        self.my_id: int | None = None
        self.host_id: int | None = None
        self.disconnected: Disconnected | None = None

    # ------------------------------------------------------------ connect

    async def async_connect(
        self,
        host: str,
        port: int,
        timeout: float,
        streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None,
    ) -> None:
        """Open the TCP connection (or use ``streams``, one already open to it),
        register, and start the reader task.
        Raises ConnectionError/OSError/TimeoutError or a P2PChatError."""
        self._decoder = FrameDecoder(MAX_FRAME, parse_body)  # nothing left from an earlier try
        self._reader, self._writer, welcome, self._early = await connect_and_register(
            host, port, timeout, streams, self._decoder, self.identity, self.name
        )
        self.my_id, self.host_id = welcome.peer_id, welcome.host
        for entry in welcome.peers:
            self.sessions.add(entry)
        self.outbox.last_known = {p.info.fingerprint for p in self.sessions.peers.values()}
        self._task = asyncio.get_running_loop().create_task(self._run(), name="p2pchat-participant")
        # we joined last: we initiate with everyone already here
        for peer in list(self.sessions.peers.values()):
            self.sessions.handshakes.start_initiator(peer)

    # ------------------------------------------------------------ public API

    @property
    def peers(self) -> list[PeerInfo]:
        return [p.info for p in self.sessions.peers.values() if p.state is not PeerState.GONE]

    @property
    def refusals(self) -> list[PeerRefused]:
        """The last 64 peers refused, in order."""
        return self.sessions.refusals

    @property
    def host_said_goodbye(self) -> bool:
        """The host ended the chat on purpose (authenticated close), not a drop."""
        return self.sessions.host_said_goodbye

    @property
    def host_proven(self) -> bool:
        return self.sessions.host_proven

    def peer_sas(self, peer_id: int) -> str | None:
        peer = self.sessions.peers.get(peer_id)
        return peer.result.sas if peer and peer.result else None

    def refuse(self, peer_id: int, reason: str, kind: RefusalKind) -> None:
        """Refuse ``peer_id`` now, telling it why (an authenticated ``refuse``)."""
        peer = self.sessions.peers.get(peer_id)
        if peer is not None:
            self.sessions.refuse(peer, reason, mismatch=False, kind=kind)

    def is_ready(self, peer_id: int) -> bool:
        peer = self.sessions.peers.get(peer_id)
        return peer is not None and peer.ready

    @property
    def closing(self) -> bool:
        """We are closing it (:meth:`async_close`), not the other end."""
        return self._closing

    @property
    def connected(self) -> bool:
        return self._task is not None and self.disconnected is None and not self._closing

    def send_app(self, peer_id: int, msg: AppMessage) -> bool:
        """Seal ``msg`` for ``peer_id`` and write it now; False if there is no
        session with that peer (nothing is queued)."""
        peer = self.sessions.peers.get(peer_id)
        if peer is None or not peer.ready or not self.connected:
            return False
        try:
            self.sessions.send_app(peer, msg)
        except LocalProtocolError:
            return False
        return True

    async def async_writable(self) -> bool:
        """Wait until the connection's write buffer is below its low-water mark:
        what bulk data does before each chunk (chat never waits). False once
        the connection is gone."""
        writer = self._writer
        if writer is None or not self.connected:
            return False
        try:
            await writer.drain()
        except (ConnectionError, OSError):
            return False
        return self.connected

    def send_text(self, text: str, *, to: bytes | None = None) -> bytes:
        """Send ``text`` to every participant present now (while disconnected:
        to those present at the last connection), or only to the one with
        fingerprint ``to``; returns the message id. It stays in the outbox
        until each recipient has acknowledged it."""
        check_text(text, LocalProtocolError)  # the receiver would refuse us, not just it
        msg = Chat(os.urandom(16), text, direct=to is not None)
        peers = list(self.sessions.peers.values())
        recipients, failed = owed_to(
            peers, self.outbox, self.identity.fingerprint, connected=self.connected, to=to
        )
        self.outbox.add(msg.msg_id, text, recipients, direct=msg.direct, failed=failed)
        for peer in peers:
            if not peer.was_ready and not peer.ended and peer.info.fingerprint in recipients:
                peer.unproven.append(msg.msg_id)
        for peer in peers:
            if peer.ready and peer.info.fingerprint in recipients:
                self.sessions.send_app(peer, msg)
        self.bus.notify()
        return msg.msg_id

    def undelivered(self) -> dict[bytes, list[str]]:
        """Message ids some recipient has not acknowledged (pending, or failed
        for a refused one), with the names of those recipients."""
        out: dict[bytes, list[str]] = {}
        for msg in self.outbox.undelivered():
            out[msg.msg_id] = sorted(self.name_of(fp) for fp in msg.recipients | msg.failed.keys())
        return out

    def missing(self) -> list[Missing]:
        """Who has not acknowledged what: one entry per recipient, with the
        number of messages and why (refused, disconnected, no session yet...)."""
        return missing(self.outbox, list(self.sessions.peers.values()), self.name_of)

    def name_of(self, fp: bytes) -> str:
        for p in self.sessions.peers.values():
            if p.info.fingerprint == fp:
                return p.info.name
        return self._pinned_name(fp)

    def _pinned_name(self, fp: bytes) -> str:
        pin = self.trust.get(fp)
        return pin.name if pin is not None else format_fingerprint(fp)[:14]

    async def async_close(self) -> None:
        """Say goodbye to every peer (authenticated close) and to the relay, then close."""
        if self._closing:
            return
        self._closing = True
        self._clock.cancel()
        peers = list(self.sessions.peers.values())
        self.sessions.files_lost(*peers)
        self.outbox.save()  # sends the acks still waiting for it
        writer = self._writer
        if writer is not None and not writer.is_closing():
            for peer in peers:
                self.sessions.say_goodbye(peer)
            self.write(encode(Bye()))
            self._shut = True  # nothing after the bye: a late ack has nobody to go to
            await let_go(writer, self._task)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task  # its failure was reported when it happened
        await self.sessions.handshakes.async_close()
        self.outbox.save()

    # ------------------------------------------------------------ I/O for the sessions

    def write(self, data: bytes | bytearray) -> None:
        if self._writer is not None and not self._writer.is_closing() and not self._shut:
            self._writer.write(data)

    def rearm(self) -> None:
        """Arm the one timer for the earliest deadline of any peer."""
        self._clock.rearm()

    # ------------------------------------------------------------ reading

    async def _run(self) -> None:
        assert self._reader is not None
        reason, clean, cancelled = "", True, False
        try:
            for frame in self._early:
                await self._handle(frame)
            while True:
                data = await self._reader.read(65536)
                if not data:
                    break
                for obj in self._decoder.feed(data):
                    await self._handle(obj)
        except RemoteProtocolError as exc:
            reason, clean = f"the relay sent invalid data: {exc}", False
            log.warning("participant: %s", reason)
        except (ConnectionError, OSError) as exc:
            reason, clean = f"connection to the host lost ({exc.__class__.__name__})", False
        except P2PChatError as exc:  # e.g. the trust store became unreadable
            reason, clean = f"stopped: {exc}", False
            log.warning("participant: %s", reason)
        except Exception as exc:  # a bug: say so, with the traceback in the log
            reason, clean = f"internal error ({exc.__class__.__name__}); see the log", False
            log.error("participant: unexpected error", exc_info=True)
        except asyncio.CancelledError:  # the process is going down: nothing was lost
            cancelled = True
            raise
        finally:
            if self._writer is not None:
                self._writer.close()
            if not reason:  # a plain end of the stream
                reason, clean = self._why_closed()
            if not self._closing and not cancelled:
                self._mark_disconnected(reason, clean)
            self.bus.notify()

    async def _handle(self, frame: object) -> None:
        if isinstance(frame, Deliver):
            await self.sessions.on_payload(frame.sender, frame.payload)
        elif isinstance(frame, Joined):
            if frame.peer.peer_id not in self.sessions.peers and frame.peer.peer_id != self.my_id:
                self.sessions.add(frame.peer)
        elif isinstance(frame, Left):
            self.sessions.left(frame.peer_id)
        elif isinstance(frame, Ping):
            self.write(encode(Pong(frame.token)))
        elif isinstance(frame, ErrorFrame):
            # it closes our connection next: say why then
            self._relay_said = clean_reason(frame.reason)
            log.warning("participant: relay says: %s", self._relay_said)
        elif not isinstance(frame, Pong):
            raise RemoteProtocolError(f"unexpected {type(frame).__name__} from the relay")
        self.bus.notify()

    def _why_closed(self) -> tuple[str, bool]:
        """The relay connection ended with a plain EOF: clean only after the
        host's authenticated goodbye; otherwise whatever the relay said before
        closing (an eviction), or a cut."""
        if self._relay_said:
            return f"the relay closed our connection: {self._relay_said}", False
        if self.sessions.host_said_goodbye:
            return "the host closed the connection", True
        return "the host's relay closed the connection without the host's goodbye", False

    def lost(self, reason: str) -> None:
        """The connection is dead although no FIN came: close it and say so."""
        if self._writer is not None:
            self._writer.close()
        self._mark_disconnected(reason, clean=False)
        self.bus.notify()

    def _mark_disconnected(self, reason: str, clean: bool) -> None:
        if self.disconnected is not None:
            return
        self.disconnected = Disconnected(reason, clean)
        self._clock.cancel()
        peers = list(self.sessions.peers.values())
        self.sessions.files_lost(*peers)
        for peer in peers:
            if peer.state is not PeerState.GONE:
                peer.go(Step.GONE)  # no PeerLeft: the Disconnected event says it all
        self.outbox.save()  # everything pending now waits for a reconnect: keep it all
        self.bus.publish(self.disconnected)


class _Clock:
    """The participant's one timer, armed for the earliest deadline of any of its
    peers (keepalive probe, presumed gone, handshake too slow)."""

    def __init__(self, owner: Participant) -> None:
        self.owner = owner
        self._handle: asyncio.TimerHandle | None = None

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def rearm(self) -> None:
        self.cancel()
        o = self.owner
        if o._closing or o.disconnected is not None or o._task is None:
            return
        deadlines = [
            d
            for p in o.sessions.peers.values()
            if (d := p.deadline(o.keepalive, o.dead_after)) is not None
        ]
        if deadlines:
            delay = max(min(deadlines) - time.monotonic(), _MIN_TIMER)
            self._handle = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        """Probe quiet peers, declare gone one silent for too long (a cable pulled
        sends no FIN), refuse a handshake that takes too long."""
        self._handle = None
        o = self.owner
        now = time.monotonic()
        for peer in list(o.sessions.peers.values()):
            due = peer.due(now, o.keepalive, o.dead_after)
            if due is Due.PROBE:
                o.sessions.send_app(peer, KeepAlive(reply=True))
            elif due is Due.HANDSHAKE_LATE:
                o.sessions.handshakes.check_late(peer, now)
            elif due is Due.HEAL:
                o.sessions.handshakes.heal(peer)
            elif due is Due.DEAD:
                log.info("peer %d silent, presumed gone", peer.info.peer_id)
                if peer.info.peer_id == o.host_id:
                    # the host is the relay: this connection is dead too
                    o.lost(f"no sign of life from the host for {o.dead_after:g} s")
                    return
                o.sessions.gone(peer, clean=False)
                o.bus.notify()
        self.rearm()
