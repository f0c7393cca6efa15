"""Application messages: the plaintext of data records between two participants.

Each is a msgpack map with a type key ``t``. Chat messages carry a random
16-byte id; the receiver acknowledges each id end to end (inside the
encrypted session, so the relay cannot forge an ack) and drops duplicates.

File transfers (docs/PROTOCOL.md, section 6.8) add seven types, all keyed by a
16-byte transfer id derived from the file's SHA-256, name and size
(:func:`file_id`): an offer, the receiver's answer (the offset it already
has), data chunks, cumulative acknowledgements that bound a window, the
receiver's verdict, and a refusal or cancellation from either side.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from p2pchat.errors import MalformedFrameError
from p2pchat.proto.framing import pack, unpack, unpack_fields
from p2pchat.proto.messages import check_text

__all__ = [
    "FILE_HASH_LEN",
    "FILE_ID_LEN",
    "MAX_ACK_IDS",
    "MAX_CHUNK",
    "MAX_FILE_NAME_BYTES",
    "MAX_FILE_REASON_BYTES",
    "MAX_FILE_SIZE",
    "MAX_KIND_CHARS",
    "MSG_ID_LEN",
    "REFUSE_CODES",
    "Ack",
    "AppMessage",
    "Chat",
    "FileAccept",
    "FileAck",
    "FileCancel",
    "FileData",
    "FileDone",
    "FileMessage",
    "FileOffer",
    "FileRefuse",
    "KeepAlive",
    "Refuse",
    "RefuseCode",
    "Unknown",
    "encode_app",
    "file_id",
    "parse_app",
]

MSG_ID_LEN: Final = 16
#: Longest application message type (``t``) accepted, known or not.
MAX_KIND_CHARS: Final = 16
MAX_ACK_IDS: Final = 256

#: Bytes of file data in one ``fd`` message, at most.
MAX_CHUNK: Final = 64 * 1024
#: A file's name as offered: 1 to this many UTF-8 bytes (untrusted all the same).
MAX_FILE_NAME_BYTES: Final = 255
#: Largest file size and offset (fits a signed 64-bit integer).
MAX_FILE_SIZE: Final = 2**63 - 1
FILE_ID_LEN: Final = 16
FILE_HASH_LEN: Final = 32
#: A refusal's or cancellation's reason, in UTF-8 bytes.
MAX_FILE_REASON_BYTES: Final = 1024
_FILE_ID_LABEL: Final = b"p2pchat/1 file"


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


class RefuseCode(enum.StrEnum):
    """Why a participant refuses a session (the ``code`` of a ``refuse``)."""

    PINNED_OTHER_KEY = "pinned-other-key"  #: the refuser pinned another key for our name
    NOT_KNOWN = "not-known"  #: the refuser accepts pinned peers only (--require-known)
    OWN_KEY = "own-key"  #: we presented the refuser's own key
    PROTOCOL = "protocol"  #: a protocol violation (also: any code this version does not know)


REFUSE_CODES: Final = frozenset(RefuseCode)
#: Longest ``refuse`` code on the wire, in characters (ASCII).
MAX_REFUSE_CODE: Final = 32


@dataclass(frozen=True, slots=True)
class Refuse:
    """I refuse this session (a close record follows): not a goodbye. ``reason``
    is the refuser's words, untrusted like any text from a peer."""

    code: RefuseCode
    reason: str


@dataclass(frozen=True, slots=True)
class Unknown:
    """A message of a type this version does not know (a newer peer's): ignored."""

    kind: str  #: its ``t``


@dataclass(frozen=True, slots=True)
class FileOffer:
    """Sender -> receiver: may I send you this file? (Sent again after a reconnect.)"""

    transfer_id: bytes  #: :func:`file_id` of the three fields below
    name: str  #: the sender's name for the file: untrusted, the receiver makes its own
    size: int
    sha256: bytes  #: SHA-256 of the whole file


@dataclass(frozen=True, slots=True)
class FileAccept:
    """Receiver -> sender: yes; I already have the first ``offset`` bytes, send the rest."""

    transfer_id: bytes
    offset: int


@dataclass(frozen=True, slots=True)
class FileData:
    """Sender -> receiver: the file's bytes at ``offset``, in order, 1 to MAX_CHUNK of them."""

    transfer_id: bytes
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class FileAck:
    """Receiver -> sender: every byte below ``offset`` is written (opens the window)."""

    transfer_id: bytes
    offset: int


@dataclass(frozen=True, slots=True)
class FileDone:
    """Receiver -> sender: the whole file arrived, its SHA-256 matched, it is stored."""

    transfer_id: bytes


@dataclass(frozen=True, slots=True)
class FileRefuse:
    """Receiver -> sender: no (declined, no room, hash mismatch...): the transfer is over."""

    transfer_id: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class FileCancel:
    """Sender -> receiver: the sender gives this transfer up."""

    transfer_id: bytes
    reason: str


FileMessage: TypeAlias = (
    FileOffer | FileAccept | FileData | FileAck | FileDone | FileRefuse | FileCancel
)
AppMessage: TypeAlias = Chat | Ack | KeepAlive | Refuse | FileMessage


def file_id(sha256: bytes, name: str, size: int) -> bytes:
    """The transfer id of a file: stable, so a sender run again resumes the same transfer.

    ``SHA-256("p2pchat/1 file" || sha256 || BE64(size) || UTF-8(name))[:16]``."""
    digest = hashlib.sha256(_FILE_ID_LABEL)
    digest.update(sha256)
    digest.update(size.to_bytes(8, "big"))
    digest.update(name.encode("utf-8"))
    return digest.digest()[:FILE_ID_LEN]


def encode_app(msg: AppMessage) -> bytes:
    """The record payload for ``msg``."""
    if isinstance(msg, Chat):
        if msg.direct:
            return pack({"t": "msg", "id": msg.msg_id, "text": msg.text, "direct": True})
        return pack({"t": "msg", "id": msg.msg_id, "text": msg.text})
    if isinstance(msg, FileData):
        return pack({"t": "fd", "id": msg.transfer_id, "off": msg.offset, "data": msg.data})
    if isinstance(msg, FileAck):
        return pack({"t": "fk", "id": msg.transfer_id, "off": msg.offset})
    if isinstance(msg, Ack):
        return pack({"t": "ack", "ids": list(msg.msg_ids)})
    if isinstance(msg, KeepAlive):
        return pack({"t": "ka", "reply": msg.reply})
    if isinstance(msg, Refuse):
        return pack({"t": "refuse", "code": str(msg.code), "reason": msg.reason})
    if isinstance(msg, FileOffer):
        return pack(
            {
                "t": "fo",
                "id": msg.transfer_id,
                "name": msg.name,
                "size": msg.size,
                "hash": msg.sha256,
            }
        )
    if isinstance(msg, FileAccept):
        return pack({"t": "fa", "id": msg.transfer_id, "off": msg.offset})
    if isinstance(msg, FileDone):
        return pack({"t": "ff", "id": msg.transfer_id})
    if isinstance(msg, FileRefuse):
        return pack({"t": "fr", "id": msg.transfer_id, "reason": msg.reason})
    return pack({"t": "fx", "id": msg.transfer_id, "reason": msg.reason})


# ---------------------------------------------------------------- validation


def _msg_id(value: Any) -> bytes:
    if not isinstance(value, bytes) or len(value) != MSG_ID_LEN:
        raise MalformedFrameError("message id must be 16 bytes")
    return value


def _transfer_id(m: dict[str, Any]) -> bytes:
    value = m.get("id")
    if not isinstance(value, bytes) or len(value) != FILE_ID_LEN:
        raise MalformedFrameError("transfer id must be 16 bytes")
    return value


def _offset(m: dict[str, Any], key: str) -> int:
    value = m.get(key)
    # bool is an int subclass: never accept it where an int is meant
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedFrameError(f"field {key!r} missing or not an integer")
    if not 0 <= value <= MAX_FILE_SIZE:
        raise MalformedFrameError(f"field {key!r} out of range")
    return value


def _reason(m: dict[str, Any]) -> str:
    value = m.get("reason")
    if not isinstance(value, str) or len(value.encode("utf-8")) > MAX_FILE_REASON_BYTES:
        raise MalformedFrameError(
            f"reason must be a string of at most {MAX_FILE_REASON_BYTES} bytes"
        )
    return value


def _parse_offer(m: dict[str, Any]) -> FileOffer:
    tid = _transfer_id(m)
    name = m.get("name")
    if not isinstance(name, str) or not 1 <= len(name.encode("utf-8")) <= MAX_FILE_NAME_BYTES:
        raise MalformedFrameError(f"file name must be 1 to {MAX_FILE_NAME_BYTES} bytes")
    size = _offset(m, "size")
    sha256 = m.get("hash")
    if not isinstance(sha256, bytes) or len(sha256) != FILE_HASH_LEN:
        raise MalformedFrameError("file hash must be 32 bytes")
    if file_id(sha256, name, size) != tid:
        raise MalformedFrameError("transfer id does not match the file's hash, name and size")
    return FileOffer(tid, name, size, sha256)


def _parse_data(m: dict[str, Any]) -> FileData:
    tid = _transfer_id(m)
    offset = _offset(m, "off")
    data = m.get("data")
    if not isinstance(data, bytes) or not 1 <= len(data) <= MAX_CHUNK:
        raise MalformedFrameError(f"file data must be 1 to {MAX_CHUNK} bytes")
    if offset + len(data) > MAX_FILE_SIZE:
        raise MalformedFrameError("file data beyond the largest file size")
    return FileData(tid, offset, data)


def _parse_refuse(m: dict[str, Any]) -> Refuse:
    code = m.get("code")
    if not isinstance(code, str) or not 1 <= len(code) <= MAX_REFUSE_CODE or not code.isascii():
        raise MalformedFrameError(f"refuse code must be 1 to {MAX_REFUSE_CODE} ASCII characters")
    known = RefuseCode(code) if code in REFUSE_CODES else RefuseCode.PROTOCOL
    return Refuse(known, _reason(m))


_FILE_PARSERS: Final[dict[object, Callable[[dict[str, Any]], FileMessage]]] = {
    "fd": _parse_data,
    "fk": lambda m: FileAck(_transfer_id(m), _offset(m, "off")),
    "fo": _parse_offer,
    "fa": lambda m: FileAccept(_transfer_id(m), _offset(m, "off")),
    "ff": lambda m: FileDone(_transfer_id(m)),
    "fr": lambda m: FileRefuse(_transfer_id(m), _reason(m)),
    "fx": lambda m: FileCancel(_transfer_id(m), _reason(m)),
}


#: the only application-message field that holds a container
_APP_LISTS: Final = frozenset({"ids"})
#: payloads up to this size are decoded by the generic decoder (they cannot
#: hold more objects than bytes); larger ones field by field
GENERIC_APP_MAX: Final = 512


def parse_app(payload: bytes) -> AppMessage | Unknown:
    """Decode and validate a record payload. A ``t`` this version does not know
    gives :class:`Unknown` (receivers ignore it, so that a newer peer can add
    message types); a known ``t`` with bad fields is malformed."""
    if len(payload) <= GENERIC_APP_MAX:
        obj = unpack(payload)  # a few hundred objects at most: the fast decoder
        if not isinstance(obj, dict):
            raise MalformedFrameError("application message is not a map")
    else:
        # fields only: a container where none belongs is skipped unbuilt, so
        # any peer with a session cannot make us spend more than reading its
        # bytes (a generic decode of 1 MiB of nested arrays takes ~40 ms)
        obj = unpack_fields(payload, _APP_LISTS, "application message")
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
    if kind == "refuse":
        return _parse_refuse(obj)
    if not isinstance(kind, str) or not 1 <= len(kind) <= MAX_KIND_CHARS:
        raise MalformedFrameError(
            f"application message type must be a str of 1 to {MAX_KIND_CHARS}"
        )
    parser = _FILE_PARSERS.get(kind)
    if parser is None:
        return Unknown(kind)
    return parser(obj)
