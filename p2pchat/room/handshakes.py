"""The handshakes of one participant's sessions (the part of
:mod:`p2pchat.room.sessions` that drives :class:`~p2pchat.proto.handshake.Handshake`).

:class:`Handshakes` starts them (we initiate with peers that were here before
us, and when a failed session heals), answers the peer's messages, runs the
steps that need our private key in a worker thread (charged to a token
bucket and queued, so a flood of joiners cannot stall chat), and hands a
completed handshake to :meth:`Admission.admit`. Crossed first messages, when
both sides heal at once, are resolved here (docs/PROTOCOL.md §6.5).

The host first: until the host's key is proven, a joiner neither handshakes
with nor answers anyone else (see :mod:`p2pchat.room.sessions`).
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
    RemoteProtocolError,
    TrustError,
)
from p2pchat.proto.bucket import TokenBucket
from p2pchat.proto.handshake import Handshake, Role, State
from p2pchat.proto.messages import M1, encode_send, parse_handshake
from p2pchat.room.peer import Peer, PeerState, Step

if TYPE_CHECKING:
    from p2pchat.room.sessions import Sessions

__all__ = ["Handshakes"]

log = logging.getLogger("p2pchat.room.sessions")

#: Handshake states whose next message needs our private key (M2 at the
#: initiator, M3 at the responder).
_PRIVATE_KEY_STEPS: Final = frozenset((State.I1_SENT_M1, State.R1_SENT_M2))


class Handshakes:
    """Every handshake of one participant (module doc)."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self.owner = sessions.owner
        self._budget = TokenBucket(HANDSHAKE_RATE, HANDSHAKE_BURST, time.monotonic())
        self._tasks: set[asyncio.Task[None]] = set()

    def _expected_for(self, peer: Peer) -> bytes:
        o = self.owner
        if peer.info.peer_id == o.host_id and o.expected_host is not None:
            return o.expected_host
        return peer.info.fingerprint

    def begin(self, peer: Peer, role: Role) -> Handshake:
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
        if peer.info.peer_id != self.owner.host_id and not self.sessions.host_proven:
            peer.go(Step.WAIT_HOST)
            return
        if self._expected_for(peer) != peer.info.fingerprint:
            self.sessions.refuse(
                peer, "its key is not the one expected for this host", mismatch=True
            )
            return
        hs = self.begin(peer, Role.INITIATOR)
        self.owner.write(encode_send(peer.info.peer_id, hs.initiate()))

    @staticmethod
    def _crossed(peer: Peer, payload: bytes) -> bool:
        """An M1 from ``peer`` while our own M1 to it waits for an answer: both
        sides started a fresh handshake at once (docs/PROTOCOL.md, "Healing")."""
        hs = peer.hs
        if hs is None or hs.role is not Role.INITIATOR or hs.state is not State.I1_SENT_M1:
            return False
        return _is_m1(payload)

    async def on_message(self, peer: Peer, payload: bytes) -> None:
        if peer.info.peer_id != self.owner.host_id and not self.sessions.host_proven:
            if peer.state is PeerState.NEW:
                peer.go(Step.HOLD)  # its M1: answered once the host is proven
                peer.held = payload
                return
            raise RemoteProtocolError("handshake message before the host was proven")
        if peer.state is PeerState.READY:
            if not _is_m1(payload):
                log.debug("peer %d: a stray handshake message during a session", peer.info.peer_id)
                return  # only an M1 says the peer heals (docs/PROTOCOL.md §6.5)
            # the peer lost its side of our session (a record failed there)
            # and starts a fresh handshake: ours is over too
            if not self.sessions.broke(peer, "the peer started a fresh handshake", answer=True):
                return
        if peer.state is PeerState.HANDSHAKING and self._crossed(peer, payload):
            # the smaller fingerprint goes on initiating; the other answers
            if self.owner.identity.fingerprint < peer.info.fingerprint:
                return
            self.begin(peer, Role.RESPONDER)
        elif peer.state in (PeerState.NEW, PeerState.HELD, PeerState.HEALING):
            self.begin(peer, Role.RESPONDER)
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
        except IncompatibleVersionError as exc:
            if hs.role is not Role.RESPONDER:
                raise
            # in the words a peer of another version looks for (§5.7)
            why = f"incompatible version: we speak {list(SUPPORTED_VERSIONS)}"
            self.owner.write(encode_send(peer.info.peer_id, hs.refusal(why)))
            self.sessions.refuse(peer, str(exc), mismatch=False, told=True)
            return
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
            if peer.working and peer.hs is hs:
                peer.go(Step.STEP_DONE)
                self.sessions.failure(peer, exc)
        finally:
            self.owner.bus.notify()

    async def _after_step(self, peer: Peer, hs: Handshake, reply: bytes | None) -> None:
        if reply is not None:
            self.owner.write(encode_send(peer.info.peer_id, reply))
        if hs.complete:
            assert hs.result is not None
            self.sessions.admission.admit(peer, hs.result)
            o = self.owner
            if peer.info.peer_id == o.host_id != o.my_id and self.sessions.host_proven:
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
        """The handshake with ``peer`` is past its deadline (or it never began
        one): a heal fails, anyone else is refused."""
        if peer.hs is None:
            if peer.state in (PeerState.NEW, PeerState.WAITING_HOST, PeerState.HELD):
                why = "no handshake within the time allowed: its key was never proven"
                self.sessions.refuse(peer, why, mismatch=False)
                self.owner.bus.notify()
            return
        try:
            peer.hs.check_deadline(now)
        except HandshakeError as exc:
            self.sessions.failure(peer, exc)
            self.owner.bus.notify()

    def heal(self, peer: Peer) -> None:
        """Its backoff is over: start the fresh handshake (we initiate)."""
        if peer.state is not PeerState.HEALING:
            return
        hs = self.begin(peer, Role.INITIATOR)
        self.owner.write(encode_send(peer.info.peer_id, hs.initiate()))

    async def _release_others(self) -> None:
        """The host is proven: answer the held first messages, start the waiting handshakes."""
        for other in list(self.sessions.peers.values()):
            if other.info.peer_id == self.owner.host_id or other.ended:
                continue
            if other.state is PeerState.HELD and other.held is not None:
                held, other.held = other.held, None
                await self.sessions.on_payload(other.info.peer_id, held)  # answered now
            elif other.state is PeerState.WAITING_HOST:
                self.start_initiator(other)


def _is_m1(payload: bytes) -> bool:
    """Whether a handshake payload is a well-formed M1 (a fresh handshake)."""
    try:
        return isinstance(parse_handshake(payload[1:]), M1)
    except RemoteProtocolError:
        return False
