"""Wire messages: relay frames (registration, envelopes) and handshake messages.

Each message is a frozen dataclass; ``to_wire()`` gives the msgpack value,
``parse_*`` validates an untrusted decoded value and returns the dataclass or
raises :class:`~p2pchat.errors.MalformedFrameError` /
:class:`~p2pchat.errors.HandshakeError`. Field shapes are normative in
docs/PROTOCOL.md.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, TypeAlias

from p2pchat.config import MAX_TEXT_BYTES
from p2pchat.errors import HandshakeError, MalformedFrameError, P2PChatError, RemoteProtocolError
from p2pchat.proto.framing import PREFIX, pack, unpack, unpack_fields
from p2pchat.proto.text import check_name, clean_reason

__all__ = [
    "MAX_GENERIC_TO_RELAY",
    "HS_KEYS",
    "HS_TAG",
    "Bye",
    "Deliver",
    "ErrorCode",
    "ErrorFrame",
    "Challenge",
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
    "Proof",
    "Send",
    "Welcome",
    "check_name",
    "clean_reason",
    "check_text",
    "deliver_head",
    "encode",
    "encode_deliver",
    "encode_send",
    "send_head",
    "parse_body",
    "parse_body_to_relay",
    "parse_to_relay",
    "parse_frame",
    "parse_handshake",
]

MAX_PEER_ID: Final = 2**31 - 1
MAX_KEY_DER: Final = 1200  # an 8192-bit RSA SubjectPublicKeyInfo is 1062 bytes
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


def _versions(m: dict[str, Any], err: type[RemoteProtocolError]) -> tuple[int, ...]:
    versions = _field(m, "versions", list, err)
    if not 1 <= len(versions) <= MAX_VERSIONS or not all(
        type(v) is int and 0 < v < 2**16 for v in versions
    ):
        raise err("versions must be 1 to 16 integers")
    return tuple(versions)


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


#: Largest RSA ciphertext in a challenge: an 8192-bit key's.
MAX_CHALLENGE: Final = 1024
#: The secret a challenge carries, and its proof returns.
PROOF_LEN: Final = 32


@dataclass(frozen=True, slots=True)
class Challenge:
    """Relay -> participant, after hello: prove you hold the key. ``c`` is an
    RSA-OAEP encryption of a fresh secret under the hello's key, with the
    label ``REGISTER_LABEL`` (PROTOCOL.md 3.3)."""

    c: bytes

    def to_wire(self) -> dict[str, Any]:
        return {"t": "challenge", "c": self.c}


@dataclass(frozen=True, slots=True)
class Proof:
    """Participant -> relay: the challenge's secret, decrypted."""

    n: bytes

    def to_wire(self) -> dict[str, Any]:
        return {"t": "proof", "n": self.n}


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


class Send(NamedTuple):
    """Participant -> relay: forward ``payload`` to participant ``to``.

    Send and Deliver are the per-message hot path, so they are (immutable)
    named tuples: building one costs a tenth of a frozen dataclass."""

    to: int
    payload: bytes

    def to_wire(self) -> dict[str, Any]:
        return {"t": "send", "to": self.to, "p": self.payload}


class Deliver(NamedTuple):
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


class ErrorCode(enum.StrEnum):
    """Why the relay refused a connection, for programs (``reason`` is for people)."""

    VERSION = "version"  #: no protocol version in common
    KEY = "key"  #: the identity key in hello is not acceptable, or was not proven
    FULL = "full"  #: the room is full
    OTHER = ""  #: anything else, or a relay that sends no code


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """Relay -> participant: why the relay is about to close this connection."""

    reason: str
    code: ErrorCode = ErrorCode.OTHER

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"t": "error", "reason": self.reason}
        if self.code:
            wire["code"] = str(self.code)
        return wire


@dataclass(frozen=True, slots=True)
class Bye:
    """Participant -> relay: leaving on purpose."""

    def to_wire(self) -> dict[str, Any]:
        return {"t": "bye"}


Frame: TypeAlias = (
    Hello
    | Challenge
    | Proof
    | Welcome
    | Joined
    | Left
    | Send
    | Deliver
    | Ping
    | Pong
    | ErrorFrame
    | Bye
)

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
    return Hello(_versions(m, _E), check_name(m.get("name")), _bin(m, "key", _E, 1, MAX_KEY_DER))


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
    raw = m.get("code", "")
    if not isinstance(raw, str):
        raise _E("error code must be a str")
    try:
        code = ErrorCode(raw)
    except ValueError:  # a newer relay's code: still an error, of no kind we know
        code = ErrorCode.OTHER
    return ErrorFrame(clean_reason(reason), code)


_PARSERS: Final[dict[object, Callable[[dict[str, Any]], Frame]]] = {
    "hello": _parse_hello,
    "challenge": lambda m: Challenge(_bin(m, "c", _E, 1, MAX_CHALLENGE)),
    "proof": lambda m: Proof(_bin(m, "n", _E, PROOF_LEN)),
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


_RELAY_LISTS: Final = frozenset({"versions"})
#: frame types only a relay sends
_NEVER_TO_RELAY: Final = frozenset({"challenge", "welcome", "joined", "left", "deliver", "error"})

#: A frame a relay receives that is longer than this must be a ``send`` in the
#: canonical layout (PROTOCOL.md 2): a relay decodes only what it routes, so a
#: big body full of ignored nested containers cannot cost it CPU.
MAX_GENERIC_TO_RELAY: Final = 4096


def parse_body_to_relay(body: bytes | memoryview) -> Frame:
    """:func:`parse_body` for what a relay receives: a body over
    ``MAX_GENERIC_TO_RELAY`` bytes is parsed only if it is a canonical ``send``;
    a smaller one by :func:`~p2pchat.proto.framing.unpack_fields`, never by
    the generic decoder."""
    return parse_to_relay(body)[0]


def parse_to_relay(body: bytes | memoryview) -> tuple[Frame, bool]:
    """:func:`parse_body_to_relay`, and whether the frame took the field-by-field
    decoder (not a canonical send: a relay counts those)."""
    frame = _parse_envelope(body)
    small = len(body) <= MAX_GENERIC_TO_RELAY
    if frame is None and small:
        # no frame to a relay holds a container but hello's versions: any
        # other is skipped unbuilt, so a body of nested junk costs no more
        # than reading it
        fields = unpack_fields(body, _RELAY_LISTS)
        kind = fields.get("t")
        if kind in _NEVER_TO_RELAY:
            raise _E(f"{kind!r} frames are only sent by a relay")
        return parse_frame(fields), True
    if frame is None or (not small and not isinstance(frame, Send)):
        raise _E(
            f"a frame over {MAX_GENERIC_TO_RELAY} bytes must be a send in the canonical layout"
        )
    return frame, False


def parse_body(body: bytes | memoryview) -> Frame:
    """Decode and validate one frame body: the ``parse`` hook of
    :class:`~p2pchat.proto.framing.FrameDecoder` for relay-layer streams.

    A send/deliver frame laid out exactly as :func:`envelope_head` writes it is
    parsed here without msgpack (the per-message hot path); anything else,
    including other valid encodings of the same map, takes the generic path.
    Tests check both paths agree on every input."""
    frame = _parse_envelope(body)
    return frame if frame is not None else parse_frame(unpack(body))


def _parse_envelope(body: bytes | memoryview) -> Frame | None:
    """A send or deliver in the canonical layout, else None."""
    # byte 4 tells the two apart: "d" of "deliver", "s" of "send"
    if len(body) < 20 or body[0] != 0x83:
        return None
    if body[4] == 0x64 and body[:_LEN_DELIVER] == _HEAD_DELIVER:
        kind: type[Send] | type[Deliver] = Deliver
        pos = _LEN_DELIVER
    elif body[4] == 0x73 and body[:_LEN_SEND] == _HEAD_SEND:
        kind, pos = Send, _LEN_SEND
    else:
        return None
    try:
        tag = body[pos]
        if tag < 0x80:
            peer, pos = tag, pos + 1
        elif tag == 0xCC:
            peer, pos = body[pos + 1], pos + 2
        elif tag == 0xCD:
            peer, pos = int.from_bytes(body[pos + 1 : pos + 3], "big"), pos + 3
        elif tag == 0xCE:
            peer, pos = int.from_bytes(body[pos + 1 : pos + 5], "big"), pos + 5
        else:
            return None
        tag = body[pos + 2]
        if body[pos : pos + 2] != _P_KEY:
            return None
        if tag == 0xC4:
            size, pos = body[pos + 3], pos + 4
        elif tag == 0xC5:
            size, pos = int.from_bytes(body[pos + 3 : pos + 5], "big"), pos + 5
        elif tag == 0xC6:
            size, pos = int.from_bytes(body[pos + 3 : pos + 7], "big"), pos + 7
        else:
            return None
    except IndexError:
        return None
    if pos + size != len(body) or peer > MAX_PEER_ID:
        return None
    frame: Frame = tuple.__new__(kind, (peer, bytes(body[pos:])))
    return frame


def encode(msg: Frame) -> bytes:
    """One length-prefixed frame carrying ``msg``."""
    body = pack(msg.to_wire())
    return PREFIX.pack(len(body)) + body


_U32: Final = struct.Struct(">I")
_HEAD_SEND: Final = b"\x83\xa1t\xa4send\xa2to"
_HEAD_DELIVER: Final = b"\x83\xa1t\xa7deliver\xa4from"
_P_KEY: Final = b"\xa1p"
_LEN_SEND: Final = len(_HEAD_SEND)
_LEN_DELIVER: Final = len(_HEAD_DELIVER)


def _uint_bytes(value: int) -> bytes:
    """msgpack's shortest encoding of a non-negative int below 2**32."""
    if value < 0x80:
        return bytes((value,))
    if value < 0x100:
        return bytes((0xCC, value))
    if value < 0x10000:
        return b"\xcd" + value.to_bytes(2, "big")
    return b"\xce" + value.to_bytes(4, "big")


def _bin_head(length: int) -> bytes:
    if length < 0x100:
        return bytes((0xC4, length))
    if length < 0x10000:
        return b"\xc5" + length.to_bytes(2, "big")
    return b"\xc6" + length.to_bytes(4, "big")


_HEAD_CACHE: dict[tuple[bytes, int, int], bytes] = {}
_HEAD_CACHE_MAX: Final = 4096


def envelope_head(kind: bytes, peer_id: int, payload_len: int) -> bytes:
    """Everything of a send/deliver frame that comes before its payload: the
    length prefix and the msgpack map up to the payload's bin header. Byte for
    byte what msgpack produces for the map (tests check it)."""
    key = (kind, peer_id, payload_len)
    cached = _HEAD_CACHE.get(key)
    if cached is not None:
        return cached
    head = kind + _uint_bytes(peer_id) + _P_KEY + _bin_head(payload_len)
    head = _U32.pack(len(head) + payload_len) + head
    if len(_HEAD_CACHE) >= _HEAD_CACHE_MAX:
        _HEAD_CACHE.clear()
    _HEAD_CACHE[key] = head
    return head


def encode_send(to: int, payload: bytes) -> bytes:
    """Fast path for ``encode(Send(to, payload))``."""
    return envelope_head(_HEAD_SEND, to, len(payload)) + payload


def encode_deliver(sender: int, payload: bytes) -> bytes:
    """Fast path for ``encode(Deliver(sender, payload))``."""
    return envelope_head(_HEAD_DELIVER, sender, len(payload)) + payload


def send_head(to: int, payload_len: int) -> bytes:
    """The bytes of a send frame before its payload (see :func:`envelope_head`)."""
    return _HEAD_CACHE.get((_HEAD_SEND, to, payload_len)) or envelope_head(
        _HEAD_SEND, to, payload_len
    )


def deliver_head(sender: int, payload_len: int) -> bytes:
    """The bytes of a deliver frame before its payload."""
    return _HEAD_CACHE.get((_HEAD_DELIVER, sender, payload_len)) or envelope_head(
        _HEAD_DELIVER, sender, payload_len
    )


# ---------------------------------------------------------------- handshake messages

_H = HandshakeError
RSA_CT_MIN: Final = 384
RSA_CT_MAX: Final = 1024
#: Largest handshake message body (M2 with an 8192-bit key is about 2.3 KB).
MAX_HANDSHAKE_MESSAGE: Final = 4096


@dataclass(frozen=True, slots=True)
class M1:
    """Initiator -> responder."""

    versions: tuple[int, ...]
    nonce: bytes  #: 32 random bytes
    eph: bytes  #: X25519 public key
    key: bytes  #: initiator's SubjectPublicKeyInfo DER
    name: str  #: initiator's display name, authenticated by the transcript
    commit: bytes  #: SHA-256("p2pchat/1 commit" || ms_i)

    def to_wire(self) -> dict[str, Any]:
        return {
            "t": 1,
            "versions": list(self.versions),
            "nonce": self.nonce,
            "eph": self.eph,
            "key": self.key,
            "name": self.name,
            "commit": self.commit,
        }


@dataclass(frozen=True, slots=True)
class M2:
    """Responder -> initiator."""

    version: int
    nonce: bytes
    eph: bytes
    key: bytes
    name: str  #: responder's display name, authenticated by the transcript
    ct: bytes  #: OAEP(initiator key, ms_r)

    def to_wire(self) -> dict[str, Any]:
        return {
            "t": 2,
            "version": self.version,
            "nonce": self.nonce,
            "eph": self.eph,
            "key": self.key,
            "name": self.name,
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
    return M1(
        _versions(m, _H),
        _bin(m, "nonce", _H, 32),
        _bin(m, "eph", _H, 32),
        _bin(m, "key", _H, 1, MAX_KEY_DER),
        check_name(m.get("name"), _H),
        _bin(m, "commit", _H, 32),
    )


_HS_PARSERS: Final[dict[object, Callable[[dict[str, Any]], HsMessage]]] = {
    0: lambda m: HsError(clean_reason(_field(m, "reason", str, _H))),
    1: _parse_m1,
    2: lambda m: M2(
        _uint(m, "version", _H, 2**16 - 1),
        _bin(m, "nonce", _H, 32),
        _bin(m, "eph", _H, 32),
        _bin(m, "key", _H, 1, MAX_KEY_DER),
        check_name(m.get("name"), _H),
        _bin(m, "ct", _H, RSA_CT_MIN, RSA_CT_MAX),
    ),
    3: lambda m: M3(_bin(m, "ct", _H, RSA_CT_MIN, RSA_CT_MAX), _bin(m, "fin", _H, 32)),
    4: lambda m: M4(_bin(m, "fin", _H, 32)),
}


#: The keys of each version-1 handshake message, in the one order allowed
#: (the order ``to_wire`` writes): no key may be missing, added or moved.
HS_KEYS: Final[dict[int, tuple[str, ...]]] = {
    0: ("t", "reason"),
    1: ("t", "versions", "nonce", "eph", "key", "name", "commit"),
    2: ("t", "version", "nonce", "eph", "key", "name", "ct"),
    3: ("t", "ct", "fin"),
    4: ("t", "fin"),
}


def parse_handshake(body: bytes) -> HsMessage:
    """Decode and validate one handshake message body (the bytes after ``HS_TAG``).

    Parsing is strict (PROTOCOL.md 5.1): exactly the keys of :data:`HS_KEYS`
    in that order, each value in msgpack's shortest encoding, so that the
    body is the one encoding of its values. Otherwise a relay could add a key
    to M3, or re-encode it, unnoticed by the responder (which hashes the body
    into TH4 only after it has completed): the initiator would then fail at
    M4 with a wrong diagnosis while the responder holds a session."""
    if len(body) > MAX_HANDSHAKE_MESSAGE:
        raise HandshakeError(
            f"handshake message of {len(body)} bytes, over the {MAX_HANDSHAKE_MESSAGE}-byte cap"
        )
    try:
        obj = unpack(body)
    except MalformedFrameError as exc:
        raise HandshakeError(f"handshake message is not valid msgpack: {exc}") from exc
    if not isinstance(obj, dict):
        raise _H("handshake message is not a map")
    kind = obj.get("t")
    if type(kind) is not int or kind not in HS_KEYS:
        raise _H("handshake message of unknown type")
    msg: HsMessage = _HS_PARSERS[kind](obj)
    keys = HS_KEYS[kind]
    if tuple(obj) != keys:
        raise _H(f"handshake message {kind} must have exactly the keys {', '.join(keys)} in order")
    if pack(obj) != body:
        raise _H("handshake message is not in the canonical msgpack encoding")
    return msg
