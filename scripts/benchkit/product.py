"""The product's message path: a relay-only process and Participant
senders and receivers (as ``p2pchat join`` builds them), and the orchestrator's
view of that chain."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchkit.common import LOOPBACK, BenchError
from benchkit.procs import CpuWatch, RssWatch
from benchkit.worker import Commands, emit

if TYPE_CHECKING:
    from benchkit.runner import Bench


async def w_relay(args: dict[str, Any], cmds: Commands) -> None:
    """A relay-only process: p2pchat.net.relay.Relay on 127.0.0.1, with the default
    RelayLimits unless ``limits`` overrides some."""
    from p2pchat.net.relay import Relay, RelayLimits

    relay = Relay(RelayLimits(**args.get("limits", {})))
    (_, port), *_ = await relay.async_start([LOOPBACK], 0)
    emit("ready", port=port, pid=os.getpid())
    await cmds.until_eof()
    await relay.async_close()


def make_participant(home: str, name: str, on_event: Callable[[Any], None]) -> Any:
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
            p = make_participant(home, Path(home).name, on_event)
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
    p = make_participant(args["home"], "sender", on_event)
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


def product_chain(
    bench: Bench, receivers: int, send_args: dict[str, Any], limits: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any], float, float]:
    """Participant sender -> relay process -> Participant receiver(s): the
    sender's result (with "cpu" as for raw_chain), the receivers' report,
    and the relay's RSS with the sessions up and its peak while sending."""
    relay = bench.worker("relay", profile=True, limits=limits or {})
    port = relay.expect("ready", 10)["port"]
    names = ["bob"] if receivers == 1 else [f"recv{i}" for i in range(receivers)]
    homes = [bench.home(name) for name in names]
    recv = bench.worker("p-recv", profile=True, port=port, homes=homes)
    recv.expect("ready", 120)
    send = bench.worker(
        "p-send", profile=True, port=port, home=bench.home("alice"), peers=receivers, **send_args
    )
    send.expect("sessions", 90)
    cpu = CpuWatch(sender=send.pid, relay=relay.pid, receiver=recv.pid)
    idle_rss = bench.rss_kib(relay.pid, 1)
    watch = RssWatch(relay.pid)
    res = send.expect("result", 120)
    res["cpu"] = cpu.stop()
    peak = watch.stop()
    recv.send("report")
    rep = recv.expect("report", 30)
    bench.stop(send, recv, relay)
    return res, rep, idle_rss, peak
