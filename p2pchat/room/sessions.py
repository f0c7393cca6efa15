"""The end-to-end sessions of one participant: handshakes, trust, app messages.

:class:`Sessions` holds one :class:`~p2pchat.room.peer.Peer` per other
participant and decides, for each envelope the relay delivers, what to do:
run the next handshake step (the private-key ones in a worker thread, so a
flood of joiners cannot stall chat), admit or refuse the proven key against
the pins, open records and act on the messages inside. It writes through its
:class:`~p2pchat.room.participant.Participant` (the connection) and reports
on the room's bus.

The host first: until the host's key is proven, a joiner neither handshakes
with, pins nor shows anyone else, so that a relay that is not the expected
host cannot get its other "participants" pinned before the host check fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final

from p2pchat.config import HANDSHAKE_BURST, HANDSHAKE_RATE, HANDSHAKE_TIMEOUT, SUPPORTED_VERSIONS
from p2pchat.errors import (
    HandshakeError,
    IncompatibleVersionError,
    KeyMismatchError,
    P2PChatError,
    RemoteProtocolError,
    TrustError,
)
from p2pchat.proto.app import (
    Ack,
    AppMessage,
    Chat,
    FileAccept,
    FileAck,
    FileCancel,
    FileData,
    FileDone,
    FileOffer,
    FileRefuse,
    KeepAlive,
    encode_app,
    parse_app,
)
from p2pchat.proto.bucket import TokenBucket
from p2pchat.proto.handshake import Handshake, HandshakeResult, Role, State
from p2pchat.proto.keys import fingerprint
from p2pchat.proto.messages import HS_TAG, PeerEntry, encode_send, send_head
from p2pchat.proto.names import display_name
from p2pchat.proto.record import CT_CLOSE, RECORD_TAG, record_size
from p2pchat.room.delivery import Delivery
from p2pchat.room.events import (
    MessageReceived,
    PeerInfo,
    PeerJoined,
    PeerLeft,
    PeerRefused,
    RefusalKind,
    SessionReady,
    Trust,
)
from p2pchat.room.peer import Peer, PeerState, Step
from p2pchat.store.identity import Verdict

if TYPE_CHECKING:
    from p2pchat.room.participant import Participant

__all__ = ["Sessions"]

log = logging.getLogger("p2pchat.room.sessions")

_FILE_MESSAGES = (FileOffer, FileAccept, FileData, FileAck, FileDone, FileRefuse, FileCancel)
#: Handshake states whose next message needs our private key (M2 at the
#: initiator, M3 at the responder).
_PRIVATE_KEY_STEPS: Final = frozenset((State.I1_SENT_M1, State.R1_SENT_M2))
#: Refusals remembered (the link reads them to tell why the host failed).
REFUSALS_KEPT = 64


class Sessions:
    """Every other participant and our session with each (module doc)."""

    def __init__(self, owner: Participant) -> None:
        self.owner = owner
        self.peers: dict[int, Peer] = {}
        self.delivery = Delivery(owner.outbox)
        self.refusals: list[PeerRefused] = []  #: the last 64 peers refused, in order
        self.host_said_goodbye = False  #: the host closed its session on purpose
        self._host_was_proven = False
        self._budget = TokenBucket(HANDSHAKE_RATE, HANDSHAKE_BURST, time.monotonic())
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ roster

    def add(self, entry: PeerEntry) -> Peer:
        info = PeerInfo(entry.peer_id, entry.name, fingerprint(entry.key))
        peer = Peer(info)
        self.peers[entry.peer_id] = peer
        self.owner.outbox.note_peer(info.fingerprint)
        self.owner.bus.publish(PeerJoined(info))
        return peer

    def left(self, peer_id: int) -> None:
        peer = self.peers.pop(peer_id, None)  # ids are never reused
        if peer is not None and peer.state is not PeerState.GONE:
            self.gone(peer, clean=False)

    @property
    def host_proven(self) -> bool:
        """The host's key is proven (or we are the host): see the module doc."""
        o = self.owner
        if o.host_id is None or o.host_id == o.my_id or self._host_was_proven:
            return True
        host = self.peers.get(o.host_id)
        self._host_was_proven = host is not None and host.ready
        return self._host_was_proven

    # ------------------------------------------------------------ handshakes

    def _expected_for(self, peer: Peer) -> bytes:
        o = self.owner
        if peer.info.peer_id == o.host_id and o.expected_host is not None:
            return o.expected_host
        return peer.info.fingerprint

    def _begin(self, peer: Peer, role: Role) -> Handshake:
        o = self.owner
        now = time.monotonic()
        hs = Handshake(
            role,
            o.identity.private_key,
            name=o.name,
            rng=os.urandom,
            now=now,
            expected_peer=self._expected_for(peer),
        )
        peer.begin(hs, now, HANDSHAKE_TIMEOUT)
        o.rearm()
        return hs

    def start_initiator(self, peer: Peer) -> None:
        """We joined after ``peer``: we start the handshake (once the host is proven)."""
        if peer.info.peer_id != self.owner.host_id and not self.host_proven:
            peer.go(Step.WAIT_HOST)
            return
        if self._expected_for(peer) != peer.info.fingerprint:
            self.refuse(peer, "its key is not the one expected for this host", mismatch=True)
            return
        hs = self._begin(peer, Role.INITIATOR)
        self.owner.write(encode_send(peer.info.peer_id, hs.initiate()))

    async def on_payload(self, peer_id: int, payload: bytes) -> None:
        """One envelope from ``peer_id``; a violation refuses that peer, no one else."""
        peer = self.peers.get(peer_id)
        if peer is None or peer.ended:
            return
        try:
            if not payload:
                raise RemoteProtocolError("empty envelope")
            if payload[0] == HS_TAG:
                await self._on_handshake(peer, payload)
            elif payload[0] == RECORD_TAG:
                await self._on_record(peer, payload)
            else:
                raise RemoteProtocolError("envelope payload of unknown kind")
        except (RemoteProtocolError, TrustError) as exc:
            self.refuse(peer, str(exc), mismatch=isinstance(exc, KeyMismatchError))

    async def _on_handshake(self, peer: Peer, payload: bytes) -> None:
        if peer.info.peer_id != self.owner.host_id and not self.host_proven:
            if peer.state is PeerState.NEW:
                peer.go(Step.HOLD)  # its M1: answered once the host is proven
                peer.held = payload
                return
            raise RemoteProtocolError("handshake message before the host was proven")
        if peer.state in (PeerState.NEW, PeerState.HELD):
            self._begin(peer, Role.RESPONDER)
        elif peer.state is not PeerState.HANDSHAKING:
            raise RemoteProtocolError(f"handshake message while {peer.state.value}")
        hs = peer.hs
        assert hs is not None
        if hs.state in _PRIVATE_KEY_STEPS:
            # our RSA decryption: charged to the budget, queued, run in a worker
            # thread, and never on the reader, so that neither a flood nor the
            # queue it makes stalls anyone's chat
            peer.go(Step.OFF_LOOP)
            self._spawn(self._private_step(peer, hs, payload))
            return
        try:  # M1 at the responder, M4 at the initiator: public-key work only
            reply = hs.receive(payload)
        except IncompatibleVersionError:
            if hs.role is Role.RESPONDER:
                why = f"incompatible version: we speak {list(SUPPORTED_VERSIONS)}"
                self.owner.write(encode_send(peer.info.peer_id, hs.refusal(why)))
            raise
        await self._after_step(peer, hs, reply)

    async def _private_step(self, peer: Peer, hs: Handshake, payload: bytes) -> None:
        """A handshake step that needs our private key (module doc). Junk never
        gets here (it fails the public-key checks first), so only peers that did
        real work of their own spend the budget; past it, the step waits its
        turn, and is refused as busy only if that would outlast the handshake."""
        try:
            now = time.monotonic()
            wait = self._budget.charge(now, 1.0)
            if wait > 0:
                if peer.hs_deadline is not None and now + wait > peer.hs_deadline:
                    self._budget.tokens += 1.0  # not spent after all
                    raise HandshakeError("too many handshakes at once; try again shortly")
                await asyncio.sleep(wait)
            if peer.working and peer.hs is hs:
                loop = asyncio.get_running_loop()
                reply = await loop.run_in_executor(None, hs.receive, payload)
                if peer.working and peer.hs is hs:  # else it left, or was refused, meanwhile
                    peer.go(Step.STEP_DONE)
                    self.owner.rearm()
                    await self._after_step(peer, hs, reply)
        except (RemoteProtocolError, TrustError) as exc:
            if peer.working:
                peer.go(Step.STEP_DONE)
            self.refuse(peer, str(exc), mismatch=isinstance(exc, KeyMismatchError))
        finally:
            self.owner.bus.notify()

    async def _after_step(self, peer: Peer, hs: Handshake, reply: bytes | None) -> None:
        if reply is not None:
            self.owner.write(encode_send(peer.info.peer_id, reply))
        if hs.complete:
            assert hs.result is not None
            self._admit(peer, hs.result)
            o = self.owner
            if peer.info.peer_id == o.host_id != o.my_id and self.host_proven:
                await self._release_others()

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("participant: a handshake step failed", exc_info=task.exception())

    async def async_close(self) -> None:
        """Stop the handshake steps still queued or running."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def check_late(self, peer: Peer, now: float) -> None:
        """The handshake with ``peer`` is past its deadline: refuse it."""
        if peer.hs is None:
            return
        try:
            peer.hs.check_deadline(now)
        except HandshakeError as exc:
            self.refuse(peer, str(exc), mismatch=False)
            self.owner.bus.notify()

    async def _release_others(self) -> None:
        """The host is proven: answer the held first messages, start the waiting handshakes."""
        for other in list(self.peers.values()):
            if other.info.peer_id == self.owner.host_id or other.ended:
                continue
            if other.state is PeerState.HELD and other.held is not None:
                held, other.held = other.held, None
                await self.on_payload(other.info.peer_id, held)  # answered now
            elif other.state is PeerState.WAITING_HOST:
                self.start_initiator(other)

    def _mismatch_reason(self, info: PeerInfo) -> str:
        """Why a name is refused: it is pinned under another key, or looks like
        a name that is (the pinned spelling named, so the user sees which)."""
        names = sorted(
            {
                p.name
                for p in self.owner.trust.by_name(info.name)
                if p.fingerprint != info.fingerprint
            }
        )
        reason = "a pinned name presented a different key"
        if names and names != [info.name]:
            reason += " (it looks like " + ", ".join(display_name(n) for n in names) + ")"
        return reason

    def _admit(self, peer: Peer, result: HandshakeResult) -> None:
        """The key is proven: check it against the pins, then the session is up."""
        o = self.owner
        if result.peer_name != peer.info.name:
            # the relay's roster is a hint; the name in the transcript is the peer's word
            log.info(
                "participant: peer %d calls itself differently than the relay said",
                peer.info.peer_id,
            )
            peer.info = PeerInfo(peer.info.peer_id, result.peer_name, peer.info.fingerprint)
        info = peer.info
        verdict = o.trust.check(info.name, info.fingerprint)
        if verdict is Verdict.NAME_MISMATCH:
            self.refuse(peer, self._mismatch_reason(info), mismatch=True)
            return
        if verdict is Verdict.NEW and o.require_known:
            reason = "not a known peer (--require-known)"
            self.refuse(peer, reason, mismatch=False, kind=RefusalKind.UNKNOWN_PEER)
            return
        pin = o.trust.pin(info.name, info.fingerprint)
        if verdict is Verdict.NEW:
            trust = Trust.NEW
        else:
            trust = Trust.VERIFIED if pin.verified else Trust.KNOWN
            o.known_peers.add(info.fingerprint)
        peer.established(result, time.monotonic())
        o.rearm()
        o.bus.publish(SessionReady(info, result.sas, trust))
        # what this peer has not acknowledged yet, in the order typed (after a
        # reconnect too: the receiver drops what it already has, by id)
        for pending in o.outbox.for_peer(info.fingerprint):
            self.send_app(peer, Chat(pending.msg_id, pending.text, pending.direct))
        if o.files is not None:
            o.files.session_ready(o, info)

    # ------------------------------------------------------------ records

    async def _on_record(self, peer: Peer, payload: bytes) -> None:
        if peer.result is None or not peer.ready:
            raise RemoteProtocolError("record before the handshake completed")
        content_type, body = peer.result.receiver.open(payload)
        peer.last_heard = time.monotonic()
        if content_type == CT_CLOSE:
            self.gone(peer, clean=True)
            return
        msg = parse_app(body)
        o = self.owner
        if isinstance(msg, _FILE_MESSAGES):
            if o.files is not None:
                await o.files.async_on_message(o, peer.info, msg)
            elif isinstance(msg, FileOffer):
                self.send_app(peer, FileRefuse(msg.transfer_id, "not accepting files"))
        elif isinstance(msg, Chat):
            first, ack = self.delivery.received(peer.info, msg.msg_id)
            if ack is not None:
                self.send_app(peer, ack)
            if first:
                o.bus.publish(MessageReceived(peer.info, msg.msg_id, msg.text, msg.direct))
        elif isinstance(msg, Ack):
            for event in self.delivery.acknowledged(peer.info, msg.msg_ids):
                o.bus.publish(event)
        elif isinstance(msg, KeepAlive):
            if msg.reply:
                self.send_app(peer, KeepAlive(reply=False))
        else:  # Unknown: a newer peer's message type; the record still counted
            log.debug("peer %d sent a message type we do not know", peer.info.peer_id)

    def flush_acks(self) -> None:
        """The outbox is on disk: send the acks that waited for it."""
        for peer_id, acks in self.delivery.take_owed().items():
            peer = self.peers.get(peer_id)
            if peer is None or not peer.writable:
                continue  # its sender will send them again after a reconnect
            for ack in acks:
                self.send_app(peer, ack)

    def send_app(self, peer: Peer, msg: AppMessage) -> None:
        assert peer.result is not None
        body = encode_app(msg)
        head = send_head(peer.info.peer_id, record_size(len(body)))
        self.owner.write(peer.result.sender.seal_after(head, body))
        peer.last_sent = time.monotonic()

    def say_goodbye(self, peer: Peer) -> None:
        """An authenticated close, inside the session."""
        if peer.result is not None and peer.ready:
            with contextlib.suppress(P2PChatError):
                self.owner.write(encode_send(peer.info.peer_id, peer.result.sender.seal_close()))

    # ------------------------------------------------------------ endings

    def files_lost(self, *peers: Peer) -> None:
        o = self.owner
        if o.files is not None:
            for peer in peers:
                if peer.ready:
                    o.files.session_lost(o, peer.info.peer_id)

    def gone(self, peer: Peer, *, clean: bool) -> None:
        if peer.state is PeerState.GONE:
            return
        was_refused = peer.state is PeerState.REFUSED
        self.files_lost(peer)
        peer.go(Step.GONE)
        o = self.owner
        if clean and peer.info.peer_id == o.host_id:
            self.host_said_goodbye = True
        if clean and not was_refused and peer.info.peer_id != o.host_id:
            # left on purpose: stop waiting for its acks. The host is the room
            # itself: what it has not acknowledged waits for it to come back.
            o.outbox.drop_recipient(peer.info.fingerprint)
        if not was_refused:
            o.bus.publish(PeerLeft(peer.info, clean))

    def refuse(
        self, peer: Peer, reason: str, *, mismatch: bool, kind: RefusalKind | None = None
    ) -> None:
        if peer.ended:
            return
        kind = kind or (RefusalKind.MISMATCH if mismatch else RefusalKind.PROTOCOL)
        # (every face shows the PeerRefused event: the log line is for the log file)
        log.info("participant: refusing peer %d: %s", peer.info.peer_id, reason)
        self.files_lost(peer)
        # tell it, inside the session: otherwise it would wait for acks forever
        self.say_goodbye(peer)
        peer.go(Step.REFUSE)
        o = self.owner
        if kind.trust:
            # never the participant we meant: stop waiting for its acks. After a
            # protocol failure (a tampering relay, say) what it has not
            # acknowledged stays pending: it is not delivered, and join says so.
            o.outbox.drop_recipient(peer.info.fingerprint)
        pinned = (
            tuple(
                p.fingerprint
                for p in o.trust.by_name(peer.info.name)
                if p.fingerprint != peer.info.fingerprint
            )
            if mismatch
            else ()
        )
        refusal = PeerRefused(peer.info, reason, mismatch, pinned, kind)
        self.refusals.append(refusal)
        del self.refusals[:-REFUSALS_KEPT]
        o.bus.publish(refusal)
