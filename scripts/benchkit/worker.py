"""The worker side: how a load-generator process talks to the orchestrator.

Each worker is ``python scripts/bench.py --worker ROLE JSON``. It prints one
JSON object per line on stdout ({"type": ...}), reads commands one per line
on stdin, and exits when stdin ends or its lifetime (args["life"]) is over.
The roles are listed in :data:`benchkit.cli.WORKERS`; their code is in the
module of the measurement (or baseline) they serve."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from benchkit.common import BenchError


def emit(kind: str, **fields: Any) -> None:
    print(json.dumps({"type": kind, **fields}), flush=True)


class Commands:
    """stdin lines as an asyncio queue (None at EOF), read by a daemon thread."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def pump() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(self.queue.put_nowait, line.strip())
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.queue.put_nowait, None)

        threading.Thread(target=pump, daemon=True).start()

    async def next(self) -> str | None:
        return await self.queue.get()

    async def until_eof(self) -> None:
        while await self.next() is not None:
            pass


#: what a worker role runs: ``await role(args, commands)``
Role = Callable[[dict[str, Any], "Commands"], Awaitable[None]]


def worker_main(workers: Mapping[str, Role], role: str, raw_args: str) -> int:
    """Run worker ``role`` (one of ``workers``) with its JSON arguments; the
    process's exit code."""
    args = json.loads(raw_args)

    async def run() -> None:
        cmds = Commands()
        async with asyncio.timeout(args.get("life", 120.0)):
            await workers[role](args, cmds)

    profile = args.get("profile")
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        asyncio.run(run())
    except BenchError as exc:
        emit("error", message=str(exc))
        return 1
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(os.path.join(profile, f"{role}-{os.getpid()}.prof"))
    return 0
