"""The ``send`` command: one file to one participant, then exit.

A one-shot :class:`Room`: it joins like ``join`` (discovery or ``--connect``,
and the same reconnects), waits for a secure session with ``--to NAME``,
offers the file, sends it, and exits 0 once NAME has verified its SHA-256.
The file is hashed while the connection is set up. The transfer id comes
from the file's hash, name and size, so running the same command again after
an interruption resumes where the receiver's copy ends.

Exit codes, as for ``join``: 1 refused or failed (the reason is the last
line on stderr); 2 bad usage, an unreadable file, no host, or nobody called
NAME (or several); 3 key mismatch; 4 no progress for ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from pathlib import Path

from p2pchat.errors import ConfigError, DiscoveryError, P2PChatError, TransferError
from p2pchat.faces.chat import install_stop, join_room
from p2pchat.faces.lines import LineOutput, describe_file_event, file_json
from p2pchat.room import (
    Event,
    ExitCode,
    FileCompleted,
    FileFailed,
    MessageReceived,
    PeerInfo,
    Room,
    check_name,
    display_name,
)

__all__ = ["run_send"]

MIB = 1024 * 1024


def _check_path(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    return path


class _Watch:
    """Prints what a one-shot sender should show, and catches our transfer's outcome."""

    def __init__(self, out: LineOutput, json_mode: bool) -> None:
        self.out, self.json_mode = out, json_mode
        self.ours: bytes | None = None  #: the transfer id, once offered
        self.outcome: FileCompleted | FileFailed | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, MessageReceived) and not self.json_mode:
            return  # not a chat client: stdout stays empty in line mode
        if (
            isinstance(event, FileCompleted | FileFailed)
            and not event.incoming
            and event.transfer_id == self.ours
        ):
            self.outcome = event
            if isinstance(event, FileFailed):
                # reported once, as the command's error line
                if self.json_mode:
                    kind, fields = file_json(event)
                    self.out.json(kind, **fields)
                return
        self.out(event)


async def run_send(args: argparse.Namespace) -> int:
    try:
        to = check_name(args.to, ConfigError)
    except ConfigError as exc:
        raise ConfigError(f"--to: {exc}") from exc
    path = _check_path(args.path)
    rate = args.limit_rate * MIB if args.limit_rate else None
    out = LineOutput(json_mode=args.json)
    room = join_room(args, out, limit_rate=rate, durable=False)
    out.hint = room.key_hint
    watch = _Watch(out, args.json)
    room.bus.add_sink(watch)
    stop = install_stop(room)
    deadline = time.monotonic() + args.timeout
    hashing = asyncio.ensure_future(room.files.async_prepare(path))
    try:
        async with room:
            try:
                prepared = await hashing
            except TransferError as exc:
                raise ConfigError(str(exc)) from exc
            peer = await _wait_for_peer(room, to, stop, deadline, args.timeout)
            if peer is None:
                if room.ended is not None:
                    return room.ended.exit_code
                out.status("interrupted")  # (stopped before anything was offered)
                return ExitCode.INTERRUPTED
            ids = await room.send_file(prepared, to=peer.fingerprint)
            watch.ours = ids[0]
            return await _wait_until_done(room, peer, watch, stop, args.timeout)
    finally:
        out.close()  # no spinner left above the error line
        if not hashing.done():
            hashing.cancel()
        with contextlib.suppress(asyncio.CancelledError, P2PChatError):
            await hashing


async def _wait_for_peer(
    room: Room, to: str, stop: asyncio.Event, deadline: float, timeout: float
) -> PeerInfo | None:
    """The participant called ``to`` once our session with it is up; None if the
    room ended or we were stopped. Raises DiscoveryError if nobody or several."""
    ok = await room.wait_for(
        lambda: bool(room.find(to, secure=True)) or room.ended is not None or stop.is_set(),
        max(0.0, deadline - time.monotonic()),
    )
    if room.ended is not None or stop.is_set():
        return None
    found = room.find(to, secure=True)
    if not ok or not found:
        raise DiscoveryError(f"nobody called {to!r} is in the chat (waited {timeout:g} s)")
    if len(found) > 1:
        raise DiscoveryError(f"several participants are called {to!r}; cannot tell which")
    return found[0]


async def _wait_until_done(
    room: Room,
    peer: PeerInfo,
    watch: _Watch,
    stop: asyncio.Event,
    timeout: float,
) -> int:
    """Wait for the receiver's verdict; give up after ``timeout`` s without progress."""
    out = watch.out
    while watch.outcome is None:
        if room.ended is not None:
            return room.ended.exit_code
        if stop.is_set():
            out.status("interrupted; run the same command again to resume")
            return ExitCode.INTERRUPTED
        tick = room.files.activity
        moved = await room.wait_for(
            lambda tick=tick: (  # type: ignore[misc]
                watch.outcome is not None
                or room.files.activity != tick
                or room.ended is not None
                or stop.is_set()
            ),
            timeout,
        )
        if not moved:
            assert watch.ours is not None
            phase = room.files.phase(peer.fingerprint, watch.ours, incoming=False)
            who = display_name(peer.name)
            why = {
                "offered": f"{who} has not answered the offer",
                "waiting": f"{who} is not in the chat",
            }.get(phase.value if phase else "", f"{who} stopped answering")
            out.error(f"no progress for {timeout:g} s: {why}; run the same command again to resume")
            return ExitCode.UNDELIVERED
    if isinstance(watch.outcome, FileFailed):
        raise TransferError(describe_file_event(watch.outcome))
    return ExitCode.OK
