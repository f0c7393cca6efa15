"""5. Fan-out: one sender, N receivers through one relay, beside a raw
forwarder copying each frame to every receiver."""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchkit.baselines import raw_chain
from benchkit.common import SMALL, WINDOW_SMALL
from benchkit.product import product_chain

if TYPE_CHECKING:
    from benchkit.runner import Bench


def measure(bench: Bench) -> None:
    warmup, duration = bench.plan["fanout_time"]
    args = {"mode": "tput", "size": SMALL, "window": WINDOW_SMALL, "warmup": warmup}
    args["duration"] = duration
    out = {}
    for n in bench.plan["fanout"]:
        bench.check_time(f"fan-out {n}")
        raw, _rep, raw_peak = raw_chain(bench, False, n, args)
        # 51 first contacts in one room: over the 48 places a relay leaves
        # strangers by default (the last 16 are kept for pinned keys)
        res, _rep, idle, peak = product_chain(bench, n, args, {"reserved_slots": 0})
        out[n] = {
            "ours_msgs_s": res["rate"],
            "raw_unbatched_msgs_s": raw["rate"],
            "relay_rss_idle_kib": idle,
            "relay_rss_peak_kib": peak,
            "raw_forwarder_rss_peak_kib": raw_peak,
        }
        bench.row(
            "5 fan-out",
            f"1->{n} delivered to all (msgs/s)",
            res["rate"],
            raw["rate"],
            "msg/s",
            base_label="raw unbatched",
        )
        bench.row(
            "5 fan-out",
            f"  relay RSS peak, {n} receivers (MiB)",
            peak / 1024,
            raw_peak / 1024,
            "MiB",
            base_label="raw forwarder",
        )
    bench.details["fanout"] = out
