"""How long the outbox blocks the event loop per save, with the seen-id table full.

Fills the seen ids of ``SEEN_PEERS`` peers to ``SEEN_PER_PEER`` each, then, ROUNDS
times: a new message id is seen and ``request_save()`` is called (what the
participant does per received message). Reports

* blocked: the longest the event loop could not run anything (the largest
  lateness of a coroutine waking every TICK) during that save, and the
  time spent in ``first_sighting`` + ``request_save`` themselves;
* latency: from ``request_save()`` until ``on_saved`` ran.

Usage: python scripts/bench_outbox.py [--home DIR] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from p2pchat.store import outbox as ob

#: the probe wakes up this often; how late it wakes is how long the loop was blocked
#: (a probe that never sleeps would measure GIL hand-over instead: an idle loop waits
#: in select without the GIL, a spinning one gives it up only every switch interval)
TICK = 0.0005


def fill(box: ob.Outbox) -> list[bytes]:
    peers = [i.to_bytes(32, "big") for i in range(ob.SEEN_PEERS)]
    per = ob.SEEN_PER_PEER
    for fp in peers:
        for i in range(per):
            box.first_sighting(fp, i.to_bytes(16, "big"))
    box.save()
    return peers


async def run(home: Path, rounds: int) -> None:
    (home / "outbox.bin").unlink(missing_ok=True)
    box = ob.Outbox(home / "outbox.bin", os.urandom(32))
    peers = fill(box)
    saved = asyncio.Event()
    box.on_saved = saved.set
    gaps: list[float] = []
    calls: list[float] = []
    lats: list[float] = []
    stop = False
    worst = 0.0

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(TICK)
            now = time.perf_counter()
            worst = max(worst, now - last - TICK)
            last = now

    for r in range(rounds):
        saved.clear()
        stop = False
        worst = 0.0
        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        box.first_sighting(peers[r % len(peers)], os.urandom(16))
        box.request_save()
        t1 = time.perf_counter()
        await asyncio.wait_for(saved.wait(), 10)
        t2 = time.perf_counter()
        stop = True
        await tick
        calls.append(t1 - t0)
        gaps.append(max(worst, t1 - t0))
        lats.append(t2 - t0)
        await asyncio.sleep(0.02)
    size = (home / "outbox.bin").stat().st_size
    idle: list[float] = []
    for _ in range(200):  # the probe's own lateness, nothing saving
        t = time.perf_counter()
        await asyncio.sleep(TICK)
        idle.append(time.perf_counter() - t - TICK)

    def ms(xs: list[float]) -> str:
        return f"median {statistics.median(xs) * 1e3:.3f} ms, max {max(xs) * 1e3:.3f} ms"

    print(f"seen ids: {ob.SEEN_PEERS} peers x {ob.SEEN_PER_PEER}, file {size / 1e6:.1f} MB")
    print(f"probe lateness when idle   : {ms(idle)}")
    print(f"loop blocked per save      : {ms(gaps)}")
    print(f"first_sighting+request_save: {ms(calls)}")
    print(f"request_save -> on_saved   : {ms(lats)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, help="directory for the outbox file (default: a temp dir)")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    if args.home is not None:
        asyncio.run(run(args.home, args.rounds))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(run(Path(tmp), args.rounds))


if __name__ == "__main__":
    main()
