"""The command line of ``scripts/bench.py`` (and of its ``--worker ROLE`` children)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from benchkit import attack, discovery, handshake, memory
from benchkit.baselines import w_echo, w_fwd, w_raw_recv, w_raw_send
from benchkit.common import STEPS, BenchError
from benchkit.product import w_p_recv, w_p_send, w_relay
from benchkit.report import print_table, write_json
from benchkit.runner import Bench
from benchkit.worker import Role, worker_main

#: the first line of ``--help`` (and of scripts/bench.py's docstring)
DESCRIPTION = "Benchmark p2pchat end to end on loopback, each figure beside a same-run baseline."

#: every ``--worker ROLE``
WORKERS: dict[str, Role] = {
    "fwd": w_fwd,
    "raw-recv": w_raw_recv,
    "raw-send": w_raw_send,
    "echo": w_echo,
    "relay": w_relay,
    "p-recv": w_p_recv,
    "p-send": w_p_send,
    "hs-load": handshake.w_hs_load,
    "idle": memory.w_idle,
    "browse": discovery.w_browse,
    "attack-honest": attack.w_attack_honest,
    "attack-sink": attack.w_attack_sink,
    "attack-hostile": attack.w_attack_hostile,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker_main(WORKERS, argv[1], argv[2])
    parser = argparse.ArgumentParser(description=DESCRIPTION)
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
    write_json(args.json, bench, quick=args.quick, complete=code == 0, seconds=elapsed)
    return code
