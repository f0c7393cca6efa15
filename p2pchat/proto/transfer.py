"""File transfers without I/O: safe names, both sides' state machines, progress.

Nothing here touches the disk, a socket or the clock (``now`` is passed in).
:mod:`p2pchat.room.transfers` is the asyncio service that feeds these machines the
messages of :mod:`p2pchat.proto.app` and asks them what to send (its outgoing
and incoming sides are :mod:`p2pchat.room.sending` and :mod:`p2pchat.room.receiving`);
:mod:`p2pchat.store.filestore` holds the bytes. The machines' phases and their
legal moves are in one table, :data:`TRANSITIONS`; a move it does not list
raises :class:`~p2pchat.errors.TransferError` naming the event and the phase.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Final, Literal

from p2pchat.errors import TransferError
from p2pchat.proto.app import MAX_CHUNK, FileAccept, FileOffer, file_id
from p2pchat.proto.text import MAX_SAFE_NAME_BYTES, safe_filename, split_ext, truncate_utf8

__all__ = [
    "CHECKPOINT_BYTES",
    "CHUNK_SIZE",
    "MAX_IN_FLIGHT",
    "MAX_SAFE_NAME_BYTES",
    "PROGRESS_INTERVAL",
    "TRANSITIONS",
    "WINDOW",
    "Incoming",
    "Meter",
    "Outgoing",
    "Phase",
    "format_duration",
    "format_size",
    "numbered",
    "offer_name",
    "safe_filename",
]

#: Bytes per data message.
CHUNK_SIZE: Final = MAX_CHUNK
#: Chunks of one transfer sent and not yet acknowledged, at most.
WINDOW: Final = 16
#: Bytes in flight on one connection, all transfers together, at most.
MAX_IN_FLIGHT: Final = 2 * WINDOW * CHUNK_SIZE
#: The receiver records its resume point (and syncs the .part) every this many bytes.
CHECKPOINT_BYTES: Final = 8 * 1024 * 1024
#: Progress is reported at most this often per transfer (seconds).
PROGRESS_INTERVAL: Final = 0.5


# ---------------------------------------------------------------- names


def numbered(name: str, n: int) -> str:
    """The ``n``-th alternative to an existing ``name``: ``report (1).pdf``."""
    if n == 0:
        return name
    stem, ext = split_ext(name)
    return f"{stem} ({n}){ext}"


def offer_name(local_name: str, limit: int = 255) -> str:
    """The name to offer for a local file: valid UTF-8 (bytes the file system
    could not decode become U+FFFD) and at most ``limit`` bytes, keeping the
    extension where it can."""
    text = local_name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if len(text.encode("utf-8")) <= limit:
        return text or "file"
    stem, ext = split_ext(text)
    if len(ext.encode("utf-8")) > 16:
        stem, ext = text, ""
    return truncate_utf8(stem, limit - len(ext.encode("utf-8"))) + ext


# ---------------------------------------------------------------- state machines


class Phase(enum.Enum):
    """Where a transfer is, named for what its side is waiting for."""

    #: no session with the peer now; the sender offers again when one is up
    WAITING = "waiting"
    #: sender: offer sent, waiting for the answer; receiver: waiting for the user
    OFFERED = "offered"
    #: receiver: accepted, getting the .part ready (a resumed one is re-hashed)
    OPENING = "opening"
    #: data flows
    RUNNING = "running"
    #: every byte is there: the receiver's hash check decides
    VERIFYING = "verifying"
    DONE = "done"
    FAILED = "failed"


Role = Literal["send", "recv"]
_W, _O, _P, _R, _V, _D = (
    Phase.WAITING,
    Phase.OFFERED,
    Phase.OPENING,
    Phase.RUNNING,
    Phase.VERIFYING,
    Phase.DONE,
)

#: (side, phase, event) -> next phase: the only legal moves. Every phase but
#: DONE and FAILED may also "fail" (to FAILED).
TRANSITIONS: Final[dict[tuple[Role, Phase, str], Phase]] = {
    # the sender
    ("send", _W, "offer"): _O,
    ("send", _O, "accept"): _R,
    ("send", _O, "accept-all"): _V,  # the receiver has every byte already
    ("send", _R, "acked-all"): _V,
    ("send", _V, "done"): _D,
    ("send", _O, "done"): _D,  # finished in an earlier run; the receiver says so at once
    ("send", _O, "detach"): _W,
    ("send", _R, "detach"): _W,
    ("send", _V, "detach"): _W,
    # the receiver
    ("recv", _O, "accept"): _P,
    ("recv", _P, "opened"): _R,
    ("recv", _P, "opened-all"): _V,
    ("recv", _R, "received-all"): _V,
    ("recv", _V, "verified"): _D,
    ("recv", _R, "detach"): _W,
    ("recv", _W, "reoffer"): _R,
    ("recv", _R, "reoffer"): _R,  # the sender restarted before we saw it leave
}


def _step(role: Role, phase: Phase, event: str) -> Phase:
    if event == "fail" and phase not in (Phase.DONE, Phase.FAILED):
        return Phase.FAILED
    nxt = TRANSITIONS.get((role, phase, event))
    if nxt is None:
        side = "sender" if role == "send" else "receiver"
        raise TransferError(f"{event!r} is not allowed to a {side} in phase {phase.value!r}")
    return nxt


@dataclass
class Outgoing:
    """The sender's side of one transfer: what to offer, what to send next, the window."""

    name: str  #: as offered (see :func:`offer_name`)
    size: int
    sha256: bytes
    window: int = WINDOW  #: chunks in flight, at most
    chunk: int = CHUNK_SIZE
    phase: Phase = Phase.WAITING
    next_offset: int = 0  #: the next byte to send
    acked: int = 0  #: the receiver has written every byte below this
    start: int = 0  #: where the current run began (the receiver's answer)
    transfer_id: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.transfer_id = file_id(self.sha256, self.name, self.size)

    @property
    def final(self) -> bool:
        return self.phase in (Phase.DONE, Phase.FAILED)

    @property
    def in_flight(self) -> int:
        """Bytes sent and not yet acknowledged."""
        return self.next_offset - self.acked if self.phase is Phase.RUNNING else 0

    def _go(self, event: str) -> None:
        self.phase = _step("send", self.phase, event)

    def offer(self) -> FileOffer:
        """A session with the receiver is up: the offer to send it."""
        self._go("offer")
        return FileOffer(self.transfer_id, self.name, self.size, self.sha256)

    def on_accept(self, offset: int) -> None:
        """The receiver has the first ``offset`` bytes: send from there."""
        if not 0 <= offset <= self.size:
            raise TransferError(f"the receiver asked to resume at {offset}, beyond the file")
        self._go("accept-all" if offset == self.size else "accept")
        self.next_offset = self.acked = self.start = offset

    def next_chunk(self) -> tuple[int, int] | None:
        """(offset, length) of the next chunk to send, if the window allows one now."""
        if self.phase is not Phase.RUNNING or self.next_offset >= self.size:
            return None
        if self.next_offset - self.acked >= self.window * self.chunk:
            return None
        offset = self.next_offset
        length = min(self.chunk, self.size - offset)
        self.next_offset += length
        return offset, length

    def on_ack(self, offset: int) -> None:
        """The receiver has written every byte below ``offset``."""
        if self.phase is Phase.VERIFYING and offset == self.acked:
            return  # a repeat of the last one
        if self.phase is not Phase.RUNNING:
            raise TransferError(f"acknowledgement in phase {self.phase.value!r}")
        if not self.acked <= offset <= self.next_offset:
            raise TransferError(
                f"acknowledgement of {offset} bytes, outside the {self.acked}..{self.next_offset} "
                "sent and not yet acknowledged"
            )
        self.acked = offset
        if offset == self.size:
            self._go("acked-all")

    def on_done(self) -> None:
        """The receiver verified the hash and stored the file."""
        self._go("done")

    def detach(self) -> None:
        """The session with the receiver ended: offer again on the next one."""
        if self.phase in (Phase.OFFERED, Phase.RUNNING, Phase.VERIFYING):
            self._go("detach")

    def fail(self) -> None:
        self.phase = _step("send", self.phase, "fail")


@dataclass
class Incoming:
    """The receiver's side of one transfer: the answer to give, the next byte expected."""

    transfer_id: bytes
    name: str  #: the safe name it is stored under (not the one offered)
    size: int
    sha256: bytes
    phase: Phase = Phase.OFFERED
    received: int = 0  #: every byte below this is written
    start: int = 0  #: where the current run began

    @classmethod
    def from_offer(cls, offer: FileOffer) -> Incoming:
        return cls(offer.transfer_id, safe_filename(offer.name), offer.size, offer.sha256)

    @property
    def final(self) -> bool:
        return self.phase in (Phase.DONE, Phase.FAILED)

    def _go(self, event: str) -> None:
        self.phase = _step("recv", self.phase, event)

    def accept(self) -> None:
        """The user (or --accept-files) said yes: get the .part ready."""
        self._go("accept")

    def opened(self, offset: int) -> FileAccept:
        """The .part holds the first ``offset`` verified bytes: the answer to send."""
        if not 0 <= offset <= self.size:
            raise TransferError(f"resume offset {offset} beyond the file")
        self._go("opened-all" if offset == self.size else "opened")
        self.received = self.start = offset
        return FileAccept(self.transfer_id, offset)

    def on_data(self, offset: int, length: int) -> bool:
        """A chunk arrived; True when it completes the file. It must continue
        exactly where the last one ended and stay within the offered size."""
        if self.phase is not Phase.RUNNING:
            raise TransferError(f"data in phase {self.phase.value!r}")
        if offset != self.received:
            raise TransferError(f"data at offset {offset}, expected {self.received}")
        if length < 1 or offset + length > self.size:
            raise TransferError(f"data beyond the offered size of {self.size} bytes")
        self.received += length
        if self.received == self.size:
            self._go("received-all")
            return True
        return False

    def detach(self) -> None:
        """The session with the sender ended: wait for its offer on the next one."""
        if self.phase is Phase.RUNNING:
            self._go("detach")

    def reoffer(self) -> FileAccept | None:
        """The sender offered this transfer again (a new session): the answer,
        or None when it comes later (still deciding, opening or verifying)."""
        if self.phase in (Phase.WAITING, Phase.RUNNING):
            self._go("reoffer")
            self.start = self.received
            return FileAccept(self.transfer_id, self.received)
        return None

    def verified(self) -> None:
        self._go("verified")

    def fail(self) -> None:
        self.phase = _step("recv", self.phase, "fail")


# ---------------------------------------------------------------- progress


class Meter:
    """Rate over the last few seconds, time left, and when to report next."""

    SPAN: Final = 3.0  #: seconds of history the rate is taken over

    def __init__(self, now: float, done: int, interval: float = PROGRESS_INTERVAL) -> None:
        self.began, self.start = now, done
        self.interval = interval
        self._samples: deque[tuple[float, int]] = deque([(now, done)])
        self._reported = -math.inf

    def add(self, now: float, done: int) -> None:
        self._samples.append((now, done))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.SPAN:
            self._samples.popleft()

    @property
    def rate(self) -> float:
        """Bytes per second lately (0 until there is something to go by)."""
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0

    def eta(self, size: int) -> float | None:
        """Seconds left at the current rate, None while it is unknown."""
        rate = self.rate
        return (size - self._samples[-1][1]) / rate if rate > 0 else None

    def average(self, now: float, done: int) -> float:
        """Bytes per second since the meter started."""
        return (done - self.start) / (now - self.began) if now > self.began else 0.0

    def due(self, now: float, *, force: bool = False) -> bool:
        """True (and the clock restarted) if a report is due, or ``force``d."""
        if force or now - self._reported >= self.interval:
            self._reported = now
            return True
        return False


def format_size(n: float) -> str:
    """``1.5 MB`` (decimal units, as file managers show sizes)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def format_duration(seconds: float | None) -> str:
    """``0.4 s``, ``42 s``, ``3 min 5 s``, ``2 h 1 min``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds < 9.95:
        return f"{max(0.0, seconds):.1f} s"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"
