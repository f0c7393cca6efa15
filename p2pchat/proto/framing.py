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
from typing import Any, Final, NoReturn

import msgpack

from p2pchat.config import MAX_FRAME
from p2pchat.errors import FrameTooLargeError, MalformedFrameError

__all__ = ["FrameDecoder", "encode_frame", "pack", "unpack"]

PREFIX: Final = struct.Struct(">I")
PREFIX_LEN: Final = PREFIX.size
#: Most items any array or map of ours holds (a roster of participants is the largest).
MAX_CONTAINER: Final = 1024


def _no_ext(code: int, data: bytes) -> NoReturn:
    raise MalformedFrameError(f"msgpack extension type {code} is not allowed")


def pack(obj: Any) -> bytes:
    """msgpack-encode ``obj`` (bytes as bin, str as UTF-8 str)."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack(body: bytes) -> Any:
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


def encode_frame(obj: Any) -> bytes:
    """One frame: length prefix + msgpack body of ``obj``."""
    body = pack(obj)
    return PREFIX.pack(len(body)) + body


class FrameDecoder:
    """Incremental decoder: ``feed(chunk)`` returns every message completed by it.

    ``max_frame`` may be changed between feeds (raised once a peer registers).
    At most one partial frame is buffered, so memory stays below
    ``max_frame + 4`` bytes plus the chunk being fed.
    """

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    @property
    def buffered(self) -> int:
        """Bytes held of a frame not yet complete."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Any]:
        """Append ``data`` and decode every complete frame, in order."""
        buf = self._buf
        buf += data
        out: list[Any] = []
        pos = 0
        end = len(buf)
        try:
            while end - pos >= PREFIX_LEN:
                (size,) = PREFIX.unpack_from(buf, pos)
                if size > self.max_frame:
                    raise FrameTooLargeError(
                        f"frame of {size} bytes announced, over the {self.max_frame}-byte cap"
                    )
                if size == 0:
                    raise MalformedFrameError("empty frame (length 0)")
                if end - pos - PREFIX_LEN < size:
                    break
                start = pos + PREFIX_LEN
                out.append(unpack(bytes(buf[start : start + size])))
                pos = start + size
        except MalformedFrameError:
            buf.clear()
            raise
        del buf[:pos]
        return out
