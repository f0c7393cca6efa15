"""A chat joiner driven through the Room API, for tests/test_files_resume.py.

``python resume_sender.py HOME PORT RATE [PATH]`` joins as alice at
127.0.0.1:PORT (loopback only), sending at most RATE bytes per second; with
PATH it offers that file to carol once their session is up, as ``/send carol
PATH`` does on the chat screen. Every file event is printed on stdout as the
faces word it, and a ``session with NAME`` line when a session is up. It
leaves (as /quit does) when stdin ends.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from p2pchat import Room
from p2pchat.faces.lines import describe_file_event
from p2pchat.room.events import (
    Event,
    FileCompleted,
    FileFailed,
    FileOffered,
    FileProgress,
    SessionReady,
)


async def main(home: str, port: int, rate: float, path: Path | None) -> None:
    room = Room.join(
        name="alice",
        home=home,
        connect=f"127.0.0.1:{port}",
        interfaces=["127.0.0.1"],
        limit_rate=rate,
    )
    tasks: set[asyncio.Task[object]] = set()

    def show(event: Event) -> None:
        if isinstance(event, FileOffered | FileProgress | FileCompleted | FileFailed):
            print(describe_file_event(event), flush=True)
        elif isinstance(event, SessionReady):
            print(f"session with {event.peer.name}", flush=True)
            if path is not None and event.peer.name == "carol" and not tasks:
                tasks.add(asyncio.ensure_future(room.send_file(path, to="carol")))

    room.bus.add_sink(show)
    async with room:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for task in tasks:
        await task


if __name__ == "__main__":
    home, port, rate, *rest = sys.argv[1:]
    asyncio.run(main(home, int(port), float(rate), Path(rest[0]) if rest else None))
