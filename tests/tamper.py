"""A frame-level tampering proxy for the end-to-end tests: a relay in the middle.

:class:`Tamper` listens on 127.0.0.1, forwards every connection to a real
relay, and hands each whole frame (4-byte length prefix plus msgpack body)
to a rule that decides what goes on: the frame as it is, nothing (dropped),
twice (replayed), another frame (altered), or :data:`CUT` (the connection is
closed both ways). It runs its own event loop in a thread, so that tests
driving real processes with :mod:`procs` can use it as they are.

A rule is called as ``rule(direction, conn, frame, raw)``: ``direction`` is
``"up"`` (participant to relay) or ``"down"``, ``conn`` the connection's
number (0 for the first), ``frame`` the decoded map and ``raw`` its bytes on
the wire; it returns the list of raw frames to forward, or :data:`CUT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections.abc import Callable
from typing import Any

import msgpack

__all__ = ["CUT", "Rule", "Tamper", "frame_bytes", "is_record", "pass_all"]

CUT = None
Rule = Callable[[str, int, dict[str, Any], bytes], "list[bytes] | None"]


def pass_all(direction: str, conn: int, frame: dict[str, Any], raw: bytes) -> list[bytes]:
    return [raw]


def is_record(frame: dict[str, Any]) -> bool:
    """A deliver or send frame whose payload is an encrypted record (not a handshake)."""
    payload = frame.get("p")
    kind = frame.get("t")
    return kind in ("deliver", "send") and isinstance(payload, bytes) and payload[:1] == b"\x02"


class Tamper:
    def __init__(self, upstream_port: int, rule: Rule = pass_all) -> None:
        self.upstream_port = upstream_port
        self.rule = rule
        self.port = 0
        self.connections = 0  #: connections accepted so far
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tamper")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> Tamper:
        self._thread.start()
        assert self._ready.wait(10), "the tampering proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            for w in list(self._writers):
                w.transport.abort()
            self._server.close()
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = self.connections
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        pumps = [
            asyncio.ensure_future(self._pump("up", conn, reader, up_writer)),
            asyncio.ensure_future(self._pump("down", conn, up_reader, writer)),
        ]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for w in (writer, up_writer):
            w.transport.abort()
            self._writers.discard(w)

    async def _pump(
        self,
        direction: str,
        conn: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readexactly(4)
                (length,) = struct.unpack(">I", head)
                body = await reader.readexactly(length)
                frame = msgpack.unpackb(body, raw=False)
                out = self.rule(direction, conn, frame, head + body)
                if out is CUT:
                    return
                for raw in out:
                    writer.write(raw)
                await writer.drain()


def frame_bytes(frame: dict[str, Any]) -> bytes:
    """A frame's bytes on the wire (for a rule that builds one)."""
    body = msgpack.packb(frame, use_bin_type=True)
    return struct.pack(">I", len(body)) + body
