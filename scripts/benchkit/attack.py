"""9. Attack view (issue 13): the relay round trip of an honest pair while
hostile peers attack a real ``p2pchat host``, beside the same figure with
no attack, in the same run.

Two honest raw clients (alice, bob) register with the host's relay and
bounce a 100-byte envelope between them; a third (carol, in a process of
her own) only reads. Each
attack runs N hostile connections from one worker process, each with its own
key (generated there), reconnecting whenever the relay closes them:

* ``flood-host``: registered, 1 MiB sends at the host's own participant, as
  fast as TCP takes them (backpressure must hold them back, never drop the
  host);
* ``flood-peer``: the same at carol (the pair must not notice);
* ``costly``: registered, 4 KiB frames of nested empty arrays (the most
  expensive body the relay decodes, under an ignored key of a ping);
* ``churn``: connect, hello, read the challenge, hang up, again (each costs
  the relay a public-key operation).

The hostile connections come from 127.0.0.2, one "laptop": the relay's
per-source limits apply to it as to any LAN address (the honest clients use
127.0.0.1, this machine's own address, which is not counted). Everything
runs on loopback (Linux routes all of 127.0.0.0/8 there), each attack for a
bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchkit.common import LOOPBACK, BenchError, pct
from benchkit.worker import Commands, emit

if TYPE_CHECKING:
    from benchkit.runner import Bench

TARGET_ATTACK = 5.0  # honest p50 under attack <= 5x the quiet p50
#: the hostile laptop: another address than the honest clients' 127.0.0.1,
#: which the relay does not count per source (its own machine's)
HOSTILE_SOURCE = "127.0.0.2"
MODES = ("flood-host", "flood-peer", "costly", "churn")


class _Client:
    """A raw relay client: registers (answering the challenge), queues the
    delivers it gets, answers pings, ignores the rest."""

    def __init__(self, name: str, key: Any, der: bytes, source: str = LOOPBACK) -> None:
        self.name, self.key, self.der, self.source = name, key, der, source
        self.delivers: asyncio.Queue[bytes] = asyncio.Queue()
        self.peer_id = 0
        self.host_id: int | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def register(self, port: int, keep: bool = True) -> None:
        from p2pchat.config import MAX_FRAME, SUPPORTED_VERSIONS
        from p2pchat.proto.framing import FrameDecoder
        from p2pchat.proto.messages import Challenge, Hello, Proof, Welcome, encode, parse_body
        from p2pchat.proto.register import answer_challenge

        reader, writer = await asyncio.open_connection(LOOPBACK, port, local_addr=(self.source, 0))
        self.writer = writer
        decoder = FrameDecoder(MAX_FRAME, parse_body)
        writer.write(encode(Hello(SUPPORTED_VERSIONS, self.name, self.der)))
        pending: list[Any] = []
        while True:
            while not pending:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("the relay closed us during registration")
                pending.extend(decoder.feed(data))
            frame = pending.pop(0)
            if isinstance(frame, Challenge):
                secret = await asyncio.get_running_loop().run_in_executor(
                    None, answer_challenge, self.key, frame.c
                )
                writer.write(encode(Proof(secret or b"")))
            elif isinstance(frame, Welcome):
                self.peer_id, self.host_id = frame.peer_id, frame.host
                break
            else:
                raise BenchError(f"{self.name}: the relay answered {frame!r}")
        if keep:
            self._task = asyncio.get_running_loop().create_task(self._read(reader, decoder))

    async def _read(self, reader: asyncio.StreamReader, decoder: Any) -> None:
        from p2pchat.proto.messages import Deliver, Ping, Pong, encode

        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(1 << 18):
                for frame in decoder.feed(data):
                    if isinstance(frame, Deliver):
                        self.delivers.put_nowait(frame.payload)
                    elif isinstance(frame, Ping) and self.writer is not None:
                        self.writer.write(encode(Pong(frame.token)))
        self.delivers.put_nowait(b"")  # closed

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.writer is not None:
            self.writer.close()


async def w_attack_sink(args: dict[str, Any], cmds: Commands) -> None:
    """carol: registers and only reads (a flood target), in a process of her
    own so that what she reads does not slow the pair's loop."""
    from p2pchat.store.identity import load_identity

    ident = load_identity(Path(args["home"]))
    carol = _Client("carol", ident.private_key, ident.public_der)
    await carol.register(args["port"])
    emit("ready", carol=carol.peer_id)
    drain = asyncio.get_running_loop().create_task(_discard(carol))
    await cmds.until_eof()
    drain.cancel()


async def _discard(client: _Client) -> None:
    while True:
        await client.delivers.get()


async def w_attack_honest(args: dict[str, Any], cmds: Commands) -> None:
    """alice and bob bounce envelopes: "rtt N", N round trips 2 ms apart."""
    from p2pchat.proto.messages import encode_send
    from p2pchat.store.identity import load_identity

    clients = {}
    for name in ("alice", "bob"):
        ident = load_identity(Path(args["homes"][name]))
        clients[name] = _Client(name, ident.private_key, ident.public_der)
        await clients[name].register(args["port"])
    a, b = clients["alice"], clients["bob"]
    assert a.writer is not None and b.writer is not None
    emit("ready", host=a.host_id)
    payload = b"\x02" + b"x" * 99
    while (cmd := await cmds.next()) is not None:
        n = int(cmd.split()[1])
        samples, lost = [], 0
        for _ in range(n):
            t0 = time.perf_counter()
            a.writer.write(encode_send(b.peer_id, payload))
            try:
                async with asyncio.timeout(10.0):
                    got = await b.delivers.get()
                    b.writer.write(encode_send(a.peer_id, got))
                    back = await a.delivers.get()
            except TimeoutError:
                lost += 1
                continue
            if not got or not back:
                raise BenchError("the relay closed an honest client")
            samples.append(time.perf_counter() - t0)
            await asyncio.sleep(0.002)
        emit("rtt", samples=samples, lost=lost)


def _costly_frame() -> bytes:
    """A ping whose ignored key holds ~3,700 empty arrays: under 4 KiB."""
    from p2pchat.proto.framing import encode_frame

    return encode_frame(
        {"t": "ping", "token": 1, "x": [[[] for _ in range(15)] for _ in range(245)]}
    )


async def _hostile(index: int, key: Any, der: bytes, args: dict[str, Any], stats: dict[str, int]):  # type: ignore[no-untyped-def]
    from p2pchat.config import MAX_SEND_FRAME, SUPPORTED_VERSIONS
    from p2pchat.proto.messages import Hello, encode, encode_send

    mode, port = args["mode"], args["port"]
    big = b"\x02" + bytes(MAX_SEND_FRAME - 64)
    costly = _costly_frame() * 16
    hello = encode(Hello(SUPPORTED_VERSIONS, f"mallory{index}", der))
    while True:
        try:
            if mode == "churn":
                reader, writer = await asyncio.open_connection(
                    LOOPBACK, port, local_addr=(HOSTILE_SOURCE, 0)
                )
                writer.write(hello)
                await reader.read(4096)  # the challenge: never answered
                writer.close()
                stats["cycles"] += 1
                continue
            client = _Client(f"mallory{index}", key, der, HOSTILE_SOURCE)
            await client.register(port)
            stats["registered"] += 1
            writer = client.writer
            assert writer is not None
            target = args["host"] if mode == "flood-host" else args["carol"]
            while not writer.is_closing():
                if mode == "costly":
                    writer.write(costly)
                else:
                    writer.write(encode_send(target, big))
                await writer.drain()
                stats["frames"] += 16 if mode == "costly" else 1
                # drain what the relay sends us, so only the relay limits us
                while not client.delivers.empty():
                    client.delivers.get_nowait()
        except (ConnectionError, OSError, BenchError):
            stats["closed"] += 1
            await asyncio.sleep(0.01)


async def w_attack_hostile(args: dict[str, Any], cmds: Commands) -> None:
    """``n`` hostile connections in ``mode`` (module doc) until stdin ends."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from p2pchat.proto.keys import public_der

    loop = asyncio.get_running_loop()
    keys = await asyncio.gather(
        *(
            loop.run_in_executor(None, lambda: rsa.generate_private_key(65537, 3072))
            for _ in range(args["n"])
        )
    )
    stats = {"registered": 0, "frames": 0, "closed": 0, "cycles": 0}
    tasks = [
        loop.create_task(_hostile(i, key, public_der(key.public_key()), args, stats))
        for i, key in enumerate(keys)
    ]
    await asyncio.sleep(0.5)  # every connection is at it
    emit("attacking")
    await cmds.until_eof()
    for task in tasks:
        task.cancel()
    emit("stats", **stats)


def measure(bench: Bench) -> None:
    bench.check_time("attack")
    n_rtt, n_hostile = bench.plan["attack_rtts"], bench.plan["attack_hostile"]
    argv = ["host", "--interface", LOOPBACK, "--port", "0", "--json"]
    host = bench.p2pchat(
        "host", *argv, "--name", f"{bench.host_name}-attack", "--home", bench.home("host")
    )
    port = host.expect("hosting", 30)["port"]
    homes = {name: bench.home(name) for name in ("alice", "bob")}
    sink = bench.worker("attack-sink", port=port, home=bench.home("joiner"))
    carol = sink.expect("ready", 30)["carol"]
    honest = bench.worker("attack-honest", port=port, homes=homes)
    ready = honest.expect("ready", 30)

    def rtts() -> tuple[list[float], int]:
        honest.send(f"rtt {n_rtt}")
        got = honest.expect("rtt", 120)
        return got["samples"], got["lost"]

    quiet, _ = rtts()
    quiet_rss = bench.rss_kib(host.pid)
    q50, q99 = statistics.median(quiet) * 1e3, pct(quiet, 99) * 1e3
    bench.row("9 attack", f"honest relay RTT p50, quiet (n={n_rtt})", q50, None, "ms")
    bench.row("9 attack", "honest relay RTT p99, quiet", q99, None, "ms")
    details: dict[str, Any] = {"quiet_p50_ms": q50, "quiet_p99_ms": q99, "hostile": n_hostile}
    for mode in MODES:
        hostile = bench.worker(
            "attack-hostile",
            port=port,
            n=n_hostile,
            mode=mode,
            host=ready["host"],
            carol=carol,
        )
        hostile.expect("attacking", 60)
        under, lost = rtts()
        rss = bench.rss_kib(host.pid)
        hostile.proc.stdin.close()  # type: ignore[union-attr]
        stats = hostile.expect("stats", 10)
        bench.stop(hostile)
        alive = host.proc.poll() is None
        if not alive:
            raise BenchError(f"the host died under the {mode} attack")
        if not under:
            raise BenchError(f"no honest round trip got through the {mode} attack")
        u50, u99 = statistics.median(under) * 1e3, pct(under, 99) * 1e3
        note = f"{lost} lost" if lost else ""
        bench.row(
            "9 attack",
            f"  p50 under {mode} ({n_hostile} hostile)",
            u50,
            q50,
            "ms",
            kind="max",
            target=TARGET_ATTACK,
            base_label="quiet p50",
            note=note,
        )
        bench.row("9 attack", f"  p99 under {mode}", u99, q99, "ms", base_label="quiet p99")
        bench.row(
            "9 attack",
            f"  host RSS under {mode} (MiB)",
            rss / 1024,
            quiet_rss / 1024,
            "MiB",
            base_label="quiet",
        )
        details[mode] = {"p50_ms": u50, "p99_ms": u99, "lost": lost, "rss_kib": rss, **stats}
        print(f"[{mode}: {stats}]", file=sys.stderr, end=" ", flush=True)
    bench.details["attack"] = details
    bench.stop(honest, sink)
    host.close(sigterm=True)
    bench.procs.remove(host)
