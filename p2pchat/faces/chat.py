"""The ``host`` and ``join`` commands: a :class:`Room` with line mode, JSON mode or the chat screen.

Each runner returns the process exit code; expected failures raise a
:class:`~p2pchat.errors.P2PChatError` that the CLI prints as one line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from p2pchat.errors import LocalProtocolError
from p2pchat.faces.lines import LineOutput
from p2pchat.room import (
    ExitCode,
    FilePolicy,
    HostQuery,
    RelayLimits,
    Room,
    TrustStore,
    display_name,
    fingerprint_prefix,
    format_fingerprint,
    host_listing,
    resolve_home,
    sanitize,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from p2pchat.room import HostInfo

#: the downloads directory's override, as P2PCHAT_HOME is the home's
ENV_DOWNLOADS = "P2PCHAT_DOWNLOADS"

__all__ = ["INTERRUPT", "install_stop", "interactive", "run_host", "run_join", "stdin_lines"]


#: The message of the cancellation that interrupts a command (see install_stop).
INTERRUPT = "p2pchat: interrupted"


def install_stop(room: Room) -> asyncio.Event:
    """An event that SIGINT and SIGTERM set (POSIX; elsewhere Ctrl-C raises as
    usual), waking whoever waits on the room. Before the room has started
    (looking for the host, connecting, a picker) there is nothing to leave:
    the command's task is cancelled with :data:`INTERRUPT` (the CLI exits
    130); the room leaves in order on the way out, nothing else is cut."""
    stop = asyncio.Event()
    command = asyncio.current_task()

    def on_signal() -> None:
        if not room.started and command is not None:
            command.cancel(INTERRUPT)
            return
        stop.set()
        room.bus.notify()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal)
    return stop


def stdin_lines(queue: asyncio.Queue[str | None]) -> None:
    """Feed stdin lines to ``queue`` from a daemon thread (portable; None at EOF)."""
    loop = asyncio.get_running_loop()

    def pump() -> None:
        try:
            for line in sys.stdin:
                loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\r\n"))
        except (OSError, ValueError, UnicodeDecodeError):
            pass
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=pump, name="p2pchat-stdin", daemon=True).start()


def interactive(args: argparse.Namespace) -> bool:
    return not args.json and sys.stdin.isatty() and sys.stdout.isatty()


def download_dir(arg: str | None) -> str:
    """Where /accept saves: ``--download-dir``, else ``$P2PCHAT_DOWNLOADS``,
    else the platform's downloads directory (as --home and $P2PCHAT_HOME)."""
    if arg:
        return arg
    if os.environ.get(ENV_DOWNLOADS):
        return os.environ[ENV_DOWNLOADS]
    import platformdirs

    return platformdirs.user_downloads_dir()


def file_options(args: argparse.Namespace) -> dict[str, Any]:
    """Files offered to us: accepted into --accept-files DIR, asked about on the
    chat screen (saved in the downloads directory), else refused."""
    accept = getattr(args, "accept_files", None)
    policy: FilePolicy = "refuse"
    directory = None
    if accept:
        policy, directory = "auto", accept
    elif interactive(args):
        policy, directory = "ask", download_dir(getattr(args, "download_dir", None))
    quota = int(args.files_quota * (1 << 30))
    return {"file_policy": policy, "file_dir": directory, "file_quota": quota}


class _Refused:
    """The stdin lines refused before sending (too long, not valid text): the
    run then exits 2, bad input, once the rest is done (README, "Exit codes")."""

    def __init__(self) -> None:
        self.count = 0
        self.last = ""

    def summary(self) -> str:
        return f"{self.count} line(s) of stdin not sent; the last: {self.last}"


async def _send_line(room: Room, out: LineOutput, line: str, refused: _Refused) -> None:
    if not line:
        return
    try:
        await room.send(line)
    except LocalProtocolError as exc:
        refused.count += 1
        refused.last = str(exc)
        out.error(f"line not sent: {exc}")


# ---------------------------------------------------------------- host


async def run_host(args: argparse.Namespace) -> int:
    room = Room.host(
        name=args.name,
        home=args.home,
        port=args.port,
        interfaces=args.interface or [],
        limits=RelayLimits(
            max_participants=args.max_participants,
            max_unregistered=args.max_unregistered,
            reserved_slots=args.reserved_slots,
            max_per_source=args.max_per_source,
            max_unregistered_per_source=args.max_per_source,
            max_per_key=args.max_per_key,
            register_timeout=args.register_timeout,
            idle_ping=args.idle_timeout / 3,
            idle_timeout=args.idle_timeout,
            rate_bytes=args.rate_limit * 1024 * 1024,
            rate_burst=max(1.0, args.rate_limit / 16) * 1024 * 1024,
        ),
        require_known=args.require_known,
        **file_options(args),
    )
    out = LineOutput(json_mode=args.json)
    remove = room.bus.add_sink(out)
    stop = install_stop(room)
    async with room:
        hosting = room.hosting
        assert hosting is not None
        if not interactive(args):  # the chat screen shows both itself
            out.status(
                f"hosting as {display_name(room.name)} on port {hosting.port}, advertised at "
                f"{', '.join(hosting.addresses)} as '{sanitize(hosting.instance)}'"
            )
            out.status(f"your fingerprint: {room.identity.fingerprint_text}")
        if args.json:
            out.json(
                "hosting",
                name=room.name,
                port=hosting.port,
                addresses=list(hosting.addresses),
                fingerprint=room.identity.fingerprint_text,
            )
        refused = _Refused()  # the chat screen says why at once, and goes on
        if interactive(args):
            from p2pchat.faces.tui import run_interactive

            await run_interactive(room, stop, replaced=remove)
        else:
            refused = await _host_lines(room, out, stop)
    if room.ended is not None:
        return room.ended.exit_code
    out.status("host stopped")
    if refused.count:
        out.error(refused.summary())
        return ExitCode.USAGE
    return ExitCode.OK


async def _host_lines(room: Room, out: LineOutput, stop: asyncio.Event) -> _Refused:
    refused = _Refused()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    stdin_lines(queue)
    over = asyncio.ensure_future(room.wait_for(lambda: stop.is_set() or room.ended is not None))
    try:
        while not over.done():
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, over}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                break
            line = getter.result()
            if line is None:
                await over  # stdin ended: keep serving until told to stop
                break
            await _send_line(room, out, line, refused)
    finally:
        over.cancel()
    return refused


# ---------------------------------------------------------------- join


def pick_host(hosts: list[HostInfo], answer: str) -> HostInfo | str:
    """The host ``answer`` names: its number in the list, a name only one host
    has, NAME@FP, or the start of one host's fingerprint (4 characters at
    least). Else why not, to ask again: anyone can advertise any name, so a
    name two hosts share never picks one of them."""
    answer = answer.strip()
    if answer.isdigit():
        if 1 <= int(answer) <= len(hosts):
            return hosts[int(answer) - 1]
        return f"there is no host number {answer}"
    query = HostQuery.parse(answer)
    named = query.select(hosts)
    if len(named) == 1:
        return named[0]
    if named:
        return (
            f"{len(named)} hosts are called {query.text!r}: type the number of the one "
            "you mean, or the start of its fingerprint"
        )
    prefix = fingerprint_prefix(answer)
    if prefix is not None:
        by_fp = [
            h
            for h in hosts
            if h.fingerprint
            and format_fingerprint(h.fingerprint).replace("-", "").startswith(prefix)
        ]
        if len(by_fp) == 1:
            return by_fp[0]
    return f"no host matches {answer!r}"


async def ask(prompt: str) -> str:
    """``input(prompt)`` without holding up the event loop, in a daemon thread
    of its own: a Ctrl-C meanwhile ends the command at once (a worker of the
    loop's executor would be waited for, until someone pressed Enter)."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()

    def settle(result: str | None, error: BaseException | None) -> None:
        if not answer.done():
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result(result or "")

    def read() -> None:
        result, error = None, None
        try:
            result = input(prompt)
        except (EOFError, OSError, ValueError, UnicodeDecodeError) as exc:
            error = EOFError(str(exc)) if not isinstance(exc, EOFError) else exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody asks any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=read, name="p2pchat-ask", daemon=True).start()
    return await answer


async def choose_host(
    hosts: list[HostInfo],
    trust: TrustStore | None = None,
    before: Callable[[], None] | None = None,
) -> HostInfo | None:
    """The picker on a terminal: a numbered list (pinned keys marked), asked
    until the answer picks exactly one (three tries; an empty answer or end of
    input picks none). ``before`` clears the terminal's line first (the
    "looking for hosts" spinner)."""
    if before is not None:
        before()
    listing = host_listing(hosts, trust.get if trust is not None else None)
    print(f"Several hosts found:\n{listing}", file=sys.stderr)
    for _ in range(3):
        try:
            answer = await ask("Join which one (number, name or start of the fingerprint)? ")
        except EOFError:
            return None
        if not answer.strip():
            return None
        picked = pick_host(hosts, answer)
        if not isinstance(picked, str):
            return picked
        print(f"p2pchat: {picked}", file=sys.stderr)
    return None


def _chooser(
    args: argparse.Namespace, before: Callable[[], None] | None
) -> Callable[[list[HostInfo]], Awaitable[HostInfo | None]]:
    trust = TrustStore.open(resolve_home(args.home))
    return functools.partial(choose_host, trust=trust, before=before)


def join_room(args: argparse.Namespace, out: LineOutput | None = None, **extra: Any) -> Room:
    """The Room that ``join`` and ``send`` use, from their common flags; ``out``
    (its status lines) is quieted before the host picker asks."""
    return Room.join(
        name=args.name,
        home=args.home,
        host=args.hostname,
        connect=args.connect,
        expect_fingerprint=args.expect_fingerprint,
        timeout=args.timeout,
        interfaces=args.interface or [],
        require_known=args.require_known,
        choose=_chooser(args, out.close if out is not None else None)
        if interactive(args)
        else None,
        **extra,
    )


async def run_join(args: argparse.Namespace) -> int:
    out = LineOutput(json_mode=args.json, looking_only=interactive(args))
    room = join_room(args, out, **file_options(args))
    out.hint = room.key_hint
    remove = room.bus.add_sink(out)
    screen = False

    def replaced() -> None:  # the chat screen takes over: the line output goes quiet
        nonlocal screen
        screen = True
        remove()
        out.close()

    stop = install_stop(room)
    try:
        async with room:
            if interactive(args):
                from p2pchat.faces.tui import run_interactive

                await run_interactive(room, stop, replaced=replaced)
                # leaving on purpose (/quit, Ctrl-D, Ctrl-C) is 0; the room's end
                # (the host closed the chat: 1, a refused key: 3) is its own code
                return room.ended.exit_code if room.ended is not None else ExitCode.OK
            return await _join_lines(room, out, stop, args.timeout)
    except BaseException:
        if not screen:  # e.g. a refused key: its warning, then the error line
            out.release()
        raise
    finally:
        out.close()  # no spinner left above the error line


async def _join_lines(room: Room, out: LineOutput, stop: asyncio.Event, timeout: float) -> int:
    refused = _Refused()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    stdin_lines(queue)
    over = asyncio.ensure_future(room.wait_for(lambda: stop.is_set() or room.ended is not None))
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, over}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                return _end_code(room, out, refused, "when stopped")
            line = getter.result()
            if line is None:
                break
            await _send_line(room, out, line, refused)
    finally:
        over.cancel()
    # stdin ended: wait until everything sent has been acknowledged (reconnecting if need be)
    await room.wait_for(
        lambda: room.all_delivered or room.ended is not None or stop.is_set(), timeout
    )
    when = "when stopped" if stop.is_set() else f"within {timeout:g} s"
    return _end_code(room, out, refused, when)


def _end_code(room: Room, out: LineOutput, refused: _Refused, when: str) -> int:
    """The line-mode join's exit code: the room's end (1 or 3), else 4 with a
    line when something sent is not delivered (stopped or out of time: it is
    kept for the next join), else 2 if a line was refused, else 0."""
    if room.ended is not None:
        return room.ended.exit_code
    if not room.all_delivered:
        out.error(undelivered_text(room, when))
        return ExitCode.UNDELIVERED
    return _refused_code(out, refused)


def _refused_code(out: LineOutput, refused: _Refused) -> int:
    """2 (bad input) with the summary as the last line if a line was refused, else 0."""
    if not refused.count:
        return ExitCode.OK
    out.error(refused.summary())
    return ExitCode.USAGE


def undelivered_text(room: Room, when: str) -> str:
    """One line: how many messages are not delivered (``when``: e.g. "within
    10 s"), to whom, how many each, and why."""
    total = len(room.undelivered())
    each = "; ".join(
        f"{display_name(m.name)} is missing {m.count} ({m.why})" for m in room.missing() if m.count
    )
    return f"{total} message(s) not delivered {when}: {each}"
