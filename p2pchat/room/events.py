"""What happens in a room, as typed, frozen events.

Every face sees the same events: the chat screen draws them, line mode prints
them, JSON mode prints one object per event (README.md, "JSON mode"), and a
program reads them from :meth:`p2pchat.Room.events`. None of them carries a
key or anything secret; text from the network is kept as sent (faces escape
it with :func:`p2pchat.proto.text.sanitize` when they show it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from p2pchat.errors import ExitCode
from p2pchat.proto.keys import format_fingerprint

__all__ = [
    "Connected",
    "Delivered",
    "DeliveryFailed",
    "Dialing",
    "Disconnected",
    "Event",
    "FileCompleted",
    "FileEvent",
    "FileFailed",
    "FileOffered",
    "FileProgress",
    "Looking",
    "MessageReceived",
    "MessageSent",
    "PauseReason",
    "PeerInfo",
    "PeerJoined",
    "PeerLeft",
    "PeerRefused",
    "Reconnected",
    "Reconnecting",
    "RefusalKind",
    "RoomEnded",
    "SessionBroken",
    "SessionReady",
    "Trust",
]


class Trust(enum.StrEnum):
    """How far a peer's key is trusted when its session comes up."""

    NEW = "new"  #: first contact: pinned now
    KNOWN = "known"  #: pinned before, not verified
    VERIFIED = "verified"  #: pinned and compared (SAS or fingerprints)


class RefusalKind(enum.StrEnum):
    """Why a peer was refused."""

    MISMATCH = "mismatch"  #: a pinned name (or an expected host) presented another key
    UNKNOWN_PEER = "unknown-peer"  #: not pinned, under --require-known
    OWN_KEY = "own-key"  #: it presented our own key
    PROTOCOL = "protocol"  #: anything else: a broken handshake or record

    @property
    def trust(self) -> bool:
        """A refusal for trust (never the peer we meant), not for a protocol failure."""
        return self is not RefusalKind.PROTOCOL


@dataclass(frozen=True, slots=True)
class PeerInfo:
    peer_id: int
    name: str
    fingerprint: bytes

    @property
    def fingerprint_text(self) -> str:
        return format_fingerprint(self.fingerprint)


@dataclass(frozen=True, slots=True)
class PeerJoined:
    peer: PeerInfo


@dataclass(frozen=True, slots=True)
class SessionReady:
    peer: PeerInfo
    sas: str
    trust: Trust
    renewed: bool = False  #: a fresh handshake after the session broke (SessionBroken)


@dataclass(frozen=True, slots=True)
class SessionBroken:
    """A record from ``peer`` failed (altered, replayed, dropped or reordered on
    the way): that session is over, a fresh handshake follows in ``retry_in``
    seconds, and what it had not acknowledged is sent again once it is up."""

    peer: PeerInfo
    reason: str
    retry_in: float


@dataclass(frozen=True, slots=True)
class PeerRefused:
    """We refused ``peer`` (``by_peer`` False), or it refused us (True, with the
    reason it gave). Either way the session is over; it is not a goodbye."""

    peer: PeerInfo
    reason: str
    mismatch: bool  #: a pinned name presented another key (we refused it for that)
    #: on a mismatch, the other fingerprints pinned under that name or a look-alike
    pinned: tuple[bytes, ...] = ()
    kind: RefusalKind = RefusalKind.PROTOCOL
    by_peer: bool = False  #: the peer refused us (an authenticated ``refuse``)


@dataclass(frozen=True, slots=True)
class MessageReceived:
    peer: PeerInfo
    msg_id: bytes
    text: str
    direct: bool = False  #: sent to us alone (/msg), not to the room


@dataclass(frozen=True, slots=True)
class Delivered:
    msg_id: bytes
    peer: PeerInfo
    complete: bool  #: every intended recipient has it now
    delivered: int = 1  #: recipients that have it ...
    total: int = 1  #: ... of this many
    #: ``peer`` did not acknowledge it: it is no recipient after all (it never
    #: proved its key), so the counts changed
    dropped: bool = False


@dataclass(frozen=True, slots=True)
class DeliveryFailed:
    """These messages will not reach ``peer`` in this run: it was refused for
    trust (never the participant we meant) before it acknowledged them."""

    peer: PeerInfo
    msg_ids: tuple[bytes, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class PeerLeft:
    peer: PeerInfo
    clean: bool  #: said goodbye in an authenticated close


@dataclass(frozen=True, slots=True)
class Disconnected:
    reason: str
    clean: bool


@dataclass(frozen=True, slots=True)
class FileOffered:
    """A file offered to us (``incoming``), or offered by us for the first time
    in this run (``remembered``: by itself, left unfinished by an earlier run)."""

    peer: PeerInfo
    transfer_id: bytes
    name: str  #: incoming: the safe name it will be stored under; outgoing: as offered
    size: int
    sha256: bytes
    incoming: bool
    pending: bool = False  #: waiting for /accept or /reject
    remembered: bool = False  #: ours, offered again by itself: an earlier run left it unfinished


class PauseReason(enum.StrEnum):
    """Why a transfer paused (:attr:`FileProgress.why`)."""

    PEER_LEFT = "peer-left"  #: the session with the peer ended: it left, or was cut off
    DISCONNECTED = "disconnected"  #: our own connection to the host dropped
    WE_LEFT = "we-left"  #: we are leaving (our own quit or shutdown)


@dataclass(frozen=True, slots=True)
class FileProgress:
    """How far a transfer is (at most every PROGRESS_INTERVAL seconds, and when it
    starts, resumes or pauses)."""

    peer: PeerInfo
    transfer_id: bytes
    name: str
    incoming: bool
    done: int  #: bytes the receiver has written
    size: int
    start: int  #: where this run began: above 0 when resumed
    rate: float  #: bytes per second lately
    eta: float | None  #: seconds left, None while unknown
    paused: bool = False  #: the session with the peer ended; it resumes on the next
    why: PauseReason | None = None  #: when paused: who left
    #: when paused, ours: remembered under --home, the next chat offers it again by itself
    remembered: bool = False


@dataclass(frozen=True, slots=True)
class FileCompleted:
    """A transfer is complete: the receiver verified the SHA-256 and stored the file."""

    peer: PeerInfo
    transfer_id: bytes
    name: str
    incoming: bool
    size: int
    sha256: bytes
    path: str  #: incoming: where it was stored; outgoing: the file sent
    start: int  #: where the last run began (above 0 if it was resumed)
    seconds: float  #: duration of the last run
    rate: float  #: average bytes per second of the last run


@dataclass(frozen=True, slots=True)
class FileFailed:
    """A transfer is over without the file: refused, cancelled, or broken."""

    peer: PeerInfo
    transfer_id: bytes
    name: str
    incoming: bool
    reason: str
    by_peer: bool  #: the peer refused or cancelled it (else it failed here)
    #: a transfer remembered from an earlier run that is not offered again
    #: (the file changed or is gone, or the key it was for was forgotten)
    not_resumed: bool = False


FileEvent = FileOffered | FileProgress | FileCompleted | FileFailed


@dataclass(frozen=True, slots=True)
class MessageSent:
    """We sent a message (the JSON ``sent`` event): to everyone present, or to one."""

    msg_id: bytes
    text: str
    to: tuple[str, ...]  #: names of the recipients present when it was sent
    direct: bool = False  #: to one member only
    queued: bool = True  #: someone is to receive it (False: nobody else was here)


@dataclass(frozen=True, slots=True)
class Looking:
    """A joiner is browsing the network (mDNS) for its host, for up to
    ``timeout`` seconds: when it starts, and when a reconnect must find the
    host again. What follows says how it went: ``Dialing`` once found, else
    the room's start fails (or the reconnect goes on trying)."""

    name: str | None  #: the host asked for (NAME or NAME@FP); None: any host
    timeout: float


@dataclass(frozen=True, slots=True)
class Dialing:
    """A joiner is trying these addresses of the host (ranked, raced)."""

    addresses: tuple[tuple[str, int], ...]
    name: str | None = None  #: the host's advertised name, when found by discovery


@dataclass(frozen=True, slots=True)
class Connected:
    """A joiner's connection to the host's relay is up (the session follows)."""

    address: str
    port: int


@dataclass(frozen=True, slots=True)
class Reconnecting:
    """The link to the host dropped; the next attempt starts in ``delay`` seconds."""

    delay: float
    attempt: int
    last_error: str = ""  #: why the previous attempt failed ("" for the first)


@dataclass(frozen=True, slots=True)
class Reconnected:
    """The link is back: what was not delivered is being sent again."""


@dataclass(frozen=True, slots=True)
class RoomEnded:
    """The room cannot go on: the host closed it, its key was refused, or the
    host's own relay connection was lost. ``exit_code`` is what a command exits with."""

    reason: str
    exit_code: ExitCode
    by_host: bool = False  #: the host ended the chat on purpose


Event = (
    PeerJoined
    | SessionReady
    | PeerRefused
    | MessageReceived
    | MessageSent
    | Delivered
    | DeliveryFailed
    | SessionBroken
    | PeerLeft
    | Disconnected
    | FileOffered
    | FileProgress
    | FileCompleted
    | FileFailed
    | Looking
    | Dialing
    | Connected
    | Reconnecting
    | Reconnected
    | RoomEnded
)
