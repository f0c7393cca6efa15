"""The frame codec: length prefix + msgpack body, decoded incrementally and strictly."""

from __future__ import annotations

import contextlib
import itertools
import struct
import tracemalloc
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.config import MAX_FRAME, MAX_FRAME_UNREGISTERED
from p2pchat.errors import FrameTooLargeError, MalformedFrameError
from p2pchat.proto.framing import (
    PREFIX_LEN,
    SKIPPED,
    FrameDecoder,
    encode_frame,
    pack,
    unpack,
    unpack_fields,
)

MESSAGES: list[Any] = [
    {"t": "hello", "versions": [1], "name": "alice", "key": b"\x30" * 40},
    {"t": "send", "to": 7, "p": bytes(range(256))},
    [1, -1, 2**63 - 1, -(2**63), 0.5, None, True, False],
    "ünïcødé ✓",
    b"",
    {"nested": {"a": [b"x", {"b": None}]}, "list": [[], {}]},
    0,
]
STREAM = b"".join(encode_frame(m) for m in MESSAGES)


def frame_of(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def decode_chunks(chunks: list[bytes], decoder: FrameDecoder | None = None) -> list[Any]:
    dec = decoder or FrameDecoder()
    out: list[Any] = []
    for chunk in chunks:
        out.extend(dec.feed(chunk))
    assert dec.buffered == 0, "a complete stream must leave nothing buffered"
    return out


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("obj", MESSAGES)
def test_encode_then_decode_round_trips(obj: Any) -> None:
    frame = encode_frame(obj)
    (length,) = struct.unpack(">I", frame[:PREFIX_LEN])
    assert length == len(frame) - PREFIX_LEN
    assert FrameDecoder().feed(frame) == [obj]
    assert unpack(pack(obj)) == obj


def test_bytes_and_str_stay_distinct() -> None:
    body = pack({"s": "abc", "b": b"abc"})
    assert unpack(body) == {"s": "abc", "b": b"abc"}
    assert isinstance(unpack(body)["b"], bytes)


def test_stream_torn_at_every_offset_decodes_identically() -> None:
    for cut in range(len(STREAM) + 1):
        assert decode_chunks([STREAM[:cut], STREAM[cut:]]) == MESSAGES, f"cut at {cut}"


def test_stream_torn_at_every_pair_of_offsets_decodes_identically() -> None:
    n = len(STREAM)
    for a in range(0, n + 1, 3):
        for b in range(a, n + 1, 5):
            got = decode_chunks([STREAM[:a], STREAM[a:b], STREAM[b:]])
            assert got == MESSAGES, f"cuts at {a} and {b}"


def test_many_frames_in_one_chunk() -> None:
    stream = STREAM * 20
    assert FrameDecoder().feed(stream) == MESSAGES * 20


def test_one_byte_at_a_time() -> None:
    dec = FrameDecoder()
    out: list[Any] = []
    for i in range(len(STREAM)):
        out.extend(dec.feed(STREAM[i : i + 1]))
    assert out == MESSAGES
    assert dec.buffered == 0


def test_partial_frame_is_buffered_until_complete() -> None:
    frame = encode_frame({"k": b"v" * 50})
    dec = FrameDecoder()
    for i in range(len(frame) - 1):
        assert dec.feed(frame[i : i + 1]) == []
        assert dec.buffered == i + 1
    assert dec.feed(frame[-1:]) == [{"k": b"v" * 50}]
    assert dec.buffered == 0


def test_complete_frames_come_out_before_a_trailing_partial_one() -> None:
    a, b = encode_frame(1), encode_frame(2)
    dec = FrameDecoder()
    assert dec.feed(a + b[:3]) == [1]
    assert dec.buffered == 3
    assert dec.feed(b[3:]) == [2]


BIG = [b"a" * 3000, {"k": b"b" * 5000, "s": "c" * 2100}, 1, b"d" * 2048, b"e" * 2049]
BIG_STREAM = b"".join(encode_frame(m) for m in BIG)


def test_large_frames_torn_at_every_offset_decode_identically() -> None:
    for cut in range(len(BIG_STREAM) + 1):
        assert decode_chunks([BIG_STREAM[:cut], BIG_STREAM[cut:]]) == BIG, f"cut at {cut}"


def test_parse_hook_gets_each_body_exactly() -> None:
    bodies = [pack(m) for m in [*MESSAGES, *BIG]]
    stream = b"".join(encode_frame(m) for m in [*MESSAGES, *BIG])
    for chunks in ([stream], [stream[i : i + 1000] for i in range(0, len(stream), 1000)]):
        dec = FrameDecoder(parse=lambda body: bytes(body))
        assert decode_chunks(chunks, dec) == bodies
    # a single whole frame in one feed, small and large
    for body in (bodies[0], bodies[-1]):
        assert FrameDecoder(parse=lambda b: bytes(b)).feed(frame_of(body)) == [body]


def test_parse_hook_errors_clear_the_buffer() -> None:
    def picky(body: bytes | memoryview) -> Any:
        value = unpack(body)
        if value == "bad":
            raise MalformedFrameError("bad")
        return value

    dec = FrameDecoder(parse=picky)
    good = encode_frame("good")
    with pytest.raises(MalformedFrameError):
        dec.feed(encode_frame("bad") + good[:3])
    assert dec.buffered == 0
    assert dec.feed(good[:2]) == []
    with pytest.raises(MalformedFrameError):
        dec.feed(good[2:] + encode_frame("bad") + good[:3])  # while something was buffered
    assert dec.buffered == 0
    assert dec.feed(good) == ["good"]


def test_empty_feed_is_harmless() -> None:
    dec = FrameDecoder()
    assert dec.feed(b"") == []
    assert dec.buffered == 0


# ------------------------------------------------------------------ length prefix


def test_huge_length_prefix_fails_before_the_body_arrives() -> None:
    dec = FrameDecoder()
    with pytest.raises(FrameTooLargeError):
        dec.feed(b"\xff\xff\xff\xff")
    assert dec.buffered == 0


def test_huge_length_prefix_torn_fails_as_soon_as_the_prefix_is_complete() -> None:
    dec = FrameDecoder()
    assert dec.feed(b"\xff\xff") == []
    assert dec.feed(b"\xff") == []
    with pytest.raises(FrameTooLargeError):
        dec.feed(b"\xff")


def test_zero_length_frame_is_malformed_not_too_large() -> None:
    with pytest.raises(MalformedFrameError) as info:
        FrameDecoder().feed(b"\x00\x00\x00\x00")
    assert not isinstance(info.value, FrameTooLargeError)


def body_of_size(size: int) -> bytes:
    """A msgpack body of exactly ``size`` bytes: one bin32 (5-byte header) of b"x"s."""
    return b"\xc6" + struct.pack(">I", size - 5) + b"x" * (size - 5)


@pytest.mark.parametrize("cap", [MAX_FRAME_UNREGISTERED, 100, MAX_FRAME])
def test_cap_is_inclusive(cap: int) -> None:
    at_cap = body_of_size(cap)
    assert FrameDecoder(max_frame=cap).feed(frame_of(at_cap)) == [b"x" * (cap - 5)]
    with pytest.raises(FrameTooLargeError):
        FrameDecoder(max_frame=cap).feed(struct.pack(">I", cap + 1))


def test_default_cap_is_max_frame() -> None:
    dec = FrameDecoder()
    assert dec.max_frame == MAX_FRAME
    with pytest.raises(FrameTooLargeError):
        dec.feed(struct.pack(">I", MAX_FRAME + 1))


def test_raising_max_frame_takes_effect_between_feeds() -> None:
    big = encode_frame(b"y" * 10_000)
    dec = FrameDecoder(max_frame=MAX_FRAME_UNREGISTERED)
    with pytest.raises(FrameTooLargeError):
        dec.feed(big)

    dec = FrameDecoder(max_frame=MAX_FRAME_UNREGISTERED)
    assert dec.feed(encode_frame("small")) == ["small"]
    dec.max_frame = MAX_FRAME
    assert dec.feed(big) == [b"y" * 10_000]


def test_lowering_max_frame_takes_effect_between_feeds() -> None:
    frame = encode_frame(b"z" * 100)
    dec = FrameDecoder()
    assert dec.feed(frame) == [b"z" * 100]
    dec.max_frame = 50
    with pytest.raises(FrameTooLargeError):
        dec.feed(frame)


# ------------------------------------------------------------------ hostile bodies


def test_array_declaring_1e8_items_fails_without_allocating() -> None:
    for header in (b"\xdd", b"\xdf"):  # array32, map32
        frame = frame_of(header + struct.pack(">I", 10**8))
        tracemalloc.start()
        try:
            with pytest.raises(MalformedFrameError):
                FrameDecoder().feed(frame)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20, f"{header!r}: peak {peak} bytes for a 9-byte frame"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\xdc\xff\xff" + b"\xc0" * 10, id="array16-declares-65535"),
        pytest.param(b"\xde\xff\xff" + b"\xa1a\xc0" * 3, id="map16-declares-65535"),
        pytest.param(b"\xdb\x7f\xff\xff\xff" + b"abc", id="str32-declares-2GiB"),
        pytest.param(b"\xc6\x7f\xff\xff\xff" + b"abc", id="bin32-declares-2GiB"),
    ],
)
def test_declared_lengths_beyond_the_body_are_malformed(body: bytes) -> None:
    with pytest.raises(MalformedFrameError):
        FrameDecoder().feed(frame_of(body))


def test_more_than_max_container_items_is_malformed() -> None:
    body = pack(list(range(1025)))
    assert len(body) < MAX_FRAME
    with pytest.raises(MalformedFrameError):
        FrameDecoder().feed(frame_of(body))
    assert FrameDecoder().feed(frame_of(pack(list(range(1024))))) == [list(range(1024))]


def test_deep_nesting_is_malformed() -> None:
    body = b"\x91" * 100_000 + b"\xc0"
    with pytest.raises(MalformedFrameError):
        FrameDecoder().feed(frame_of(body))


def test_deep_map_nesting_is_malformed() -> None:
    body = b"\x81\xa1k" * 50_000 + b"\xc0"
    with pytest.raises(MalformedFrameError):
        FrameDecoder().feed(frame_of(body))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\xa2\xff\xfe", id="str-value"),
        pytest.param(b"\x81\xa2\xc3\x28\x01", id="str-map-key"),
        pytest.param(b"\xa3\xed\xa0\x80", id="encoded-surrogate"),
    ],
)
def test_invalid_utf8_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedFrameError):
        FrameDecoder().feed(frame_of(body))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\xd6\xff" + b"\x00" * 4, id="timestamp32"),
        pytest.param(b"\xd7\xff" + b"\x00" * 8, id="timestamp64"),
        pytest.param(b"\xc7\x0c\xff" + b"\x00" * 12, id="timestamp96"),
        pytest.param(b"\xc7\x00\x05", id="ext8-empty"),
        pytest.param(b"\xd4\x05\x00", id="fixext1"),
        pytest.param(b"\xc8\x00\x03\x05abc", id="ext16"),
        pytest.param(b"\x91\xd4\x05\x00", id="ext-inside-array"),
    ],
)
def test_extension_types_and_timestamps_are_rejected(body: bytes) -> None:
    with pytest.raises(MalformedFrameError):
        FrameDecoder().feed(frame_of(body))


def test_timestamp_from_msgpack_itself_is_rejected() -> None:
    body = msgpack.packb(msgpack.Timestamp(1, 0))
    with pytest.raises(MalformedFrameError):
        unpack(body)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(pack(1) + pack(2), id="two-values"),
        pytest.param(pack({"a": 1}) + b"\x00", id="one-extra-byte"),
    ],
)
def test_trailing_bytes_inside_a_body_are_rejected(body: bytes) -> None:
    with pytest.raises(MalformedFrameError):
        FrameDecoder().feed(frame_of(body))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\x92\x01", id="array-short-of-items"),
        pytest.param(b"\xa5abc", id="str-short"),
        pytest.param(b"\xc1", id="reserved-byte"),
        pytest.param(b"\x81\x01\x02", id="int-map-key"),
        pytest.param(b"\x81\xc0\x02", id="nil-map-key"),
        pytest.param(b"\x81\x90\x02", id="array-map-key"),
    ],
)
def test_other_malformed_bodies(body: bytes) -> None:
    with pytest.raises(MalformedFrameError):
        FrameDecoder().feed(frame_of(body))


def test_buffer_is_cleared_after_an_error() -> None:
    good = encode_frame({"ok": True})
    dec = FrameDecoder()
    # a good frame, a bad one, and the start of another good one, all in one chunk
    with pytest.raises(MalformedFrameError):
        dec.feed(good + frame_of(b"\xc1") + good[:5])
    assert dec.buffered == 0
    assert dec.feed(good) == [{"ok": True}]


def test_buffer_is_cleared_after_too_large() -> None:
    dec = FrameDecoder(max_frame=10)
    with pytest.raises(FrameTooLargeError):
        dec.feed(encode_frame(b"q" * 50))
    assert dec.buffered == 0
    assert dec.feed(encode_frame(1)) == [1]


# ------------------------------------------------------------------ properties

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5)
    ),
    max_leaves=20,
)


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=200, deadline=None)
@given(st.lists(msgpack_values, min_size=1, max_size=6), st.data())
def test_any_chunking_of_a_valid_stream_decodes_identically(
    messages: list[Any], data: st.DataObject
) -> None:
    stream = b"".join(encode_frame(m) for m in messages)
    chunks = data.draw(chunked(stream))
    assert decode_chunks(chunks) == messages


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=10), st.integers(1, 64))
def test_arbitrary_bytes_raise_only_malformed_frame_error(chunks: list[bytes], cap: int) -> None:
    dec = FrameDecoder(max_frame=cap)
    for chunk in chunks:
        try:
            out = dec.feed(chunk)
        except MalformedFrameError:
            assert dec.buffered == 0
            continue
        assert isinstance(out, list)
        # at most one partial frame is held
        assert dec.buffered < PREFIX_LEN + cap


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=64))
def test_arbitrary_frame_bodies_raise_only_malformed_frame_error(body: bytes) -> None:
    with contextlib.suppress(MalformedFrameError):
        FrameDecoder().feed(frame_of(body))


# ------------------------------------------------------------------ field-only decoding

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.floats(allow_nan=False),
)
flat_maps = st.dictionaries(
    st.text(min_size=1, max_size=12), st.one_of(scalars, st.lists(scalars, max_size=8))
)


@settings(max_examples=300, deadline=None)
@given(flat_maps)
def test_fields_of_a_flat_map_are_what_the_generic_decoder_gives(obj: dict[str, Any]) -> None:
    lists = frozenset(k for k, v in obj.items() if isinstance(v, list))
    assert unpack_fields(pack(obj), lists) == unpack(pack(obj))


def test_fields_accept_any_valid_encoding() -> None:
    # str 8 key, a 64-bit width for a small int, bin 32 for 2 bytes, array 16
    body = b"\x83\xd9\x01t\xa4ping\xa5token\xcf" + (5).to_bytes(8, "big")
    body += b"\xa1p\xc6\x00\x00\x00\x02hi"
    assert unpack_fields(body) == {"t": "ping", "token": 5, "p": b"hi"}
    wide_list = b"\x81\xa8versions\xdc\x00\x02\x01\x02"
    assert unpack_fields(wide_list, frozenset({"versions"})) == {"versions": [1, 2]}


def test_containers_where_none_belongs_are_skipped_not_built() -> None:
    junk = [[[] for _ in range(15)] for _ in range(200)]
    body = pack({"t": "ping", "token": 1, "junk": junk, "versions": [1]})
    got = unpack_fields(body)  # "versions" is no list field here
    assert got == {"t": "ping", "token": 1, "junk": SKIPPED, "versions": SKIPPED}
    assert unpack_fields(body, frozenset({"versions"}))["versions"] == [1]
    # what a skipped value holds is not looked at, but the map around it still is
    with pytest.raises(MalformedFrameError, match="extra data"):
        unpack_fields(body + b"\x00")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (pack([1, 2]), "frame body is not a map"),
        (b"", "frame body is not a map"),
        (pack({1: 2}), "map key is not a str"),
        (b"\xdf\x05\xf5\xe1\x00", "declares too many entries"),  # 10**8 entries in 5 bytes
        (b"\x81\xa1v\xdd\x05\xf5\xe1\x00", "declares too many entries"),
        (pack({"v": [[1]]}), "holds a container in its list"),
        (b"\x81\xa1t\xc7\x00\x05", "extension type 5"),
        (b"\x82\xa1t\xa4ping", "truncated"),
        (b"\x81\xa1x" + b"\x91" * 5000 + b"\xc0", "StackError"),
    ],
)
def test_fields_refuse_what_is_malformed(body: bytes, why: str) -> None:
    with pytest.raises(MalformedFrameError, match=why):
        unpack_fields(body, frozenset({"v"}))
