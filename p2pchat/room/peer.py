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
    READY ──fail──> HEALING ──start──> HANDSHAKING     (a record failed: a fresh handshake,
                                                         or the peer's M1 starts it)
    HANDSHAKING, WORKING ──fail──> HEALING             (a re-handshake failed: later again)
    HANDSHAKING ──start──> HANDSHAKING                 (crossed M1s: one side yields)
    every state but GONE ──refuse──> REFUSED;  every state ──gone──> GONE
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from p2pchat.errors import LocalProtocolError
from p2pchat.proto.handshake import Handshake, HandshakeResult
from p2pchat.room.events import PeerInfo, PeerRefused

__all__ = ["TRANSITIONS", "Due", "Peer", "PeerState", "Step"]


class PeerState(enum.Enum):
    NEW = "new"  #: in the roster, nothing exchanged yet
    WAITING_HOST = "waiting-host"  #: we initiate once the host's key is proven
    HELD = "held"  #: its first handshake message waits until the host is proven
    HANDSHAKING = "handshaking"
    WORKING = "working"  #: a private-key handshake step runs in a worker thread
    READY = "ready"  #: the end-to-end session is up
    HEALING = "healing"  #: the session failed; a fresh handshake starts at ``heal_at``
    REFUSED = "refused"  #: we refused it (trust or protocol); nothing more is read
    GONE = "gone"  #: it left, or the connection to the relay ended


class Step(enum.Enum):
    WAIT_HOST = "wait-host"
    HOLD = "hold"
    START = "start"
    OFF_LOOP = "off-loop"
    STEP_DONE = "step-done"
    COMPLETE = "complete"
    FAIL = "fail"
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
    (_S.READY, _E.FAIL): _S.HEALING,
    (_S.HANDSHAKING, _E.FAIL): _S.HEALING,
    (_S.WORKING, _E.FAIL): _S.HEALING,
    (_S.HEALING, _E.START): _S.HANDSHAKING,
    (_S.HANDSHAKING, _E.START): _S.HANDSHAKING,
    **{(s, _E.REFUSE): _S.REFUSED for s in _S if s not in (_S.REFUSED, _S.GONE)},
    **{(s, _E.GONE): _S.GONE for s in _S if s is not _S.GONE},
}


#: states with a deadline for the key to be proven (a registration that never
#: handshakes is not a participant for ever)
_PROVING: Final = frozenset(
    (PeerState.NEW, PeerState.WAITING_HOST, PeerState.HELD, PeerState.HANDSHAKING)
)


class Due(enum.Enum):
    """What a peer's timer asks for."""

    PROBE = "probe"  #: quiet for the keepalive interval: send a keepalive that wants a reply
    DEAD = "dead"  #: silent for too long: presumed gone
    HANDSHAKE_LATE = "handshake-late"  #: the handshake did not complete in time
    HEAL = "heal"  #: time for the fresh handshake of a failed session


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
    ready_since: float | None = None  #: when the current (or last) session came up
    heals: int = 0  #: failures in a row, each soon after the session before it came up
    heal_at: float | None = None  #: while HEALING: when the fresh handshake starts
    refusal: PeerRefused | None = None  #: why, once REFUSED (by us or by it)
    #: our messages sent while its key was not proven yet: if it never is, it
    #: was never a participant, and they are not owed to it
    unproven: list[bytes] = field(default_factory=list)

    def go(self, step: Step) -> PeerState:
        """Take ``step``; raises LocalProtocolError if the table does not allow it here."""
        nxt = TRANSITIONS.get((self.state, step))
        if nxt is None:
            raise LocalProtocolError(
                f"peer {self.info.peer_id}: {step.value} is not allowed in state {self.state.value}"
            )
        self.state = nxt
        if nxt in (PeerState.REFUSED, PeerState.GONE, PeerState.HEALING):
            self.hs = None
            self.hs_deadline = None
        if nxt is not PeerState.READY:
            self.result = None  # a session is only ever used while READY
        if nxt is not PeerState.HEALING:
            self.heal_at = None
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
        self.ready_since = now
        self.unproven = []

    @property
    def was_ready(self) -> bool:
        """A session with it was up once (in this connection): a failure heals."""
        return self.ready_since is not None

    def next_heals(self, now: float, stable: float) -> int:
        """What :attr:`heals` becomes if the session fails at ``now``."""
        quick = self.ready_since is not None and now - self.ready_since < stable
        return self.heals + 1 if quick or self.state is not PeerState.READY else 1

    def failed(self, now: float, stable: float, base: float, cap: float) -> float:
        """The session (or a fresh handshake) failed (FAIL): the delay before the
        next handshake. Failures soon after the last session came up (within
        ``stable`` s) count up and back off: 0, base, 2 base, ... up to ``cap``;
        a session that lasted starts the count again."""
        self.heals = self.next_heals(now, stable)
        self.go(Step.FAIL)
        delay = 0.0 if self.heals <= 1 else min(cap, base * 2 ** (self.heals - 2))
        self.heal_at = now + delay
        return delay

    def deadline(self, keepalive: float, dead_after: float) -> float | None:
        """When :meth:`due` next has something to say (None: nothing pending)."""
        if self.state is PeerState.READY:
            return min(
                self.last_heard + dead_after, max(self.last_heard, self.last_sent) + keepalive
            )
        if self.state in _PROVING:
            return self.hs_deadline
        if self.state is PeerState.HEALING:
            return self.heal_at
        return None  # a worker-thread step is never interrupted; its end re-arms the timer

    def due(self, now: float, keepalive: float, dead_after: float) -> Due | None:
        """What the timer must do for this peer at ``now``."""
        if self.state is PeerState.READY:
            if now - self.last_heard >= dead_after:
                return Due.DEAD
            if now - max(self.last_heard, self.last_sent) >= keepalive:
                return Due.PROBE
        elif self.state in _PROVING and self.hs_deadline is not None and now >= self.hs_deadline:
            return Due.HANDSHAKE_LATE
        elif self.state is PeerState.HEALING and self.heal_at is not None and now >= self.heal_at:
            return Due.HEAL
        return None
