"""The ``host`` and ``join`` commands: wiring relay, discovery, participant and UI.

Each runner returns the process exit code; expected failures raise a
:class:`~p2pchat.errors.P2PChatError` that the CLI prints as one line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable

from p2pchat.errors import (
    BrokenConnectionError,
    ConfigError,
    DiscoveryError,
    KeyMismatchError,
    P2PChatError,
)
from p2pchat.identity import Identity, TrustStore
from p2pchat.output import LineOutput
from p2pchat.session import (
    Disconnected,
    Event,
    Participant,
    PeerLeft,
    PeerRefused,
)

__all__ = ["EXIT_MISMATCH", "EXIT_NOT_FOUND", "EXIT_UNDELIVERED", "run_host", "run_join"]

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
    """Fans participant events out to the output and to the runner's own checks."""

    def __init__(self, out: LineOutput) -> None:
        self.out = out
        self.sinks: list[Callable[[Event], None]] = [out]

    def __call__(self, event: Event) -> None:
        for sink in self.sinks:
            sink(event)


async def _send_line(participant: Participant, out: LineOutput, line: str) -> None:
    if not line:
        return
    recipients = [p.name for p in participant.peers]
    msg_id = participant.send_text(line)
    out.sent(msg_id, line, recipients)


# ---------------------------------------------------------------- host


async def run_host(args: argparse.Namespace, identity: Identity, trust: TrustStore) -> int:
    from p2pchat.discovery import Advertiser, resolve_interfaces
    from p2pchat.proto.messages import check_name
    from p2pchat.relay import Relay

    name = check_name(args.name, ConfigError)
    out = LineOutput(json_mode=args.json)
    interfaces = resolve_interfaces(args.interface or [])
    bind = interfaces or ["0.0.0.0"]  # noqa: S104 -- serving the LAN is the point
    relay = Relay(owner_key=identity.public_der)
    try:
        served = await relay.async_start(bind, args.port)
    except OSError as exc:
        raise P2PChatError(f"cannot listen on {', '.join(bind)} port {args.port}: {exc}") from exc
    port = served[0][1]
    events = _Events(out)
    participant = Participant(identity, name, trust, events, require_known=args.require_known)
    stop = asyncio.Event()
    _install_stop(stop)
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
            from p2pchat.ui import run_interactive

            await run_interactive(participant, events, stop, host_id=None)
        else:
            await _host_lines(participant, out, stop)
    finally:
        await participant.async_close()
        await advertiser.async_close()
        await relay.async_close()
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
        raise P2PChatError(f"--connect wants ADDR:PORT, got {value!r}")
    return host, int(port)


async def _discover(
    args: argparse.Namespace, trust: TrustStore
) -> tuple[list[tuple[str, int]], bytes | None, str]:
    """Find the host: a list of (address, port) to try, the fingerprint its TXT
    record claims, and its name."""
    from p2pchat.discovery import HostInfo, async_browse, resolve_interfaces
    from p2pchat.proto.keys import format_fingerprint

    interfaces = resolve_interfaces(args.interface or [])
    if args.hostname:
        wanted = args.hostname

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
                "(run 'p2pchat discover' to list the hosts that can be seen)"
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


async def run_join(args: argparse.Namespace, identity: Identity, trust: TrustStore) -> int:
    from p2pchat.proto.messages import check_name

    name = check_name(args.name, ConfigError)
    out = LineOutput(json_mode=args.json)
    started = time.monotonic()
    deadline = started + args.timeout
    expected = args.expect_fingerprint
    if args.connect:
        targets, host_name = [_parse_connect(args.connect)], args.connect
    else:
        targets, advertised, host_name = await _discover(args, trust)
        if advertised is not None:
            if expected is not None and advertised != expected:
                raise KeyMismatchError(
                    f"the host {host_name!r} advertises a fingerprint other than "
                    "--expect-fingerprint; nothing was sent"
                )
            expected = expected or advertised
    events = _Events(out)
    verdict: list[Event] = []

    def watch(event: Event) -> None:
        if isinstance(event, PeerRefused | PeerLeft | Disconnected):
            verdict.append(event)

    events.sinks.append(watch)
    participant = Participant(
        identity, name, trust, events, require_known=args.require_known, expected_host=expected
    )
    await _connect_any(participant, targets, deadline, out)
    stop = asyncio.Event()
    _install_stop(stop)
    try:
        host_id = participant.host_id
        if host_id is None:
            raise P2PChatError("the relay did not say which participant is its host")
        ok = await participant.async_wait(
            lambda: participant.is_ready(host_id) or _host_failed(verdict, host_id) is not None,
            max(0.0, deadline - time.monotonic()),
        )
        failure = _host_failed(verdict, host_id)
        if failure is not None:
            return _failure_exit(failure, out)
        if not ok:
            raise P2PChatError(f"no secure session with the host within {args.timeout:g} s")
        if _interactive(args):
            from p2pchat.ui import run_interactive

            await run_interactive(participant, events, stop, host_id=host_id)
            return 0
        return await _join_lines(participant, out, stop, host_id, verdict, args.timeout)
    finally:
        await participant.async_close()


def _host_failed(verdict: list[Event], host_id: int) -> Event | None:
    for ev in verdict:
        if isinstance(ev, Disconnected):
            return ev
        if isinstance(ev, PeerRefused | PeerLeft) and ev.peer.peer_id == host_id:
            return ev
    return None


def _failure_exit(event: Event, out: LineOutput) -> int:
    if isinstance(event, PeerRefused):
        out.status(f"error: not connecting to {event.peer.name}: {event.reason}")
        return EXIT_MISMATCH if event.mismatch or "known" in event.reason else EXIT_FAILURE
    if isinstance(event, PeerLeft):
        out.status(f"error: the host {event.peer.name} left")
        return EXIT_FAILURE
    assert isinstance(event, Disconnected)
    out.status(f"error: {event.reason}")
    return EXIT_FAILURE


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
        out.status(f"connected to {addr}:{port}")
        return
    raise BrokenConnectionError(
        "could not connect to the host: " + ("; ".join(errors) or "no address to try")
    )


async def _join_lines(
    participant: Participant,
    out: LineOutput,
    stop: asyncio.Event,
    host_id: int,
    verdict: list[Event],
    timeout: float,
) -> int:
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    _stdin_lines(queue)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            gone = asyncio.ensure_future(
                participant.async_wait(lambda: _host_failed(verdict, host_id) is not None, None)
            )
            done, _ = await asyncio.wait(
                {getter, stopper, gone}, return_when=asyncio.FIRST_COMPLETED
            )
            gone.cancel()
            if getter not in done:
                getter.cancel()
                if stopper in done:
                    return 0
                failure = _host_failed(verdict, host_id)
                assert failure is not None
                return _failure_exit(failure, out)
            line = getter.result()
            if line is None:
                break
            await _send_line(participant, out, line)
    finally:
        stopper.cancel()
    # stdin ended: wait until everything sent has been acknowledged
    done_ok = await participant.async_wait(lambda: not participant.undelivered(), timeout)
    if done_ok:
        return 0
    missing = participant.undelivered()
    names = sorted({p.name for peers in missing.values() for p in peers})
    out.error(
        f"{len(missing)} message(s) not delivered within {timeout:g} s to: {', '.join(names)}"
    )
    return EXIT_UNDELIVERED
