"""Admitting a proven key: the pins decide, then the session is up.

A handshake proves which key is at the other end (:mod:`p2pchat.room.handshakes`);
:class:`Admission` decides what that key may be: our own key (this identity runs
twice) is refused, a name pinned under another key or looking like one is
refused with the pinned spelling named, a new key under ``--require-known`` is
refused, and anything else is pinned and its session announced with its trust,
before what it has not acknowledged is sent again. The SAS is recorded for
``p2pchat trust verify``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from p2pchat.errors import P2PChatError
from p2pchat.proto.app import Chat
from p2pchat.proto.handshake import HandshakeResult
from p2pchat.proto.names import display_name
from p2pchat.room.events import PeerInfo, RefusalKind, SessionReady, Trust
from p2pchat.room.peer import Peer
from p2pchat.store.identity import Verdict

if TYPE_CHECKING:
    from p2pchat.room.sessions import Sessions

__all__ = ["Admission"]

log = logging.getLogger("p2pchat.room.sessions")


class Admission:
    """What a proven key may be (module doc)."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self.owner = sessions.owner

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

    def admit(self, peer: Peer, result: HandshakeResult) -> None:
        """The key is proven: check it against the pins, then the session is up."""
        s, o = self.sessions, self.owner
        if result.peer_fingerprint == o.identity.fingerprint:
            # our own key: this identity runs twice (or a relay loops us back)
            why = "it presented our own key (is p2pchat running twice with this identity?)"
            s.established(peer, result)
            s.refuse(peer, why, mismatch=False, kind=RefusalKind.OWN_KEY)
            return
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
            # the session is up long enough to tell the peer why, authenticated
            s.established(peer, result)
            s.refuse(peer, self._mismatch_reason(info), mismatch=True)
            return
        if verdict is Verdict.NEW and o.require_known:
            s.established(peer, result)
            reason = "not a known peer (--require-known)"
            s.refuse(peer, reason, mismatch=False, kind=RefusalKind.UNKNOWN_PEER)
            return
        pin = o.trust.pin(info.name, info.fingerprint)
        if verdict is Verdict.NEW:
            trust = Trust.NEW
        else:
            trust = Trust.VERIFIED if pin.verified else Trust.KNOWN
            o.known_peers.add(info.fingerprint)
        renewed = peer.was_ready
        s.established(peer, result)
        self._remember_sas(info.fingerprint, result.sas)
        o.bus.publish(SessionReady(info, result.sas, trust, renewed))
        # what this peer has not acknowledged yet, in the order typed (after a
        # reconnect too: the receiver drops what it already has, by id)
        for pending in o.outbox.for_peer(info.fingerprint):
            s.send_app(peer, Chat(pending.msg_id, pending.text, pending.direct))
        if o.files is not None:
            o.files.session_ready(o, info)

    def _remember_sas(self, fp: bytes, sas: str) -> None:
        """Record the session's SAS for ``trust verify``, in a worker thread: a
        file write on every session (0.3 ms measured without an fsync, 0.9 ms
        with one, far more on a slow disk) is not for the event loop, and
        nothing waits for it."""
        trust = self.owner.trust

        def record() -> None:
            try:
                trust.record_sas(fp, sas)
            except (OSError, P2PChatError) as exc:  # verify falls back to fingerprints
                log.warning("participant: could not record the SAS: %s", exc)

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            record()
        else:
            loop.run_in_executor(None, record)
