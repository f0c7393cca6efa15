"""Application messages: the plaintext of data records between two participants.

Each is a msgpack map with a type key ``t``. Chat messages carry a random
16-byte id; the receiver acknowledges each id end to end (inside the
encrypted session, so the relay cannot forge an ack) and drops duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from p2pchat.errors import MalformedFrameError
from p2pchat.proto.framing import pack, unpack
from p2pchat.proto.messages import check_text

__all__ = ["MSG_ID_LEN", "Ack", "AppMessage", "Chat", "KeepAlive", "encode_app", "parse_app"]

MSG_ID_LEN: Final = 16
MAX_ACK_IDS: Final = 256


@dataclass(frozen=True, slots=True)
class Chat:
    """One chat message."""

    msg_id: bytes  #: 16 random bytes, unique per message
    text: str
    direct: bool = False  #: sent to this one participant only (/msg), not to the room


@dataclass(frozen=True, slots=True)
class Ack:
    """The sender of these ids' messages: they arrived (and were shown once)."""

    msg_ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """An encrypted probe; ``reply`` asks the peer to answer with one of its own."""

    reply: bool


AppMessage: TypeAlias = Chat | Ack | KeepAlive


def encode_app(msg: AppMessage) -> bytes:
    """The record payload for ``msg``."""
    if isinstance(msg, Chat):
        if msg.direct:
            return pack({"t": "msg", "id": msg.msg_id, "text": msg.text, "direct": True})
        return pack({"t": "msg", "id": msg.msg_id, "text": msg.text})
    if isinstance(msg, Ack):
        return pack({"t": "ack", "ids": list(msg.msg_ids)})
    return pack({"t": "ka", "reply": msg.reply})


def _msg_id(value: Any) -> bytes:
    if not isinstance(value, bytes) or len(value) != MSG_ID_LEN:
        raise MalformedFrameError("message id must be 16 bytes")
    return value


def parse_app(payload: bytes) -> AppMessage:
    """Decode and validate a record payload."""
    obj = unpack(payload)
    if not isinstance(obj, dict):
        raise MalformedFrameError("application message is not a map")
    kind = obj.get("t")
    if kind == "msg":
        direct = obj.get("direct", False)
        if not isinstance(direct, bool):
            raise MalformedFrameError("direct flag must be a boolean")
        return Chat(_msg_id(obj.get("id")), check_text(obj.get("text")), direct)
    if kind == "ack":
        ids = obj.get("ids")
        if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_ACK_IDS:
            raise MalformedFrameError("ack must list 1 to 256 ids")
        return Ack(tuple(_msg_id(i) for i in ids))
    if kind == "ka":
        reply = obj.get("reply")
        if not isinstance(reply, bool):
            raise MalformedFrameError("keepalive reply flag must be a boolean")
        return KeepAlive(reply)
    raise MalformedFrameError("application message of unknown type")
