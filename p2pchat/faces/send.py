"""The ``send`` command: one file to one participant, then exit.

A one-shot participant: it joins like ``join`` (discovery or ``--connect``,
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
from collections.abc import Callable
from pathlib import Path

from p2pchat.errors import ConfigError, DiscoveryError, P2PChatError, TransferError
from p2pchat.faces.chat import (
    EXIT_UNDELIVERED,
    _Events,
    _find_host,
    _install_stop,
    _Link,
    _TrustFailure,
)
from p2pchat.faces.lines import LineOutput, describe_file_event, file_json
from p2pchat.proto.app import file_id
from p2pchat.room.participant import (
    Event,
    FileCompleted,
    FileFailed,
    MessageReceived,
    PeerInfo,
)
from p2pchat.room.transfers import FileTransfers, Prepared
from p2pchat.store.identity import Identity, TrustStore
from p2pchat.store.outbox import Outbox

__all__ = ["run_send"]

MIB = 1024 * 1024


def _check_path(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    return path


async def run_send(args: argparse.Namespace, identity: Identity, trust: TrustStore) -> int:
    from p2pchat.proto.messages import check_name

    name = check_name(args.name, ConfigError)
    try:
        to = check_name(args.to, ConfigError)
    except ConfigError as exc:
        raise ConfigError(f"--to: {exc}") from exc
    path = _check_path(args.path)
    out = LineOutput(json_mode=args.json)
    ours: list[bytes] = []  #: the transfer id, once known
    outcome: list[FileCompleted | FileFailed] = []

    def show(event: Event) -> None:
        if isinstance(event, MessageReceived) and not args.json:
            return  # not a chat client: stdout stays empty in line mode
        if (
            isinstance(event, FileCompleted | FileFailed)
            and not event.incoming
            and ours
            and event.transfer_id == ours[0]
        ):
            outcome.append(event)
            if isinstance(event, FileFailed):
                # reported once, as the command's error line
                if args.json:
                    kind, fields = file_json(event)
                    out.json(kind, **fields)
                return
        out(event)

    events = _Events(out)
    events.sinks[0] = show
    rate = args.limit_rate * MIB if args.limit_rate else None
    files = FileTransfers(events, policy="refuse", limit_rate=rate, wake=events.wake.set)
    stop = asyncio.Event()
    _install_stop(stop)
    deadline = time.monotonic() + args.timeout
    hashing = asyncio.ensure_future(files.async_prepare(path))
    link: _Link | None = None
    keeper: asyncio.Task[None] | None = None
    try:
        targets, expected = await _find_host(args, trust)
        link = _Link(args, identity, trust, events, Outbox(), name, files)
        try:
            await link.connect(targets, expected, deadline)
        except _TrustFailure as exc:
            out.status(f"error: {exc}")
            return exc.exit_code
        keeper = asyncio.ensure_future(link.keep_up(stop))
        try:
            prepared = await hashing
        except TransferError as exc:
            raise ConfigError(str(exc)) from exc
        peer = await _wait_for_peer(to, link, events, stop, deadline)
        if peer is None:
            return link.fatal if link.fatal is not None else 1
        ours.append(file_id(prepared.sha256, prepared.name, prepared.size))
        await files.async_offer(prepared, peer)
        return await _wait_until_done(prepared, peer, files, link, events, stop, outcome, args)
    finally:
        stop.set()
        events.wake.set()
        if not hashing.done():
            hashing.cancel()
        with contextlib.suppress(asyncio.CancelledError, P2PChatError):
            await hashing
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        if link is not None and link.participant is not None:
            await link.participant.async_close()
        await files.async_close()


async def _wait_for_peer(
    to: str, link: _Link, events: _Events, stop: asyncio.Event, deadline: float
) -> PeerInfo | None:
    """The participant called ``to`` once our session with it is up; None if the
    link failed or we were stopped. Raises DiscoveryError if nobody or several."""

    def named() -> list[PeerInfo]:
        p = link.participant
        if p is None:
            return []
        return [i for i in p.peers if i.name == to and p.is_ready(i.peer_id)]

    ok = await events.wait_until(
        lambda: bool(named()) or link.fatal is not None or stop.is_set(),
        max(0.0, deadline - time.monotonic()),
    )
    if link.fatal is not None or stop.is_set():
        return None
    found = named()
    if not ok or not found:
        waited = f"waited {link.args.timeout:g} s"
        raise DiscoveryError(f"nobody called {to!r} is in the chat ({waited})")
    if len(found) > 1:
        raise DiscoveryError(f"several participants are called {to!r}; cannot tell which")
    return found[0]


def _moved(
    files: FileTransfers,
    tick: int,
    outcome: list[FileCompleted | FileFailed],
    link: _Link,
    stop: asyncio.Event,
) -> Callable[[], bool]:
    """True once anything happened since ``tick``: progress, a verdict, or the end."""
    return lambda: (
        bool(outcome) or files.activity != tick or link.fatal is not None or stop.is_set()
    )


async def _wait_until_done(
    prepared: Prepared,
    peer: PeerInfo,
    files: FileTransfers,
    link: _Link,
    events: _Events,
    stop: asyncio.Event,
    outcome: list[FileCompleted | FileFailed],
    args: argparse.Namespace,
) -> int:
    """Wait for the receiver's verdict; give up after ``--timeout`` s without progress."""
    while not outcome:
        if link.fatal is not None:
            return link.fatal
        if stop.is_set():
            events.out.status("interrupted; run the same command again to resume")
            return 1
        moved = await events.wait_until(
            _moved(files, files.activity, outcome, link, stop), args.timeout
        )
        if not moved:
            tid = file_id(prepared.sha256, prepared.name, prepared.size)
            phase = files.phase(peer.fingerprint, tid, incoming=False)
            why = {
                "offered": f"{peer.name} has not answered the offer",
                "waiting": f"{peer.name} is not in the chat",
            }.get(phase.value if phase else "", f"{peer.name} stopped answering")
            events.out.error(
                f"no progress for {args.timeout:g} s: {why}; run the same command again to resume"
            )
            return EXIT_UNDELIVERED
    event = outcome[0]
    if isinstance(event, FileFailed):
        raise TransferError(describe_file_event(event))
    return 0
