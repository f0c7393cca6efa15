#!/usr/bin/env python3
"""Benchmark p2pchat end to end on loopback, each figure beside a same-run baseline.

    python scripts/bench.py [--quick] [--json PATH] [--only STEP,...] [--profile DIR]

Everything runs on 127.0.0.1: every ``p2pchat`` process gets ``--interface
127.0.0.1`` and its own ``--home`` in a temporary directory, and every
identity key is created (``p2pchat id --home H``) before any timing starts.
The product paths are driven by load-generator processes (this file, run as
``--worker ROLE``) that use :class:`p2pchat.room.participant.Participant` against a
real relay process; the file transfer is timed with the real commands
(``p2pchat host``, ``join --accept-files``, ``send``). The baselines are raw
asyncio processes of the same shape (sender -> forwarder -> receiver,
length-prefixed frames, no crypto, no msgpack). docs/BENCHMARKS.md says what
each line means.

Prints a table (ours, baseline, ratio, target with OK or MISS) and writes the
results as JSON. Exits 0 when every measurement ran, whether or not its
target was met; 1 when a measurement could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import platform
import queue
import resource
import secrets
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

LOOPBACK = "127.0.0.1"

#: The issue's targets (see Bench.row for how each is checked).
TARGET_HANDSHAKE = 2.0  # p50 <= 2x (bare crypto + one loopback RTT)
TARGET_LATENCY = 2.0  # p50 <= 2x the unbatched raw chain
TARGET_SMALL = 0.30  # msgs/s >= 0.30 of the unbatched raw chain
TARGET_LARGE = 0.50  # MB/s >= 0.50 of the unbatched raw chain
TARGET_IDLE_KIB = 64.0  # KiB per idle registered connection, strictly below
TARGET_DISCOVERY = 0.3  # s, browse start -> host resolved, p50 strictly below
TARGET_JOIN = 1.0  # s, join process start -> session ready, p50 strictly below

SMALL = 100  # bytes of text per small message
LARGE = 64 * 1024  # bytes of text per large message (the protocol's maximum)
#: messages in flight (sent, not yet acknowledged), the same on both paths:
#: enough that neither the raw chain nor the product's acks, which a durable
#: outbox sends after its debounced 50 ms save, are held back by the window
WINDOW_SMALL = 5000
WINDOW_LARGE = 128

_U32 = struct.Struct(">I")

MIB = 1024 * 1024

STEPS = ("handshake", "discovery", "latency", "small", "large", "file", "fanout", "memory")

#: Sample counts and durations (seconds) of the quick and the full run, and
#: the hard time budget of each (a safety net: past it, the run stops with an
#: error). Throughput runs are (warm-up, measured) seconds.
PLANS: dict[str, dict[str, Any]] = {
    "quick": {
        "budget": 110.0,
        "handshakes": 30,
        "rtt_pings": 200,
        "crypto_reps": 30,
        "browses": 5,
        "joins": 3,
        "latency_msgs": 200,
        "throughput": (0.3, 0.8),
        "fanout": (2, 10),
        "fanout_time": (0.3, 0.8),
        "file": (32, 2),  # MiB per file, files sent (one ``p2pchat send`` each)
    },
    "full": {
        "budget": 590.0,
        "handshakes": 100,
        "rtt_pings": 1000,
        "crypto_reps": 100,
        "browses": 20,
        "joins": 10,
        "latency_msgs": 1000,
        "throughput": (0.5, 5.0),
        "fanout": (2, 10, 50),
        "fanout_time": (0.5, 4.0),
        "file": (64, 3),
    },
}


class BenchError(Exception):
    """A measurement could not run."""


# ====================================================================== helpers


def pct(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    data = sorted(values)
    if not data:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(data)))
    return data[rank - 1]


def raw_frame(payload: bytes) -> bytes:
    return _U32.pack(len(payload)) + payload


def split_frames(buf: bytearray) -> tuple[list[bytes], int]:
    """Complete frame payloads at the start of ``buf``, and the bytes they span."""
    out: list[bytes] = []
    pos, end = 0, len(buf)
    while end - pos >= 4:
        (size,) = _U32.unpack_from(buf, pos)
        nxt = pos + 4 + size
        if nxt > end:
            break
        out.append(bytes(buf[pos + 4 : nxt]))
        pos = nxt
    return out, pos


# ====================================================================== worker side
#
# Each worker is ``python scripts/bench.py --worker ROLE JSON``. It prints one
# JSON object per line on stdout ({"type": ...}), reads commands one per line
# on stdin, and exits when stdin ends or its lifetime (args["life"]) is over.


def emit(kind: str, **fields: Any) -> None:
    print(json.dumps({"type": kind, **fields}), flush=True)


class Commands:
    """stdin lines as an asyncio queue (None at EOF), read by a daemon thread."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def pump() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(self.queue.put_nowait, line.strip())
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.queue.put_nowait, None)

        threading.Thread(target=pump, daemon=True).start()

    async def next(self) -> str | None:
        return await self.queue.get()

    async def until_eof(self) -> None:
        while await self.next() is not None:
            pass


# ---------------------------------------------------------------- raw chain


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
            (size,) = _U32.unpack_from(buf, pos)
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


# ---------------------------------------------------------------- product


async def w_relay(args: dict[str, Any], cmds: Commands) -> None:
    """A relay-only process: p2pchat.net.relay.Relay on 127.0.0.1, with the default
    RelayLimits unless ``limits`` overrides some."""
    from p2pchat.net.relay import Relay, RelayLimits

    relay = Relay(RelayLimits(**args.get("limits", {})))
    (_, port), *_ = await relay.async_start([LOOPBACK], 0)
    emit("ready", port=port, pid=os.getpid())
    await cmds.until_eof()
    await relay.async_close()


def _participant(home: str, name: str, on_event: Callable[[Any], None]) -> Any:
    """A Participant as ``p2pchat join`` builds one: this home's identity, pins
    and persisted (encrypted) outbox."""
    from p2pchat.room.bus import EventBus
    from p2pchat.room.participant import Participant
    from p2pchat.store.identity import TrustStore, load_identity, load_storage_key
    from p2pchat.store.outbox import Outbox

    path = Path(home)
    outbox = Outbox(path / "outbox-bench.bin", load_storage_key(path))
    bus: EventBus[Any] = EventBus()
    bus.add_sink(on_event)
    return Participant(load_identity(path), name, TrustStore.open(path), bus, outbox=outbox)


def _settled(p: Any) -> bool:
    """Every peer present has a session or was refused."""
    refused = {r.peer.peer_id for r in p.refusals}
    return all(p.is_ready(i.peer_id) or i.peer_id in refused for i in p.peers)


async def w_p_recv(args: dict[str, Any], cmds: Commands) -> None:
    """Receivers: one Participant per home, all in this process."""
    from p2pchat.room.events import MessageReceived

    state: dict[str, Any] = {"count": 0, "lat": []}

    def on_event(event: Any) -> None:
        if isinstance(event, MessageReceived):
            state["count"] += 1
            if event.text[:1] == "T":
                state["lat"].append(time.monotonic_ns() - int(event.text[1:21]))

    parts = []
    try:
        for home in args["homes"]:
            p = _participant(home, Path(home).name, on_event)
            await p.async_connect(LOOPBACK, args["port"], 10.0)
            parts.append(p)
            # the newcomer initiates with everyone present; wait for those sessions
            await p.bus.wait_for(lambda p=p: _settled(p), 30.0)
        refused = sum(len(p.refusals) for p in parts)
        emit("ready", refused=refused)
        while (cmd := await cmds.next()) is not None:
            if cmd == "report":
                emit("report", count=state["count"], lat=state["lat"])
                state["count"], state["lat"] = 0, []
    finally:
        await asyncio.gather(*(p.async_close() for p in parts), return_exceptions=True)


async def w_p_send(args: dict[str, Any], cmds: Commands) -> None:
    """The sender: one Participant; waits for a session with ``peers`` peers,
    then runs the latency or throughput mode."""
    from p2pchat.room.events import Delivered

    acked = [0]
    sent_at: dict[bytes, int] = {}
    confirm: list[int] = []  # send -> Delivered (complete), latency mode

    def on_event(event: Any) -> None:
        if isinstance(event, Delivered) and event.complete:
            acked[0] += 1
            t0 = sent_at.pop(event.msg_id, None)
            if t0 is not None:
                confirm.append(time.monotonic_ns() - t0)

    loop = asyncio.get_running_loop()
    p = _participant(args["home"], "sender", on_event)
    await p.async_connect(LOOPBACK, args["port"], 10.0)
    try:
        want = args["peers"]
        ok = await p.bus.wait_for(lambda: sum(p.is_ready(i.peer_id) for i in p.peers) >= want, 60.0)
        if not ok:
            raise BenchError(f"sender: sessions with {want} peers not ready within 60 s")
        await asyncio.sleep(0.1)  # the responders have finished _on_ready
        emit("sessions")
        await asyncio.sleep(0.02)  # the orchestrator starts counting CPU time
        size = args["size"]
        if args["mode"] == "latency":
            # one message at a time, ``gap`` apart; acks are not waited for (a
            # durable outbox batches them every 50 ms), but timed as they come
            for _ in range(args["n"]):
                t0 = time.monotonic_ns()
                mid = p.send_text(f"T{t0:020d}".ljust(size, "."))
                sent_at[mid] = t0
                await asyncio.sleep(args["gap"])
            if not await p.bus.wait_for(lambda: len(p.outbox) == 0, 10.0):
                raise BenchError("sender: messages not acknowledged within 10 s")
            emit("result", rtt=confirm)
            return
        window = args["window"]
        text = "x" * size
        marks: dict[str, tuple[float, int]] = {}

        def mark(name: str) -> None:
            marks[name] = (time.monotonic(), acked[0])

        loop.call_later(args["warmup"], mark, "start")
        end = time.monotonic() + args["warmup"] + args["duration"]
        loop.call_later(args["warmup"] + args["duration"], mark, "end")
        while time.monotonic() < end:
            while len(p.outbox) < window:
                p.send_text(text)
            await p.bus.wait_for(
                lambda: len(p.outbox) <= window // 2, max(0.01, end - time.monotonic())
            )
        await asyncio.sleep(0.01)
        drained = await p.bus.wait_for(lambda: len(p.outbox) == 0, 30.0)
        (t0, a0), (t1, a1) = marks["start"], marks["end"]
        emit("result", rate=(a1 - a0) / (t1 - t0), acked=a1 - a0, seconds=t1 - t0, drained=drained)
    finally:
        await p.async_close()


async def w_hs_load(args: dict[str, Any], cmds: Commands) -> None:
    """Handshake load generator: loopback RTT to an echo process, the bare
    crypto of one handshake, then ``n`` connections to the host, each timed
    from the start of the TCP connect to SessionReady with the host."""
    import hmac

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import x25519
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    from p2pchat.proto.oaep import OAEP_PADDING
    from p2pchat.room.events import SessionReady
    from p2pchat.store.identity import load_identity

    # 1. one loopback round trip between two asyncio processes (64 bytes)
    reader, writer = await asyncio.open_connection(LOOPBACK, args["echo_port"])
    rtt = []
    for _ in range(args["rtt_n"]):
        t0 = time.perf_counter_ns()
        writer.write(b"p" * 64)
        await reader.readexactly(64)
        rtt.append(time.perf_counter_ns() - t0)
    writer.close()

    # 2. the bare crypto a handshake must do, both sides: two RSA-3072 OAEP
    #    decryptions, two X25519 key pairs and exchanges, and per side one
    #    HKDF-Extract plus the six expansions of the key schedule
    ka = load_identity(Path(args["home"])).private_key
    kb = load_identity(Path(args["home2"])).private_key
    pa, pb = ka.public_key(), kb.public_key()

    def ciphertexts() -> tuple[bytes, bytes]:
        return pb.encrypt(os.urandom(32), OAEP_PADDING), pa.encrypt(os.urandom(32), OAEP_PADDING)

    def bare_crypto(ca: bytes, cb: bytes) -> int:
        t0 = time.perf_counter_ns()
        kb.decrypt(ca, OAEP_PADDING)
        ka.decrypt(cb, OAEP_PADDING)
        ea, eb = x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
        dh = ea.exchange(eb.public_key())
        eb.exchange(ea.public_key())
        for _side in range(2):
            prk = hmac.digest(b"s" * 32, dh + b"i" * 64, "sha256")
            for label in (b"i finished", b"r finished", b"i traffic", b"r traffic", b"exp", b"sas"):
                HKDFExpand(hashes.SHA256(), 32, label + b"t" * 32).derive(prk)
        return time.perf_counter_ns() - t0

    crypto = [bare_crypto(*ciphertexts()) for _ in range(args["crypto_n"])]
    # the same, each right after ``pace`` seconds of idleness, as in the
    # handshakes below (an idle vCPU comes back slow: cold caches, low clock)
    crypto_paced = []
    for _ in range(max(5, args["crypto_n"] // 3)):
        ca, cb = ciphertexts()
        await asyncio.sleep(args["pace"])
        crypto_paced.append(bare_crypto(ca, cb))

    # 3. connections to the host
    total, register, handshake = [], [], []
    cur: dict[str, Any] = {"p": None, "ready": 0}

    def on_event(event: Any) -> None:
        p = cur["p"]
        if isinstance(event, SessionReady) and p is not None and event.peer.peer_id == p.host_id:
            cur["ready"] = time.perf_counter_ns()

    for _ in range(args["n"]):
        started = time.monotonic()
        cur["ready"] = 0
        p = cur["p"] = _participant(args["home"], "hs-load", on_event)
        t0 = time.perf_counter_ns()
        await p.async_connect(LOOPBACK, args["port"], 10.0)
        t1 = time.perf_counter_ns()
        ok = await p.bus.wait_for(
            lambda p=p: bool(cur["ready"] or p.refusals or p.disconnected), 10.0
        )
        await p.async_close()
        if not ok or not cur["ready"]:
            raise BenchError(f"handshake with the host failed: {p.refusals or p.disconnected}")
        total.append(cur["ready"] - t0)
        register.append(t1 - t0)
        handshake.append(cur["ready"] - t1)
        # the host answers at most 20 new handshakes per second (burst 40)
        await asyncio.sleep(max(0.0, started + args["pace"] - time.monotonic()))
    emit(
        "result",
        rtt=rtt,
        crypto=crypto,
        crypto_paced=crypto_paced,
        total=total,
        register=register,
        handshake=handshake,
    )


class _Idle(asyncio.Protocol):
    def __init__(self, state: dict[str, int], hello: bytes | None) -> None:
        self.state = state
        self.hello = hello
        self.got = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self.hello is not None:
            transport.write(self.hello)
        else:
            self.got.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.state["bytes"] += len(data)
        if not self.got.done():
            if b"welcome" in data:
                self.got.set_result(None)
            else:
                self.got.set_exception(BenchError(f"the relay did not welcome us: {data[:80]!r}"))


async def w_idle(args: dict[str, Any], cmds: Commands) -> None:
    """Opens idle connections on command ("open N": until N are open). With
    ``register``, each sends a hello and waits for the relay's welcome; then
    it only reads (and discards) what the relay sends."""
    from p2pchat.config import SUPPORTED_VERSIONS
    from p2pchat.proto.messages import Hello, encode
    from p2pchat.store.identity import load_identity

    loop = asyncio.get_running_loop()
    der = load_identity(Path(args["home"])).public_der if args["register"] else b""
    state = {"bytes": 0}
    conns: list[asyncio.Transport] = []
    emit("ready")
    while (cmd := await cmds.next()) is not None:
        want = int(cmd.split()[1])
        while len(conns) < want:
            batch = min(25, want - len(conns))
            protos = []
            for i in range(batch):
                hello = (
                    encode(Hello(SUPPORTED_VERSIONS, f"idle{len(conns) + i}", der))
                    if args["register"]
                    else None
                )
                t, proto = await loop.create_connection(
                    lambda hello=hello: _Idle(state, hello), LOOPBACK, args["port"]
                )
                conns.append(t)
                protos.append(proto)
            await asyncio.wait_for(asyncio.gather(*(pr.got for pr in protos)), 30.0)
        # quiet: nothing more arrives for 0.3 s (the roster broadcasts are over)
        deadline = time.monotonic() + 60
        last = -1
        while state["bytes"] != last and time.monotonic() < deadline:
            last = state["bytes"]
            await asyncio.sleep(0.3)
        emit("opened", n=len(conns), bytes=state["bytes"])
    for t in conns:
        t.close()


async def w_browse(args: dict[str, Any], cmds: Commands) -> None:
    """Discovery: async_browse on 127.0.0.1 until our host resolves (timed at
    the moment it resolves), and the baseline: resolving the known instance
    name directly with one fresh zeroconf instance (start + one query)."""
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

    from p2pchat.config import SERVICE_TYPE
    from p2pchat.net.discovery import async_browse, interface_choice, resolve_interfaces

    name = args["name"]
    browse, browse_return, direct = [], [], []
    instance = None
    found = [0]

    def want(host: Any) -> bool:
        if host.name == name and not found[0]:
            found[0] = time.perf_counter_ns()
        return bool(host.name == name)

    for _ in range(args["n"]):
        found[0] = 0
        t0 = time.perf_counter_ns()
        hosts = await async_browse(timeout=5.0, interfaces=[LOOPBACK], want=want)
        t1 = time.perf_counter_ns()
        if not found[0]:
            raise BenchError(f"browse did not find {name!r} within 5 s")
        instance = next(h.instance for h in hosts if h.name == name)
        browse.append(found[0] - t0)
        browse_return.append(t1 - t0)
        await asyncio.sleep(0.1)
    choice = interface_choice(resolve_interfaces([LOOPBACK]))
    for _ in range(args["n"]):
        t0 = time.perf_counter_ns()
        aiozc = AsyncZeroconf(interfaces=choice, unicast=True)
        try:
            await aiozc.zeroconf.async_wait_for_start()
            info = AsyncServiceInfo(SERVICE_TYPE, instance)
            ok = await info.async_request(aiozc.zeroconf, 3000)
            t1 = time.perf_counter_ns()
        finally:
            await aiozc.async_close()
        if not ok:
            raise BenchError(f"could not resolve {instance!r} directly")
        direct.append(t1 - t0)
        await asyncio.sleep(0.1)
    emit("result", browse=browse, browse_return=browse_return, direct=direct)


WORKERS: dict[str, Callable[[dict[str, Any], Commands], Any]] = {
    "fwd": w_fwd,
    "raw-recv": w_raw_recv,
    "raw-send": w_raw_send,
    "echo": w_echo,
    "relay": w_relay,
    "p-recv": w_p_recv,
    "p-send": w_p_send,
    "hs-load": w_hs_load,
    "idle": w_idle,
    "browse": w_browse,
}


def worker_main(role: str, raw_args: str) -> int:
    args = json.loads(raw_args)

    async def run() -> None:
        cmds = Commands()
        async with asyncio.timeout(args.get("life", 120.0)):
            await WORKERS[role](args, cmds)

    profile = args.get("profile")
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        asyncio.run(run())
    except BenchError as exc:
        emit("error", message=str(exc))
        return 1
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(os.path.join(profile, f"{role}-{os.getpid()}.prof"))
    return 0


# ====================================================================== orchestrator


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PCHAT_")}
    env.update(PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8", PYTHONUTF8="1")
    return env


class Proc:
    """A child process speaking JSON lines on stdout; stderr is kept for errors."""

    def __init__(self, label: str, cmd: list[str]) -> None:
        self.label = label
        self.started = time.time()
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
            env=child_env(),
        )
        self.lines: queue.Queue[tuple[float, str] | None] = queue.Queue()
        self.stderr: list[str] = []
        #: time.monotonic() when stdout ended (the process is exiting), once it has
        self.eof_at: float | None = None
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.time(), line))
        self.eof_at = time.monotonic()
        self.lines.put(None)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip())
            del self.stderr[:-40]

    def fail(self, why: str) -> BenchError:
        tail = "\n    ".join(self.stderr[-15:])
        return BenchError(f"{self.label}: {why}\n    {tail}")

    def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        """The next JSON line whose type is ``kind`` (with ``_at``, when it was read)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self.fail(f"no {kind!r} within {timeout:g} s")
            try:
                item = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if item is None:
                self.lines.put(None)
                self.proc.wait(5)
                raise self.fail(f"exited with {self.proc.returncode} before {kind!r}")
            at, line = item
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if not isinstance(obj, dict):
                continue
            if obj.get("type") == "error":
                raise self.fail(str(obj.get("message")))
            if obj.get("type") == kind:
                obj["_at"] = at
                return obj

    def next_json(self, timeout: float) -> dict[str, Any] | None:
        """The next JSON object on stdout, whatever its type (with ``_at``); None
        if none came within ``timeout`` or stdout has ended."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if item is None:
                self.lines.put(None)
                return None
            at, line = item
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                obj["_at"] = at
                return obj

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self, timeout: float = 10.0, *, sigterm: bool = False) -> int | None:
        """End stdin (``sigterm``: and send SIGTERM, as ``p2pchat host`` keeps
        serving after stdin ends), wait; then terminate, then kill (this
        process only)."""
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        if sigterm and self.proc.poll() is None:
            self.proc.terminate()
        for action in (None, self.proc.terminate, self.proc.kill):
            if action is not None and self.proc.poll() is None:
                action()
            try:
                return self.proc.wait(timeout if action is None else 3.0)
            except subprocess.TimeoutExpired:
                continue
        return self.proc.poll()


class RssWatch:
    """Peak RSS (KiB) of one process, sampled every 50 ms by a thread until stopped."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while not self.done.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.process.memory_info().rss / 1024)
            self.done.wait(0.05)

    def stop(self) -> float:
        self.done.set()
        self.thread.join(2.0)
        return self.peak


class CpuWatch:
    """CPU seconds (user + system) each named process uses from now until stop()."""

    def __init__(self, **pids: int) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.start = {name: self._cpu(p) for name, p in self.procs.items()}

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            return float(times.user + times.system)
        return math.nan

    def stop(self) -> dict[str, float]:
        return {name: self._cpu(p) - self.start[name] for name, p in self.procs.items()}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.plan = PLANS["quick" if args.quick else "full"]
        self.budget = float(self.plan["budget"])
        self.t_start = time.monotonic()
        self.tmp = Path(tempfile.mkdtemp(prefix="p2pchat-bench-"))
        self.procs: list[Proc] = []
        self.rows: list[dict[str, Any]] = []
        self.details: dict[str, Any] = {}
        self.profile = str(Path(args.profile).resolve()) if args.profile else None
        self.host_name = f"bench-{secrets.token_hex(3)}"

    # -- plumbing

    def check_time(self, what: str) -> None:
        spent = time.monotonic() - self.t_start
        if spent > self.budget:
            raise BenchError(f"out of time before {what} ({spent:.0f} s spent)")

    def home(self, name: str) -> str:
        return str(self.tmp / name)

    def p2pchat(self, label: str, *argv: str) -> Proc:
        proc = Proc(label, [sys.executable, "-m", "p2pchat", *argv])
        self.procs.append(proc)
        return proc

    def worker(self, role: str, profile: bool = False, **kw: Any) -> Proc:
        kw.setdefault("life", self.budget)
        if profile and self.profile:
            kw["profile"] = self.profile
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", role, json.dumps(kw)]
        proc = Proc(role, cmd)
        self.procs.append(proc)
        return proc

    def stop(self, *procs: Proc) -> None:
        for proc in procs:
            proc.close()
            with contextlib.suppress(ValueError):
                self.procs.remove(proc)

    def row(
        self,
        section: str,
        label: str,
        ours: float | None,
        base: float | None,
        unit: str,
        *,
        kind: str = "",
        target: float | None = None,
        base_label: str = "",
        note: str = "",
    ) -> None:
        """One table line; ratio = ours / baseline. ``kind`` says how ``target``
        is checked: "max" ratio <= target, "min" ratio >= target, "abs" ours <
        target (in ``unit``). Without a target the verdict is "-"; without a
        figure (``ours`` None, see ``note``) it is "n/a"."""
        ratio = ours / base if ours is not None and base else None
        verdict = "-"
        if ours is None:
            verdict = "n/a"
        elif target is not None:
            if kind == "max":
                ok = ratio is not None and ratio <= target
            elif kind == "min":
                ok = ratio is not None and ratio >= target
            else:
                ok = ours < target
            verdict = "OK" if ok else "MISS"
        self.rows.append(
            {
                "section": section,
                "measurement": label,
                "ours": ours,
                "baseline": base,
                "baseline_is": base_label,
                "unit": unit,
                "ratio": ratio,
                "target": target,
                "target_kind": kind,
                "verdict": verdict,
                "note": note,
            }
        )

    def rss_kib(self, pid: int, samples: int = 3) -> float:
        values = []
        for _ in range(samples):
            values.append(psutil.Process(pid).memory_info().rss / 1024)
            time.sleep(0.1)
        return statistics.median(values)

    # -- setup

    def make_homes(self, names: list[str]) -> None:
        """``p2pchat id --home H`` for every home (creates the identity key), in parallel."""

        def make(name: str) -> None:
            cmd = [sys.executable, "-m", "p2pchat", "id", "--home", self.home(name)]
            subprocess.run(
                cmd, check=True, capture_output=True, timeout=60, env=child_env(), text=True
            )

        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
            list(pool.map(make, names))

    # -- 1. handshake

    def bench_handshake(self, host_port: int) -> None:
        self.check_time("the handshake")
        n = self.plan["handshakes"]
        echo = self.worker("echo")
        echo_port = echo.expect("ready", 10)["port"]
        load = self.worker(
            "hs-load",
            profile=True,
            port=host_port,
            echo_port=echo_port,
            home=self.home("alice"),
            home2=self.home("bob"),
            n=n,
            pace=0.05,
            rtt_n=self.plan["rtt_pings"],
            crypto_n=self.plan["crypto_reps"],
        )
        res = load.expect("result", 120)
        self.stop(load, echo)
        ms = 1e-6
        rtt = statistics.median(res["rtt"]) * ms
        crypto = statistics.median(res["crypto"]) * ms
        p50, p99 = statistics.median(res["total"]) * ms, pct(res["total"], 99) * ms
        base = crypto + rtt
        self.details["handshake"] = {
            "connections": n,
            "p50_ms": p50,
            "p99_ms": p99,
            "register_p50_ms": statistics.median(res["register"]) * ms,
            "handshake_only_p50_ms": statistics.median(res["handshake"]) * ms,
            "bare_crypto_p50_ms": crypto,
            "bare_crypto_paced_p50_ms": statistics.median(res["crypto_paced"]) * ms,
            "loopback_rtt_p50_ms": rtt,
            "loopback_rtt_p99_ms": pct(res["rtt"], 99) * ms,
        }
        label = "crypto+RTT"
        self.row(
            "1 handshake",
            f"connect->ready p50 (n={n})",
            p50,
            base,
            "ms",
            kind="max",
            target=TARGET_HANDSHAKE,
            base_label=label,
        )
        self.row("1 handshake", "connect->ready p99", p99, base, "ms", base_label=label)
        self.row("1 handshake", "  bare crypto p50 (in baseline)", crypto, None, "ms")
        self.row(
            "1 handshake",
            "  bare crypto p50 after 50 ms idle (not in baseline)",
            statistics.median(res["crypto_paced"]) * ms,
            crypto,
            "ms",
            base_label="bare crypto",
        )
        self.row("1 handshake", "  loopback RTT p50 (in baseline)", rtt, None, "ms")

    # -- 7. discovery (uses the host started for the handshake)

    def bench_discovery(self, host_port: int) -> None:
        self.check_time("discovery")
        n = self.plan["browses"]
        browse = self.worker("browse", profile=True, name=self.host_name, n=n)
        res = browse.expect("result", 60)
        self.stop(browse)
        s = 1e-9
        found = statistics.median(res["browse"]) * s
        direct = statistics.median(res["direct"]) * s
        self.details["discovery"] = {
            "browse_resolved_p50_s": found,
            "browse_resolved_p99_s": pct(res["browse"], 99) * s,
            "browse_returned_p50_s": statistics.median(res["browse_return"]) * s,
            "direct_resolve_p50_s": direct,
            "samples": n,
        }
        self.row(
            "7 discovery",
            f"browse->host resolved p50 (n={n})",
            found,
            direct,
            "s",
            kind="abs",
            target=TARGET_DISCOVERY,
            base_label="direct resolve",
        )

        # baseline for process start -> ready: a process that starts, imports,
        # loads the key and exits (p2pchat id)
        runs = self.plan["joins"]
        idle = []
        for _ in range(runs):
            t0 = time.monotonic()
            subprocess.run(
                [sys.executable, "-m", "p2pchat", "id", "--home", self.home("joiner")],
                check=True,
                capture_output=True,
                timeout=30,
                env=child_env(),
            )
            idle.append(time.monotonic() - t0)
        id_p50 = statistics.median(idle)
        variants = {
            "join (no name)": [],
            f"join {self.host_name}": [self.host_name],
            "join --connect": ["--connect", f"{LOOPBACK}:{host_port}"],
        }
        results: dict[str, list[float]] = {}
        notes: dict[str, str] = {}
        for label, extra in variants.items():
            times = []
            for _ in range(runs):
                self.check_time(label)
                took = self.one_join(extra)
                if took is None:  # several hosts: only possible without a name
                    notes[label] = "skipped: other p2pchat hosts are advertised on 127.0.0.1"
                    break
                times.append(took)
            results[label] = times
        self.details["join"] = {
            "process_baseline_p50_s": id_p50,
            **{
                k: {"p50_s": statistics.median(v) if v else None, "all_s": v, "note": notes.get(k)}
                for k, v in results.items()
            },
        }
        for label, times in results.items():
            self.row(
                "7 discovery",
                f"{label}: start->ready p50 (n={len(times)})",
                statistics.median(times) if times else None,
                id_p50,
                "s",
                kind="abs" if "connect" not in label else "",
                target=TARGET_JOIN if "connect" not in label else None,
                base_label="p2pchat id",
                note=notes.get(label, ""),
            )

    def one_join(self, extra: list[str]) -> float | None:
        """Seconds from spawning ``p2pchat join`` to its session event with the host
        (the event's own timestamp, Unix time at millisecond resolution); None
        when join found several hosts and was given no name."""
        argv = ["join", *extra, "--interface", LOOPBACK, "--json", "--timeout", "10"]
        argv += ["--home", self.home("joiner"), "--name", "joiner"]
        t0 = time.time()
        join = self.p2pchat("join", *argv)
        try:
            ev = join.expect("session", 20)
            while ev.get("peer") != self.host_name:
                ev = join.expect("session", 20)
        except BenchError:
            if not extra and join.proc.poll() == 2 and "several hosts" in "".join(join.stderr):
                return None
            raise
        finally:
            self.stop(join)
        return float(ev["time"]) - t0

    # -- 2-5. message paths

    def raw_chain(
        self, batched: bool, receivers: int, send_args: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any], float]:
        """Raw sender -> forwarder -> receiver(s). Returns the sender's result,
        the receivers' report and the forwarder's peak RSS; the result gets
        "cpu": CPU seconds of each process while the sender ran."""
        fwd = self.worker("fwd", batched=batched)
        port = fwd.expect("ready", 10)["port"]
        recv = self.worker("raw-recv", port=port, n=receivers, batched=batched)
        recv.expect("ready", 20)
        send = self.worker("raw-send", port=port, batched=batched, copies=receivers, **send_args)
        send.expect("start", 20)
        cpu = CpuWatch(sender=send.pid, relay=fwd.pid, receiver=recv.pid)
        watch = RssWatch(fwd.pid)
        res = send.expect("result", 120)
        res["cpu"] = cpu.stop()
        peak = watch.stop()
        recv.send("report")
        rep = recv.expect("report", 20)
        self.stop(send, recv, fwd)
        return res, rep, peak

    def product_chain(
        self, receivers: int, send_args: dict[str, Any], limits: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any], float, float]:
        """Participant sender -> relay process -> Participant receiver(s): the
        sender's result (with "cpu" as for raw_chain), the receivers' report,
        and the relay's RSS with the sessions up and its peak while sending."""
        relay = self.worker("relay", profile=True, limits=limits or {})
        port = relay.expect("ready", 10)["port"]
        names = ["bob"] if receivers == 1 else [f"recv{i}" for i in range(receivers)]
        homes = [self.home(name) for name in names]
        recv = self.worker("p-recv", profile=True, port=port, homes=homes)
        recv.expect("ready", 120)
        send = self.worker(
            "p-send", profile=True, port=port, home=self.home("alice"), peers=receivers, **send_args
        )
        send.expect("sessions", 90)
        cpu = CpuWatch(sender=send.pid, relay=relay.pid, receiver=recv.pid)
        idle_rss = self.rss_kib(relay.pid, 1)
        watch = RssWatch(relay.pid)
        res = send.expect("result", 120)
        res["cpu"] = cpu.stop()
        peak = watch.stop()
        recv.send("report")
        rep = recv.expect("report", 30)
        self.stop(send, recv, relay)
        return res, rep, idle_rss, peak

    def bench_latency(self) -> None:
        self.check_time("latency")
        n = self.plan["latency_msgs"]
        args = {"mode": "latency", "n": n, "gap": 0.002, "size": SMALL}
        ms = 1e-6
        raw, raw_rtt = {}, {}
        for batched in (False, True):
            res, rep, _ = self.raw_chain(batched, 1, args)
            raw[batched], raw_rtt[batched] = rep["lat"], res["rtt"]
        res, rep, _, _ = self.product_chain(1, args)
        ours = rep["lat"]
        if len(ours) < n:
            raise BenchError(f"latency: {len(ours)} of {n} messages arrived")
        ub, b = raw[False], raw[True]
        confirm, rtt = res["rtt"], raw_rtt[False]
        self.details["latency"] = {
            "messages": n,
            "gap_s": args["gap"],
            "ours_p50_ms": statistics.median(ours) * ms,
            "ours_p99_ms": pct(ours, 99) * ms,
            "ours_send_to_delivered_p50_ms": statistics.median(confirm) * ms,
            "ours_send_to_delivered_p99_ms": pct(confirm, 99) * ms,
            "raw_unbatched_rtt_p50_ms": statistics.median(rtt) * ms,
            "raw_unbatched_rtt_half_p50_ms": statistics.median(rtt) * ms / 2,
            "raw_unbatched_p50_ms": statistics.median(ub) * ms,
            "raw_unbatched_p99_ms": pct(ub, 99) * ms,
            "raw_batched_p50_ms": statistics.median(b) * ms,
            "raw_batched_p99_ms": pct(b, 99) * ms,
        }
        self.row(
            "2 latency",
            f"one-way p50 (n={n})",
            statistics.median(ours) * ms,
            statistics.median(ub) * ms,
            "ms",
            kind="max",
            target=TARGET_LATENCY,
            base_label="raw unbatched",
        )
        self.row(
            "2 latency",
            "one-way p99",
            pct(ours, 99) * ms,
            pct(ub, 99) * ms,
            "ms",
            base_label="raw unbatched",
        )
        self.row(
            "2 latency",
            "send->delivered (ack back) p50",
            statistics.median(confirm) * ms,
            statistics.median(rtt) * ms,
            "ms",
            base_label="raw round trip",
        )
        self.row(
            "2 latency",
            "one-way p50 vs batched raw",
            statistics.median(ours) * ms,
            statistics.median(b) * ms,
            "ms",
            base_label="raw batched",
        )

    def bench_throughput(self, size: int) -> None:
        self.check_time(f"throughput {size}")
        window = WINDOW_SMALL if size == SMALL else WINDOW_LARGE
        warmup, duration = self.plan["throughput"]
        args = {"mode": "tput", "size": size, "window": window, "warmup": warmup}
        args["duration"] = duration
        raw, raw_count = {}, {}
        for batched in (False, True):
            res_raw, rep_raw, _ = self.raw_chain(batched, 1, args)
            raw[batched], raw_count[batched] = res_raw, rep_raw["count"]
        res, rep, _, peak = self.product_chain(1, args)
        ours = res["rate"]

        def per_msg(cpu: dict[str, float], count: int) -> dict[str, float]:
            return {role: sec / max(1, count) * 1e6 for role, sec in cpu.items()}

        cpu_ours = per_msg(res["cpu"], rep["count"])
        cpu_raw = per_msg(raw[False]["cpu"], raw_count[False])
        key = "small" if size == SMALL else "large"
        self.details[f"throughput_{key}"] = {
            "size": size,
            "window": window,
            "seconds": duration,
            "ours_msgs_s": ours,
            "raw_unbatched_msgs_s": raw[False]["rate"],
            "raw_batched_msgs_s": raw[True]["rate"],
            "drained": res["drained"],
            "relay_peak_rss_kib": peak,
            "cpu_us_per_msg_ours": cpu_ours,
            "cpu_us_per_msg_raw_unbatched": cpu_raw,
            "cpu_us_per_msg_raw_batched": per_msg(raw[True]["cpu"], raw_count[True]),
        }
        scale, unit = (1.0, "msg/s") if size == SMALL else (size / 1e6, "MB/s")
        section = "3 small msgs" if size == SMALL else "4 64 KiB msgs"
        what = f"{SMALL} B delivered+acked (msgs/s)" if size == SMALL else "64 KiB delivered+acked"
        target = TARGET_SMALL if size == SMALL else TARGET_LARGE
        self.row(
            section,
            what,
            ours * scale,
            raw[False]["rate"] * scale,
            unit,
            kind="min",
            target=target,
            base_label="raw unbatched",
        )
        self.row(
            section,
            "  vs batched raw chain",
            ours * scale,
            raw[True]["rate"] * scale,
            unit,
            base_label="raw batched",
        )
        for role in ("sender", "relay", "receiver"):
            self.row(
                section,
                f"  CPU per message, {role}",
                cpu_ours[role],
                cpu_raw[role],
                "us",
                base_label="raw unbatched",
            )

    # -- 8. file transfer

    def raw_large_mb_s(self) -> tuple[float, str]:
        """The unbatched raw chain's 64 KiB rate (MB/s) of this run: step large's
        if it ran, else measured now the same way. Also says which."""
        large = self.details.get("throughput_large")
        if large is not None:
            return large["raw_unbatched_msgs_s"] * LARGE / 1e6, "step large"
        warmup, duration = self.plan["throughput"]
        args = {"mode": "tput", "size": LARGE, "window": WINDOW_LARGE, "warmup": warmup}
        args["duration"] = duration
        res, _rep, _peak = self.raw_chain(False, 1, args)
        return res["rate"] * LARGE / 1e6, "measured in step file"

    @staticmethod
    def random_file(path: Path, size: int) -> str:
        """Write ``size`` random bytes to ``path``; their SHA-256 (hex)."""
        digest = hashlib.sha256()
        with open(path, "wb") as fh:
            for _ in range(size // MIB):
                block = os.urandom(MIB)
                digest.update(block)
                fh.write(block)
        return digest.hexdigest()

    @staticmethod
    def sha256_of(path: Path) -> str:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(MIB):
                digest.update(block)
        return digest.hexdigest()

    def bench_file(self) -> None:
        """``p2pchat send FILE --to bob`` through a ``p2pchat host`` process to a
        ``p2pchat join --accept-files DIR --json`` receiver, all three with
        ``--interface 127.0.0.1``; one fresh random file per send (the same file
        again would be answered at once from the receiver's finished transfers)."""
        self.check_time("file transfer")
        mib, sends = self.plan["file"]
        size = mib * MIB
        raw, raw_from = self.raw_large_mb_s()
        src_dir, inbox = self.tmp / "files", self.tmp / "inbox"
        src_dir.mkdir(exist_ok=True)
        local = ["--interface", LOOPBACK, "--json"]
        argv = ["host", *local, "--name", f"{self.host_name}-file", "--home", self.home("host")]
        host = self.p2pchat("host", *argv)
        recv: Proc | None = None
        runs: list[dict[str, Any]] = []
        try:
            connect = f"{LOOPBACK}:{host.expect('hosting', 30)['port']}"
            argv = ["join", "--connect", connect, *local, "--accept-files", str(inbox)]
            argv += ["--timeout", "10", "--home", self.home("bob"), "--name", "bob"]
            recv = self.p2pchat("join", *argv)
            recv.expect("session", 20)  # with the host
            for i in range(sends):
                self.check_time(f"file transfer {i + 1} of {sends}")
                runs.append(self.one_send(host, recv, connect, src_dir / f"bench-{i}.bin", size))
        finally:
            if recv is not None:
                self.stop(recv)
            host.close(sigterm=True)
            with contextlib.suppress(ValueError):
                self.procs.remove(host)
        accept = statistics.median(r["accept_to_verified_mb_s"] for r in runs)
        wall = statistics.median(r["send_wall_mb_s"] for r in runs)
        self.details["file"] = {
            "size_bytes": size,
            "sends": sends,
            "accept_to_verified_mb_s": accept,
            "send_wall_mb_s": wall,
            "raw_unbatched_64k_mb_s": raw,
            "raw_unbatched_64k_from": raw_from,
            "runs": runs,
        }
        self.row(
            "8 file",
            f"{mib} MiB file, accept->verified (n={sends})",
            accept,
            raw,
            "MB/s",
            base_label="raw unbatched",
        )
        self.row(
            "8 file",
            "  p2pchat send, start->exit",
            wall,
            raw,
            "MB/s",
            base_label="raw unbatched",
        )

    def one_send(
        self, host: Proc, recv: Proc, connect: str, path: Path, size: int
    ) -> dict[str, Any]:
        """One timed ``p2pchat send``: the receiver's accept -> verified
        (``seconds`` of its file-done event) and the command's wall time."""
        sha = self.random_file(path, size)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = CpuWatch(relay=host.pid, receiver=recv.pid)
        argv = ["send", str(path), "--to", "bob", "--connect", connect, "--interface", LOOPBACK]
        argv += ["--json", "--timeout", "30", "--home", self.home("alice"), "--name", "alice"]
        t0, t0_unix = time.monotonic(), time.time()
        send = self.p2pchat("send", *argv)
        try:
            # the receiver's events, until its file-done (bounded: 120 s in all)
            deadline = t0 + 120
            seen: dict[str, dict[str, Any]] = {}
            while "file-done" not in seen:
                if time.monotonic() > deadline:
                    raise recv.fail("no file-done within 120 s")
                if send.proc.poll() not in (None, 0):
                    raise send.fail(f"exited with {send.proc.returncode}")
                ev = recv.next_json(1.0)
                if ev is None:
                    if recv.proc.poll() is not None:
                        raise recv.fail(f"exited with {recv.proc.returncode}")
                    continue
                kind = ev.get("type", "")
                if kind in ("file-failed", "error", "disconnected"):
                    raise recv.fail(f"{kind}: {ev}")
                if kind.startswith("file-") and ev.get("direction") == "in":
                    seen.setdefault(kind, ev)
            code = send.proc.wait(30)
            for _ in range(200):  # the reader thread notes the end of stdout
                if send.eof_at is not None:
                    break
                time.sleep(0.01)
        except subprocess.TimeoutExpired as exc:
            raise send.fail("did not exit within 30 s of the receiver's file-done") from exc
        finally:
            self.stop(send)
        if code != 0:
            raise send.fail(f"exited with {code}")
        cpu_s = cpu.stop()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s["sender"] = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
        wall = (send.eof_at or time.monotonic()) - t0
        done = seen["file-done"]
        received = Path(done["path"])
        got = self.sha256_of(received)
        if got != sha or done["sha256"] != sha or received.stat().st_size != size:
            raise BenchError(f"file: the received file differs from the source ({received})")
        received.unlink()
        path.unlink()
        sender_events: list[dict[str, Any]] = []
        while (ev := send.next_json(0)) is not None:
            sender_events.append(ev)
        session = next(
            (e for e in sender_events if e.get("type") == "session" and e.get("peer") == "bob"),
            None,
        )
        out_done = next((e for e in sender_events if e.get("type") == "file-done"), {})
        offer = seen.get("file-offer", {}).get("time")
        accept = seen.get("file-progress", {}).get("time")
        return {
            "accept_to_verified_s": done["seconds"],
            "accept_to_verified_mb_s": done["rate"] / 1e6,
            "send_wall_s": wall,
            "send_wall_mb_s": size / wall / 1e6,
            # Unix times (ms) of the JSON events, from the send command's start
            "start_to_session_with_receiver_s": session["time"] - t0_unix if session else None,
            "start_to_offer_s": offer - t0_unix if offer is not None else None,
            "start_to_accept_s": accept - t0_unix if accept is not None else None,
            "start_to_verified_s": done["time"] - t0_unix,
            "sender_accept_to_done_s": out_done.get("seconds"),
            "cpu_s": cpu_s,
            "sha256_verified": True,
        }

    def bench_fanout(self) -> None:
        warmup, duration = self.plan["fanout_time"]
        args = {"mode": "tput", "size": SMALL, "window": WINDOW_SMALL, "warmup": warmup}
        args["duration"] = duration
        out = {}
        for n in self.plan["fanout"]:
            self.check_time(f"fan-out {n}")
            raw, _rep, raw_peak = self.raw_chain(False, n, args)
            res, _rep, idle, peak = self.product_chain(n, args)
            out[n] = {
                "ours_msgs_s": res["rate"],
                "raw_unbatched_msgs_s": raw["rate"],
                "relay_rss_idle_kib": idle,
                "relay_rss_peak_kib": peak,
                "raw_forwarder_rss_peak_kib": raw_peak,
            }
            self.row(
                "5 fan-out",
                f"1->{n} delivered to all (msgs/s)",
                res["rate"],
                raw["rate"],
                "msg/s",
                base_label="raw unbatched",
            )
            self.row(
                "5 fan-out",
                f"  relay RSS peak, {n} receivers (MiB)",
                peak / 1024,
                raw_peak / 1024,
                "MiB",
                base_label="raw forwarder",
            )
        self.details["fanout"] = out

    # -- 6. memory

    def bench_memory(self) -> None:
        self.check_time("memory")
        result: dict[str, dict[int, float]] = {}
        for label, role, kw in (
            ("relay", "relay", {"limits": {"max_participants": 600, "max_unregistered": 600}}),
            ("bare asyncio server", "fwd", {}),
        ):
            server = self.worker(role, **kw)
            port = server.expect("ready", 10)["port"]
            time.sleep(0.3)
            rss = {0: self.rss_kib(server.pid)}
            idle = self.worker("idle", port=port, home=self.home("alice"), register=role == "relay")
            idle.expect("ready", 10)
            for count in (100, 500):
                idle.send(f"open {count}")
                idle.expect("opened", 120)
                time.sleep(0.3)
                rss[count] = self.rss_kib(server.pid)
            self.stop(idle, server)
            result[label] = rss
        ours, base = result["relay"], result["bare asyncio server"]
        per = {n: (ours[n] - ours[0]) / n for n in (100, 500)}
        per_base = {n: (base[n] - base[0]) / n for n in (100, 500)}
        self.details["memory"] = {
            "relay_rss_kib": ours,
            "bare_rss_kib": base,
            "relay_kib_per_conn": per,
            "bare_kib_per_conn": per_base,
            "relay_limits": "max_participants=600, max_unregistered=600 (relay-only process)",
        }
        for n in (0, 100, 500):
            self.row(
                "6 memory",
                f"relay RSS, {n} idle registered (MiB)",
                ours[n] / 1024,
                base[n] / 1024,
                "MiB",
                base_label="bare server",
            )
        self.row(
            "6 memory",
            "KiB per idle registered conn (100)",
            per[100],
            per_base[100],
            "KiB",
            base_label="bare server",
        )
        self.row(
            "6 memory",
            "KiB per idle registered conn (500)",
            per[500],
            per_base[500],
            "KiB",
            kind="abs",
            target=TARGET_IDLE_KIB,
            base_label="bare server",
        )

    # -- all

    def run(self, only: set[str]) -> None:
        fanout = [f"recv{i}" for i in range(max(self.plan["fanout"]))] if "fanout" in only else []
        homes = ["host", "alice", "bob", "joiner", *fanout]
        t0 = time.monotonic()
        print(
            f"creating {len(homes)} identities (p2pchat id)", file=sys.stderr, end=" ", flush=True
        )
        self.make_homes(homes)
        print(f"({time.monotonic() - t0:.1f} s)", file=sys.stderr)
        if only & {"handshake", "discovery"}:
            t0 = time.monotonic()
            print("starting p2pchat host", file=sys.stderr, end=" ", flush=True)
            argv = ["host", "--interface", LOOPBACK, "--json", "--name", self.host_name]
            host = self.p2pchat("host", *argv, "--home", self.home("host"))
            port = host.expect("hosting", 30)["port"]
            print(f"({time.monotonic() - t0:.1f} s)", file=sys.stderr)
            for name, step in (
                ("handshake", self.bench_handshake),
                ("discovery", self.bench_discovery),
            ):
                if name in only:
                    t0 = time.monotonic()
                    print(f"running: {name}", file=sys.stderr, end=" ", flush=True)
                    step(port)
                    print(f"({time.monotonic() - t0:.1f} s)", file=sys.stderr)
            t0 = time.monotonic()
            host.close(sigterm=True)
            self.procs.remove(host)
            print(f"host stopped ({time.monotonic() - t0:.1f} s)", file=sys.stderr)
        steps: dict[str, Callable[[], None]] = {
            "latency": self.bench_latency,
            "small": lambda: self.bench_throughput(SMALL),
            "large": lambda: self.bench_throughput(LARGE),
            "file": self.bench_file,
            "fanout": self.bench_fanout,
            "memory": self.bench_memory,
        }
        for name, step in steps.items():
            if name in only:
                t0 = time.monotonic()
                print(f"running: {name}", file=sys.stderr, end=" ", flush=True)
                step()
                print(f"({time.monotonic() - t0:.1f} s)", file=sys.stderr)

    def close(self) -> None:
        for proc in list(self.procs):
            proc.close(3.0, sigterm=proc.label == "host")
        shutil.rmtree(self.tmp, ignore_errors=True)


def fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit in ("msg/s",):
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"


def target_text(row: dict[str, Any]) -> str:
    target, kind = row["target"], row["target_kind"]
    if target is None:
        return "-"
    if kind == "max":
        return f"ratio <= {target:g}"
    if kind == "min":
        return f"ratio >= {target:g}"
    return f"< {target:g} {row['unit']}"


def print_table(rows: list[dict[str, Any]], out: Any = sys.stdout) -> None:
    head = ("measurement", "unit", "ours", "baseline", "baseline is", "ratio", "target", "")
    lines = [head]
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(
            (
                f"[{r['section'].split()[0]}] {r['measurement']}",
                r["unit"],
                fmt(r["ours"], r["unit"]),
                fmt(r["baseline"], r["unit"]),
                r["baseline_is"] or "-",
                ratio,
                target_text(r),
                ""
                if r["verdict"] == "-"
                else r["verdict"] + (f" ({r['note']})" if r["note"] else ""),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    align = "<<>><><<"
    for line in lines:
        cells = [f"{c:{a}{w}}" for c, a, w in zip(line, align, widths, strict=True)]
        print("  ".join(cells).rstrip(), file=out)


def git_commit() -> str | None:
    """The checkout measured (``git describe --always --dirty``), if it is a git work tree."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker_main(argv[1], argv[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (under a minute)")
    parser.add_argument(
        "--json",
        metavar="PATH",
        default="bench-results.json",
        help="write the results as JSON to PATH (default: %(default)s)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="run the load generators and the relay under cProfile, stats in DIR",
    )
    parser.add_argument(
        "--only",
        metavar="STEP,...",
        help=f"run only these measurements (of: {', '.join(STEPS)})",
    )
    args = parser.parse_args(argv)
    only = set(STEPS) if not args.only else set(args.only.split(","))
    if only - set(STEPS):
        parser.error(f"unknown step(s): {', '.join(sorted(only - set(STEPS)))}")
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    bench = Bench(args)
    started = time.monotonic()
    code = 0
    try:
        bench.run(only)
    except BenchError as exc:
        print(f"bench: a measurement could not run: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    finally:
        bench.close()
    elapsed = time.monotonic() - started
    print_table(bench.rows)
    misses = [r["measurement"].strip() for r in bench.rows if r["verdict"] == "MISS"]
    print(f"\n{len(misses)} target(s) missed; ran in {elapsed:.0f} s", file=sys.stderr)
    results = {
        "quick": args.quick,
        "complete": code == 0,
        "seconds": elapsed,
        "commit": git_commit(),
        "load_average_at_end": os.getloadavg(),
        "machine": {
            "nproc": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpu": platform.processor() or platform.machine(),
        },
        "rows": bench.rows,
        "details": bench.details,
    }
    with open(args.json, "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=2)
    return code


if __name__ == "__main__":
    sys.exit(main())
