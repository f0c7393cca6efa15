"""A participant: one connection to a relay, one end-to-end session per peer.

The participant registers with the relay, runs the handshake with every other
participant (the one that joined later initiates), checks each proven key
against the pins, and then exchanges chat messages sealed in records, each
acknowledged end to end. It reports what happens as :class:`Event` values to
one callback (the UI), and never prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Final, Protocol

from p2pchat.config import (
    HANDSHAKE_BURST,
    HANDSHAKE_RATE,
    HANDSHAKE_TIMEOUT,
    KEEPALIVE_DEAD,
    KEEPALIVE_INTERVAL,
    MAX_FRAME,
    SUPPORTED_VERSIONS,
)
from p2pchat.errors import (
    BrokenConnectionError,
    ClosedConnectionError,
    HandshakeError,
    IncompatibleVersionError,
    KeyMismatchError,
    LocalProtocolError,
    P2PChatError,
    RemoteProtocolError,
    TrustError,
)
from p2pchat.proto.app import (
    MAX_ACK_IDS,
    Ack,
    AppMessage,
    Chat,
    FileAccept,
    FileAck,
    FileCancel,
    FileData,
    FileDone,
    FileMessage,
    FileOffer,
    FileRefuse,
    KeepAlive,
    encode_app,
    parse_app,
)
from p2pchat.proto.bucket import TokenBucket
from p2pchat.proto.framing import FrameDecoder
from p2pchat.proto.handshake import Handshake, HandshakeResult, Role, State
from p2pchat.proto.keys import fingerprint, format_fingerprint
from p2pchat.proto.messages import (
    HS_TAG,
    Bye,
    Deliver,
    ErrorFrame,
    Hello,
    Joined,
    Left,
    PeerEntry,
    Ping,
    Pong,
    Welcome,
    check_text,
    encode,
    encode_send,
    parse_body,
    send_head,
)
from p2pchat.proto.record import CT_CLOSE, RECORD_TAG, record_size
from p2pchat.room.bus import EventBus
from p2pchat.room.events import (
    Delivered,
    Disconnected,
    Event,
    MessageReceived,
    PeerInfo,
    PeerJoined,
    PeerLeft,
    PeerRefused,
    RefusalKind,
    SessionReady,
    Trust,
)
from p2pchat.store.identity import Identity, TrustStore, Verdict
from p2pchat.store.outbox import Outbox

__all__ = ["BULK_WRITE_HIGH", "FileHandler", "Participant"]

log = logging.getLogger("p2pchat.room.participant")

#: The connection's write buffer above which bulk data (file chunks) waits;
#: chat never waits, so it only ever queues behind this much.
BULK_WRITE_HIGH = 64 * 1024
_FILE_MESSAGES = (FileOffer, FileAccept, FileData, FileAck, FileDone, FileRefuse, FileCancel)


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


#: Handshake states whose next message needs our private key (M2 at the
#: initiator, M3 at the responder).
_PRIVATE_KEY_STEPS: Final = frozenset((State.I1_SENT_M1, State.R1_SENT_M2))


# ---------------------------------------------------------------- per peer


@dataclass
class _Peer:
    info: PeerInfo
    hs: Handshake | None = None
    result: HandshakeResult | None = None
    refused: bool = False
    gone: bool = False
    waiting: bool = False  #: we initiate once the host is proven
    busy: bool = False  #: a handshake step is running in a worker thread
    held: bytes | None = None  #: a first handshake message kept until the host is proven
    last_heard: float = 0.0  #: monotonic time of the last record from this peer
    last_sent: float = 0.0  #: monotonic time of the last record to this peer

    @property
    def ready(self) -> bool:
        return self.result is not None and not self.refused and not self.gone


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
        self.identity = identity
        self.name = name
        self.trust = trust
        self.require_known = require_known
        self.expected_host = expected_host
        self.bus = bus
        self._emit = bus.publish
        self._peers: dict[int, _Peer] = {}
        self.outbox = outbox if outbox is not None else Outbox()
        self.outbox.on_saved = self._flush_acks
        self._acks: dict[int, list[bytes]] = {}
        self._keepalive = keepalive
        self._dead_after = dead_after
        self._ka_task: asyncio.Task[None] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        # the 4 KiB pre-registration cap is the relay's; a welcome may list many peers
        self._decoder = FrameDecoder(MAX_FRAME, parse_body)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.my_id: int | None = None
        self.host_id: int | None = None
        self.disconnected: Disconnected | None = None
        self.refusals: list[PeerRefused] = []  #: the last 64 peers refused, in order
        self._host_was_proven = False
        #: the host ended the chat on purpose (authenticated close), not a drop
        self.host_said_goodbye = False
        self._handshake_budget = TokenBucket(HANDSHAKE_RATE, HANDSHAKE_BURST, time.monotonic())
        self.files = files

    # ------------------------------------------------------------ connect

    async def async_connect(self, host: str, port: int, timeout: float) -> None:
        """Open the TCP connection, register, and start the reader task.
        Raises ConnectionError/OSError/TimeoutError or a P2PChatError."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        self._reader, self._writer = reader, writer
        self._decoder = FrameDecoder(MAX_FRAME, parse_body)  # nothing left from an earlier try
        # bulk data waits above this (async_writable); chat is written at once
        writer.transport.set_write_buffer_limits(high=BULK_WRITE_HIGH)
        try:
            writer.write(encode(Hello(SUPPORTED_VERSIONS, self.name, self.identity.public_der)))
            welcome = await asyncio.wait_for(self._read_welcome(), timeout)
        except BaseException:
            writer.close()
            raise
        if welcome.version not in SUPPORTED_VERSIONS:
            writer.close()
            raise IncompatibleVersionError(
                f"the host chose protocol version {welcome.version}, which we do not speak"
            )
        self.my_id = welcome.peer_id
        self.host_id = welcome.host
        loop = asyncio.get_running_loop()
        for entry in welcome.peers:
            self._add_peer(entry)
        self.outbox.last_known = {p.info.fingerprint for p in self._peers.values()}
        self._task = loop.create_task(self._run(), name="p2pchat-participant")
        self._ka_task = loop.create_task(self._keepalive_loop(), name="p2pchat-keepalive")
        # we joined last: we initiate with everyone already here
        for peer in list(self._peers.values()):
            self._start_initiator(peer)

    async def _read_welcome(self) -> Welcome:
        assert self._reader is not None
        while True:
            data = await self._reader.read(65536)
            if not data:
                raise BrokenConnectionError("the host closed the connection during registration")
            frames = self._decoder.feed(data)
            if not frames:
                continue
            first, rest = frames[0], frames[1:]
            if isinstance(first, ErrorFrame):
                if "version" in first.reason:
                    raise IncompatibleVersionError(f"the host refused us: {first.reason}")
                raise ClosedConnectionError(f"the host refused us: {first.reason}")
            if not isinstance(first, Welcome):
                raise RemoteProtocolError("the relay did not answer our hello with a welcome")
            self._early = rest
            return first

    # ------------------------------------------------------------ public API

    @property
    def peers(self) -> list[PeerInfo]:
        return [p.info for p in self._peers.values() if not p.gone]

    def peer_sas(self, peer_id: int) -> str | None:
        peer = self._peers.get(peer_id)
        return peer.result.sas if peer and peer.result else None

    def is_ready(self, peer_id: int) -> bool:
        peer = self._peers.get(peer_id)
        return peer is not None and peer.ready

    @property
    def connected(self) -> bool:
        return self._task is not None and self.disconnected is None and not self._closing

    def send_app(self, peer_id: int, msg: AppMessage) -> bool:
        """Seal ``msg`` for ``peer_id`` and write it now; False if there is no
        session with that peer (nothing is queued)."""
        peer = self._peers.get(peer_id)
        if peer is None or not peer.ready or not self.connected:
            return False
        try:
            self._send_app(peer, msg)
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
        if self.connected:
            recipients = {
                p.info.fingerprint for p in self._peers.values() if not p.gone and not p.refused
            }
        else:
            recipients = set(self.outbox.last_known)
        if to is not None:
            recipients &= {to}
        self.outbox.add(msg.msg_id, text, recipients, direct=msg.direct)
        for peer in self._peers.values():
            if peer.ready and peer.info.fingerprint in recipients:
                self._send_app(peer, msg)
        self.bus.notify()
        return msg.msg_id

    def undelivered(self) -> dict[bytes, list[str]]:
        """Message ids still waiting for an ack, with the names that have not acknowledged."""
        names = {p.info.fingerprint: p.info.name for p in self._peers.values()}
        out: dict[bytes, list[str]] = {}
        for msg in self.outbox.pending():
            out[msg.msg_id] = sorted(
                names.get(fp) or self._pinned_name(fp) for fp in msg.recipients
            )
        return out

    def _pinned_name(self, fp: bytes) -> str:
        pin = self.trust.get(fp)
        return pin.name if pin is not None else format_fingerprint(fp)[:14]

    async def async_close(self) -> None:
        """Say goodbye to every peer (authenticated close) and to the relay, then close."""
        if self._closing:
            return
        self._closing = True
        self._files_lost(*self._peers.values())
        self.outbox.save()  # sends the acks still waiting for it
        writer = self._writer
        if writer is not None and not writer.is_closing():
            for peer in self._peers.values():
                if peer.ready and peer.result is not None:
                    with contextlib.suppress(P2PChatError):
                        self._write(encode_send(peer.info.peer_id, peer.result.sender.seal_close()))
            self._write(encode(Bye()))
            with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                await asyncio.wait_for(writer.drain(), 1.0)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
        for task in (self._task, self._ka_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task  # its failure was reported when it happened
        self.outbox.save()

    # ------------------------------------------------------------ internals

    def _write(self, data: bytes | bytearray) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    def _add_peer(self, entry: PeerEntry) -> _Peer:
        info = PeerInfo(entry.peer_id, entry.name, fingerprint(entry.key))
        peer = _Peer(info)
        self._peers[entry.peer_id] = peer
        self.outbox.note_peer(info.fingerprint)
        self._emit(PeerJoined(info))
        return peer

    def _expected_for(self, peer: _Peer) -> bytes:
        if peer.info.peer_id == self.host_id and self.expected_host is not None:
            return self.expected_host
        return peer.info.fingerprint

    def _new_handshake(self, role: Role, peer: _Peer) -> Handshake:
        hs = Handshake(
            role,
            self.identity.private_key,
            name=self.name,
            rng=os.urandom,
            now=time.monotonic(),
            expected_peer=self._expected_for(peer),
        )
        loop = asyncio.get_running_loop()
        loop.call_later(HANDSHAKE_TIMEOUT, self._check_handshake, peer, hs)
        return hs

    def _check_handshake(self, peer: _Peer, hs: Handshake) -> None:
        if peer.busy:  # never touch a handshake a worker thread is running
            asyncio.get_running_loop().call_later(0.5, self._check_handshake, peer, hs)
            return
        if peer.hs is hs and not hs.complete and not peer.gone:
            try:
                hs.check_deadline(time.monotonic())
            except HandshakeError as exc:
                self._refuse(peer, str(exc), mismatch=False)
                self.bus.notify()

    def _start_initiator(self, peer: _Peer) -> None:
        if peer.info.peer_id != self.host_id and not self.host_proven:
            peer.waiting = True
            return
        expected = self._expected_for(peer)
        if expected != peer.info.fingerprint:
            self._refuse(peer, "its key is not the one expected for this host", mismatch=True)
            return
        peer.hs = self._new_handshake(Role.INITIATOR, peer)
        self._write(encode_send(peer.info.peer_id, peer.hs.initiate()))

    async def _run(self) -> None:
        assert self._reader is not None
        reason, clean = "the host closed the connection", True
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
        finally:
            if self._writer is not None:
                self._writer.close()
            if not self._closing:
                self._mark_disconnected(reason, clean)
            self.bus.notify()

    def _mark_disconnected(self, reason: str, clean: bool) -> None:
        if self.disconnected is not None:
            return
        self.disconnected = Disconnected(reason, clean)
        self._files_lost(*self._peers.values())
        for peer in self._peers.values():
            peer.gone = True
            peer.hs = None
        if self._ka_task is not None:
            self._ka_task.cancel()
        self.outbox.save()  # everything pending now waits for a reconnect: keep it all
        self._emit(self.disconnected)

    async def _keepalive_loop(self) -> None:
        """Encrypted keepalives: probe quiet peers, and declare gone one silent
        for ``dead_after`` seconds (a cable pulled sends no FIN)."""
        period = min(self._keepalive, self._dead_after) / 2
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for peer in list(self._peers.values()):
                if not peer.ready:
                    continue
                if now - peer.last_heard > self._dead_after:
                    log.info("participant: peer %d silent, presumed gone", peer.info.peer_id)
                    if peer.info.peer_id == self.host_id:
                        # the host is the relay: this connection is dead too
                        if self._writer is not None:
                            self._writer.close()
                        self._mark_disconnected(
                            f"no sign of life from the host for {self._dead_after:g} s", False
                        )
                        self.bus.notify()
                        return
                    self._peer_gone(peer, clean=False)
                    self.bus.notify()
                elif now - max(peer.last_heard, peer.last_sent) >= self._keepalive:
                    self._send_app(peer, KeepAlive(reply=True))

    async def _handle(self, frame: object) -> None:
        if isinstance(frame, Deliver):
            peer = self._peers.get(frame.sender)
            if peer is None or peer.gone or peer.refused:
                return
            try:
                await self._on_payload(peer, frame.payload)
            except (RemoteProtocolError, TrustError) as exc:
                self._refuse(peer, str(exc), mismatch=isinstance(exc, KeyMismatchError))
        elif isinstance(frame, Joined):
            if frame.peer.peer_id not in self._peers and frame.peer.peer_id != self.my_id:
                self._add_peer(frame.peer)
        elif isinstance(frame, Left):
            peer = self._peers.pop(frame.peer_id, None)  # ids are never reused
            if peer is not None and not peer.gone:
                self._peer_gone(peer, clean=False)
        elif isinstance(frame, Ping):
            self._write(encode(Pong(frame.token)))
        elif isinstance(frame, ErrorFrame):
            log.warning("participant: relay says: %s", frame.reason)
        elif isinstance(frame, Pong):
            pass
        else:
            raise RemoteProtocolError(f"unexpected {type(frame).__name__} from the relay")
        self.bus.notify()

    async def _on_payload(self, peer: _Peer, payload: bytes) -> None:
        if not payload:
            raise RemoteProtocolError("empty envelope")
        if payload[0] == HS_TAG:
            await self._on_handshake(peer, payload)
        elif payload[0] == RECORD_TAG:
            if peer.result is None:
                raise RemoteProtocolError("record before the handshake completed")
            content_type, body = peer.result.receiver.open(payload)
            peer.last_heard = time.monotonic()
            if content_type == CT_CLOSE:
                self._peer_gone(peer, clean=True)
                return
            await self._on_app(peer, body)
        else:
            raise RemoteProtocolError("envelope payload of unknown kind")

    @property
    def host_proven(self) -> bool:
        """The host's key is proven (or we are the host): until then a joiner
        neither handshakes with, pins nor shows anyone else, so that a relay
        that is not the expected host cannot get its other 'participants'
        pinned before the host check fails."""
        if self.host_id is None or self.host_id == self.my_id or self._host_was_proven:
            return True
        self._host_was_proven = self.is_ready(self.host_id)
        return self._host_was_proven

    async def _release_others(self) -> None:
        for other in list(self._peers.values()):
            if other.info.peer_id == self.host_id or other.gone or other.refused:
                continue
            if other.held is not None:
                held, other.held = other.held, None
                await self._handle(Deliver(other.info.peer_id, held))
            elif other.hs is None and other.result is None and other.waiting:
                other.waiting = False
                self._start_initiator(other)

    async def _on_handshake(self, peer: _Peer, payload: bytes) -> None:
        if peer.info.peer_id != self.host_id and not self.host_proven:
            if peer.hs is None and peer.held is None:
                peer.held = payload  # its M1: answered once the host is proven
                return
            raise RemoteProtocolError("handshake message before the host was proven")
        if peer.hs is None:
            if peer.result is not None:
                raise RemoteProtocolError("handshake message after the session was set up")
            if not self._handshake_budget.take(time.monotonic()):
                # a flood of new peers must not eat the CPU (each costs an RSA decryption)
                raise HandshakeError("too many handshakes at once; try again shortly")
            peer.hs = self._new_handshake(Role.RESPONDER, peer)
        hs = peer.hs
        loop = asyncio.get_running_loop()
        try:
            if hs.state in _PRIVATE_KEY_STEPS:
                # RSA decryption: off the event loop, so a flood cannot stall chat
                peer.busy = True
                try:
                    reply = await loop.run_in_executor(None, hs.receive, payload)
                finally:
                    peer.busy = False
                if peer.gone or peer.refused or peer.hs is not hs:
                    return  # it left, or was refused, while we worked
            else:  # M1 at the responder, M4 at the initiator: public-key work only
                reply = hs.receive(payload)
        except IncompatibleVersionError:
            if hs.role is Role.RESPONDER:
                self._write(
                    encode_send(
                        peer.info.peer_id,
                        hs.refusal(f"incompatible version: we speak {list(SUPPORTED_VERSIONS)}"),
                    )
                )
            raise
        if reply is not None:
            self._write(encode_send(peer.info.peer_id, reply))
        if hs.complete:
            assert hs.result is not None
            peer.hs = None
            self._on_ready(peer, hs.result)
            if peer.info.peer_id == self.host_id != self.my_id and self.host_proven:
                await self._release_others()

    def _on_ready(self, peer: _Peer, result: HandshakeResult) -> None:
        if result.peer_name != peer.info.name:
            # the relay's roster is a hint; the name in the transcript is the peer's word
            log.info(
                "participant: peer %d calls itself differently than the relay said",
                peer.info.peer_id,
            )
            peer.info = PeerInfo(peer.info.peer_id, result.peer_name, peer.info.fingerprint)
        info = peer.info
        verdict = self.trust.check(info.name, info.fingerprint)
        if verdict is Verdict.NAME_MISMATCH:
            self._refuse(peer, "a pinned name presented a different key", mismatch=True)
            return
        if verdict is Verdict.NEW and self.require_known:
            self._refuse(
                peer,
                "not a known peer (--require-known)",
                mismatch=False,
                kind=RefusalKind.UNKNOWN_PEER,
            )
            return
        pin = self.trust.pin(info.name, info.fingerprint)
        trust = (
            Trust.NEW
            if verdict is Verdict.NEW
            else (Trust.VERIFIED if pin.verified else Trust.KNOWN)
        )
        peer.result = result
        peer.last_heard = peer.last_sent = time.monotonic()
        self._emit(SessionReady(info, result.sas, trust))
        # what this peer has not acknowledged yet, in the order typed (after a
        # reconnect too: the receiver drops what it already has, by id)
        for pending in self.outbox.for_peer(info.fingerprint):
            self._send_app(peer, Chat(pending.msg_id, pending.text, pending.direct))
        if self.files is not None:
            self.files.session_ready(self, info)

    async def _on_app(self, peer: _Peer, body: bytes) -> None:
        msg = parse_app(body)
        fp = peer.info.fingerprint
        if isinstance(msg, _FILE_MESSAGES):
            if self.files is not None:
                await self.files.async_on_message(self, peer.info, msg)
            elif isinstance(msg, FileOffer):
                self._send_app(peer, FileRefuse(msg.transfer_id, "not accepting files"))
        elif isinstance(msg, Chat):
            if self.outbox.durable:
                # acknowledged once the id is on disk (see Outbox.on_saved)
                self._acks.setdefault(peer.info.peer_id, []).append(msg.msg_id)
                self.outbox.request_save()
            else:
                self._send_app(peer, Ack((msg.msg_id,)))
            if self.outbox.first_sighting(fp, msg.msg_id):
                self._emit(MessageReceived(peer.info, msg.msg_id, msg.text, msg.direct))
        elif isinstance(msg, Ack):
            for mid in msg.msg_ids:
                done = self.outbox.acked(fp, mid)
                if done is not None:
                    self._emit(
                        Delivered(
                            mid,
                            peer.info,
                            complete=not done.recipients,
                            delivered=done.total - len(done.recipients),
                            total=done.total,
                        )
                    )
        elif isinstance(msg, KeepAlive) and msg.reply:
            self._send_app(peer, KeepAlive(reply=False))

    def _flush_acks(self) -> None:
        acks, self._acks = self._acks, {}
        for peer_id, ids in acks.items():
            peer = self._peers.get(peer_id)
            if peer is None or not peer.ready:
                continue  # its sender will send them again after a reconnect
            for i in range(0, len(ids), MAX_ACK_IDS):
                self._send_app(peer, Ack(tuple(ids[i : i + MAX_ACK_IDS])))

    def _send_app(self, peer: _Peer, msg: AppMessage) -> None:
        assert peer.result is not None
        body = encode_app(msg)
        head = send_head(peer.info.peer_id, record_size(len(body)))
        self._write(peer.result.sender.seal_after(head, body))
        peer.last_sent = time.monotonic()

    def _files_lost(self, *peers: _Peer) -> None:
        if self.files is not None:
            for peer in peers:
                if peer.result is not None and not peer.gone:
                    self.files.session_lost(self, peer.info.peer_id)

    def _peer_gone(self, peer: _Peer, *, clean: bool) -> None:
        if peer.gone:
            return
        self._files_lost(peer)
        peer.gone = True
        peer.hs = None
        if clean and peer.info.peer_id == self.host_id:
            self.host_said_goodbye = True
        if clean and not peer.refused and peer.info.peer_id != self.host_id:
            # left on purpose: stop waiting for its acks. The host is the room
            # itself: what it has not acknowledged waits for it to come back.
            self.outbox.drop_recipient(peer.info.fingerprint)
        if not peer.refused:
            self._emit(PeerLeft(peer.info, clean))

    def _refuse(
        self, peer: _Peer, reason: str, *, mismatch: bool, kind: RefusalKind | None = None
    ) -> None:
        if peer.refused:
            return
        kind = kind or (RefusalKind.MISMATCH if mismatch else RefusalKind.PROTOCOL)
        log.warning("participant: refusing peer %d: %s", peer.info.peer_id, reason)
        self._files_lost(peer)
        if peer.result is not None and not peer.gone:
            # tell it, inside the session: otherwise it would wait for acks forever
            with contextlib.suppress(P2PChatError):
                self._write(encode_send(peer.info.peer_id, peer.result.sender.seal_close()))
        peer.refused = True
        peer.hs = None
        if kind.trust:
            # never the participant we meant: stop waiting for its acks. After a
            # protocol failure (a tampering relay, say) what it has not
            # acknowledged stays pending: it is not delivered, and join says so.
            self.outbox.drop_recipient(peer.info.fingerprint)
        pinned = (
            tuple(p.fingerprint for p in self.trust.by_name(peer.info.name)) if mismatch else ()
        )
        refusal = PeerRefused(peer.info, reason, mismatch, pinned, kind)
        self.refusals.append(refusal)
        del self.refusals[:-64]
        self._emit(refusal)
