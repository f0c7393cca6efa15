"""One peer, as the participant sees it: its state in one table, and its timers.

Pure (no asyncio, no clock): the participant feeds ``now`` and asks what is
due. The states name what we know of the peer; :data:`TRANSITIONS` is the only
place that says which step may follow which, and an illegal one raises
:class:`~p2pchat.errors.LocalProtocolError` naming the step and the state
(as :mod:`p2pchat.proto.handshake` does for the handshake itself).

::

    NEW ──wait-host──> WAITING_HOST ──start──┐       (a joiner initiates once the
     │ ──hold──> HELD ──start────────────────┤        host's key is proven)
     └──start────────────────────────────────┴─> HANDSHAKING <──step-done── WORKING
                                                   │  └──off-loop──> WORKING (a private-key
                                                   │                 step in a worker thread)
                                                   └──complete──> READY
    every state but GONE ──refuse──> REFUSED;  every state ──gone──> GONE
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from p2pchat.errors import LocalProtocolError
from p2pchat.proto.handshake import Handshake, HandshakeResult
from p2pchat.room.events import PeerInfo

__all__ = ["TRANSITIONS", "Due", "Peer", "PeerState", "Step"]


class PeerState(enum.Enum):
    NEW = "new"  #: in the roster, nothing exchanged yet
    WAITING_HOST = "waiting-host"  #: we initiate once the host's key is proven
    HELD = "held"  #: its first handshake message waits until the host is proven
    HANDSHAKING = "handshaking"
    WORKING = "working"  #: a private-key handshake step runs in a worker thread
    READY = "ready"  #: the end-to-end session is up
    REFUSED = "refused"  #: we refused it (trust or protocol); nothing more is read
    GONE = "gone"  #: it left, or the connection to the relay ended


class Step(enum.Enum):
    WAIT_HOST = "wait-host"
    HOLD = "hold"
    START = "start"
    OFF_LOOP = "off-loop"
    STEP_DONE = "step-done"
    COMPLETE = "complete"
    REFUSE = "refuse"
    GONE = "gone"


_S, _E = PeerState, Step
TRANSITIONS: Final[dict[tuple[PeerState, Step], PeerState]] = {
    (_S.NEW, _E.WAIT_HOST): _S.WAITING_HOST,
    (_S.NEW, _E.HOLD): _S.HELD,
    (_S.NEW, _E.START): _S.HANDSHAKING,
    (_S.WAITING_HOST, _E.START): _S.HANDSHAKING,
    (_S.HELD, _E.START): _S.HANDSHAKING,
    (_S.HANDSHAKING, _E.OFF_LOOP): _S.WORKING,
    (_S.WORKING, _E.STEP_DONE): _S.HANDSHAKING,
    (_S.HANDSHAKING, _E.COMPLETE): _S.READY,
    **{(s, _E.REFUSE): _S.REFUSED for s in _S if s not in (_S.REFUSED, _S.GONE)},
    **{(s, _E.GONE): _S.GONE for s in _S if s is not _S.GONE},
}


class Due(enum.Enum):
    """What a peer's timer asks for."""

    PROBE = "probe"  #: quiet for the keepalive interval: send a keepalive that wants a reply
    DEAD = "dead"  #: silent for too long: presumed gone
    HANDSHAKE_LATE = "handshake-late"  #: the handshake did not complete in time


@dataclass(eq=False)
class Peer:
    """One other participant: state, handshake or session, and when we last heard."""

    info: PeerInfo
    state: PeerState = PeerState.NEW
    hs: Handshake | None = None
    result: HandshakeResult | None = None  #: the session, once READY
    held: bytes | None = None  #: its first handshake message, while HELD
    hs_deadline: float | None = None  #: when the current handshake must be complete
    last_heard: float = 0.0  #: time of the last record from this peer
    last_sent: float = 0.0  #: time of the last record to this peer

    def go(self, step: Step) -> PeerState:
        """Take ``step``; raises LocalProtocolError if the table does not allow it here."""
        nxt = TRANSITIONS.get((self.state, step))
        if nxt is None:
            raise LocalProtocolError(
                f"peer {self.info.peer_id}: {step.value} is not allowed in state {self.state.value}"
            )
        self.state = nxt
        if nxt in (PeerState.REFUSED, PeerState.GONE):
            self.hs = None
            self.hs_deadline = None
        return nxt

    @property
    def ready(self) -> bool:
        return self.state is PeerState.READY

    @property
    def writable(self) -> bool:
        """READY and we have not closed our direction (said goodbye)."""
        return self.ready and self.result is not None and not self.result.sender.closed

    @property
    def working(self) -> bool:
        """A private-key handshake step runs in a worker thread."""
        return self.state is PeerState.WORKING

    @property
    def ended(self) -> bool:
        """Refused or gone: nothing from it is read any more."""
        return self.state in (PeerState.REFUSED, PeerState.GONE)

    def begin(self, hs: Handshake, now: float, timeout: float) -> None:
        """A handshake starts (START), to be complete within ``timeout`` seconds."""
        self.go(Step.START)
        self.hs = hs
        self.hs_deadline = now + timeout

    def established(self, result: HandshakeResult, now: float) -> None:
        """The handshake completed and the peer was admitted (COMPLETE)."""
        self.go(Step.COMPLETE)
        self.hs, self.hs_deadline = None, None
        self.result = result
        self.last_heard = self.last_sent = now

    def deadline(self, keepalive: float, dead_after: float) -> float | None:
        """When :meth:`due` next has something to say (None: nothing pending)."""
        if self.state is PeerState.READY:
            return min(
                self.last_heard + dead_after, max(self.last_heard, self.last_sent) + keepalive
            )
        if self.state is PeerState.HANDSHAKING:
            return self.hs_deadline
        return None  # a worker-thread step is never interrupted; its end re-arms the timer

    def due(self, now: float, keepalive: float, dead_after: float) -> Due | None:
        """What the timer must do for this peer at ``now``."""
        if self.state is PeerState.READY:
            if now - self.last_heard >= dead_after:
                return Due.DEAD
            if now - max(self.last_heard, self.last_sent) >= keepalive:
                return Due.PROBE
        elif (
            self.state is PeerState.HANDSHAKING
            and self.hs_deadline is not None
            and now >= self.hs_deadline
        ):
            return Due.HANDSHAKE_LATE
        return None
