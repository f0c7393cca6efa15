#!/usr/bin/env python3
"""Benchmark p2pchat end to end on loopback, each figure beside a same-run baseline.

    python scripts/bench.py [--quick] [--json PATH] [--only STEP,...] [--profile DIR]

Everything runs on 127.0.0.1: every ``p2pchat`` process gets ``--interface
127.0.0.1`` and its own ``--home`` in a temporary directory, and every
identity key is created (``p2pchat id --home H``) before any timing starts.
The product paths are driven by load-generator processes (this file, run as
``--worker ROLE``) that use :class:`p2pchat.room.participant.Participant` against a
real relay process; the file transfer is timed with the real commands
(``p2pchat host``, ``join --accept-files``, ``send``). The baselines are raw
asyncio processes of the same shape (sender -> forwarder -> receiver,
length-prefixed frames, no crypto, no msgpack). docs/BENCHMARKS.md says what
each line means.

Prints a table (ours, baseline, ratio, target with OK or MISS) and writes the
results as JSON. Exits 0 when every measurement ran, whether or not its
target was met; 1 when a measurement could not run.

The code is in ``scripts/benchkit/``, one module per measurement
(``handshake``, ``latency``, ``throughput``, ``fanout``, ``memory``,
``discovery``, ``files``: each a ``measure(bench, ...)`` and the worker roles
it needs) beside the shared ones: ``common`` (targets, plans, helpers),
``worker`` (the worker side of ``--worker ROLE``), ``procs`` (child processes,
RSS and CPU watchers), ``baselines`` (the raw asyncio chain), ``product`` (the
relay and Participant load generators), ``runner`` (the ``Bench`` run),
``report`` (table and JSON) and ``cli`` (this command line).
"""

from __future__ import annotations

import sys

from benchkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
