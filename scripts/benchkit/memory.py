"""6. Memory: relay RSS with 100 and 500 idle registered connections, beside
a bare asyncio server holding as many idle connections."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchkit.common import LOOPBACK, TARGET_IDLE_KIB, BenchError
from benchkit.worker import Commands, emit

if TYPE_CHECKING:
    from benchkit.runner import Bench


class _Idle(asyncio.Protocol):
    """One idle connection; with a ``hello``, it registers (answering the
    relay's challenge with ``key``) and then only reads."""

    def __init__(self, state: dict[str, int], hello: bytes | None, key: Any) -> None:
        from p2pchat.config import MAX_FRAME
        from p2pchat.proto.framing import FrameDecoder
        from p2pchat.proto.messages import parse_body

        self.state = state
        self.hello = hello
        self.key = key
        self.decoder = FrameDecoder(MAX_FRAME, parse_body)
        self.transport: asyncio.Transport | None = None
        self.got = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.hello is not None:
            transport.write(self.hello)
        else:
            self.got.set_result(None)

    def data_received(self, data: bytes) -> None:
        from p2pchat.proto.messages import Challenge, Proof, Welcome, encode
        from p2pchat.proto.register import answer_challenge

        self.state["bytes"] += len(data)
        if self.got.done():
            return
        for frame in self.decoder.feed(data):
            if isinstance(frame, Challenge) and self.transport is not None:
                secret = answer_challenge(self.key, frame.c)
                self.transport.write(encode(Proof(secret or b"")))
            elif isinstance(frame, Welcome):
                self.got.set_result(None)
                return
            else:
                self.got.set_exception(BenchError(f"the relay did not welcome us: {frame!r}"))
                return


async def w_idle(args: dict[str, Any], cmds: Commands) -> None:
    """Opens idle connections on command ("open N": until N are open). With
    ``register``, each sends a hello and waits for the relay's welcome; then
    it only reads (and discards) what the relay sends."""
    from p2pchat.config import SUPPORTED_VERSIONS
    from p2pchat.proto.messages import Hello, encode
    from p2pchat.store.identity import load_identity

    loop = asyncio.get_running_loop()
    identity = load_identity(Path(args["home"]))
    der = identity.public_der if args["register"] else b""
    private = identity.private_key
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
                    lambda hello=hello: _Idle(state, hello, private), LOOPBACK, args["port"]
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


#: the relay's limits for this measurement: room for every idle connection,
#: all of them registering the same key
ROOMY = {"max_participants": 600, "max_unregistered": 600, "max_per_key": 600}


def measure(bench: Bench) -> None:
    bench.check_time("memory")
    result: dict[str, dict[int, float]] = {}
    for label, role, kw in (
        ("relay", "relay", {"limits": ROOMY}),
        ("bare asyncio server", "fwd", {}),
    ):
        server = bench.worker(role, **kw)
        port = server.expect("ready", 10)["port"]
        time.sleep(0.3)
        rss = {0: bench.rss_kib(server.pid)}
        idle = bench.worker("idle", port=port, home=bench.home("alice"), register=role == "relay")
        idle.expect("ready", 10)
        for count in (100, 500):
            idle.send(f"open {count}")
            idle.expect("opened", 120)
            time.sleep(0.3)
            rss[count] = bench.rss_kib(server.pid)
        bench.stop(idle, server)
        result[label] = rss
    ours, base = result["relay"], result["bare asyncio server"]
    per = {n: (ours[n] - ours[0]) / n for n in (100, 500)}
    per_base = {n: (base[n] - base[0]) / n for n in (100, 500)}
    bench.details["memory"] = {
        "relay_rss_kib": ours,
        "bare_rss_kib": base,
        "relay_kib_per_conn": per,
        "bare_kib_per_conn": per_base,
        "relay_limits": f"{ROOMY} (relay-only process)",
    }
    for n in (0, 100, 500):
        bench.row(
            "6 memory",
            f"relay RSS, {n} idle registered (MiB)",
            ours[n] / 1024,
            base[n] / 1024,
            "MiB",
            base_label="bare server",
        )
    bench.row(
        "6 memory",
        "KiB per idle registered conn (100)",
        per[100],
        per_base[100],
        "KiB",
        base_label="bare server",
    )
    bench.row(
        "6 memory",
        "KiB per idle registered conn (500)",
        per[500],
        per_base[500],
        "KiB",
        kind="abs",
        target=TARGET_IDLE_KIB,
        base_label="bare server",
    )
