"""The room layer: participants, delivery, transfers, and :class:`Room`, the public API.

Faces (``p2pchat.faces``) import from this package only: :class:`Room`, its
events, and the few helpers a face needs to show them.
"""

from __future__ import annotations

from p2pchat.errors import ExitCode, describe_error
from p2pchat.net.discovery import HostInfo, async_browse, resolve_interfaces
from p2pchat.net.relay import RelayLimits
from p2pchat.proto.keys import format_fingerprint, parse_fingerprint
from p2pchat.proto.text import check_name, sanitize
from p2pchat.proto.transfer import Phase, format_duration, format_size
from p2pchat.room.events import (
    Connected,
    Delivered,
    Disconnected,
    Event,
    FileCompleted,
    FileEvent,
    FileFailed,
    FileOffered,
    FileProgress,
    MessageReceived,
    MessageSent,
    PeerInfo,
    PeerJoined,
    PeerLeft,
    PeerRefused,
    Reconnected,
    Reconnecting,
    RefusalKind,
    RoomEnded,
    SessionReady,
    Trust,
)
from p2pchat.room.host import Hosting
from p2pchat.room.link import host_listing
from p2pchat.room.room import FilePolicy, Member, Room, Verification
from p2pchat.room.transfers import Prepared, Transfer
from p2pchat.store.identity import Pin, TrustStore, load_identity, resolve_home

__all__ = [
    "Connected",
    "Delivered",
    "Disconnected",
    "Event",
    "ExitCode",
    "FileCompleted",
    "FileEvent",
    "FileFailed",
    "FileOffered",
    "FilePolicy",
    "FileProgress",
    "HostInfo",
    "Hosting",
    "Member",
    "MessageReceived",
    "MessageSent",
    "PeerInfo",
    "PeerJoined",
    "PeerLeft",
    "PeerRefused",
    "Phase",
    "Pin",
    "Prepared",
    "Reconnected",
    "Reconnecting",
    "RefusalKind",
    "RelayLimits",
    "Room",
    "RoomEnded",
    "SessionReady",
    "Transfer",
    "Trust",
    "TrustStore",
    "Verification",
    "async_browse",
    "check_name",
    "describe_error",
    "format_duration",
    "format_fingerprint",
    "format_size",
    "host_listing",
    "load_identity",
    "parse_fingerprint",
    "resolve_home",
    "resolve_interfaces",
    "sanitize",
]
