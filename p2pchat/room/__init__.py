"""The room layer: participants, delivery, transfers, and :class:`Room`, the public API.

Faces (``p2pchat.faces``) import from this package only: :class:`Room`, its
events, and the few helpers a face needs to show them. Each name loads its
module on first use (PEP 562), so ``p2pchat id`` does not import zeroconf.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from p2pchat.config import DEFAULT_PORT
    from p2pchat.errors import ExitCode, describe_error
    from p2pchat.net.dial import MAX_CANDIDATES, async_race
    from p2pchat.net.discovery import BrowseReport, HostInfo, async_browse, resolve_interfaces
    from p2pchat.net.firewall import read_firewall
    from p2pchat.net.interfaces import list_interfaces
    from p2pchat.net.relay import RelayLimits
    from p2pchat.proto.keys import format_fingerprint, parse_fingerprint
    from p2pchat.proto.names import MIXED_MARK, display_name, is_mixed_script, name_scripts
    from p2pchat.proto.text import check_name, display_lines, sanitize
    from p2pchat.proto.transfer import Phase, format_duration, format_size
    from p2pchat.room.delivery import Missing
    from p2pchat.room.events import (
        Connected,
        Delivered,
        DeliveryFailed,
        Dialing,
        Disconnected,
        Event,
        FileCompleted,
        FileEvent,
        FileFailed,
        FileOffered,
        FileProgress,
        Looking,
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
        RoomEnded,
        SessionBroken,
        SessionReady,
        Trust,
    )
    from p2pchat.room.host import Hosting
    from p2pchat.room.hostpick import HostQuery, fingerprint_prefix, host_listing, instance_of
    from p2pchat.room.link import refusal_advice, refused_text
    from p2pchat.room.room import FilePolicy, KeyHint, Member, Room, Verification, forget_peer
    from p2pchat.room.transfers import Prepared, Transfer
    from p2pchat.store.identity import Pin, TrustStore, load_identity, resolve_home

__all__ = [
    "MAX_CANDIDATES",
    "forget_peer",
    "MIXED_MARK",
    "DEFAULT_PORT",
    "read_firewall",
    "async_race",
    "list_interfaces",
    "BrowseReport",
    "Connected",
    "Delivered",
    "DeliveryFailed",
    "Dialing",
    "Disconnected",
    "Event",
    "ExitCode",
    "FileCompleted",
    "FileEvent",
    "FileFailed",
    "FileOffered",
    "FilePolicy",
    "FileProgress",
    "Looking",
    "HostInfo",
    "HostQuery",
    "Hosting",
    "KeyHint",
    "Member",
    "Missing",
    "MessageReceived",
    "MessageSent",
    "PauseReason",
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
    "SessionBroken",
    "SessionReady",
    "Transfer",
    "Trust",
    "TrustStore",
    "Verification",
    "async_browse",
    "check_name",
    "describe_error",
    "display_lines",
    "display_name",
    "format_duration",
    "fingerprint_prefix",
    "format_fingerprint",
    "format_size",
    "host_listing",
    "refusal_advice",
    "refused_text",
    "is_mixed_script",
    "instance_of",
    "load_identity",
    "name_scripts",
    "parse_fingerprint",
    "resolve_home",
    "resolve_interfaces",
    "sanitize",
]

#: where each exported name lives
_WHERE = {
    "MAX_CANDIDATES": "p2pchat.net.dial",
    "MIXED_MARK": "p2pchat.proto.names",
    "DEFAULT_PORT": "p2pchat.config",
    "read_firewall": "p2pchat.net.firewall",
    "async_race": "p2pchat.net.dial",
    "list_interfaces": "p2pchat.net.interfaces",
    "BrowseReport": "p2pchat.net.discovery",
    "Connected": "p2pchat.room.events",
    "Delivered": "p2pchat.room.events",
    "Missing": "p2pchat.room.delivery",
    "Dialing": "p2pchat.room.events",
    "Disconnected": "p2pchat.room.events",
    "Event": "p2pchat.room.events",
    "ExitCode": "p2pchat.errors",
    "FileCompleted": "p2pchat.room.events",
    "FileEvent": "p2pchat.room.events",
    "FileFailed": "p2pchat.room.events",
    "FileOffered": "p2pchat.room.events",
    "FilePolicy": "p2pchat.room.room",
    "FileProgress": "p2pchat.room.events",
    "Looking": "p2pchat.room.events",
    "HostInfo": "p2pchat.net.discovery",
    "HostQuery": "p2pchat.room.hostpick",
    "Hosting": "p2pchat.room.host",
    "KeyHint": "p2pchat.room.room",
    "Member": "p2pchat.room.room",
    "MessageReceived": "p2pchat.room.events",
    "MessageSent": "p2pchat.room.events",
    "PauseReason": "p2pchat.room.events",
    "PeerInfo": "p2pchat.room.events",
    "PeerJoined": "p2pchat.room.events",
    "PeerLeft": "p2pchat.room.events",
    "PeerRefused": "p2pchat.room.events",
    "Phase": "p2pchat.proto.transfer",
    "Pin": "p2pchat.store.identity",
    "Prepared": "p2pchat.room.transfers",
    "Reconnected": "p2pchat.room.events",
    "Reconnecting": "p2pchat.room.events",
    "RefusalKind": "p2pchat.room.events",
    "RelayLimits": "p2pchat.net.relay",
    "Room": "p2pchat.room.room",
    "RoomEnded": "p2pchat.room.events",
    "SessionBroken": "p2pchat.room.events",
    "SessionReady": "p2pchat.room.events",
    "DeliveryFailed": "p2pchat.room.events",
    "Transfer": "p2pchat.room.transfers",
    "Trust": "p2pchat.room.events",
    "TrustStore": "p2pchat.store.identity",
    "Verification": "p2pchat.room.room",
    "async_browse": "p2pchat.net.discovery",
    "check_name": "p2pchat.proto.text",
    "describe_error": "p2pchat.errors",
    "display_lines": "p2pchat.proto.text",
    "display_name": "p2pchat.proto.names",
    "format_duration": "p2pchat.proto.transfer",
    "format_fingerprint": "p2pchat.proto.keys",
    "format_size": "p2pchat.proto.transfer",
    "refusal_advice": "p2pchat.room.link",
    "refused_text": "p2pchat.room.link",
    "is_mixed_script": "p2pchat.proto.names",
    "fingerprint_prefix": "p2pchat.room.hostpick",
    "host_listing": "p2pchat.room.hostpick",
    "instance_of": "p2pchat.room.hostpick",
    "load_identity": "p2pchat.store.identity",
    "name_scripts": "p2pchat.proto.names",
    "parse_fingerprint": "p2pchat.proto.keys",
    "resolve_home": "p2pchat.store.identity",
    "forget_peer": "p2pchat.room.room",
    "resolve_interfaces": "p2pchat.net.discovery",
    "sanitize": "p2pchat.proto.text",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'p2pchat.room' has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
