"""3 and 4. Throughput of 100-byte and 64 KiB messages, delivered and
acknowledged, with the CPU per message of each process."""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchkit.baselines import raw_chain
from benchkit.common import SMALL, TARGET_LARGE, TARGET_SMALL, WINDOW_LARGE, WINDOW_SMALL
from benchkit.product import product_chain

if TYPE_CHECKING:
    from benchkit.runner import Bench


def measure(bench: Bench, size: int) -> None:
    bench.check_time(f"throughput {size}")
    window = WINDOW_SMALL if size == SMALL else WINDOW_LARGE
    warmup, duration = bench.plan["throughput"]
    args = {"mode": "tput", "size": size, "window": window, "warmup": warmup}
    args["duration"] = duration
    raw, raw_count = {}, {}
    for batched in (False, True):
        res_raw, rep_raw, _ = raw_chain(bench, batched, 1, args)
        raw[batched], raw_count[batched] = res_raw, rep_raw["count"]
    res, rep, _, peak = product_chain(bench, 1, args)
    ours = res["rate"]

    def per_msg(cpu: dict[str, float], count: int) -> dict[str, float]:
        return {role: sec / max(1, count) * 1e6 for role, sec in cpu.items()}

    cpu_ours = per_msg(res["cpu"], rep["count"])
    cpu_raw = per_msg(raw[False]["cpu"], raw_count[False])
    key = "small" if size == SMALL else "large"
    bench.details[f"throughput_{key}"] = {
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
    bench.row(
        section,
        what,
        ours * scale,
        raw[False]["rate"] * scale,
        unit,
        kind="min",
        target=target,
        base_label="raw unbatched",
    )
    bench.row(
        section,
        "  vs batched raw chain",
        ours * scale,
        raw[True]["rate"] * scale,
        unit,
        base_label="raw batched",
    )
    for role in ("sender", "relay", "receiver"):
        bench.row(
            section,
            f"  CPU per message, {role}",
            cpu_ours[role],
            cpu_raw[role],
            "us",
            base_label="raw unbatched",
        )
