"""7. Discovery: browse -> host resolved (beside a direct resolve) and
``p2pchat join`` start -> session ready (beside ``p2pchat id``)."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from benchkit.common import LOOPBACK, TARGET_DISCOVERY, TARGET_JOIN, BenchError, pct
from benchkit.procs import child_env
from benchkit.worker import Commands, emit

if TYPE_CHECKING:
    from benchkit.runner import Bench


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


def measure(bench: Bench, host_port: int) -> None:
    bench.check_time("discovery")
    n = bench.plan["browses"]
    browse = bench.worker("browse", profile=True, name=bench.host_name, n=n)
    res = browse.expect("result", 60)
    bench.stop(browse)
    s = 1e-9
    found = statistics.median(res["browse"]) * s
    direct = statistics.median(res["direct"]) * s
    bench.details["discovery"] = {
        "browse_resolved_p50_s": found,
        "browse_resolved_p99_s": pct(res["browse"], 99) * s,
        "browse_returned_p50_s": statistics.median(res["browse_return"]) * s,
        "direct_resolve_p50_s": direct,
        "samples": n,
    }
    bench.row(
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
    runs = bench.plan["joins"]
    idle = []
    for _ in range(runs):
        t0 = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "p2pchat", "id", "--home", bench.home("joiner")],
            check=True,
            capture_output=True,
            timeout=30,
            env=child_env(),
        )
        idle.append(time.monotonic() - t0)
    id_p50 = statistics.median(idle)
    variants = {
        "join (no name)": [],
        f"join {bench.host_name}": [bench.host_name],
        "join --connect": ["--connect", f"{LOOPBACK}:{host_port}"],
    }
    results: dict[str, list[float]] = {}
    notes: dict[str, str] = {}
    for label, extra in variants.items():
        times = []
        for _ in range(runs):
            bench.check_time(label)
            took = one_join(bench, extra)
            if took is None:  # several hosts: only possible without a name
                notes[label] = "skipped: other p2pchat hosts are advertised on 127.0.0.1"
                break
            times.append(took)
        results[label] = times
    bench.details["join"] = {
        "process_baseline_p50_s": id_p50,
        **{
            k: {"p50_s": statistics.median(v) if v else None, "all_s": v, "note": notes.get(k)}
            for k, v in results.items()
        },
    }
    for label, times in results.items():
        bench.row(
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


def one_join(bench: Bench, extra: list[str]) -> float | None:
    """Seconds from spawning ``p2pchat join`` to its session event with the host
    (the event's own timestamp, Unix time at millisecond resolution); None
    when join found several hosts and was given no name."""
    argv = ["join", *extra, "--interface", LOOPBACK, "--json", "--timeout", "10"]
    argv += ["--home", bench.home("joiner"), "--name", "joiner"]
    t0 = time.time()
    join = bench.p2pchat("join", *argv)
    try:
        ev = join.expect("session", 20)
        while ev.get("peer") != bench.host_name:
            ev = join.expect("session", 20)
    except BenchError:
        if not extra and join.proc.poll() == 2 and "several hosts" in "".join(join.stderr):
            return None
        raise
    finally:
        bench.stop(join)
    return float(ev["time"]) - t0
