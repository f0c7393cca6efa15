"""p2pchat: serverless, end-to-end encrypted chat for devices on one local network.

The library is :class:`p2pchat.Room` (docs/LIBRARY.md)::

    import p2pchat

    async with p2pchat.Room.join(name="alice") as room:
        await room.send("hi")
        async for event in room.events():
            ...

Importing the package loads nothing heavy: ``Room``, its events and the rest
of :mod:`p2pchat.room` load on first use (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "P2PChatError",
    "Connected",
    "Delivered",
    "DeliveryFailed",
    "Dialing",
    "Disconnected",
    "Event",
    "ExitCode",
    "FileCompleted",
    "FileFailed",
    "FileOffered",
    "FileProgress",
    "Looking",
    "Member",
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
    "Room",
    "RoomEnded",
    "SessionBroken",
    "SessionReady",
    "Transfer",
    "Trust",
    "Verification",
    "__version__",
]

#: loaded from p2pchat.room on first use
_LAZY = frozenset(__all__) - {"__version__", "P2PChatError"}

if TYPE_CHECKING:
    from p2pchat.errors import P2PChatError
    from p2pchat.room import (
        Connected,
        Delivered,
        DeliveryFailed,
        Dialing,
        Disconnected,
        Event,
        ExitCode,
        FileCompleted,
        FileFailed,
        FileOffered,
        FileProgress,
        Looking,
        Member,
        MessageReceived,
        MessageSent,
        PauseReason,
        PeerInfo,
        PeerJoined,
        PeerLeft,
        PeerRefused,
        Reconnected,
        Reconnecting,
        RefusalKind,
        Room,
        RoomEnded,
        SessionBroken,
        SessionReady,
        Transfer,
        Trust,
        Verification,
    )


def __getattr__(name: str) -> Any:
    if name == "P2PChatError":
        from p2pchat.errors import P2PChatError

        return P2PChatError
    if name in _LAZY:
        from p2pchat import room

        value = getattr(room, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'p2pchat' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)
