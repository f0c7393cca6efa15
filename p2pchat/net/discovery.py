"""Finding hosts on the local network: DNS-SD over multicast DNS.

A host advertises its relay as one ``_p2pchat._tcp.local.`` service instance
whose TXT record carries the display name (``name``), the identity fingerprint
(``fp``, 52 base32 characters) and the protocol version (``v``). Joiners browse
for that type and get :class:`HostInfo` values back.

This module knows nothing of the chat protocol. Everything it reads from the
network is untrusted: TXT values may be missing, empty or not UTF-8, instance
names get renamed on conflicts, and resolution may fail. Nothing here trusts
the advertised name or fingerprint either; the handshake checks the key.

Zeroconf callbacks run on the event loop, so they only record events and
start tasks; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import ipaddress
import logging
import re
import secrets
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

import ifaddr

# DNSOutgoing and DNSQuestion: long public, still exported at top level, not in __all__.
from zeroconf import (  # type: ignore[attr-defined]
    BadTypeInNameException,
    DNSOutgoing,
    DNSQuestion,
    InterfaceChoice,
    IPVersion,
    NonUniqueNameException,
    NotRunningException,
    RecordUpdate,
    RecordUpdateListener,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from p2pchat.config import MAX_NAME_BYTES, PROTOCOL_VERSION, SERVICE_TYPE
from p2pchat.errors import ConfigError, DiscoveryError
from p2pchat.net.interfaces import adapter_addresses, advertisable, list_interfaces
from p2pchat.proto.keys import format_fingerprint
from p2pchat.proto.text import clean_label, replace_label, truncate_utf8

__all__ = [
    "Advertiser",
    "BrowseReport",
    "HostInfo",
    "async_browse",
    "encode_txt",
    "instance_label",
    "interface_choice",
    "parse_txt",
    "probe_send",
    "resolve_interfaces",
]

log = logging.getLogger(__name__)

_FINGERPRINT_LEN: Final = 32
_FINGERPRINT_CHARS: Final = 52
_FP_RE: Final = re.compile(r"[A-Za-z2-7]{52}")
_VERSION_RE: Final = re.compile(r"[0-9]{1,6}")

#: DNS label limit (RFC 1035), minus room for zeroconf's "-N" conflict suffix.
_MAX_LABEL_BYTES: Final = 63 - 4
_DEFAULT_LABEL: Final = "p2pchat"
_TAG_CHARS: Final = 8  #: of the fingerprint, in the instance label
_TYPE_SUFFIX: Final = "." + SERVICE_TYPE

#: RFC 1035 numbers for the one query we build ourselves.
_TYPE_PTR: Final = 12
_CLASS_IN: Final = 1
_FLAGS_QUERY: Final = 0x0000

#: Upper bound on one service resolution (zeroconf counts in milliseconds).
_RESOLVE_TIMEOUT: Final = 3.0


@dataclass(frozen=True, slots=True)
class HostInfo:
    """One resolved host, as advertised (nothing here is verified)."""

    instance: str  # full service instance name, e.g. "bob._p2pchat._tcp.local."
    name: str  # display name from TXT "name" (fallback: instance label)
    fingerprint: bytes | None  # TXT "fp" if it is a well-formed 32-byte fingerprint
    version: int | None  # TXT "v"
    addresses: tuple[str, ...]  # IPv4 first, then IPv6 (link-local ones with "%scope")
    port: int


# --------------------------------------------------------------------------- TXT


def _fp_text(fingerprint: bytes) -> str:
    return base64.b32encode(fingerprint).decode("ascii").rstrip("=")


def encode_txt(name: str, fingerprint: bytes, version: int) -> dict[str, str]:
    """The TXT properties a host advertises. Raises ValueError on bad input."""
    if clean_label(name) is None:
        raise ValueError(f"not an acceptable display name: {name!r}")
    if len(fingerprint) != _FINGERPRINT_LEN:
        raise ValueError(f"fingerprint must be {_FINGERPRINT_LEN} bytes, not {len(fingerprint)}")
    if not 0 <= version <= 999_999:
        raise ValueError(f"bad protocol version: {version}")
    return {"v": str(version), "name": name, "fp": _fp_text(fingerprint)}


def _as_bytes(value: object) -> bytes | None:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", errors="replace")
    return None


def _parse_fp(raw: bytes) -> bytes | None:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    if len(text) != _FINGERPRINT_CHARS or not _FP_RE.fullmatch(text):
        return None
    try:
        fp = base64.b32decode(text.upper() + "====")
    except (binascii.Error, ValueError):
        return None
    # Only the canonical spelling (the 4 spare bits zero) names a fingerprint.
    if len(fp) != _FINGERPRINT_LEN or _fp_text(fp) != text.upper():
        return None
    return fp


def parse_txt(props: Mapping[bytes, bytes | None]) -> tuple[str | None, bytes | None, int | None]:
    """``(name, fingerprint, version)`` from TXT properties; None for each one
    missing or malformed. Never raises on junk."""
    values: dict[bytes, bytes | None] = {}
    try:
        items = list(props.items())
    except Exception:  # a hostile or broken mapping
        return None, None, None
    for key, value in items:
        raw_key = _as_bytes(key)
        if raw_key is None:
            continue
        # Keys are case-insensitive; only the first occurrence counts (RFC 6763 6.4).
        values.setdefault(raw_key.lower(), _as_bytes(value))

    name: str | None = None
    raw = values.get(b"name")
    if raw is not None:
        try:
            name = clean_label(raw.decode("utf-8"))
        except UnicodeDecodeError:
            name = None

    raw = values.get(b"fp")
    fingerprint = _parse_fp(raw) if raw is not None else None

    version: int | None = None
    raw = values.get(b"v")
    if raw is not None:
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            text = ""
        if _VERSION_RE.fullmatch(text):
            version = int(text)
    return name, fingerprint, version


# -------------------------------------------------------------------- interfaces


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def resolve_interfaces(specs: Sequence[str]) -> list[str]:
    """Addresses to bind mDNS to, from IP addresses and/or interface names.

    An IP address is kept as given; an IPv6 link-local one needs its scope
    (``fe80::1%eth0``: without it the address cannot be bound), and an
    interface name stands for all its addresses, link-local ones with their
    scope. An empty ``specs`` gives ``[]``, which means every interface.
    Raises ConfigError for an unknown name, an interface without addresses or
    a link-local address without a scope.
    """
    out: list[str] = []
    adapters: list[ifaddr.Adapter] | None = None
    for raw_spec in specs:
        spec = raw_spec.strip()
        addr = _parse_ip(spec)
        if addr is not None:
            if isinstance(addr, ipaddress.IPv6Address) and addr.is_link_local and not addr.scope_id:
                raise ConfigError(
                    f"{raw_spec!r} is a link-local address: give its interface too, "
                    f"as in {raw_spec}%eth0"
                )
            candidates = [str(addr)]
        else:
            if adapters is None:
                try:
                    adapters = list(ifaddr.get_adapters())
                except OSError as exc:
                    raise ConfigError(f"cannot list network interfaces: {exc}") from exc
            matches = [a for a in adapters if spec and spec in (a.name, a.nice_name)]
            if not matches:
                raise ConfigError(f"no such interface: {raw_spec!r}")
            candidates = [ip for a in matches for ip in adapter_addresses(a)]
            if not candidates:
                raise ConfigError(f"interface {raw_spec!r} has no IP addresses")
        for candidate in candidates:
            if candidate not in out:
                out.append(candidate)
    return out


def interface_choice(addresses: Sequence[str]) -> InterfaceChoice | list[str]:
    """What to pass as zeroconf's ``interfaces=``: all of them when empty."""
    if not addresses:
        return InterfaceChoice.All
    return list(addresses)


def ip_version(choice: InterfaceChoice | list[str]) -> IPVersion | None:
    """mDNS over IPv6 too where the machine has IPv6 (zeroconf's own default for
    "all interfaces" is IPv4 only, so an IPv6-only network would see nothing);
    None: let zeroconf decide from an explicit list."""
    if choice is not InterfaceChoice.All:
        return None
    has_v6 = any(":" in a for i in list_interfaces() if i.skip != "loopback" for a in i.addresses)
    return IPVersion.All if has_v6 else IPVersion.V4Only


def _ipv4_first(addresses: Sequence[str]) -> tuple[str, ...]:
    """Stable sort: IPv4 before IPv6, duplicates dropped."""
    seen: list[str] = []
    for a in addresses:
        if a not in seen:
            seen.append(a)
    return tuple(sorted(seen, key=lambda a: ":" in a))


def _advertised_addresses(addresses: Sequence[str], bind: Sequence[str]) -> list[str]:
    """The A/AAAA contents. An unspecified address (0.0.0.0, ::) stands for the
    bind addresses of its family, or when binding everywhere for the addresses of
    that family of the interfaces a peer can reach (net/interfaces.py: not down,
    not a container bridge or VPN; loopback only on a machine with nothing else).
    No addresses at all means the same as both unspecified addresses."""
    parsed: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    if not addresses:
        parsed = [ipaddress.IPv4Address(0), ipaddress.IPv6Address(0)]
    for text in addresses:
        addr = _parse_ip(text)
        if addr is None:
            raise ConfigError(f"not an IP address: {text!r}")
        parsed.append(addr)

    machine: list[ipaddress.IPv4Address | ipaddress.IPv6Address] | None = None
    out: list[str] = []
    for addr in parsed:
        if not addr.is_unspecified:
            out.append(str(addr).split("%", 1)[0])  # AAAA records carry no scope
            continue
        if bind:
            pool = [a for a in (_parse_ip(b) for b in bind) if a is not None]
        else:
            if machine is None:
                usable = advertisable(list_interfaces())
                found = (_parse_ip(a.split("%", 1)[0]) for a in usable)
                machine = [a for a in found if a is not None]
            pool = machine
        out.extend(
            str(a).split("%", 1)[0]
            for a in pool
            if a.version == addr.version and not a.is_unspecified
        )
    result = list(_ipv4_first(out))
    if not result:
        raise ConfigError("no IP address to advertise")
    return result


# ---------------------------------------------------------------------- advertise


def instance_label(name: str, fingerprint: bytes) -> str:
    """The DNS-SD instance label of a host called ``name`` with that key:
    ``NAME TAG``, TAG the first 8 characters of its fingerprint. No dots or
    control characters, and short enough that zeroconf's "-N" rename still
    fits in 63 bytes. Two hosts of one name with different keys never share
    an instance name: on one machine (where mDNS cannot always detect the
    clash) neither hides the other, and an impostor with a host's name is
    listed beside it, not merged into it."""
    tag = format_fingerprint(fingerprint).replace("-", "")[:_TAG_CHARS]
    label = replace_label(name).replace(".", "-").replace("\\", "-").strip()
    label = truncate_utf8(label, _MAX_LABEL_BYTES - _TAG_CHARS - 1).strip()
    return f"{label or _DEFAULT_LABEL} {tag}"


_REGISTER_ERRORS: Final = (
    NonUniqueNameException,
    BadTypeInNameException,
    NotRunningException,
    OSError,
)


class Advertiser:
    """Advertises one host.

    ``async with Advertiser(...) as adv: ...``; on exit it unregisters (TTL-0
    goodbye) and closes. ``addresses`` go in the A/AAAA records (the relay's
    serving addresses; 0.0.0.0 or :: stand for the bind addresses, or all of the
    machine's); ``interfaces`` are the mDNS bind addresses or interface names
    (empty: all). If the name is taken, zeroconf picks another instance name
    ("bob-2"); :attr:`instance` gives the final one once started.
    """

    def __init__(
        self,
        *,
        name: str,
        port: int,
        fingerprint: bytes,
        addresses: Sequence[str],
        interfaces: Sequence[str] = (),
    ) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"bad port: {port}")
        properties = encode_txt(name, fingerprint, PROTOCOL_VERSION)
        self._bind = resolve_interfaces(interfaces)
        self._addresses = tuple(_advertised_addresses(addresses, self._bind))
        # A host name of our own: with the default (the instance name) a renamed
        # instance would keep the other host's name and the caches would merge
        # both hosts' addresses.
        server = f"p2pchat-{secrets.token_hex(6)}.local."
        self._info = ServiceInfo(
            SERVICE_TYPE,
            instance_label(name, fingerprint) + _TYPE_SUFFIX,
            port=port,
            properties=properties,
            server=server,
            parsed_addresses=list(self._addresses),
        )
        self._aiozc: AsyncZeroconf | None = None
        self._announce: asyncio.Future[object] | None = None
        self._registered = False
        self._started = False
        self._closed = False

    @property
    def instance(self) -> str:
        """The full service instance name (final once :meth:`async_start` returned)."""
        return self._info.name

    @property
    def addresses(self) -> tuple[str, ...]:
        """The addresses in the A/AAAA records."""
        return self._addresses

    async def async_start(self) -> None:
        """Probe for the name (renaming on conflict) and register; announcements
        continue in the background. Raises DiscoveryError if mDNS cannot start."""
        if self._started or self._closed:
            raise RuntimeError("Advertiser can be started once")
        self._started = True
        try:
            choice = interface_choice(self._bind)
            self._aiozc = AsyncZeroconf(interfaces=choice, ip_version=ip_version(choice))
        except (OSError, RuntimeError, ValueError) as exc:
            self._closed = True
            raise DiscoveryError(f"cannot start mDNS advertising: {exc}") from exc
        try:
            announce = await self._aiozc.async_register_service(self._info, allow_name_change=True)
            self._registered = True
            self._announce = asyncio.ensure_future(announce)
        except _REGISTER_ERRORS as exc:
            await self.async_close()
            raise DiscoveryError(f"cannot advertise as {self.instance!r}: {exc!r}") from exc
        except BaseException:
            await self.async_close()
            raise
        log.debug("advertising %s on %s", self.instance, self._addresses)

    async def async_close(self) -> None:
        """Send the goodbye and close. Idempotent."""
        if self._closed:
            return
        self._closed = True
        aiozc, self._aiozc = self._aiozc, None
        if aiozc is None:
            return
        try:
            # A late announcement after the goodbye would bring the records back.
            if self._announce is not None and not self._announce.done():
                self._announce.cancel()
                await asyncio.wait([self._announce])  # raises only our own cancellation
            if self._registered:
                self._registered = False
                try:
                    await (await aiozc.async_unregister_service(self._info))
                except Exception as exc:  # the goodbye is best effort
                    log.debug("goodbye for %s failed: %r", self.instance, exc)
        finally:
            await aiozc.async_close()

    async def __aenter__(self) -> Self:
        await self.async_start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.async_close()


# ------------------------------------------------------------------------- browse


def _with_scopes(addresses: Sequence[str]) -> list[str]:
    """Link-local IPv6 addresses with a usable scope, by interface name
    (zeroconf gives the index). One heard without its scope (an AAAA record
    that came over IPv4) gets the scope of our one interface with a link-local
    address; with several it is ambiguous and dropped (it cannot be dialled)."""
    scopes = {
        a.split("%", 1)[1]
        for i in list_interfaces()
        if i.skip != "loopback"
        for a in i.addresses
        if "%" in a
    }
    only = next(iter(scopes)) if len(scopes) == 1 else None
    out = []
    for a in addresses:
        addr, _, scope = a.partition("%")
        if not addr.lower().startswith("fe80:"):
            out.append(a)
            continue
        if scope.isdigit():
            with contextlib.suppress(OSError, OverflowError):
                scope = socket.if_indextoname(int(scope))
        scope = scope or only or ""
        if scope:
            out.append(f"{addr}%{scope}")
    return out


def _host_from_info(info: AsyncServiceInfo) -> HostInfo | None:
    port = info.port
    if port is None or not 0 < port < 65536:
        return None
    addresses = _ipv4_first(_with_scopes(info.parsed_scoped_addresses()))
    if not addresses:
        return None
    name, fingerprint, version = parse_txt(info.properties)
    if name is None:
        instance = info.name
        label = instance[: -len(_TYPE_SUFFIX)] if instance.lower().endswith(_TYPE_SUFFIX) else ""
        name = truncate_utf8(replace_label(label or instance), MAX_NAME_BYTES)
    return HostInfo(
        instance=info.name,
        name=name,
        fingerprint=fingerprint,
        version=version,
        addresses=addresses,
        port=port,
    )


def _send_ptr_query(zc: Zeroconf) -> None:
    """Ask for every instance of our service type, now. The random message id,
    as a one-shot (legacy) querier uses, also keeps responders from dropping
    the packet as a repeat of another joiner's identical query (zeroconf
    ignores byte-identical non-QU packets seen within the last second)."""
    # multicast=False only makes DNSOutgoing write the id; it still goes to the group.
    out = DNSOutgoing(_FLAGS_QUERY, multicast=False, id_=1 + secrets.randbelow(0xFFFF))
    out.add_question(DNSQuestion(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN))
    zc.async_send(out)


def probe_send(bind: Sequence[str]) -> str | None:
    """Send one mDNS query for our service type from each IPv4 address in
    ``bind`` (all interfaces: the default route's), the same query a browse
    sends; None if the system let every one out, else why not ("a local
    firewall refuses our mDNS packets" for EPERM/EACCES)."""
    out = DNSOutgoing(_FLAGS_QUERY, multicast=False, id_=1 + secrets.randbelow(0xFFFF))
    out.add_question(DNSQuestion(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN))
    packet = out.packets()[0]
    sources = [a for a in bind if ":" not in a] if bind else ["0.0.0.0"]  # noqa: S104
    for source in sources:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
                if source != "0.0.0.0":  # noqa: S104
                    s.setsockopt(
                        socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(source)
                    )
                s.sendto(packet, ("224.0.0.251", 5353))
            except PermissionError:
                return f"a local firewall refuses our mDNS packets (from {source})"
            except OSError as exc:
                return f"mDNS packets cannot be sent from {source}: {exc.strerror or exc}"
    return None


@dataclass
class BrowseReport:
    """What one browse saw, for an error that says what happened."""

    listened: list[str]  #: the addresses mDNS ran on ("all interfaces" when empty)
    records: int = 0  #: mDNS records heard at all, p2pchat or not (0: nothing answers here)
    send_error: str | None = None  #: why our queries could not leave, if the system said so

    def describe(self) -> str:
        where = ", ".join(self.listened) or "all interfaces"
        if self.send_error:
            return f"{self.send_error}: allow UDP port 5353 out and in on this machine"
        if not self.records:
            return (
                f"no mDNS answer of any kind was heard on {where}: multicast is blocked "
                "(client isolation, guest Wi-Fi, a firewall on UDP 5353), or nobody else is "
                "on this network"
            )
        return f"mDNS works on {where}, but no p2pchat host answered"


class _Counter(RecordUpdateListener):
    """Counts every record heard (any service): is anything answering at all?"""

    def __init__(self, report: BrowseReport) -> None:
        super().__init__()
        self._report = report

    def async_update_records(self, zc: Zeroconf, now: float, records: list[RecordUpdate]) -> None:
        self._report.records += len(records)


class _Mirror(RecordUpdateListener):
    """Copies what the ephemeral-port instance learns into the port-5353
    instance's cache, so that a goodbye heard there for a host found through
    the other instance still removes it (zeroconf ignores a goodbye for a
    record it has not cached)."""

    def __init__(self, target: Zeroconf) -> None:
        super().__init__()
        self._target = target

    def async_update_records(self, zc: Zeroconf, now: float, records: list[RecordUpdate]) -> None:
        if not self._target.done:
            self._target.cache.async_add_records(
                update.new for update in records if not update.new.is_expired(now)
            )


class _Browse:
    """State of one :func:`async_browse`. The callbacks run on the event loop:
    they only update state and start tasks."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.hosts: dict[str, HostInfo] = {}
        self.resolved: asyncio.Queue[HostInfo] = asyncio.Queue()
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        key = name.lower()
        if state_change is ServiceStateChange.Removed:
            self.hosts.pop(key, None)
            task = self.tasks.pop(key, None)
            if task is not None:
                task.cancel()
            return
        if key in self.tasks:  # a resolution is under way
            return
        if state_change is ServiceStateChange.Added and key in self.hosts:
            return  # already resolved through the other zeroconf instance
        task = asyncio.get_running_loop().create_task(self._resolve(zeroconf, key, name))
        self.tasks[key] = task
        task.add_done_callback(functools.partial(self._forget, key))

    def _forget(self, key: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(key) is task:
            del self.tasks[key]

    async def _resolve(self, zc: Zeroconf, key: str, name: str) -> None:
        timeout = min(_RESOLVE_TIMEOUT, self.deadline - asyncio.get_running_loop().time())
        if timeout <= 0:
            return
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        try:
            ok = await info.async_request(zc, timeout * 1000)  # milliseconds
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # zeroconf closing, or a malformed record
            log.debug("resolving %r failed: %r", name, exc)
            return
        host = _host_from_info(info) if ok else None
        if host is None:
            log.debug("could not resolve %r", name)
            return
        self.hosts[key] = host
        self.resolved.put_nowait(host)

    async def stop(self) -> None:
        tasks = list(self.tasks.values())
        self.tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _close_browse(
    state: _Browse, browsers: list[AsyncServiceBrowser], instances: list[AsyncZeroconf]
) -> None:
    await state.stop()
    for browser in browsers:
        try:
            await browser.async_cancel()
        except Exception as exc:
            log.debug("cancelling a browser failed: %r", exc)
    for aiozc in instances:
        try:
            await aiozc.async_close()
        except Exception as exc:
            log.debug("closing zeroconf failed: %r", exc)


async def async_browse(
    *,
    timeout: float,
    interfaces: Sequence[str] = (),
    want: Callable[[HostInfo], bool] | None = None,
    settle: float = 0.0,
    report: BrowseReport | None = None,
) -> list[HostInfo]:
    """Browse for hosts for at most ``timeout`` seconds.

    Returns the hosts resolved and not withdrawn, one per instance, in the order
    found. With ``want``, returns ``settle`` seconds after a resolved host
    satisfies it (so that others answering at about the same time are listed
    too; the list holds every host resolved so far, matching or not: filter it).
    ``interfaces`` are bind addresses or interface names (empty: all). Raises
    DiscoveryError if mDNS cannot start; zeroconf is always closed on return.
    ``report``, if given, is filled with what was listened on and heard.

    Two zeroconf instances browse side by side. One listens on port 5353, so it
    hears announcements and goodbyes. The other sends from an ephemeral port:
    responders answer such "legacy unicast" queries (RFC 6762 6.7) at once and
    to that port only, whereas a multicast answer waits 20-120 ms, or more than
    a second if the record went out in the last second (RFC 6762 section 14: a
    host that just started, or another joiner). Its first query goes out at
    once instead of after the browser's random 20-120 ms. What it learns is
    copied into the first one's cache, where goodbyes are heard.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, timeout)
    choice = interface_choice(resolve_interfaces(interfaces))
    state = _Browse(deadline)
    instances: list[AsyncZeroconf] = []
    browsers: list[AsyncServiceBrowser] = []
    try:
        errors: list[Exception] = []
        made: dict[bool, AsyncZeroconf] = {}
        for unicast in (True, False):
            try:
                made[unicast] = AsyncZeroconf(
                    interfaces=choice, unicast=unicast, ip_version=ip_version(choice)
                )
            except (OSError, RuntimeError, ValueError) as exc:  # e.g. 5353 held exclusively
                log.debug("zeroconf (unicast=%s) did not start: %r", unicast, exc)
                errors.append(exc)
            else:
                instances.append(made[unicast])
        if not instances:
            raise DiscoveryError(f"cannot start mDNS browsing: {errors[0]}") from errors[0]
        if True in made and False in made:
            made[True].zeroconf.async_add_listener(_Mirror(made[False].zeroconf), None)
        if report is not None:
            report.listened = list(resolve_interfaces(interfaces))
            for aiozc in instances:
                aiozc.zeroconf.async_add_listener(_Counter(report), None)
        for aiozc in instances:
            browsers.append(
                AsyncServiceBrowser(aiozc.zeroconf, SERVICE_TYPE, handlers=[state.on_change])
            )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                started = 0
                for aiozc in instances:  # the unicast one first, if there is one
                    try:
                        await aiozc.zeroconf.async_wait_for_start()
                    except NotRunningException as exc:
                        log.debug("zeroconf did not start: %r", exc)
                        continue
                    if not started:
                        _send_ptr_query(aiozc.zeroconf)
                    started += 1
                if not started:
                    raise DiscoveryError("cannot start mDNS browsing")
                while True:
                    host = await state.resolved.get()
                    current = state.hosts.get(host.instance.lower())
                    if want is not None and current is host and want(host):
                        break
        if report is not None and not report.records:
            report.send_error = probe_send(report.listened)
        if settle > 0 and loop.time() < deadline:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(min(deadline, loop.time() + settle)):
                    while True:
                        await state.resolved.get()
        return list(state.hosts.values())
    finally:
        # Shielded: a second cancellation must not leave sockets open.
        await asyncio.shield(_close_browse(state, browsers, instances))
