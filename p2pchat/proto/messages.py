"""Wire messages: relay frames (registration, envelopes) and handshake messages.

Each message is a frozen dataclass; ``to_wire()`` gives the msgpack value,
``parse_*`` validates an untrusted decoded value and returns the dataclass or
raises :class:`~p2pchat.errors.MalformedFrameError` /
:class:`~p2pchat.errors.HandshakeError`. Field shapes are normative in
docs/PROTOCOL.md.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from p2pchat.config import MAX_NAME_BYTES, MAX_TEXT_BYTES
from p2pchat.errors import HandshakeError, MalformedFrameError, P2PChatError, RemoteProtocolError
from p2pchat.proto.framing import PREFIX, pack, unpack

__all__ = [
    "HS_TAG",
    "Bye",
    "Deliver",
    "ErrorFrame",
    "Frame",
    "Hello",
    "HsError",
    "HsMessage",
    "Joined",
    "Left",
    "M1",
    "M2",
    "M3",
    "M4",
    "PeerEntry",
    "Ping",
    "Pong",
    "Send",
    "Welcome",
    "check_name",
    "check_text",
    "encode",
    "encode_deliver",
    "encode_send",
    "parse_frame",
    "parse_handshake",
]

MAX_PEER_ID: Final = 2**31 - 1
MAX_KEY_DER: Final = 1200  # an 8192-bit RSA SubjectPublicKeyInfo is 1062 bytes
MAX_REASON: Final = 200
MAX_VERSIONS: Final = 16
#: First byte of an envelope payload that carries a handshake message.
HS_TAG: Final = 0x01


# ---------------------------------------------------------------- field checks


def _field(m: dict[str, Any], key: str, kind: type, err: type[RemoteProtocolError]) -> Any:
    value = m.get(key)
    # bool is an int subclass: never accept it where an int is meant
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise err(f"field {key!r} missing or not {kind.__name__}")
    return value


def _uint(m: dict[str, Any], key: str, err: type[RemoteProtocolError], top: int) -> int:
    value: int = _field(m, key, int, err)
    if not 0 <= value <= top:
        raise err(f"field {key!r} out of range")
    return value


def _bin(
    m: dict[str, Any], key: str, err: type[RemoteProtocolError], lo: int, hi: int | None = None
) -> bytes:
    value: bytes = _field(m, key, bytes, err)
    if not lo <= len(value) <= (lo if hi is None else hi):
        raise err(f"field {key!r} has wrong length {len(value)}")
    return value


def _is_unsafe(ch: str) -> bool:
    # control, format (bidi overrides), separators other than space, unassigned, surrogates
    return unicodedata.category(ch)[0] in "CZ" and ch != " "


def check_name(name: object, err: type[P2PChatError] = MalformedFrameError) -> str:
    """A display name: 1 to 64 UTF-8 bytes, no control or formatting characters,
    no leading or trailing space."""
    if not isinstance(name, str):
        raise err("name is not a string")
    if not name or len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise err(f"name must be 1 to {MAX_NAME_BYTES} bytes")
    if name != name.strip() or any(_is_unsafe(ch) for ch in name):
        raise err("name contains control, formatting or surrounding space characters")
    return name


def check_text(text: object, err: type[P2PChatError] = MalformedFrameError) -> str:
    """Chat text: a string of at most 64 KiB in UTF-8 (display code escapes control characters)."""
    if not isinstance(text, str):
        raise err("text is not a string")
    if len(text) > MAX_TEXT_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        raise err(f"text over {MAX_TEXT_BYTES} bytes")
    return text


# ---------------------------------------------------------------- relay frames


@dataclass(frozen=True, slots=True)
class PeerEntry:
    """One participant as the relay lists it."""

    peer_id: int
    name: str
    key: bytes  #: SubjectPublicKeyInfo DER (a claim: only the handshake proves it)

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.peer_id, "name": self.name, "key": self.key}


@dataclass(frozen=True, slots=True)
class Hello:
    """Participant -> relay: first frame, registration request."""

    versions: tuple[int, ...]
    name: str
    key: bytes

    def to_wire(self) -> dict[str, Any]:
        return {"t": "hello", "versions": list(self.versions), "name": self.name, "key": self.key}


@dataclass(frozen=True, slots=True)
class Welcome:
    """Relay -> participant: registered; your id and who is here already."""

    version: int
    peer_id: int
    peers: tuple[PeerEntry, ...]
    host: int | None = None  #: id of the relay owner's own participant, if registered

    def to_wire(self) -> dict[str, Any]:
        return {
            "t": "welcome",
            "version": self.version,
            "id": self.peer_id,
            "peers": [p.to_wire() for p in self.peers],
            "host": self.host,
        }


@dataclass(frozen=True, slots=True)
class Joined:
    """Relay -> participants: someone registered."""

    peer: PeerEntry

    def to_wire(self) -> dict[str, Any]:
        return {"t": "joined", **self.peer.to_wire()}


@dataclass(frozen=True, slots=True)
class Left:
    """Relay -> participants: someone's connection ended."""

    peer_id: int

    def to_wire(self) -> dict[str, Any]:
        return {"t": "left", "id": self.peer_id}


@dataclass(frozen=True, slots=True)
class Send:
    """Participant -> relay: forward ``payload`` to participant ``to``."""

    to: int
    payload: bytes

    def to_wire(self) -> dict[str, Any]:
        return {"t": "send", "to": self.to, "p": self.payload}


@dataclass(frozen=True, slots=True)
class Deliver:
    """Relay -> participant: ``payload`` from participant ``sender``."""

    sender: int
    payload: bytes

    def to_wire(self) -> dict[str, Any]:
        return {"t": "deliver", "from": self.sender, "p": self.payload}


@dataclass(frozen=True, slots=True)
class Ping:
    """Either direction: are you there? Answered by a Pong with the same token."""

    token: int

    def to_wire(self) -> dict[str, Any]:
        return {"t": "ping", "token": self.token}


@dataclass(frozen=True, slots=True)
class Pong:
    token: int

    def to_wire(self) -> dict[str, Any]:
        return {"t": "pong", "token": self.token}


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """Relay -> participant: why the relay is about to close this connection."""

    reason: str

    def to_wire(self) -> dict[str, Any]:
        return {"t": "error", "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Bye:
    """Participant -> relay: leaving on purpose."""

    def to_wire(self) -> dict[str, Any]:
        return {"t": "bye"}


Frame: TypeAlias = Hello | Welcome | Joined | Left | Send | Deliver | Ping | Pong | ErrorFrame | Bye

_E = MalformedFrameError


def _peer(m: Any) -> PeerEntry:
    if not isinstance(m, dict):
        raise _E("peer entry is not a map")
    return PeerEntry(
        _uint(m, "id", _E, MAX_PEER_ID),
        check_name(m.get("name")),
        _bin(m, "key", _E, 1, MAX_KEY_DER),
    )


def _parse_hello(m: dict[str, Any]) -> Hello:
    versions = _field(m, "versions", list, _E)
    if not 1 <= len(versions) <= MAX_VERSIONS or not all(
        type(v) is int and 0 < v < 2**16 for v in versions
    ):
        raise _E("versions must be 1 to 16 integers")
    return Hello(tuple(versions), check_name(m.get("name")), _bin(m, "key", _E, 1, MAX_KEY_DER))


def _parse_welcome(m: dict[str, Any]) -> Welcome:
    peers = _field(m, "peers", list, _E)
    host = m.get("host")
    return Welcome(
        _uint(m, "version", _E, 2**16 - 1),
        _uint(m, "id", _E, MAX_PEER_ID),
        tuple(_peer(p) for p in peers),
        None if host is None else _uint(m, "host", _E, MAX_PEER_ID),
    )


def _parse_reason(m: dict[str, Any]) -> ErrorFrame:
    reason = _field(m, "reason", str, _E)
    return ErrorFrame(reason[:MAX_REASON])


_PARSERS: Final[dict[object, Callable[[dict[str, Any]], Frame]]] = {
    "hello": _parse_hello,
    "welcome": _parse_welcome,
    "joined": lambda m: Joined(_peer(m)),
    "left": lambda m: Left(_uint(m, "id", _E, MAX_PEER_ID)),
    "send": lambda m: Send(_uint(m, "to", _E, MAX_PEER_ID), _field(m, "p", bytes, _E)),
    "deliver": lambda m: Deliver(_uint(m, "from", _E, MAX_PEER_ID), _field(m, "p", bytes, _E)),
    "ping": lambda m: Ping(_uint(m, "token", _E, 2**63 - 1)),
    "pong": lambda m: Pong(_uint(m, "token", _E, 2**63 - 1)),
    "error": _parse_reason,
    "bye": lambda m: Bye(),
}


def parse_frame(obj: Any) -> Frame:
    """Validate one decoded frame body."""
    if not isinstance(obj, dict):
        raise _E("frame body is not a map")
    kind = obj.get("t")
    # only a str can name a frame type (an unhashable list/map here would raise TypeError)
    parser = _PARSERS.get(kind) if type(kind) is str else None
    if parser is None:
        raise _E("frame of unknown type")
    frame: Frame = parser(obj)
    return frame


def encode(msg: Frame) -> bytes:
    """One length-prefixed frame carrying ``msg``."""
    body = pack(msg.to_wire())
    return PREFIX.pack(len(body)) + body


def encode_send(to: int, payload: bytes) -> bytes:
    """Fast path for ``encode(Send(to, payload))``."""
    body = pack({"t": "send", "to": to, "p": payload})
    return PREFIX.pack(len(body)) + body


def encode_deliver(sender: int, payload: bytes) -> bytes:
    """Fast path for ``encode(Deliver(sender, payload))``."""
    body = pack({"t": "deliver", "from": sender, "p": payload})
    return PREFIX.pack(len(body)) + body


# ---------------------------------------------------------------- handshake messages

_H = HandshakeError
RSA_CT_MIN: Final = 384
RSA_CT_MAX: Final = 1024


@dataclass(frozen=True, slots=True)
class M1:
    """Initiator -> responder."""

    versions: tuple[int, ...]
    nonce: bytes  #: 32 random bytes
    eph: bytes  #: X25519 public key
    key: bytes  #: initiator's SubjectPublicKeyInfo DER
    commit: bytes  #: SHA-256("p2pchat/1 commit" || ms_i)

    def to_wire(self) -> dict[str, Any]:
        return {
            "t": 1,
            "versions": list(self.versions),
            "nonce": self.nonce,
            "eph": self.eph,
            "key": self.key,
            "commit": self.commit,
        }


@dataclass(frozen=True, slots=True)
class M2:
    """Responder -> initiator."""

    version: int
    nonce: bytes
    eph: bytes
    key: bytes
    ct: bytes  #: OAEP(initiator key, ms_r)

    def to_wire(self) -> dict[str, Any]:
        return {
            "t": 2,
            "version": self.version,
            "nonce": self.nonce,
            "eph": self.eph,
            "key": self.key,
            "ct": self.ct,
        }


@dataclass(frozen=True, slots=True)
class M3:
    """Initiator -> responder."""

    ct: bytes  #: OAEP(responder key, ms_i)
    fin: bytes  #: HMAC-SHA256(initiator finished key, TH2)

    def to_wire(self) -> dict[str, Any]:
        return {"t": 3, "ct": self.ct, "fin": self.fin}


@dataclass(frozen=True, slots=True)
class M4:
    """Responder -> initiator."""

    fin: bytes  #: HMAC-SHA256(responder finished key, TH4)

    def to_wire(self) -> dict[str, Any]:
        return {"t": 4, "fin": self.fin}


@dataclass(frozen=True, slots=True)
class HsError:
    """Either side: the handshake cannot go on (unauthenticated: a hint only)."""

    reason: str

    def to_wire(self) -> dict[str, Any]:
        return {"t": 0, "reason": self.reason}


HsMessage: TypeAlias = M1 | M2 | M3 | M4 | HsError


def _parse_m1(m: dict[str, Any]) -> M1:
    versions = _field(m, "versions", list, _H)
    if not 1 <= len(versions) <= MAX_VERSIONS or not all(
        type(v) is int and 0 < v < 2**16 for v in versions
    ):
        raise _H("versions must be 1 to 16 integers")
    return M1(
        tuple(versions),
        _bin(m, "nonce", _H, 32),
        _bin(m, "eph", _H, 32),
        _bin(m, "key", _H, 1, MAX_KEY_DER),
        _bin(m, "commit", _H, 32),
    )


_HS_PARSERS: Final[dict[object, Callable[[dict[str, Any]], HsMessage]]] = {
    0: lambda m: HsError(_field(m, "reason", str, _H)[:MAX_REASON]),
    1: _parse_m1,
    2: lambda m: M2(
        _uint(m, "version", _H, 2**16 - 1),
        _bin(m, "nonce", _H, 32),
        _bin(m, "eph", _H, 32),
        _bin(m, "key", _H, 1, MAX_KEY_DER),
        _bin(m, "ct", _H, RSA_CT_MIN, RSA_CT_MAX),
    ),
    3: lambda m: M3(_bin(m, "ct", _H, RSA_CT_MIN, RSA_CT_MAX), _bin(m, "fin", _H, 32)),
    4: lambda m: M4(_bin(m, "fin", _H, 32)),
}


def parse_handshake(body: bytes) -> HsMessage:
    """Decode and validate one handshake message body (the bytes after ``HS_TAG``)."""
    try:
        obj = unpack(body)
    except MalformedFrameError as exc:
        raise HandshakeError(f"handshake message is not valid msgpack: {exc}") from exc
    if not isinstance(obj, dict):
        raise _H("handshake message is not a map")
    kind = obj.get("t")
    parser = _HS_PARSERS.get(kind) if type(kind) is int else None
    if parser is None:
        raise _H("handshake message of unknown type")
    msg: HsMessage = parser(obj)
    return msg
