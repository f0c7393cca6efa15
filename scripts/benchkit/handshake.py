"""1. Handshake: connect -> SessionReady with a real ``p2pchat host``, beside
the bare crypto of one handshake plus one loopback round trip."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchkit.common import LOOPBACK, TARGET_HANDSHAKE, BenchError, pct
from benchkit.product import make_participant
from benchkit.worker import Commands, emit

if TYPE_CHECKING:
    from benchkit.runner import Bench


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
        p = cur["p"] = make_participant(args["home"], "hs-load", on_event)
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


def measure(bench: Bench, host_port: int) -> None:
    bench.check_time("the handshake")
    n = bench.plan["handshakes"]
    echo = bench.worker("echo")
    echo_port = echo.expect("ready", 10)["port"]
    load = bench.worker(
        "hs-load",
        profile=True,
        port=host_port,
        echo_port=echo_port,
        home=bench.home("alice"),
        home2=bench.home("bob"),
        n=n,
        pace=0.05,
        rtt_n=bench.plan["rtt_pings"],
        crypto_n=bench.plan["crypto_reps"],
    )
    res = load.expect("result", 120)
    bench.stop(load, echo)
    ms = 1e-6
    rtt = statistics.median(res["rtt"]) * ms
    crypto = statistics.median(res["crypto"]) * ms
    p50, p99 = statistics.median(res["total"]) * ms, pct(res["total"], 99) * ms
    base = crypto + rtt
    bench.details["handshake"] = {
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
    bench.row(
        "1 handshake",
        f"connect->ready p50 (n={n})",
        p50,
        base,
        "ms",
        kind="max",
        target=TARGET_HANDSHAKE,
        base_label=label,
    )
    bench.row("1 handshake", "connect->ready p99", p99, base, "ms", base_label=label)
    bench.row("1 handshake", "  bare crypto p50 (in baseline)", crypto, None, "ms")
    bench.row(
        "1 handshake",
        "  bare crypto p50 after 50 ms idle (not in baseline)",
        statistics.median(res["crypto_paced"]) * ms,
        crypto,
        "ms",
        base_label="bare crypto",
    )
    bench.row("1 handshake", "  loopback RTT p50 (in baseline)", rtt, None, "ms")
