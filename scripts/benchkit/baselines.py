"""The raw chain, the baseline of rows 2 to 5 and 8: asyncio processes of the
same shape as the product (sender -> forwarder -> receiver(s)), 4-byte
length-prefixed frames, no crypto, no msgpack; and the echo server of the
handshake's loopback round trip. Unbatched: one write per frame at every
hop; batched: one write per read."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from typing import TYPE_CHECKING, Any

from benchkit.common import LOOPBACK, U32, raw_frame, split_frames
from benchkit.procs import CpuWatch, RssWatch
from benchkit.worker import Commands, emit

if TYPE_CHECKING:
    from benchkit.runner import Bench


class _Hub:
    """The raw forwarder's connections: one sender, any number of receivers."""

    def __init__(self, batched: bool) -> None:
        self.batched = batched
        self.sender: list[asyncio.Transport] = []
        self.receivers: list[asyncio.Transport] = []


class _FwdConn(asyncio.Protocol):
    """Raw forwarder: the first frame says "S" (sender) or "R" (receiver); the
    sender's frames go to every receiver, the receivers' frames to the sender.
    Unbatched: one write per frame; batched: one write per read."""

    def __init__(self, hub: _Hub) -> None:
        self.hub = hub
        self.buf = bytearray()
        self.role = 0
        self.transport: asyncio.Transport | None = None
        self.targets: list[asyncio.Transport] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos, end, start = 0, len(buf), 0
        batched = self.hub.batched
        while end - pos >= 4:
            (size,) = U32.unpack_from(buf, pos)
            nxt = pos + 4 + size
            if nxt > end:
                break
            if not self.role:
                self._register(buf[pos + 4])
                start = nxt
            elif not batched:
                frame = bytes(buf[pos:nxt])
                for dst in self.targets:
                    dst.write(frame)
            pos = nxt
        if batched and pos > start:
            chunk = bytes(buf[start:pos])
            for dst in self.targets:
                dst.write(chunk)
        del buf[:pos]

    def _register(self, role: int) -> None:
        assert self.transport is not None
        self.role = role
        hub = self.hub
        if role == ord("S"):
            hub.sender.append(self.transport)
            self.targets = hub.receivers  # the same list: receivers may come later
        else:
            hub.receivers.append(self.transport)
            self.targets = hub.sender


async def w_fwd(args: dict[str, Any], cmds: Commands) -> None:
    loop = asyncio.get_running_loop()
    hub = _Hub(bool(args.get("batched")))
    server = await loop.create_server(lambda: _FwdConn(hub), LOOPBACK, 0)
    emit("ready", port=server.sockets[0].getsockname()[1], pid=os.getpid())
    await cmds.until_eof()
    server.close()


class _RawRecv(asyncio.Protocol):
    """Raw receiver: acks every data frame (b"A" + 16 bytes), records the
    one-way latency of latency frames (b"L" + monotonic ns)."""

    def __init__(self, state: dict[str, Any], batched: bool) -> None:
        self.state = state
        self.batched = batched
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(raw_frame(b"R"))

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        now = time.monotonic_ns()
        self.buf += data
        frames, used = split_frames(self.buf)
        del self.buf[:used]
        state = self.state
        acks = []
        for payload in frames:
            state["count"] += 1
            if payload[:1] == b"L":
                state["lat"].append(now - int.from_bytes(payload[1:9], "big"))
            ack = raw_frame(b"A" + payload[1:17])
            if self.batched:
                acks.append(ack)
            else:
                self.transport.write(ack)
        if acks:
            self.transport.write(b"".join(acks))


async def w_raw_recv(args: dict[str, Any], cmds: Commands) -> None:
    loop = asyncio.get_running_loop()
    state: dict[str, Any] = {"count": 0, "lat": []}
    conns = []
    for _ in range(args["n"]):
        transport, _proto = await loop.create_connection(
            lambda: _RawRecv(state, bool(args.get("batched"))), LOOPBACK, args["port"]
        )
        conns.append(transport)
    await asyncio.sleep(0.05)  # the forwarder has registered them
    emit("ready")
    while (cmd := await cmds.next()) is not None:
        if cmd == "report":
            emit("report", count=state["count"], lat=state["lat"])
            state["count"], state["lat"] = 0, []
    for transport in conns:
        transport.close()


class _RawSend(asyncio.Protocol):
    """Raw sender: latency mode (one frame in flight, then a gap) or
    throughput mode (a window of frames in flight, refilled at half)."""

    def __init__(self, args: dict[str, Any], done: asyncio.Future[None]) -> None:
        self.args = args
        self.done = done
        self.batched = bool(args.get("batched"))
        self.copies = int(args.get("copies", 1))
        self.window = int(args.get("window", 1))
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.sent = 0
        self.acks = 0
        self.rtts: list[int] = []
        self.t_sent = 0
        self.stopped = False
        self.frame = raw_frame(b"D" + secrets.token_bytes(16) + b"x" * (args["size"] - 17))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(raw_frame(b"S"))

    # latency
    def send_one(self) -> None:
        assert self.transport is not None
        self.t_sent = time.monotonic_ns()
        pad = b"." * (self.args["size"] - 9)
        self.transport.write(raw_frame(b"L" + self.t_sent.to_bytes(8, "big") + pad))
        self.sent += 1

    # throughput
    def refill(self) -> None:
        assert self.transport is not None
        room = self.window - (self.sent - self.acks // self.copies)
        if room <= 0 or self.stopped:
            return
        if self.batched:
            self.transport.write(self.frame * room)
        else:
            write, frame = self.transport.write, self.frame
            for _ in range(room):
                write(frame)
        self.sent += room

    def data_received(self, data: bytes) -> None:
        self.buf += data
        frames, used = split_frames(self.buf)
        del self.buf[:used]
        if not frames:
            return
        self.acks += len(frames)
        if self.args["mode"] == "latency":
            if self.acks % self.copies == 0:
                self.rtts.append(time.monotonic_ns() - self.t_sent)
                if len(self.rtts) >= self.args["n"]:
                    if not self.done.done():
                        self.done.set_result(None)
                else:
                    asyncio.get_running_loop().call_later(self.args["gap"], self.send_one)
        elif self.sent - self.acks // self.copies <= self.window // 2:
            self.refill()


async def w_raw_send(args: dict[str, Any], cmds: Commands) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    _t, proto = await loop.create_connection(lambda: _RawSend(args, done), LOOPBACK, args["port"])
    await asyncio.sleep(0.05)  # the forwarder has registered us
    emit("start")
    await asyncio.sleep(0.02)  # the orchestrator starts counting CPU time
    if args["mode"] == "latency":
        proto.send_one()
        await asyncio.wait_for(done, args["n"] * (args["gap"] + 0.5) + 10)
        emit("result", rtt=proto.rtts)
        return
    marks: dict[str, tuple[float, int]] = {}

    def mark(name: str) -> None:
        marks[name] = (time.monotonic(), proto.acks // proto.copies)

    loop.call_later(args["warmup"], mark, "start")
    loop.call_later(args["warmup"] + args["duration"], mark, "end")
    proto.refill()
    await asyncio.sleep(args["warmup"] + args["duration"] + 0.01)
    proto.stopped = True
    (t0, a0), (t1, a1) = marks["start"], marks["end"]
    emit("result", rate=(a1 - a0) / (t1 - t0), acked=a1 - a0, seconds=t1 - t0)


async def w_echo(args: dict[str, Any], cmds: Commands) -> None:
    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

    server = await asyncio.get_running_loop().create_server(Echo, LOOPBACK, 0)
    emit("ready", port=server.sockets[0].getsockname()[1], pid=os.getpid())
    await cmds.until_eof()
    server.close()


def raw_chain(
    bench: Bench, batched: bool, receivers: int, send_args: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Raw sender -> forwarder -> receiver(s). Returns the sender's result,
    the receivers' report and the forwarder's peak RSS; the result gets
    "cpu": CPU seconds of each process while the sender ran."""
    fwd = bench.worker("fwd", batched=batched)
    port = fwd.expect("ready", 10)["port"]
    recv = bench.worker("raw-recv", port=port, n=receivers, batched=batched)
    recv.expect("ready", 20)
    send = bench.worker("raw-send", port=port, batched=batched, copies=receivers, **send_args)
    send.expect("start", 20)
    cpu = CpuWatch(sender=send.pid, relay=fwd.pid, receiver=recv.pid)
    watch = RssWatch(fwd.pid)
    res = send.expect("result", 120)
    res["cpu"] = cpu.stop()
    peak = watch.stop()
    recv.send("report")
    rep = recv.expect("report", 20)
    bench.stop(send, recv, fwd)
    return res, rep, peak
