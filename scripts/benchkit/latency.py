"""2. Latency: one-way and send -> delivered, beside the raw chain."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from benchkit.baselines import raw_chain
from benchkit.common import SMALL, TARGET_LATENCY, BenchError, pct
from benchkit.product import product_chain

if TYPE_CHECKING:
    from benchkit.runner import Bench


def measure(bench: Bench) -> None:
    bench.check_time("latency")
    n = bench.plan["latency_msgs"]
    args = {"mode": "latency", "n": n, "gap": 0.002, "size": SMALL}
    ms = 1e-6
    raw, raw_rtt = {}, {}
    for batched in (False, True):
        res, rep, _ = raw_chain(bench, batched, 1, args)
        raw[batched], raw_rtt[batched] = rep["lat"], res["rtt"]
    res, rep, _, _ = product_chain(bench, 1, args)
    ours = rep["lat"]
    if len(ours) < n:
        raise BenchError(f"latency: {len(ours)} of {n} messages arrived")
    ub, b = raw[False], raw[True]
    confirm, rtt = res["rtt"], raw_rtt[False]
    bench.details["latency"] = {
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
    bench.row(
        "2 latency",
        f"one-way p50 (n={n})",
        statistics.median(ours) * ms,
        statistics.median(ub) * ms,
        "ms",
        kind="max",
        target=TARGET_LATENCY,
        base_label="raw unbatched",
    )
    bench.row(
        "2 latency",
        "one-way p99",
        pct(ours, 99) * ms,
        pct(ub, 99) * ms,
        "ms",
        base_label="raw unbatched",
    )
    bench.row(
        "2 latency",
        "send->delivered (ack back) p50",
        statistics.median(confirm) * ms,
        statistics.median(rtt) * ms,
        "ms",
        base_label="raw round trip",
    )
    bench.row(
        "2 latency",
        "one-way p50 vs batched raw",
        statistics.median(ours) * ms,
        statistics.median(b) * ms,
        "ms",
        base_label="raw batched",
    )
