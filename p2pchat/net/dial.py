"""Reaching a host: rank its addresses, race them, and say why none answered.

A host may advertise addresses that cannot be reached from here (a Docker
bridge, a VPN, another subnet, an IPv6 link-local address without its
scope). Trying them one by one, each with a long timeout, makes a join fail
although one address works. Instead (RFC 8305, "Happy Eyeballs"): rank the
candidates, start a TCP connection to the first, start the next one
``STAGGER`` seconds later or as soon as one fails, and take the first that
connects. Only ``ifaddr`` and asyncio: no zeroconf here.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import ifaddr

__all__ = [
    "STAGGER",
    "Attempt",
    "Winner",
    "async_race",
    "describe_failure",
    "local_networks",
    "outcome",
    "rank",
]

#: Seconds between two connection attempts started in parallel.
STAGGER = 0.25
#: Addresses of one host tried, at most (an advertisement is anyone's to write).
MAX_CANDIDATES = 16

Candidate = tuple[str, int]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Attempt:
    """One failed connection attempt, for the error message."""

    address: str
    port: int
    outcome: str  #: "timed out", "refused", "unreachable" or the system's words

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port} {self.outcome}"


def local_networks() -> list[Network]:
    """The networks this machine has an address in (empty if they cannot be listed)."""
    out: list[Network] = []
    try:
        adapters = ifaddr.get_adapters()
    except OSError:
        return out
    for adapter in adapters:
        for ip in adapter.ips:
            addr = ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip
            with contextlib.suppress(ValueError):
                out.append(ipaddress.ip_network(f"{addr}/{ip.network_prefix}", strict=False))
    return out


def _parse(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def rank(candidates: Sequence[Candidate], networks: Sequence[Network]) -> list[Candidate]:
    """Candidates in the order to try: addresses in one of our own networks
    first, then other IPv4, other IPv6, then IPv6 link-local, then names; a
    link-local address without a scope (``%eth0``) is dropped (it cannot be
    connected to). Stable within each class; duplicates dropped; at most
    ``MAX_CANDIDATES``."""

    def key(c: Candidate) -> int:
        addr = _parse(c[0])
        if addr is None:
            return 4  # a host name: the resolver decides
        plain = ipaddress.ip_address(c[0].split("%", 1)[0])
        if plain.is_link_local:
            return 3
        if any(plain in net for net in networks if net.version == plain.version):
            return 0
        return 1 if plain.version == 4 else 2

    seen: list[Candidate] = []
    for c in candidates:
        addr = _parse(c[0])
        unscoped_ll = isinstance(addr, ipaddress.IPv6Address) and addr.is_link_local
        if unscoped_ll and "%" not in c[0]:
            continue
        if c not in seen:
            seen.append(c)
    return sorted(seen, key=key)[:MAX_CANDIDATES]


def outcome(exc: BaseException) -> str:
    """A failed connection in a word or two."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "unreachable"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True, slots=True)
class Winner:
    """The first candidate that accepted a TCP connection, and that connection."""

    address: str
    port: int
    streams: Streams


async def _try(candidate: Candidate, timeout: float) -> Streams:
    host, port = candidate
    return await asyncio.wait_for(asyncio.open_connection(host, port), timeout)


def _close(task: asyncio.Task[Streams]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result()[1].close()


async def async_race(
    candidates: Sequence[Candidate], timeout: float, *, stagger: float = STAGGER
) -> tuple[Winner | None, list[Attempt]]:
    """Connect to ``candidates`` (ranked) staggered and in parallel, for at most
    ``timeout`` seconds; returns the first that accepted a TCP connection, with
    its open streams (every other connection is closed), and the attempts that
    failed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    failed: list[Attempt] = []
    running: dict[asyncio.Task[Streams], Candidate] = {}
    pending = list(candidates)
    try:
        while pending or running:
            if pending:
                c = pending.pop(0)
                left = max(0.0, deadline - loop.time())
                running[asyncio.ensure_future(_try(c, left))] = c
            wait = stagger if pending else max(0.0, deadline - loop.time())
            done, _ = await asyncio.wait(running, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                c = running.pop(task)
                exc = task.exception()
                if exc is None:
                    return Winner(c[0], c[1], task.result()), failed
                failed.append(Attempt(c[0], c[1], outcome(exc)))
            if loop.time() >= deadline:
                break
        failed.extend(Attempt(c[0], c[1], "timed out") for c in running.values())
        return None, failed
    finally:
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(BaseException):
                await task
            _close(task)  # a loser that connected after all


def describe_failure(attempts: Sequence[Attempt], name: str | None) -> str:
    """One line for a person: what happened to each address, and what to check."""
    if not attempts:
        return "no address to try"
    tried = "; ".join(str(a) for a in attempts)
    outcomes = {a.outcome for a in attempts}
    if outcomes == {"timed out"}:
        hint = "its port does not answer: a firewall on that machine?"
    elif outcomes == {"refused"}:
        hint = "nothing listens there: is p2pchat host still running?"
    elif outcomes <= {"unreachable", "timed out"}:
        hint = "not reachable from this network"
    else:
        hint = "see each address"
    who = f"found {name}, but " if name else ""
    return f"{who}{hint} ({tried})"
