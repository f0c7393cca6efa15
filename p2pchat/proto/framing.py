"""Frame codec: a 4-byte big-endian length, then a msgpack body of exactly that length.

The decoder is incremental (fed arbitrary chunks) and checks every length
prefix against the cap in force *before* buffering the body. msgpack is
unpacked with limits sized to the frame, so a body declaring 10**8 items in a
few bytes fails instead of allocating. Every malformed input raises
:class:`~p2pchat.errors.MalformedFrameError` (or its subclass
:class:`~p2pchat.errors.FrameTooLargeError`); nothing else escapes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final, NoReturn

import msgpack

from p2pchat.config import MAX_FRAME
from p2pchat.errors import FrameTooLargeError, MalformedFrameError

__all__ = ["SKIPPED", "FrameDecoder", "encode_frame", "pack", "unpack", "unpack_fields"]

PREFIX: Final = struct.Struct(">I")
PREFIX_LEN: Final = PREFIX.size
#: Most items any array or map of ours holds (a roster of participants is the largest).
MAX_CONTAINER: Final = 1024
#: Frame bodies up to this size are copied out of the buffer; larger ones are viewed.
_COPY_MAX: Final = 2048


def _no_ext(code: int, data: bytes) -> NoReturn:
    raise MalformedFrameError(f"msgpack extension type {code} is not allowed")


def pack(obj: Any) -> bytes:
    """msgpack-encode ``obj`` (bytes as bin, str as UTF-8 str)."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack(body: bytes | memoryview) -> Any:
    """Decode one msgpack value that must fill ``body`` exactly, with strict limits."""
    size = len(body)
    try:
        return msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_no_ext,
            max_str_len=size,
            max_bin_len=size,
            max_array_len=min(size, MAX_CONTAINER),
            max_map_len=min(size, MAX_CONTAINER),
            max_ext_len=0,
        )
    except MalformedFrameError:
        raise
    except (ValueError, msgpack.UnpackException) as exc:  # msgpack's several types, translated once
        raise MalformedFrameError(f"invalid msgpack body ({type(exc).__name__})") from exc


class _Skipped:
    """The value of a known field that held a container where none belongs."""

    def __repr__(self) -> str:
        return "SKIPPED"


#: stands for a container value that was skipped, not decoded (validation
#: then refuses it like any value of the wrong type)
SKIPPED: Final = _Skipped()

# first bytes of msgpack values: str (fixstr, str 8/16/32) and containers
_STR_HEADS: Final = frozenset(range(0xA0, 0xC0)) | {0xD9, 0xDA, 0xDB}
_CONTAINER_HEADS: Final = frozenset(range(0x80, 0xA0)) | {0xDC, 0xDD, 0xDE, 0xDF}


def unpack_fields(
    body: bytes | memoryview, lists: frozenset[str] = frozenset(), what: str = "frame body"
) -> dict[str, Any]:
    """Decode a message map for its fields only, in time linear in its size and
    building no object it does not return.

    Keys must be str. Entries with a scalar value are decoded; the field
    names in ``lists`` may hold an array of scalars. A container anywhere
    else is skipped in C without being built (and without being checked):
    an ignored entry costs about what reading its bytes does, however it
    nests. A field that held a skipped container maps to :data:`SKIPPED`.
    The body must be one map, and nothing after it (``what`` names it in the
    error otherwise)."""
    size = len(body)
    data = bytes(body)
    if not data or not (0x80 <= data[0] <= 0x8F or data[0] in (0xDE, 0xDF)):
        raise MalformedFrameError(f"{what} is not a map")
    unpacker = msgpack.Unpacker(
        None,
        raw=False,
        strict_map_key=True,
        use_list=True,
        ext_hook=_no_ext,
        max_buffer_size=max(size, 1),
        max_str_len=size,
        max_bin_len=size,
        max_array_len=min(size, MAX_CONTAINER),
        max_map_len=min(size, MAX_CONTAINER),
        max_ext_len=0,
    )
    unpacker.feed(data)
    out: dict[str, Any] = {}
    top = min(size, MAX_CONTAINER)
    try:
        entries = unpacker.read_map_header()
        if entries > top:
            raise MalformedFrameError("invalid msgpack body (a map declares too many entries)")
        for _ in range(entries):
            if data[unpacker.tell()] not in _STR_HEADS:
                raise MalformedFrameError("map key is not a str")
            key = unpacker.unpack()
            head = data[unpacker.tell()]
            if head not in _CONTAINER_HEADS:
                out[key] = unpacker.unpack()
            elif key in lists and (0x90 <= head <= 0x9F or head in (0xDC, 0xDD)):
                items = []
                count = unpacker.read_array_header()
                if count > top:
                    raise MalformedFrameError(
                        "invalid msgpack body (an array declares too many entries)"
                    )
                for _ in range(count):
                    if data[unpacker.tell()] in _CONTAINER_HEADS:
                        raise MalformedFrameError(f"field {key!r} holds a container in its list")
                    items.append(unpacker.unpack())
                out[key] = items
            else:
                unpacker.skip()
                out[key] = SKIPPED
    except MalformedFrameError:
        raise
    except IndexError as exc:  # a header promised more than the body holds
        raise MalformedFrameError("invalid msgpack body (truncated)") from exc
    except (ValueError, msgpack.UnpackException) as exc:
        raise MalformedFrameError(f"invalid msgpack body ({type(exc).__name__})") from exc
    if unpacker.tell() != size:
        raise MalformedFrameError("invalid msgpack body (extra data after the map)")
    return out


def encode_frame(obj: Any) -> bytes:
    """One frame: length prefix + msgpack body of ``obj``."""
    body = pack(obj)
    return PREFIX.pack(len(body)) + body


class FrameDecoder:
    """Incremental decoder: ``feed(chunk)`` returns every message completed by it.

    Each complete body goes through ``parse`` (default: :func:`unpack`, giving
    the msgpack value; :func:`p2pchat.proto.messages.parse_body` gives typed
    frames). ``max_frame`` may be changed between feeds (raised once a peer
    registers).
    At most one partial frame is buffered, so memory stays below
    ``max_frame + 4`` bytes plus the chunk being fed.
    """

    __slots__ = ("_buf", "_parse", "max_frame")

    def __init__(
        self, max_frame: int = MAX_FRAME, parse: Callable[[bytes | memoryview], Any] = unpack
    ) -> None:
        self._buf = bytearray()
        self._parse = parse
        self.max_frame = max_frame

    @property
    def buffered(self) -> int:
        """Bytes held of a frame not yet complete."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Any]:
        """Decode every frame completed by ``data``, in order."""
        if self._buf:
            self._buf += data
            try:
                out, used = self._decode(self._buf)
            except MalformedFrameError:
                self._buf.clear()
                raise
            del self._buf[:used]
            return out
        # nothing buffered: decode straight from ``data``, keep only the tail
        end = len(data)
        if end >= PREFIX_LEN:
            # the common case, one whole small frame: no loop, no copy of the buffer
            (size,) = PREFIX.unpack_from(data)
            if end == size + PREFIX_LEN and 0 < size <= min(self.max_frame, _COPY_MAX):
                return [self._parse(data[PREFIX_LEN:])]
        out, used = self._decode(data)
        if used < len(data):
            self._buf += memoryview(data)[used:]
        return out

    def _decode(self, buf: bytes | bytearray) -> tuple[list[Any], int]:
        out: list[Any] = []
        pos = 0
        end = len(buf)
        parse = self._parse
        while end - pos >= PREFIX_LEN:
            (size,) = PREFIX.unpack_from(buf, pos)
            if size > self.max_frame:
                raise FrameTooLargeError(
                    f"frame of {size} bytes announced, over the {self.max_frame}-byte cap"
                )
            if size == 0:
                raise MalformedFrameError("empty frame (length 0)")
            start = pos + PREFIX_LEN
            if end - start < size:
                break
            pos = start + size
            if size <= _COPY_MAX:  # small bodies: a copy is cheaper than a view
                out.append(parse(bytes(buf[start:pos])))
            else:
                with memoryview(buf) as view, view[start:pos] as body:
                    out.append(parse(body))
        return out, pos
