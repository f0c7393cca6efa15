"""The ``host`` and ``join`` commands: wiring relay, discovery, participant and UI.

Each runner returns the process exit code; expected failures raise a
:class:`~p2pchat.errors.P2PChatError` that the CLI prints as one line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from p2pchat.errors import (
    BrokenConnectionError,
    ConfigError,
    DiscoveryError,
    KeyMismatchError,
    LocalProtocolError,
    P2PChatError,
    TrustError,
)
from p2pchat.faces.lines import LineOutput
from p2pchat.room.participant import (
    Disconnected,
    Event,
    Participant,
)
from p2pchat.store.identity import Identity, TrustStore
from p2pchat.store.outbox import Outbox

if TYPE_CHECKING:
    from p2pchat.room.transfers import FileTransfers

__all__ = ["EXIT_MISMATCH", "EXIT_NOT_FOUND", "EXIT_UNDELIVERED", "run_host", "run_join"]

RECONNECT_BASE = 0.5
RECONNECT_CAP = 10.0
RECONNECT_WAIT = 10.0  # seconds for one reconnection attempt, handshake included
RECONNECT_BROWSE = 3.0  # seconds to look for the host's fingerprint on the network

EXIT_FAILURE = 1
EXIT_NOT_FOUND = 2
EXIT_MISMATCH = 3
EXIT_UNDELIVERED = 4

NO_HOST_HELP = (
    "no p2pchat host found within {t:g} s. Likely causes: the host is on another network "
    "or VLAN; the Wi-Fi isolates clients from each other; a firewall blocks UDP port 5353 "
    "(mDNS) or the host's TCP port. If you know the host's address, use "
    "'p2pchat join --connect ADDR:PORT'."
)


# ---------------------------------------------------------------- shared plumbing


def _install_stop(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set ``stop`` (POSIX); elsewhere Ctrl-C raises as usual."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)


def _stdin_lines(queue: asyncio.Queue[str | None]) -> None:
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


def _interactive(args: argparse.Namespace) -> bool:
    return not args.json and sys.stdin.isatty() and sys.stdout.isatty()


class _Events:
    """Fans participant events out to the output, and wakes whoever waits for a change."""

    def __init__(self, out: LineOutput) -> None:
        self.out = out
        self.sinks: list[Callable[[Event], None]] = [out]
        self.wake = asyncio.Event()

    def __call__(self, event: Event) -> None:
        for sink in self.sinks:
            sink(event)
        self.wake.set()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until ``predicate()`` holds, re-checked after every event; False on timeout."""

        async def waiter() -> None:
            while not predicate():
                self.wake.clear()
                await self.wake.wait()

        try:
            await asyncio.wait_for(waiter(), timeout)
        except TimeoutError:
            return predicate()
        return True


def _file_service(args: argparse.Namespace, events: _Events, *, interactive: bool) -> FileTransfers:
    """Files offered to us: accepted into --accept-files DIR, asked about on the
    chat screen (saved in the downloads directory), else refused."""
    from p2pchat.room.transfers import FileTransfers

    accept = getattr(args, "accept_files", None)
    if accept:
        directory = Path(accept).expanduser()
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot use {directory} for files: {exc.strerror or exc}") from exc
        return FileTransfers(events, policy="auto", directory=directory, wake=events.wake.set)
    if interactive:
        import platformdirs

        downloads = Path(platformdirs.user_downloads_dir())
        return FileTransfers(events, policy="ask", directory=downloads, wake=events.wake.set)
    return FileTransfers(events, policy="refuse", wake=events.wake.set)


async def _send_line(participant: Participant, out: LineOutput, line: str) -> None:
    if not line:
        return
    recipients = [p.name for p in participant.peers]
    try:
        msg_id = participant.send_text(line)
    except LocalProtocolError as exc:
        out.error(f"line not sent: {exc}")
        return
    out.sent(msg_id, line, recipients)


# ---------------------------------------------------------------- host


class _Fixed:
    """The host's way into the room: its own participant, which never reconnects."""

    fatal: int | None = None

    def __init__(self, participant: Participant, files: FileTransfers) -> None:
        self.participant: Participant | None = participant
        self.files: FileTransfers | None = files


async def run_host(args: argparse.Namespace, identity: Identity, trust: TrustStore) -> int:
    from p2pchat.net.discovery import Advertiser, resolve_interfaces
    from p2pchat.net.relay import Relay, RelayLimits
    from p2pchat.proto.messages import check_name

    name = check_name(args.name, ConfigError)
    out = LineOutput(json_mode=args.json)
    events = _Events(out)
    files = _file_service(args, events, interactive=_interactive(args))
    interfaces = resolve_interfaces(args.interface or [])
    bind = interfaces or ["0.0.0.0"]  # noqa: S104 -- serving the LAN is the point
    relay = Relay(
        RelayLimits(
            max_participants=args.max_participants,
            max_unregistered=args.max_unregistered,
            register_timeout=args.register_timeout,
            idle_ping=args.idle_timeout / 3,
            idle_timeout=args.idle_timeout,
            rate_bytes=args.rate_limit * 1024 * 1024,
            rate_burst=max(1.0, args.rate_limit / 16) * 1024 * 1024,
        ),
        owner_key=identity.public_der,
    )
    try:
        served = await relay.async_start(bind, args.port)
    except OSError as exc:
        raise P2PChatError(f"cannot listen on {', '.join(bind)} port {args.port}: {exc}") from exc
    port = served[0][1]
    if not interfaces:
        # IPv6 too where the machine has it (discovery advertises its addresses)
        with contextlib.suppress(OSError):
            await relay.async_start(["::"], port)
    from p2pchat.store.identity import load_storage_key, resolve_home

    home = resolve_home(args.home)
    outbox = Outbox(home / "outbox-host.bin", load_storage_key(home))
    participant = Participant(
        identity,
        name,
        trust,
        events,
        require_known=args.require_known,
        outbox=outbox,
        files=files,
    )
    stop = asyncio.Event()
    _install_stop(stop)
    lost: list[Disconnected] = []

    def own_link(event: Event) -> None:
        # the host's own participant lost its relay: nothing left to host for
        if isinstance(event, Disconnected):
            lost.append(event)
            stop.set()

    events.sinks.append(own_link)
    own = "127.0.0.1" if bind == ["0.0.0.0"] else served[0][0]  # noqa: S104
    await participant.async_connect(own, port, 5.0)
    advertiser = Advertiser(
        name=name,
        port=port,
        fingerprint=identity.fingerprint,
        addresses=interfaces,
        interfaces=interfaces,
    )
    try:
        await advertiser.async_start()
        out.status(
            f"hosting as {name} on port {port}, advertised at "
            f"{', '.join(advertiser.addresses)} as {advertiser.instance!r}"
        )
        out.status(f"your fingerprint: {identity.fingerprint_text}")
        if args.json:
            out.json(
                "hosting",
                name=name,
                port=port,
                addresses=list(advertiser.addresses),
                fingerprint=identity.fingerprint_text,
            )
        if _interactive(args):
            from p2pchat.faces.tui import run_interactive

            await run_interactive(_Fixed(participant, files), events, stop, joiner=False)
        else:
            await _host_lines(participant, out, stop)
    finally:
        await participant.async_close()
        await files.async_close()
        await advertiser.async_close()
        await relay.async_close()
    if lost:
        out.error(f"the host's own participant lost its relay: {lost[0].reason}")
        return EXIT_FAILURE
    out.status("host stopped")
    return 0


async def _host_lines(participant: Participant, out: LineOutput, stop: asyncio.Event) -> None:
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    _stdin_lines(queue)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                break
            line = getter.result()
            if line is None:
                await stop.wait()  # stdin ended: keep serving until told to stop
                break
            await _send_line(participant, out, line)
    finally:
        stopper.cancel()


# ---------------------------------------------------------------- join


def _parse_connect(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--connect wants ADDR:PORT, got {value!r}")
    return host, int(port)


async def _discover(
    args: argparse.Namespace, trust: TrustStore
) -> tuple[list[tuple[str, int]], bytes | None, str]:
    """Find the host: a list of (address, port) to try, the fingerprint its TXT
    record claims, and its name."""
    from p2pchat.net.discovery import HostInfo, async_browse, resolve_interfaces
    from p2pchat.proto.keys import format_fingerprint

    interfaces = resolve_interfaces(args.interface or [])
    if args.hostname:
        wanted: str = args.hostname

        def want(h: HostInfo) -> bool:
            return h.name == wanted or h.instance.split(".")[0] == wanted

        hosts = await async_browse(timeout=args.timeout, interfaces=interfaces, want=want)
        hosts = [h for h in hosts if want(h)]
    else:
        hosts = await async_browse(
            timeout=args.timeout, interfaces=interfaces, want=lambda h: True, settle=0.25
        )
    if args.expect_fingerprint is not None:
        hosts = [h for h in hosts if h.fingerprint in (None, args.expect_fingerprint)] or hosts
    if not hosts:
        if args.hostname:
            raise DiscoveryError(
                f"no host named {args.hostname!r} found within {args.timeout:g} s "
                "(run 'p2pchat discover' to list the hosts that can be seen, or use "
                "'p2pchat join --connect ADDR:PORT')"
            )
        raise DiscoveryError(NO_HOST_HELP.format(t=args.timeout))
    if len(hosts) > 1:
        listing = "\n".join(
            f"  {h.name:20} {', '.join(h.addresses)} port {h.port}  "
            f"{format_fingerprint(h.fingerprint) if h.fingerprint else '(no fingerprint)'}"
            for h in hosts
        )
        if not _interactive(args):
            raise DiscoveryError(f"several hosts found; name one (p2pchat join NAME):\n{listing}")
        print(f"Several hosts found:\n{listing}", file=sys.stderr)
        choice = await asyncio.to_thread(input, "Join which one (name)? ")
        hosts = [h for h in hosts if h.name == choice.strip()]
        if not hosts:
            raise DiscoveryError(f"no host named {choice.strip()!r} among those found")
    host = hosts[0]
    return [(a, host.port) for a in host.addresses], host.fingerprint, host.name


class _Link:
    """The joiner's way into the room: a participant connected to the host,
    replaced by a fresh one (new connection, new handshakes) whenever the
    connection drops. The outbox outlives every participant."""

    def __init__(
        self,
        args: argparse.Namespace,
        identity: Identity,
        trust: TrustStore,
        events: _Events,
        outbox: Outbox,
        name: str,
        files: FileTransfers | None = None,
    ) -> None:
        self.args = args
        self.files = files
        self.identity = identity
        self.trust = trust
        self.events = events
        self.outbox = outbox
        self.name = name
        self.participant: Participant | None = None
        self.host_fp: bytes | None = None
        self.fatal: int | None = None  #: exit code once the link cannot go on

    def _new_participant(self, expected: bytes | None) -> Participant:
        return Participant(
            self.identity,
            self.name,
            self.trust,
            self.events,
            require_known=self.args.require_known,
            expected_host=expected,
            outbox=self.outbox,
            files=self.files,
        )

    async def connect(
        self, targets: list[tuple[str, int]], expected: bytes | None, deadline: float
    ) -> Participant:
        """Connect and wait for the secure session with the host. Raises a
        P2PChatError (with ``exit_code`` for trust failures) when it fails."""
        participant = self._new_participant(expected)
        self.participant = participant
        await _connect_any(participant, targets, deadline, self.events.out)
        host_id = participant.host_id
        if host_id is None:
            raise P2PChatError("the relay did not say which participant is its host")
        ok = await self.events.wait_until(
            lambda: participant.is_ready(host_id) or _host_failure(participant) is not None,
            max(0.0, deadline - time.monotonic()),
        )
        failure = _host_failure(participant)
        if failure is not None:
            raise failure
        if not ok:
            raise P2PChatError(f"no secure session with the host within {self.args.timeout:g} s")
        self.host_fp = next(p.fingerprint for p in participant.peers if p.peer_id == host_id)
        return participant

    async def keep_up(self, stop: asyncio.Event) -> None:
        """Reconnect whenever the connection drops: exponential backoff with
        jitter, capped at 10 s, rediscovering the host by its fingerprint."""
        attempt = 0
        while not stop.is_set():
            current = self.participant
            assert current is not None

            def dropped(c: Participant = current) -> bool:
                return stop.is_set() or c.disconnected is not None

            await self.events.wait_until(dropped, None)
            if stop.is_set():
                return
            if current.host_said_goodbye:
                # the host ended the chat on purpose: nothing to reconnect to
                self.events.out.status("the host closed the chat")
                self.fatal = EXIT_FAILURE
                self.events.wake.set()
                return
            while not stop.is_set():
                delay = min(RECONNECT_CAP, RECONNECT_BASE * 2**attempt) * random.uniform(0.5, 1.0)
                attempt += 1
                self.events.out.status(f"reconnecting in {delay:.1f} s (attempt {attempt})")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    return
                await current.async_close()
                try:
                    targets = await self._locate()
                    await self.connect(targets, self.host_fp, time.monotonic() + RECONNECT_WAIT)
                except _TrustFailure as exc:
                    self.events.out.status(f"error: {exc}")
                    self.fatal = exc.exit_code
                    self.events.wake.set()
                    return
                except (P2PChatError, OSError, TimeoutError) as exc:
                    self.events.out.status(f"reconnect failed: {exc}")
                    current = self.participant or current
                    continue
                self.events.out.status("reconnected; sending what was not delivered")
                attempt = 0
                break

    async def _locate(self) -> list[tuple[str, int]]:
        """Where the host is now: the --connect address, or wherever the
        pinned fingerprint is advertised (the port may have changed)."""
        if self.args.connect:
            return [_parse_connect(self.args.connect)]
        from p2pchat.net.discovery import async_browse, resolve_interfaces

        fp = self.host_fp
        hosts = await async_browse(
            timeout=RECONNECT_BROWSE,
            interfaces=resolve_interfaces(self.args.interface or []),
            want=lambda h: h.fingerprint == fp,
        )
        found = [h for h in hosts if h.fingerprint == fp]
        if not found:
            raise DiscoveryError("the host is not advertised right now")
        return [(a, found[0].port) for a in found[0].addresses]


class _TrustFailure(P2PChatError):
    """The host's proven key is refused: a fatal failure with its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _host_failure(participant: Participant) -> P2PChatError | None:
    """Why the session with the host failed, if it did."""
    host_id = participant.host_id
    for event in participant.refusals:
        if event.peer.peer_id == host_id:
            code = EXIT_MISMATCH if event.kind in ("mismatch", "unknown-peer") else EXIT_FAILURE
            return _TrustFailure(f"not connecting to {event.peer.name}: {event.reason}", code)
    if participant.disconnected is not None and not participant.is_ready(host_id or -1):
        return BrokenConnectionError(participant.disconnected.reason)
    return None


async def run_join(args: argparse.Namespace, identity: Identity, trust: TrustStore) -> int:
    from p2pchat.proto.messages import check_name
    from p2pchat.store.identity import load_storage_key, resolve_home

    name = check_name(args.name, ConfigError)
    out = LineOutput(json_mode=args.json)
    deadline = time.monotonic() + args.timeout
    targets, expected = await _find_host(args, trust)
    home = resolve_home(args.home)
    outbox = Outbox(home / "outbox-join.bin", load_storage_key(home))
    events = _Events(out)
    files = _file_service(args, events, interactive=_interactive(args))
    link = _Link(args, identity, trust, events, outbox, name, files)
    stop = asyncio.Event()
    _install_stop(stop)
    keeper: asyncio.Task[None] | None = None
    try:
        try:
            await link.connect(targets, expected, deadline)
        except _TrustFailure as exc:
            out.status(f"error: {exc}")
            return exc.exit_code
        keeper = asyncio.ensure_future(link.keep_up(stop))
        if _interactive(args):
            from p2pchat.faces.tui import run_interactive

            await run_interactive(link, events, stop, joiner=True)
            # the host closing the chat ends it normally; a refused key does not
            return 0 if link.fatal in (None, EXIT_FAILURE) else link.fatal
        return await _join_lines(link, events, stop, args.timeout)
    finally:
        stop.set()
        events.wake.set()
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        if link.participant is not None:
            await link.participant.async_close()
        await files.async_close()
        outbox.save()


async def _find_host(
    args: argparse.Namespace, trust: TrustStore
) -> tuple[list[tuple[str, int]], bytes | None]:
    """Where to connect (--connect, else discovery) and the host fingerprint to expect."""
    expected: bytes | None = args.expect_fingerprint
    if args.connect:
        return [_parse_connect(args.connect)], expected
    targets, advertised, host_name = await _discover(args, trust)
    if advertised is not None:
        if expected is not None and advertised != expected:
            raise KeyMismatchError(
                f"the host {host_name!r} advertises a fingerprint other than "
                "--expect-fingerprint; nothing was sent"
            )
        expected = expected or advertised
    return targets, expected


async def _connect_any(
    participant: Participant, targets: list[tuple[str, int]], deadline: float, out: LineOutput
) -> None:
    errors: list[str] = []
    for addr, port in targets:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            await participant.async_connect(addr, port, min(remaining, 5.0))
        except (OSError, TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            errors.append(f"{addr}:{port}: {reason}")
            continue
        except TrustError:
            raise
        except P2PChatError as exc:  # not a p2pchat relay there, or it refused us
            errors.append(f"{addr}:{port}: {exc}")
            continue
        out.status(f"connected to {addr}:{port}")
        return
    raise BrokenConnectionError(
        "could not connect to the host: " + ("; ".join(errors) or "no address to try")
    )


async def _join_lines(link: _Link, events: _Events, stop: asyncio.Event, timeout: float) -> int:
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    _stdin_lines(queue)
    stopper = asyncio.ensure_future(stop.wait())
    fatal = asyncio.ensure_future(events.wait_until(lambda: link.fatal is not None, None))
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait(
                {getter, stopper, fatal}, return_when=asyncio.FIRST_COMPLETED
            )
            if getter not in done:
                getter.cancel()
                return 0 if link.fatal is None else link.fatal
            line = getter.result()
            if line is None:
                break
            assert link.participant is not None
            await _send_line(link.participant, events.out, line)
    finally:
        stopper.cancel()
        fatal.cancel()
    # stdin ended: wait until everything sent has been acknowledged (reconnecting if need be)
    delivered = await events.wait_until(
        lambda: not link.outbox.pending() or link.fatal is not None or stop.is_set(), timeout
    )
    if link.fatal is not None:
        return link.fatal
    if delivered:
        return 0
    assert link.participant is not None
    missing = link.participant.undelivered()
    names = sorted({n for peers in missing.values() for n in peers})
    events.out.error(
        f"{len(missing)} message(s) not delivered within {timeout:g} s to: {', '.join(names)}"
    )
    return EXIT_UNDELIVERED
