"""A joiner's way into the room: find the host, connect, and stay connected.

:func:`async_find_host` turns what the user asked for (an address, a host
name, or nothing) into addresses to try and the fingerprint to expect.
:class:`Link` holds the current :class:`Participant` and replaces it with a
fresh one (new connection, new handshakes) whenever the connection drops:
exponential backoff with jitter, the host found again by its fingerprint
(its port may have changed). The outbox outlives every participant, so
nothing typed is lost. What happens is published on the room's bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shlex
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NoReturn

from p2pchat.config import DEFAULT_PORT
from p2pchat.errors import (
    BrokenConnectionError,
    ConfigError,
    DiscoveryError,
    ExitCode,
    KeyMismatchError,
    P2PChatError,
    RefusedError,
    TrustError,
)
from p2pchat.net.dial import (
    Attempt,
    async_race,
    describe_failure,
    local_networks,
    outcome,
    rank,
)
from p2pchat.proto.keys import format_fingerprint
from p2pchat.proto.names import display_name, fold
from p2pchat.proto.text import sanitize
from p2pchat.room.bus import EventBus
from p2pchat.room.events import (
    Connected,
    Dialing,
    Event,
    Looking,
    PeerInfo,
    PeerRefused,
    Reconnected,
    Reconnecting,
    RefusalKind,
    RoomEnded,
)
from p2pchat.room.hostpick import HostQuery, PinLookup, choose_hint, host_listing
from p2pchat.room.participant import FileHandler, Participant
from p2pchat.store.hosts import HostBook, KnownHost
from p2pchat.store.identity import Identity, TrustStore
from p2pchat.store.outbox import Outbox

if TYPE_CHECKING:
    from p2pchat.net.discovery import HostInfo

__all__ = ["Chooser", "Link", "Target", "async_find_host", "host_listing", "parse_connect"]

RECONNECT_BASE = 0.5
RECONNECT_CAP = 10.0
RECONNECT_WAIT = 10.0  # seconds for one reconnection attempt, handshake included
#: a connection that lasted this long was a success: the next drop starts the
#: backoff again; one that drops sooner keeps backing off (no reconnect storm)
RECONNECT_STABLE = 30.0
RECONNECT_BROWSE = 3.0  # seconds to look for the host's fingerprint on the network
RETRY_PAUSE = 0.5  # seconds before racing the addresses again when all failed fast
REMEMBERED_BROWSE = 1.0  # seconds of mDNS when we remember where the host was
NAME_SETTLE = 0.5  # seconds a first contact by name waits for a second host of that name

#: Picks one of several hosts found (None: none of them).
Chooser = Callable[[list["HostInfo"]], Awaitable["HostInfo | None"]]


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect, and the host fingerprint to insist on (None: any, pinned on first use)."""

    addresses: tuple[tuple[str, int], ...]
    expected: bytes | None
    name: str | None = None  #: the advertised name, when found by discovery
    #: the name the host must prove in the handshake (joining by name), else None
    proves: str | None = None
    #: every host discovery saw on the way (None: no discovery was done)
    seen: tuple[HostInfo, ...] | None = None


def parse_connect(value: str) -> tuple[str, int]:
    """``ADDR[:PORT]`` as (address, port): ``host``, ``host:port``, an IPv6
    address alone (``fe80::1%eth0``) or in brackets (``[fe80::1%eth0]:47474``).
    Without a port, the default port. Raises ConfigError."""
    text = value.strip()
    port = str(DEFAULT_PORT)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"--connect wants ADDR[:PORT], got {value!r}")
        port = rest[1:] if rest else port
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:  # a name, an IPv4 address, or an IPv6 address without a port
        host = text
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--connect wants ADDR[:PORT], got {value!r}")
    return host, int(port)


async def async_find_host(
    *,
    connect: str | None,
    host_name: str | None,
    expect: bytes | None,
    timeout: float,
    interfaces: Sequence[str],
    choose: Chooser | None,
    remembered: KnownHost | None = None,
    remembered_name: str | None = None,
    pinned: PinLookup | None = None,
    bus: EventBus[Event] | None = None,
) -> Target:
    """Where to connect (``connect``, else discovery) and the host fingerprint to
    expect; ``bus`` is told when discovery starts (``Looking``). ``host_name``
    is NAME or NAME@FP (:class:`HostQuery`). ``remembered``:
    where the pinned host of that name (``remembered_name``) was last reached;
    then discovery gets a short while, and the remembered addresses are tried
    too (alone, if mDNS finds nothing: multicast may be blocked). ``pinned``
    marks the pinned hosts in a list to choose from."""
    if connect:
        return Target((parse_connect(connect),), expect)
    query = HostQuery.parse(host_name) if host_name else None
    if query is not None and expect is not None and not query.fits(expect):
        raise ConfigError(
            f"--expect-fingerprint {format_fingerprint(expect)} does not start with "
            f"{query.prefix} ({query.text!r})"
        )
    if remembered is not None and query is not None:
        fp = expect or remembered.fingerprint
        mine = tuple((a, remembered.port) for a in remembered.addresses)
        try:
            # the pinned key is what we look for: another host with that name
            # (anyone can advertise any) is passed over, not raced against it
            host, seen = await _discover(
                query,
                fp,
                min(timeout, REMEMBERED_BROWSE),
                interfaces,
                choose,
                pinned,
                given=expect is not None,
                bus=bus,
            )
        except DiscoveryError:
            return Target(mine, fp, host_name, remembered_name or query.name)
        target = _target(host, expect, seen)
        if host.fingerprint == remembered.fingerprint:
            return replace(target, addresses=target.addresses + mine)
        return target
    host, seen = await _discover(
        query, expect, timeout, interfaces, choose, pinned, given=expect is not None, bus=bus
    )
    return _target(host, expect, seen, by_name=query is not None)


def _target(
    host: HostInfo, expect: bytes | None, seen: Sequence[HostInfo], *, by_name: bool = True
) -> Target:
    expected = expect
    if host.fingerprint is not None:
        if expect is not None and host.fingerprint != expect:
            raise KeyMismatchError(
                f"the host {display_name(host.name)} advertises "
                f"{format_fingerprint(host.fingerprint)}, not the key expected "
                f"(--expect-fingerprint {format_fingerprint(expect)}); nothing was sent"
            )
        expected = expect or host.fingerprint
    addresses = tuple((a, host.port) for a in host.addresses)
    return Target(addresses, expected, host.name, host.name if by_name else None, tuple(seen))


async def _discover(
    query: HostQuery | None,
    expect: bytes | None,
    timeout: float,
    interfaces: Sequence[str],
    choose: Chooser | None,
    pinned: PinLookup | None,
    *,
    given: bool,
    bus: EventBus[Event] | None = None,
) -> tuple[HostInfo, list[HostInfo]]:
    """The host meant, and every host seen. ``expect``: the key it must
    advertise, given by --expect-fingerprint (``given``) or pinned."""
    from p2pchat.net.discovery import BrowseReport, async_browse, resolve_interfaces  # zeroconf

    bind = resolve_interfaces(interfaces)
    if bus is not None:
        bus.publish(Looking(query.text if query is not None else None, timeout))
    report = BrowseReport(bind)
    seen: list[HostInfo] = []
    if query is not None:

        def want(h: HostInfo) -> bool:
            return query.wants(h) and (expect is None or h.fingerprint == expect)

        # a first contact waits a moment for a second host of that name: one
        # is never picked over another that calls itself the same
        settle = 0.0 if expect is not None else NAME_SETTLE
        seen = await async_browse(
            timeout=timeout, interfaces=bind, want=want, settle=settle, report=report
        )
        hosts = query.select([h for h in seen if want(h)])
        others = query.select(seen)
        if not hosts and expect is not None and others:
            theirs = ", ".join(
                format_fingerprint(h.fingerprint)[:14] + "..." if h.fingerprint else "none"
                for h in others[:3]
            )
            if given:
                raise KeyMismatchError(
                    f"the host {query.name!r} advertises the key {theirs}, not the key "
                    f"expected (--expect-fingerprint {format_fingerprint(expect)}); "
                    "nothing was sent"
                )
            raise DiscoveryError(
                f"a host named {query.name!r} answered, but not with the key expected "
                f"({format_fingerprint(expect)[:24]}...): someone else may be using that "
                "name; if the host's key really changed, 'p2pchat trust forget' it first"
            )
    else:
        hosts = await async_browse(
            timeout=timeout, interfaces=bind, want=lambda h: True, settle=0.25, report=report
        )
        seen = list(hosts)
    if expect is not None:
        hosts = [h for h in hosts if h.fingerprint in (None, expect)] or hosts
    if not hosts:
        what = f"no host {query.describe()}" if query else "no p2pchat host"
        if query and seen:
            found = sorted({display_name(h.name) for h in seen})
            more = f" and {len(found) - 10} more" if len(found) > 10 else ""
            names = ", ".join(found[:10]) + more
            raise DiscoveryError(f"{what} found within {timeout:g} s; hosts seen: {names}")
        raise DiscoveryError(
            f"{what} found within {timeout:g} s: {report.describe()}. If you know the "
            "host's address, use 'p2pchat join --connect ADDR' ('p2pchat doctor' checks "
            "this machine's side)."
        )
    if len(hosts) == 1:
        return hosts[0], seen
    if choose is None:
        what = (
            f"{len(hosts)} hosts are called {query.text!r} (anyone can advertise any name)"
            if query
            else f"{len(hosts)} hosts found"
        )
        raise DiscoveryError(f"{what}:\n{host_listing(hosts, pinned)}\n{choose_hint(hosts)}")
    chosen = await choose(hosts)
    if chosen is None:
        raise DiscoveryError("none of the hosts found was chosen")
    return chosen, seen


class Link:
    """The joiner's current participant, replaced on every reconnect (module doc)."""

    def __init__(
        self,
        identity: Identity,
        name: str,
        trust: TrustStore,
        bus: EventBus[Event],
        outbox: Outbox,
        *,
        require_known: bool = False,
        files: FileHandler | None = None,
        connect: str | None = None,
        interfaces: Sequence[str] = (),
        hosts: HostBook | None = None,
    ) -> None:
        self.identity, self.name, self.trust = identity, name, trust
        self.hosts = hosts
        self.bus, self.outbox, self.files = bus, outbox, files
        self.require_known = require_known
        self._connect, self._interfaces = connect, interfaces
        self.participant: Participant | None = None
        self.host_fp: bytes | None = None
        self.host_name: str | None = None  #: the name the host proved
        self.ended: RoomEnded | None = None  #: set once the link cannot go on

    async def async_connect(
        self, target: Target, timeout: float, deadline: float | None = None
    ) -> Participant:
        """Connect and wait for the secure session with the host. Raises a
        P2PChatError (RefusedError when we refused the host's key) if it fails.
        ``deadline`` (monotonic) defaults to ``timeout`` seconds from now."""
        if deadline is None:
            deadline = time.monotonic() + timeout
        participant = Participant(
            self.identity,
            self.name,
            self.trust,
            self.bus,
            require_known=self.require_known,
            expected_host=target.expected,
            outbox=self.outbox,
            files=self.files,
        )
        self.participant = participant
        used = await _connect_any(participant, target, deadline, self.bus)
        host_id = participant.host_id
        if host_id is None:
            raise P2PChatError("the relay did not say which participant is its host")
        ok = await self.bus.wait_for(
            lambda: participant.is_ready(host_id) or host_failure(participant) is not None,
            max(0.0, deadline - time.monotonic()),
        )
        failure = host_failure(participant)
        if failure is not None:
            raise failure
        if not ok:
            raise P2PChatError(f"no secure session with the host within {timeout:g} s")
        host = next(p for p in participant.peers if p.peer_id == host_id)
        # the name proven must be the one asked for (NFKC and case aside: a
        # look-alike is not it, even where a pin would take it for it)
        if target.proves is not None and fold(host.name) != fold(target.proves):
            self._refuse_name(participant, host, target.proves, used)
        self.host_fp, self.host_name = host.fingerprint, host.name
        if self.hosts is not None:
            others = tuple(a for a, _ in target.addresses)
            self.hosts.remember(self.host_fp, used[0], used[1], others)
        return participant

    def _refuse_name(
        self, participant: Participant, host: PeerInfo, asked: str, used: tuple[str, int]
    ) -> NoReturn:
        """Joining by name: the host proved its key, under another name. Anyone
        can advertise any name; the one in the handshake is the host's word."""
        if host.fingerprint not in participant.known_peers:
            self.trust.unpin(host.fingerprint)  # pinned a moment ago, refused now
        # told, not left: it must not take us for gone and drop what it owes us
        participant.refuse(
            host.peer_id, "not the host asked for: it proved another name", RefusalKind.MISMATCH
        )
        where = f"[{used[0]}]:{used[1]}" if ":" in used[0] else f"{used[0]}:{used[1]}"
        named = sanitize(host.name)
        fp = format_fingerprint(host.fingerprint)
        raise TrustError(
            f"you asked for {asked!r}, but the host at {where} proved the name '{named}' "
            f"(key {fp}); not joining it (if it is the one you mean: "
            f"p2pchat join {shlex.quote(f'{named}@{fp[:4]}')})"
        )

    def _end(self, reason: str, exit_code: ExitCode, *, by_host: bool = False) -> None:
        self.ended = RoomEnded(reason, exit_code, by_host)
        self.bus.publish(self.ended)

    async def async_keep_up(self, stop: asyncio.Event) -> None:
        """Reconnect whenever the connection drops, until ``stop`` or a fatal end."""
        attempt = 0
        up_since = time.monotonic()
        while not stop.is_set():
            current = self.participant
            assert current is not None

            def dropped(c: Participant = current) -> bool:
                return stop.is_set() or c.disconnected is not None or host_failure(c) is not None

            await self.bus.wait_for(dropped)
            if stop.is_set():
                return
            failure = host_failure(current)
            if isinstance(failure, RefusedError) and failure.for_trust:
                # the host refused us for trust (or we it): connecting again
                # would only be refused again. A protocol refusal (a session
                # that kept failing) is what a fresh connection may cure.
                self._end(str(failure), failure.exit_code)
                return
            if time.monotonic() - up_since >= RECONNECT_STABLE:
                attempt = 0
            if current.host_said_goodbye:
                # the host ended the chat on purpose: nothing to reconnect to
                self._end("the host closed the chat", ExitCode.FAILURE, by_host=True)
                return
            last_error = ""
            while not stop.is_set():
                delay = min(RECONNECT_CAP, RECONNECT_BASE * 2**attempt) * random.uniform(0.5, 1.0)
                attempt += 1
                self.bus.publish(Reconnecting(delay, attempt, last_error))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    return
                await current.async_close()
                try:
                    target = await self._locate()
                    await self.async_connect(target, RECONNECT_WAIT)
                except RefusedError as exc:
                    self._end(str(exc), exc.exit_code)
                    return
                except (P2PChatError, OSError, TimeoutError) as exc:
                    last_error = str(exc) or type(exc).__name__
                    current = self.participant or current
                    continue
                self.bus.publish(Reconnected())
                up_since = time.monotonic()
                break

    async def _locate(self) -> Target:
        """Where the host is now: the --connect address, or wherever the
        pinned fingerprint is advertised (the port may have changed)."""
        if self._connect:
            return Target((parse_connect(self._connect),), self.host_fp)
        from p2pchat.net.discovery import async_browse, resolve_interfaces

        fp = self.host_fp
        self.bus.publish(Looking(self.host_name, RECONNECT_BROWSE))
        hosts = await async_browse(
            timeout=RECONNECT_BROWSE,
            interfaces=resolve_interfaces(self._interfaces),
            want=lambda h: h.fingerprint == fp,
        )
        found = [h for h in hosts if h.fingerprint == fp]
        known = self.hosts.get(fp) if self.hosts is not None and fp is not None else None
        mine = tuple((a, known.port) for a in known.addresses) if known is not None else ()
        if not found:
            if not mine:
                raise DiscoveryError("the host is not advertised right now")
            return Target(mine, fp)  # multicast may be blocked: where it was last
        advertised = tuple((a, found[0].port) for a in found[0].addresses)
        return Target(advertised + mine, fp, found[0].name)

    async def async_close(self) -> None:
        if self.participant is not None:
            await self.participant.async_close()


def host_failure(participant: Participant) -> P2PChatError | None:
    """Why the session with the host failed, if it did."""
    host_id = participant.host_id
    for event in participant.refusals:
        if event.peer.peer_id == host_id:
            return RefusedError(
                refused_text(event, participant.expected_host), for_trust=event.kind.trust
            )
    if participant.disconnected is not None and not participant.is_ready(host_id or -1):
        return BrokenConnectionError(participant.disconnected.reason)
    return None


def refused_text(event: PeerRefused, expected: bytes | None = None) -> str:
    """One line for a refusal of (or by) the host: what the join fails with.
    ``expected``: the key the host was expected to have, if one was."""
    name = display_name(event.peer.name)
    if event.by_peer:
        return f"{name} refused us: {event.reason}"
    reason = event.reason
    if event.mismatch and expected is not None and expected != event.peer.fingerprint:
        reason += (
            f" (expected {format_fingerprint(expected)}, the host presented "
            f"{event.peer.fingerprint_text})"
        )
    return f"not connecting to {name}: {reason}"


def refusal_advice(event: PeerRefused) -> str:
    """What to do about a peer that refused us ("" when there is nothing to do)."""
    name = display_name(event.peer.name)
    if not event.by_peer:
        return ""
    if event.kind is RefusalKind.MISMATCH:
        return (
            f"{name} has another key pinned for our name: if you changed devices or "
            f"keys, ask {name} to check your new fingerprint ('p2pchat id') and run "
            "'p2pchat trust forget' for your name"
        )
    if event.kind is RefusalKind.UNKNOWN_PEER:
        return f"{name} only lets in peers it has pinned; ask {name} to add you"
    if event.kind is RefusalKind.OWN_KEY:
        return "this identity is in use there already; use another --home"
    return ""


async def _connect_any(
    participant: Participant,
    target: Target,
    deadline: float,
    bus: EventBus[Event],
) -> tuple[str, int]:
    """Race the target's addresses (net/dial.py), register with the first relay
    that answers, and keep trying until ``deadline``: a host that is starting,
    or an address that is not a p2pchat relay, does not end the attempt."""
    candidates = rank(target.addresses, local_networks())
    bus.publish(Dialing(tuple(candidates), target.name))
    failures: dict[tuple[str, int], Attempt] = {}
    not_relays: set[tuple[str, int]] = set()
    while True:
        remaining = deadline - time.monotonic()
        pool = [c for c in candidates if c not in not_relays]
        if remaining <= 0 or not pool:
            break
        winner, failed = await async_race(pool, remaining)
        failures.update({(a.address, a.port): a for a in failed})
        if winner is None:
            # every address refused or failed fast: wait a little, the host may be starting
            await asyncio.sleep(min(RETRY_PAUSE, max(0.0, deadline - time.monotonic())))
            continue
        addr, port = winner.address, winner.port
        try:
            left = max(0.1, deadline - time.monotonic())
            await participant.async_connect(addr, port, left, streams=winner.streams)
        except (OSError, TimeoutError) as exc:
            failures[addr, port] = Attempt(addr, port, outcome(exc))
            continue
        except TrustError:
            raise
        except P2PChatError as exc:  # not a p2pchat relay there, or it refused us
            failures[addr, port] = Attempt(addr, port, str(exc))
            not_relays.add((addr, port))
            continue
        bus.publish(Connected(addr, port))
        return addr, port
    raise BrokenConnectionError(
        "could not connect to the host: " + describe_failure(list(failures.values()), target.name)
    )
