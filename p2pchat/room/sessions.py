"""The end-to-end sessions of one participant: trust, records, healing, endings.

:class:`Sessions` holds one :class:`~p2pchat.room.peer.Peer` per other
participant and decides, for each envelope the relay delivers, what to do:
pass a handshake message to :class:`~p2pchat.room.handshakes.Handshakes`
(which hands the key it proved to :class:`~p2pchat.room.admission.Admission`,
where the pins decide), open records and act on the messages inside, heal a
session whose record failed, and end one that is refused (telling the peer
why) or gone. It writes through its
:class:`~p2pchat.room.participant.Participant` (the connection) and reports
on the room's bus.

The host first: until the host's key is proven, a joiner neither handshakes
with, pins nor shows anyone else, so that a relay that is not the expected
host cannot get its other "participants" pinned before the host check fails.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Final

from p2pchat.config import HANDSHAKE_TIMEOUT
from p2pchat.errors import (
    DecryptError,
    KeyMismatchError,
    MalformedFrameError,
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
    Refuse,
    RefuseCode,
    encode_app,
    parse_app,
)
from p2pchat.proto.handshake import HandshakeResult
from p2pchat.proto.keys import fingerprint
from p2pchat.proto.messages import HS_TAG, PeerEntry, encode_send, send_head
from p2pchat.proto.record import CT_CLOSE, RECORD_TAG, record_size
from p2pchat.proto.text import clean_reason
from p2pchat.room.admission import Admission
from p2pchat.room.delivery import Delivery, refusal_words
from p2pchat.room.events import (
    Delivered,
    DeliveryFailed,
    MessageReceived,
    PeerInfo,
    PeerJoined,
    PeerLeft,
    PeerRefused,
    RefusalKind,
    SessionBroken,
)
from p2pchat.room.handshakes import Handshakes
from p2pchat.room.peer import Peer, PeerState, Step

if TYPE_CHECKING:
    from p2pchat.room.participant import Participant

__all__ = ["Sessions"]

log = logging.getLogger("p2pchat.room.sessions")

_FILE_MESSAGES = (FileOffer, FileAccept, FileData, FileAck, FileDone, FileRefuse, FileCancel)

#: Refusals remembered (the link reads them to tell why the host failed).
REFUSALS_KEPT = 64
#: A session that fails within this many seconds of coming up counts as a
#: quick failure: those back off, and after MAX_HEALS in a row we give up.
HEAL_STABLE: Final = 30.0
HEAL_BASE: Final = 0.5
#: below the peer's keepalive dead time (15 s), so that it is still waiting
HEAL_CAP: Final = 4.0
MAX_HEALS: Final = 6
_KIND_CODE: Final = {
    RefusalKind.MISMATCH: RefuseCode.PINNED_OTHER_KEY,
    RefusalKind.UNKNOWN_PEER: RefuseCode.NOT_KNOWN,
    RefusalKind.OWN_KEY: RefuseCode.OWN_KEY,
    RefusalKind.PROTOCOL: RefuseCode.PROTOCOL,
}
_CODE_KIND: Final = {code: kind for kind, code in _KIND_CODE.items()}


class Sessions:
    """Every other participant and our session with each (module doc)."""

    def __init__(self, owner: Participant) -> None:
        self.owner = owner
        self.peers: dict[int, Peer] = {}
        self.delivery = Delivery(owner.outbox)
        self.refusals: list[PeerRefused] = []  #: the last 64 peers refused, in order
        self.host_said_goodbye = False  #: the host closed its session on purpose
        self._host_was_proven = False
        self.handshakes = Handshakes(self)
        self.admission = Admission(self)
        #: keys proven in a session on this connection (see _never_proven)
        self.proven: set[bytes] = set()

    # ------------------------------------------------------------ roster

    def add(self, entry: PeerEntry) -> Peer:
        info = PeerInfo(entry.peer_id, entry.name, fingerprint(entry.key))
        peer = Peer(info)
        # a registration has HANDSHAKE_TIMEOUT to prove its key, whoever starts
        peer.hs_deadline = time.monotonic() + HANDSHAKE_TIMEOUT
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

    async def on_payload(self, peer_id: int, payload: bytes) -> None:
        """One envelope from ``peer_id``; a violation refuses that peer, no one else."""
        peer = self.peers.get(peer_id)
        if peer is None or peer.ended:
            return
        try:
            if not payload:
                raise RemoteProtocolError("empty envelope")
            if payload[0] == HS_TAG:
                await self.handshakes.on_message(peer, payload)
            elif payload[0] == RECORD_TAG:
                await self._on_record(peer, payload)
            else:
                raise RemoteProtocolError("envelope payload of unknown kind")
        except (RemoteProtocolError, TrustError) as exc:
            self.failure(peer, exc)

    def failure(self, peer: Peer, exc: RemoteProtocolError | TrustError) -> None:
        """A handshake or record with ``peer`` failed. Once a session was up, that
        is damage in transit (or a relay at work): the session heals. Before,
        the peer is refused."""
        if peer.ended:
            return
        if peer.was_ready:
            self.broke(peer, str(exc))
        else:
            self.refuse(peer, str(exc), mismatch=isinstance(exc, KeyMismatchError))

    # ------------------------------------------------------------ healing

    def broke(self, peer: Peer, reason: str, *, answer: bool = False) -> bool:
        """The session with ``peer`` (or a fresh handshake after one) failed: a
        new handshake follows, after a backoff when failures come quickly, and
        we give up (refuse) after MAX_HEALS in a row. ``answer``: the peer
        starts the handshake (its M1 is here), so none is scheduled. True if
        the session goes on healing."""
        now = time.monotonic()
        log.info("participant: session with peer %d failed: %s", peer.info.peer_id, reason)
        if peer.next_heals(now, HEAL_STABLE) > MAX_HEALS:
            # decided before the session is torn down: our direction still
            # works, so the peer is told (a refusal, not a silence)
            n = peer.next_heals(now, HEAL_STABLE)
            why = f"the session failed {n} times in a row, giving up (last: {reason})"
            self.refuse(peer, why, mismatch=False)
            return False
        self.files_lost(peer)
        delay = peer.failed(now, HEAL_STABLE, HEAL_BASE, HEAL_CAP)
        if answer:
            delay = 0.0
        self.owner.bus.publish(SessionBroken(peer.info, reason, delay))
        self.owner.rearm()
        return True

    def established(self, peer: Peer, result: HandshakeResult) -> None:
        """The handshake with ``peer`` is complete (before the pins decide)."""
        peer.established(result, time.monotonic())
        self.proven.add(peer.info.fingerprint)
        self.owner.rearm()

    # ------------------------------------------------------------ records

    async def _on_record(self, peer: Peer, payload: bytes) -> None:
        if peer.result is None or not peer.ready:
            if peer.was_ready:
                return  # from the session that failed, still on its way: dropped
            raise RemoteProtocolError("record before the handshake completed")
        try:
            content_type, body = peer.result.receiver.open(payload)
        except DecryptError as exc:
            self.broke(peer, str(exc))
            return
        peer.last_heard = time.monotonic()
        if content_type == CT_CLOSE:
            self.gone(peer, clean=True)
            return
        try:
            msg = parse_app(body)
        except MalformedFrameError as exc:
            # authenticated: the peer itself sent it; a fresh handshake would not help
            self.refuse(peer, f"invalid message: {exc}", mismatch=False)
            return
        o = self.owner
        if isinstance(msg, Refuse):
            self.refused_by(peer, msg)
            return
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
        if peer.result.sender.closed:  # we said goodbye: nothing more goes out
            return
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
        # one we refused is not shown leaving (it was never in for us); one
        # that refused us still is, when it goes
        was_refused = peer.state is PeerState.REFUSED and not (
            peer.refusal is not None and peer.refusal.by_peer
        )
        self.files_lost(peer)
        if not peer.was_ready:
            self._never_proven(peer)
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
        self,
        peer: Peer,
        reason: str,
        *,
        mismatch: bool,
        kind: RefusalKind | None = None,
        told: bool = False,
    ) -> None:
        """Refuse ``peer`` and tell it why (``told``: the caller already did)."""
        if peer.ended:
            return
        kind = kind or (RefusalKind.MISMATCH if mismatch else RefusalKind.PROTOCOL)
        # (every face shows the PeerRefused event: the log line is for the log file)
        log.info("participant: refusing peer %d: %s", peer.info.peer_id, reason)
        self.files_lost(peer)
        # tell it why, inside the session (a refusal is not a goodbye: it must
        # not wait for our acks, nor take us for gone), then close
        if peer.writable:
            with contextlib.suppress(P2PChatError):
                self.send_app(peer, Refuse(_KIND_CODE[kind], reason))
        elif peer.hs is not None and not told:
            # no session to say it in: the handshake's error message, a hint
            # only, so that the peer does not wait out its handshake timeout
            self.owner.write(encode_send(peer.info.peer_id, peer.hs.refusal(reason)))
        self.say_goodbye(peer)
        peer.go(Step.REFUSE)
        o = self.owner
        pinned = (
            tuple(
                p.fingerprint
                for p in o.trust.by_name(peer.info.name)
                if p.fingerprint != peer.info.fingerprint
            )
            if mismatch
            else ()
        )
        self._ended_by_refusal(peer, PeerRefused(peer.info, reason, mismatch, pinned, kind))

    def refused_by(self, peer: Peer, msg: Refuse) -> None:
        """The peer refused our session (an authenticated ``refuse``): not a goodbye."""
        reason = clean_reason(msg.reason)
        log.info("participant: peer %d refused us: %s", peer.info.peer_id, reason)
        self.files_lost(peer)
        peer.go(Step.REFUSE)
        kind = _CODE_KIND[msg.code]
        self._ended_by_refusal(peer, PeerRefused(peer.info, reason, False, (), kind, by_peer=True))

    def _never_proven(self, peer: Peer) -> None:
        """``peer`` ends before it ever proved its key: it was never a
        participant, so what we sent meanwhile is not owed to it (unless the
        same key is here on another connection)."""
        fp = peer.info.fingerprint
        # a key proven before (on an earlier connection of this run) or pinned
        # is a participant still: what it was sent waits for it to come back
        known = fp in self.proven or self.owner.trust.get(fp) is not None
        elsewhere = any(
            p is not peer and p.info.fingerprint == fp and not p.ended for p in self.peers.values()
        )
        if peer.unproven and not known and not elsewhere:
            for msg in self.owner.outbox.forget(fp, peer.unproven):
                left = len(msg.recipients) + len(msg.failed)
                self.owner.bus.publish(
                    Delivered(
                        msg.msg_id,
                        peer.info,
                        complete=left == 0,
                        delivered=msg.total - left,
                        total=msg.total,
                        dropped=True,
                    )
                )
        peer.unproven = []

    def _ended_by_refusal(self, peer: Peer, refusal: PeerRefused) -> None:
        o = self.owner
        peer.refusal = refusal
        if not peer.was_ready:
            self._never_proven(peer)
        if refusal.kind.trust:
            # never the participant we meant (or one that will not have us):
            # what it has not acknowledged is undelivered to it, and is not kept
            # for it. After a protocol failure it stays pending for the next
            # session: it is not delivered, and join says so.
            why = refusal_words(peer)
            ids = o.outbox.fail(peer.info.fingerprint, why)
            if ids:
                o.bus.publish(DeliveryFailed(peer.info, tuple(ids), why))
        self.refusals.append(refusal)
        del self.refusals[:-REFUSALS_KEPT]
        o.bus.publish(refusal)
