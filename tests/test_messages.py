"""Wire messages: relay frames and handshake messages, built and parsed strictly."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.config import MAX_TEXT_BYTES
from p2pchat.errors import HandshakeError, MalformedFrameError
from p2pchat.proto.framing import FrameDecoder, encode_frame, pack, unpack
from p2pchat.proto.messages import (
    HS_KEYS,
    HS_TAG,
    M1,
    M2,
    M3,
    M4,
    MAX_HANDSHAKE_MESSAGE,
    Bye,
    Deliver,
    ErrorCode,
    ErrorFrame,
    Frame,
    Hello,
    HsError,
    HsMessage,
    Joined,
    Left,
    PeerEntry,
    Ping,
    Pong,
    Send,
    Welcome,
    check_name,
    check_text,
    deliver_head,
    encode,
    encode_deliver,
    encode_send,
    parse_body,
    parse_frame,
    parse_handshake,
    send_head,
)
from p2pchat.proto.record import RECORD_TAG

KEY = b"\x30\x82\x01\xa2" + bytes(range(256)) + bytes(160)  # opaque to the relay: any bytes
MAX_ID = 2**31 - 1

FRAMES: list[Frame] = [
    Hello((1,), "alice", KEY),
    Hello((3, 2, 1), "Zoë 日本 😀", KEY),
    Welcome(1, 5, ()),
    Welcome(1, 0, (PeerEntry(1, "bob", KEY), PeerEntry(MAX_ID, "carol", b"\x01"))),
    Joined(PeerEntry(9, "dave", KEY)),
    Left(0),
    Left(MAX_ID),
    Send(3, b"payload"),
    Send(3, b""),
    Deliver(4, bytes(range(256)) * 4),
    Ping(0),
    Ping(2**63 - 1),
    Pong(12345),
    ErrorFrame("relay full"),
    ErrorFrame("the room is full", ErrorCode.FULL),
    Bye(),
]


def wire(obj: Any) -> Any:
    """What the other side decodes: pack, then the strict unpacker."""
    return unpack(pack(obj))


# ------------------------------------------------------------------ relay frames


def same(a: object, b: object) -> bool:
    """Equal and of the same type (Send and Deliver are tuples: (1, b"") == (1, b""))."""
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
def test_relay_frame_round_trips(frame: Frame) -> None:
    assert same(parse_frame(wire(frame.to_wire())), frame)
    [decoded] = FrameDecoder().feed(encode(frame))
    assert same(parse_frame(decoded), frame)
    assert encode(frame) == encode_frame(frame.to_wire())
    [typed] = FrameDecoder(parse=parse_body).feed(encode(frame))
    assert same(typed, frame)


@pytest.mark.parametrize("peer", [MAX_ID + 1, 2**32 - 1, 2**32, -1, True])
@pytest.mark.parametrize(("t", "key"), [("send", "to"), ("deliver", "from")])
def test_envelope_ids_out_of_range_are_rejected_by_both_paths(peer: int, t: str, key: str) -> None:
    body = pack({"t": t, key: peer, "p": b"payload bytes"})
    with pytest.raises(MalformedFrameError):
        parse_body(body)
    with pytest.raises(MalformedFrameError):
        parse_frame(unpack(body))


def test_send_and_deliver_are_told_apart() -> None:
    assert type(parse_body(encode_send(1, b"x")[4:])) is Send
    assert type(parse_body(encode_deliver(1, b"x")[4:])) is Deliver


ENVELOPE_IDS = [0, 1, 127, 128, 255, 256, 65535, 65536, MAX_ID]
ENVELOPE_SIZES = [0, 1, 255, 256, 65535, 65536]


@pytest.mark.parametrize("peer", ENVELOPE_IDS)
@pytest.mark.parametrize("size", ENVELOPE_SIZES)
def test_fast_path_encoders_match_the_general_one(peer: int, size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + b"\x07" * (size % 256)
    for cls, fast, head in (
        (Send, encode_send, send_head),
        (Deliver, encode_deliver, deliver_head),
    ):
        frame = cls(peer, payload)
        assert fast(peer, payload) == encode(frame)
        assert head(peer, size) + payload == encode(frame)
        parsed = parse_body(encode(frame)[4:])
        assert same(parsed, frame)
        assert type(parsed.payload) is bytes
        assert same(parse_body(memoryview(encode(frame))[4:]), frame)


def test_error_reason_is_truncated_not_rejected() -> None:
    frame = parse_frame(wire({"t": "error", "reason": "x" * 5000}))
    assert frame == ErrorFrame("x" * 200)


def test_unknown_extra_fields_are_ignored() -> None:
    assert parse_frame(wire({"t": "left", "id": 3, "future": [1, 2]})) == Left(3)


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if value is _DROP:
            del out[key]
        else:
            out[key] = value
    return out


_DROP = object()
HELLO = Hello((1,), "alice", KEY).to_wire()
WELCOME = Welcome(1, 5, (PeerEntry(1, "bob", KEY),)).to_wire()
JOINED = Joined(PeerEntry(9, "dave", KEY)).to_wire()
PEER = PeerEntry(1, "bob", KEY).to_wire()

BAD_NAMES = {
    "empty": "",
    "65-bytes": "a" * 65,
    "33-two-byte-chars": "é" * 33,
    "17-emoji": "😀" * 17,
    "leading-space": " alice",
    "trailing-space": "alice ",
    "nul": "al\x00ice",
    "newline": "al\nice",
    "tab": "al\tice",
    "escape": "\x1b[31mred",
    "del": "al\x7fice",
    "c1-control": "al\x85ice",
    "bidi-override": "\u202eecila",
    "bidi-isolate": "al\u2066ice",
    "zero-width-space": "a\u200bb",
    "word-joiner": "a\u2060b",
    "bom": "\ufeffalice",
    "right-to-left-mark": "alice\u200f",
    "only-joiners-and-selectors": "\u200d\ufe0f\u200c",
    "hangul-filler": "\u3164",
    "noncharacter": "a\uffff",
    "line-separator": "a\u2028b",
    "no-break-space": "a\u00a0b",
    "private-use": "a\ue000b",
    "unassigned": "a\U000e0fffb",
    "bin-not-str": b"alice",
    "int": 5,
    "none": None,
}

BAD_FRAMES: dict[str, Any] = {
    "not-a-map-list": ["hello"],
    "not-a-map-str": "hello",
    "not-a-map-none": None,
    "missing-type": {"id": 1},
    "unknown-type": {"t": "nope"},
    "type-bytes": {"t": b"hello", "versions": [1], "name": "a", "key": KEY},
    "type-int": {"t": 1},
    "type-list": {"t": ["hello"]},
    "type-map": {"t": {"hello": 1}},
    "type-none": {"t": None},
    "hello-versions-str": _with(HELLO, versions="1"),
    "hello-versions-empty": _with(HELLO, versions=[]),
    "hello-versions-17": _with(HELLO, versions=list(range(1, 18))),
    "hello-version-0": _with(HELLO, versions=[0]),
    "hello-version-65536": _with(HELLO, versions=[1, 2**16]),
    "hello-version-bool": _with(HELLO, versions=[True]),
    "hello-version-float": _with(HELLO, versions=[1.0]),
    "hello-version-negative": _with(HELLO, versions=[-1]),
    "hello-key-str": _with(HELLO, key="MIIB"),
    "hello-key-empty": _with(HELLO, key=b""),
    "hello-key-1201": _with(HELLO, key=b"k" * 1201),
    "welcome-version-bool": _with(WELCOME, version=True),
    "welcome-version-negative": _with(WELCOME, version=-1),
    "welcome-id-negative": _with(WELCOME, id=-1),
    "welcome-id-too-big": _with(WELCOME, id=2**31),
    "welcome-id-bool": _with(WELCOME, id=False),
    "welcome-peers-map": _with(WELCOME, peers={"1": PEER}),
    "welcome-peer-not-map": _with(WELCOME, peers=[PEER, 1]),
    "welcome-peer-bad-name": _with(WELCOME, peers=[_with(PEER, name="\u202eevil")]),
    "welcome-peer-no-key": _with(WELCOME, peers=[_with(PEER, key=_DROP)]),
    "welcome-peer-id-str": _with(WELCOME, peers=[_with(PEER, id="1")]),
    "joined-id-bool": _with(JOINED, id=True),
    "joined-key-str": _with(JOINED, key="key"),
    "left-id-negative": {"t": "left", "id": -1},
    "left-id-bool": {"t": "left", "id": True},
    "left-id-str": {"t": "left", "id": "1"},
    "left-id-float": {"t": "left", "id": 1.0},
    "left-id-too-big": {"t": "left", "id": 2**31},
    "send-to-negative": {"t": "send", "to": -1, "p": b""},
    "send-to-bool": {"t": "send", "to": True, "p": b""},
    "send-payload-str": {"t": "send", "to": 1, "p": "text"},
    "send-payload-none": {"t": "send", "to": 1, "p": None},
    "deliver-from-str": {"t": "deliver", "from": "1", "p": b""},
    "deliver-payload-list": {"t": "deliver", "from": 1, "p": [1]},
    "ping-token-bool": {"t": "ping", "token": True},
    "ping-token-negative": {"t": "ping", "token": -1},
    "ping-token-2**63": {"t": "ping", "token": 2**63},
    "pong-token-float": {"t": "pong", "token": 1.5},
    "error-reason-bytes": {"t": "error", "reason": b"oops"},
    "error-reason-none": {"t": "error", "reason": None},
}
for _label, _name in BAD_NAMES.items():
    BAD_FRAMES[f"hello-name-{_label}"] = _with(HELLO, name=_name)
    BAD_FRAMES[f"joined-name-{_label}"] = _with(JOINED, name=_name)


@pytest.mark.parametrize("obj", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_bad_relay_frames_are_rejected(obj: Any) -> None:
    with pytest.raises(MalformedFrameError):
        parse_frame(obj)


#: every field each relay frame cannot do without
REQUIRED: dict[str, tuple[Frame, tuple[str, ...]]] = {
    "hello": (Hello((1,), "a", KEY), ("versions", "name", "key")),
    "welcome": (Welcome(1, 2, ()), ("version", "id", "peers")),
    "joined": (Joined(PeerEntry(1, "a", KEY)), ("id", "name", "key")),
    "left": (Left(1), ("id",)),
    "send": (Send(1, b"x"), ("to", "p")),
    "deliver": (Deliver(1, b"x"), ("from", "p")),
    "ping": (Ping(1), ("token",)),
    "pong": (Pong(1), ("token",)),
    "error": (ErrorFrame("x"), ("reason",)),
}


@pytest.mark.parametrize(
    ("frame", "field"),
    [(frame, f) for frame, fields in REQUIRED.values() for f in fields],
    ids=[f"{t}-{f}" for t, (_, fields) in REQUIRED.items() for f in fields],
)
def test_missing_required_field_is_rejected(frame: Frame, field: str) -> None:
    body = frame.to_wire()
    assert parse_frame(wire(body)) == frame  # the complete one is fine
    del body[field]
    with pytest.raises(MalformedFrameError):
        parse_frame(wire(body))


@pytest.mark.parametrize(
    "name",
    [
        *["a", "é" * 32, "😀" * 16, "a" * 64, "Zoë", "李小龙", "O'Brien-Smith", "a b"],
        *[
            "Zoë 👩\u200d💻",
            "می\u200cخواهم",  # noqa: RUF001 (Persian, with a ZWNJ)
            "क्\u200dष",
            "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
        ],
        "shaking \U0001fae8",  # Unicode 15: unassigned in CPython 3.11's tables
    ],
)
def test_acceptable_names(name: str) -> None:
    assert check_name(name) == name
    assert parse_frame(wire(_with(HELLO, name=name))) == Hello((1,), name, KEY)


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_check_name_raises_the_error_type_asked_for(name: object) -> None:
    with pytest.raises(MalformedFrameError):
        check_name(name)
    with pytest.raises(HandshakeError):
        check_name(name, HandshakeError)


def test_check_text_limits() -> None:
    assert check_text("line one\nline two\x1b") == "line one\nline two\x1b"
    assert check_text("x" * MAX_TEXT_BYTES) == "x" * MAX_TEXT_BYTES
    with pytest.raises(MalformedFrameError):
        check_text("x" * (MAX_TEXT_BYTES + 1))
    with pytest.raises(MalformedFrameError):
        check_text("é" * (MAX_TEXT_BYTES // 2 + 1))  # few characters, too many bytes
    with pytest.raises(MalformedFrameError):
        check_text(b"bytes")


# ------------------------------------------------------------------ handshake messages

N32 = bytes(range(32))
CT384 = bytes(range(256)) + bytes(128)
HS_MESSAGES: list[HsMessage] = [
    M1((1,), N32, N32[::-1], KEY, "alice", b"\xcc" * 32),
    M1(tuple(range(1, 17)), N32, N32, b"k", "😀" * 16, N32),
    M2(1, N32, N32, KEY, "bob", CT384),
    M2(65535, N32, N32, KEY, "Zoë 日本", b"\x01" * 1024),
    M3(CT384, b"\xf1" * 32),
    M4(b"\xf2" * 32),
    HsError("no common protocol version"),
]


@pytest.mark.parametrize("msg", HS_MESSAGES, ids=lambda m: type(m).__name__)
def test_handshake_message_round_trips(msg: HsMessage) -> None:
    assert parse_handshake(pack(msg.to_wire())) == msg


def test_handshake_tag_is_distinct_from_record_tag() -> None:
    # payloads are told apart by their first byte
    assert HS_TAG != RECORD_TAG


def test_handshake_size_cap_is_inclusive() -> None:
    def m1_of_size(size: int) -> bytes:
        base = len(pack(_with(M1W, padding=b"")))
        body = pack(_with(M1W, padding=b"p" * (size - base)))
        if len(body) != size:  # the bin header grew by a byte or two
            body = pack(_with(M1W, padding=b"p" * (size - base - (len(body) - size))))
        assert len(body) == size
        return body

    # no version-1 message can be that long (an extra key is refused in any
    # case): what matters is that the cap is checked first, before decoding
    with pytest.raises(HandshakeError, match="exactly the keys"):
        parse_handshake(m1_of_size(MAX_HANDSHAKE_MESSAGE))
    with pytest.raises(HandshakeError, match="over the 4096-byte cap"):
        parse_handshake(m1_of_size(MAX_HANDSHAKE_MESSAGE + 1))


def test_hs_error_reason_is_truncated() -> None:
    assert parse_handshake(pack({"t": 0, "reason": "y" * 1000})) == HsError("y" * 200)


M1W = HS_MESSAGES[0].to_wire()
M2W = HS_MESSAGES[2].to_wire()
M3W = HS_MESSAGES[4].to_wire()
M4W = HS_MESSAGES[5].to_wire()

BAD_HS: dict[str, bytes] = {
    "not-msgpack": b"\xc1",
    "empty": b"",
    "trailing-bytes": pack(M4W) + b"\x00",
    "ext-type": b"\xd4\x05\x00",
    "not-a-map": pack([1, 2]),
    "missing-type": pack({"fin": N32}),
    "type-str": pack(_with(M4W, t="4")),
    "type-bool": pack(_with(M1W, t=True)),
    "type-float": pack(_with(M4W, t=4.0)),
    "type-unknown": pack(_with(M4W, t=5)),
    "type-negative": pack(_with(M4W, t=-1)),
    "type-list": pack(_with(M4W, t=[4])),
    "m1-versions-str": pack(_with(M1W, versions="1")),
    "m1-versions-empty": pack(_with(M1W, versions=[])),
    "m1-versions-17": pack(_with(M1W, versions=list(range(1, 18)))),
    "m1-version-0": pack(_with(M1W, versions=[0])),
    "m1-version-bool": pack(_with(M1W, versions=[True])),
    "m1-version-65536": pack(_with(M1W, versions=[65536])),
    "m1-nonce-31": pack(_with(M1W, nonce=N32[:31])),
    "m1-nonce-33": pack(_with(M1W, nonce=N32 + b"\x00")),
    "m1-nonce-str": pack(_with(M1W, nonce="n" * 32)),
    "m1-eph-31": pack(_with(M1W, eph=N32[:31])),
    "m1-eph-missing": pack(_with(M1W, eph=_DROP)),
    "m1-key-empty": pack(_with(M1W, key=b"")),
    "m1-key-1201": pack(_with(M1W, key=b"k" * 1201)),
    "m1-key-str": pack(_with(M1W, key="key")),
    "m1-name-missing": pack(_with(M1W, name=_DROP)),
    "m1-name-bytes": pack(_with(M1W, name=b"alice")),
    "m1-name-bidi": pack(_with(M1W, name="\u202eecila")),
    "m1-name-65-bytes": pack(_with(M1W, name="a" * 65)),
    "m2-name-leading-space": pack(_with(M2W, name=" bob")),
    "m2-name-empty": pack(_with(M2W, name="")),
    "m2-name-newline": pack(_with(M2W, name="bob\nalice")),
    "over-size-cap": pack(_with(M1W, padding=b"p" * MAX_HANDSHAKE_MESSAGE)),
    "m1-commit-missing": pack(_with(M1W, commit=_DROP)),
    "m1-commit-64": pack(_with(M1W, commit=N32 * 2)),
    "m2-version-bool": pack(_with(M2W, version=True)),
    "m2-version-negative": pack(_with(M2W, version=-1)),
    "m2-version-65536": pack(_with(M2W, version=65536)),
    "m2-version-str": pack(_with(M2W, version="1")),
    "m2-nonce-missing": pack(_with(M2W, nonce=_DROP)),
    "m2-ct-383": pack(_with(M2W, ct=CT384[:-1])),
    "m2-ct-1025": pack(_with(M2W, ct=b"c" * 1025)),
    "m2-ct-str": pack(_with(M2W, ct="c" * 384)),
    "m2-key-missing": pack(_with(M2W, key=_DROP)),
    "m3-ct-383": pack(_with(M3W, ct=CT384[:-1])),
    "m3-fin-31": pack(_with(M3W, fin=N32[:31])),
    "m3-fin-str": pack(_with(M3W, fin="f" * 32)),
    "m3-fin-missing": pack(_with(M3W, fin=_DROP)),
    "m4-fin-33": pack(_with(M4W, fin=N32 + b"\x00")),
    "m4-fin-none": pack(_with(M4W, fin=None)),
    "m4-fin-missing": pack({"t": 4}),
    "hs-error-reason-bytes": pack({"t": 0, "reason": b"why"}),
    "hs-error-reason-missing": pack({"t": 0}),
}


@pytest.mark.parametrize("body", BAD_HS.values(), ids=BAD_HS.keys())
def test_bad_handshake_messages_raise_handshake_error(body: bytes) -> None:
    with pytest.raises(HandshakeError):
        parse_handshake(body)


# ------------------------------------------------------------------ properties

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIELD_NAMES = ["t", "id", "name", "key", "versions", "version", "peers", "to", "from", "p"]
FIELD_NAMES += ["token", "reason", "host", "nonce", "eph", "commit", "ct", "fin"]
RELAY_TYPES = ["hello", "welcome", "joined", "left", "send", "deliver", "ping", "pong"]
RELAY_TYPES += ["error", "bye"]
#: maps that look like frames: a real type and fields with the real names, values arbitrary
frame_like = st.builds(
    lambda t, fields: {**fields, "t": t},
    st.sampled_from(RELAY_TYPES) | st.integers(0, 5) | values,
    st.dictionaries(st.sampled_from(FIELD_NAMES), values, max_size=6),
)


def _parse_or_reject(obj: Any) -> Frame | None:
    try:
        return parse_frame(obj)
    except MalformedFrameError:
        return None


@settings(max_examples=400, deadline=None)
@given(values | frame_like)
def test_parse_frame_only_raises_malformed_frame_error(obj: Any) -> None:
    frame = _parse_or_reject(obj)
    if frame is not None:  # whatever is accepted re-encodes to itself
        assert same(parse_frame(wire(frame.to_wire())), frame)


@settings(max_examples=300, deadline=None)
@given(frame_like)
def test_parse_frame_on_decoded_wire_values(obj: Any) -> None:
    _parse_or_reject(wire(obj))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.builds(lambda v: pack(v), values | frame_like))
def test_parse_handshake_only_raises_handshake_error(body: bytes) -> None:
    try:
        msg = parse_handshake(body)
    except HandshakeError:
        return
    assert parse_handshake(pack(msg.to_wire())) == msg


def _outcome(parse: Any, body: bytes | memoryview) -> tuple[Any, ...]:
    try:
        frame = parse(body)
    except MalformedFrameError:
        return ("rejected",)
    return (type(frame), frame)


def _generic(body: bytes | memoryview) -> Frame:
    return parse_frame(unpack(body))


envelope_bodies = st.builds(
    lambda fast, peer, payload: fast(peer, payload)[4:],
    st.sampled_from([encode_send, encode_deliver]),
    st.sampled_from(ENVELOPE_IDS) | st.integers(0, MAX_ID),
    st.binary(max_size=300) | st.sampled_from(ENVELOPE_SIZES).map(lambda n: b"\xab" * n),
)
#: send/deliver-like maps the fast path must not misread: other ids, key orders, types
envelope_like = st.builds(
    lambda t, peer_key, peer, p: pack({"t": t, peer_key: peer, "p": p}),
    st.sampled_from(["send", "deliver", "sendx", "deliverx"]),
    st.sampled_from(["to", "from"]),
    st.sampled_from([MAX_ID, MAX_ID + 1, 2**32 - 1, 2**32, -1, 2**63])
    | st.integers(-(2**33), 2**33)
    | st.booleans()
    | st.none(),
    st.binary(max_size=40) | st.text(max_size=5),
)


@st.composite
def mangled(draw: st.DrawFn, body: bytes) -> bytes:
    how = draw(st.sampled_from(["as-is", "truncate", "append", "flip", "set"]))
    if how == "as-is" or not body:
        return body
    i = draw(st.integers(0, len(body) - 1))
    if how == "truncate":
        return body[:i]
    if how == "append":
        return body + draw(st.binary(min_size=1, max_size=4))
    out = bytearray(body)
    out[i] = out[i] ^ 1 if how == "flip" else draw(st.integers(0, 255))
    return bytes(out)


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_parse_body_agrees_with_the_generic_path(data: st.DataObject) -> None:
    source = data.draw(
        envelope_bodies | envelope_like | st.builds(lambda v: pack(v), frame_like | values)
    )
    body = data.draw(mangled(source))
    expected = _outcome(_generic, body)
    assert _outcome(parse_body, body) == expected
    assert _outcome(parse_body, memoryview(body)) == expected


def test_error_codes_are_optional_and_unknown_ones_are_other() -> None:
    assert parse_frame(wire({"t": "error", "reason": "x"})) == ErrorFrame("x")
    got = parse_frame(wire({"t": "error", "reason": "x", "code": "version"}))
    assert got == ErrorFrame("x", ErrorCode.VERSION)
    assert parse_frame(wire({"t": "error", "reason": "x", "code": "later"})).code is ErrorCode.OTHER
    with pytest.raises(MalformedFrameError):
        parse_frame(wire({"t": "error", "reason": "x", "code": 3}))


def test_a_big_frame_to_the_relay_must_be_a_canonical_send() -> None:
    """The relay decodes only what it routes: over 4 KiB, nothing but a send
    in the canonical layout is decoded at all (a million empty arrays under an
    ignored key cost the generic decoder ~0.3 s; scripts/bench_decode.py)."""
    import msgpack

    from p2pchat.proto.messages import MAX_GENERIC_TO_RELAY, parse_body_to_relay

    big = Send(2, b"x" * 10_000)
    assert parse_body_to_relay(encode(big)[4:]) == big
    other_order = msgpack.packb({"p": b"x" * 10_000, "to": 2, "t": "send"})
    assert parse_body(other_order) == big  # valid msgpack, another layout
    with pytest.raises(MalformedFrameError, match="canonical layout"):
        parse_body_to_relay(other_order)
    nested = msgpack.packb({"t": "send", "to": 2, "p": b"x", "pad": [[[]] * 100] * 100})
    assert len(nested) > MAX_GENERIC_TO_RELAY
    with pytest.raises(MalformedFrameError, match="canonical layout"):
        parse_body_to_relay(nested)
    small = msgpack.packb({"p": b"hi", "to": 2, "t": "send"})  # small: any layout
    assert parse_body_to_relay(small) == Send(2, b"hi")


# ------------------------------------------------------------------ strict handshake parsing


@pytest.mark.parametrize("msg", HS_MESSAGES, ids=lambda m: type(m).__name__)
def test_hs_keys_are_what_the_sender_writes(msg: HsMessage) -> None:
    wire_map = msg.to_wire()
    assert tuple(wire_map) == HS_KEYS[wire_map["t"]]


def _swap(body: bytes, old: bytes, new: bytes) -> bytes:
    """``body`` with its one occurrence of ``old`` replaced by ``new``."""
    assert body.count(old) == 1, (old, body)
    return body.replace(old, new)


M1B, M2B, M3B, M4B = (pack(w) for w in (M1W, M2W, M3W, M4W))
HSERRB = pack({"t": 0, "reason": "no"})

#: valid msgpack holding valid values, but not the one version-1 form
NOT_STRICT_HS: dict[str, bytes] = {
    # keys: none added, none missing, none moved
    "m1-extra-key": pack(_with(M1W, x=1)),
    "m2-extra-key": pack(_with(M2W, x=1)),
    "m3-extra-key": pack(_with(M3W, x=1)),
    "m3-extra-key-first": pack({"x": 1, **M3W}),
    "m4-extra-key": pack(_with(M4W, x=b"")),
    "hs-error-extra-key": pack({"t": 0, "reason": "no", "code": "version"}),
    "m1-keys-reordered": pack({k: M1W[k] for k in reversed(list(M1W))}),
    "m3-keys-reordered": pack({"t": 3, "fin": M3W["fin"], "ct": M3W["ct"]}),
    "m4-t-last": pack({"fin": M4W["fin"], "t": 4}),
    # encodings: each value in msgpack's shortest form
    "m3-t-uint8": _swap(M3B, b"\xa1t\x03", b"\xa1t\xcc\x03"),
    "m4-t-uint64": _swap(M4B, b"\xa1t\x04", b"\xa1t\xcf" + (4).to_bytes(8, "big")),
    "m2-version-uint16": _swap(M2B, b"\xa7version\x01", b"\xa7version\xcd\x00\x01"),
    "m1-version-int8": _swap(M1B, b"\xa8versions\x91\x01", b"\xa8versions\x91\xd0\x01"),
    "m1-versions-array16": _swap(M1B, b"\xa8versions\x91", b"\xa8versions\xdc\x00\x01"),
    "m1-name-str8": _swap(M1B, b"\xa4name\xa5alice", b"\xa4name\xd9\x05alice"),
    "m3-key-str8": _swap(M3B, b"\xa2ct", b"\xd9\x02ct"),
    "m3-fin-bin16": _swap(M3B, b"\xa3fin\xc4\x20", b"\xa3fin\xc5\x00\x20"),
    "m3-map16": b"\xde\x00\x03" + M3B[1:],
    "m4-map32": b"\xdf\x00\x00\x00\x02" + M4B[1:],
    "hs-error-reason-str16": _swap(HSERRB, b"\xa2no", b"\xda\x00\x02no"),
}


@pytest.mark.parametrize("body", NOT_STRICT_HS.values(), ids=NOT_STRICT_HS.keys())
def test_handshake_messages_are_parsed_strictly(body: bytes) -> None:
    # the same values in the canonical form are accepted: only the form is wrong
    fields = unpack(body)
    assert parse_handshake(pack({k: fields[k] for k in HS_KEYS[fields["t"]]})) is not None
    with pytest.raises(HandshakeError, match=r"exactly the keys|canonical msgpack"):
        parse_handshake(body)


def test_every_accepted_handshake_body_is_its_own_canonical_encoding() -> None:
    for msg in HS_MESSAGES:
        body = pack(msg.to_wire())
        assert pack(unpack(body)) == body
        assert parse_handshake(body) == msg
