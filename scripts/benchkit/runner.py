"""The orchestrator: temporary homes, child processes, table rows, and the
order the measurements run in."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from benchkit import attack, discovery, fanout, files, handshake, latency, memory, throughput
from benchkit.common import LARGE, LOOPBACK, PLANS, SMALL, BenchError
from benchkit.procs import Proc, child_env

#: the entry point the workers run as (``bench.py --worker ROLE JSON``)
ENTRY = Path(__file__).resolve().parent.parent / "bench.py"


class Bench:
    """One run: its plan, temporary homes, child processes, rows and details.
    Each measurement is ``benchkit.<step>.measure(bench, ...)``."""

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
        cmd = [sys.executable, str(ENTRY), "--worker", role, json.dumps(kw)]
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

    # -- all

    def run(self, only: set[str]) -> None:
        n = max(self.plan["fanout"]) if "fanout" in only else 0
        receivers = [f"recv{i}" for i in range(n)]
        homes = ["host", "alice", "bob", "joiner", *receivers]
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
            for name, on_host in (
                ("handshake", handshake.measure),
                ("discovery", discovery.measure),
            ):
                if name in only:
                    t0 = time.monotonic()
                    print(f"running: {name}", file=sys.stderr, end=" ", flush=True)
                    on_host(self, port)
                    print(f"({time.monotonic() - t0:.1f} s)", file=sys.stderr)
            t0 = time.monotonic()
            host.close(sigterm=True)
            self.procs.remove(host)
            print(f"host stopped ({time.monotonic() - t0:.1f} s)", file=sys.stderr)
        steps: dict[str, Callable[[], None]] = {
            "latency": lambda: latency.measure(self),
            "small": lambda: throughput.measure(self, SMALL),
            "large": lambda: throughput.measure(self, LARGE),
            "file": lambda: files.measure(self),
            "fanout": lambda: fanout.measure(self),
            "memory": lambda: memory.measure(self),
            "attack": lambda: attack.measure(self),
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
