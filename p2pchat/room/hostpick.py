"""Which host the user means, and the list they choose from.

A name proves nothing (anyone can advertise "bob"), so several hosts may
share one. ``NAME@FP`` (:class:`HostQuery`) names one of them by the start of
its fingerprint, as fingerprints are shown (any case, dashes optional, 4
characters at least): ``p2pchat join bob@JG3F``. A name that itself holds an
``@`` (``alice@laptop``, the default display names) still finds its host.
:func:`host_listing` is the numbered list the picker and the several-hosts
error show: name, instance name, short fingerprint, address, and which one is
pinned.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from p2pchat.proto.keys import format_fingerprint
from p2pchat.proto.names import display_name
from p2pchat.proto.text import sanitize

if TYPE_CHECKING:
    from p2pchat.net.discovery import HostInfo
    from p2pchat.store.identity import Pin

__all__ = [
    "PREFIX_MIN",
    "HostQuery",
    "choose_hint",
    "fingerprint_prefix",
    "host_listing",
    "instance_of",
    "selector",
]

#: The shortest fingerprint start that selects a host.
PREFIX_MIN = 4
_FP_CHARS = 52  # a 32-byte fingerprint in base32, without padding
_BASE32 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
_SERVICE_SUFFIX = "._p2pchat._tcp.local."

#: What a pin of a host's key looks like (None: not pinned).
PinLookup = Callable[[bytes], "Pin | None"]


def fingerprint_prefix(text: str) -> str | None:
    """``text`` as the start of a fingerprint (upper case, dashes removed), if
    it is one: 4 to 52 base32 characters. Else None."""
    cleaned = text.strip().replace("-", "").upper()
    if PREFIX_MIN <= len(cleaned) <= _FP_CHARS and set(cleaned) <= _BASE32:
        return cleaned
    return None


def _fp_chars(fp: bytes | None) -> str:
    return format_fingerprint(fp).replace("-", "") if fp is not None else ""


def instance_of(host: HostInfo) -> str:
    """The instance label (``bob JG3FABCD``), without the service type."""
    inst = host.instance
    return inst[: -len(_SERVICE_SUFFIX)] if inst.lower().endswith(_SERVICE_SUFFIX) else inst


@dataclass(frozen=True, slots=True)
class HostQuery:
    """A host as the user named it: ``NAME`` or ``NAME@FP`` (module doc)."""

    text: str  #: as given
    name: str  #: the name part (the whole text when there is no fingerprint start)
    prefix: str | None  #: the fingerprint start, upper case without dashes

    @classmethod
    def parse(cls, text: str) -> HostQuery:
        head, sep, tail = text.rpartition("@")
        prefix = fingerprint_prefix(tail) if sep and head else None
        return cls(text, head if prefix else text, prefix)

    def by_name(self, host: HostInfo) -> bool:
        """``host`` goes by the whole text (its name, or its instance label)."""
        return self.text in (host.name, instance_of(host))

    def by_prefix(self, host: HostInfo) -> bool:
        """``host`` is called NAME and its fingerprint starts with FP."""
        return (
            self.prefix is not None
            and host.name == self.name
            and _fp_chars(host.fingerprint).startswith(self.prefix)
        )

    def wants(self, host: HostInfo) -> bool:
        return self.by_prefix(host) or self.by_name(host)

    def select(self, hosts: Sequence[HostInfo]) -> list[HostInfo]:
        """The hosts meant: those matching NAME@FP if any does (a host calling
        itself "bob@JG3F" cannot crowd out the bob whose key starts JG3F),
        else those going by the whole text."""
        chosen = [h for h in hosts if self.by_prefix(h)]
        return chosen or [h for h in hosts if self.by_name(h)]

    def fits(self, fp: bytes) -> bool:
        """``fp`` starts with FP (any key does when no FP was given)."""
        return self.prefix is None or _fp_chars(fp).startswith(self.prefix)

    def describe(self) -> str:
        """How the error lines name what was asked for."""
        if self.prefix is None:
            return f"named {self.text!r}"
        return f"named {self.name!r} with a fingerprint starting {self.prefix}"


def selector(host: HostInfo, hosts: Sequence[HostInfo]) -> str | None:
    """The shortest ``NAME@FP`` that selects ``host`` among ``hosts`` (FP in
    groups of four, as fingerprints are shown). None without a fingerprint."""
    mine = _fp_chars(host.fingerprint)
    if not mine:
        return None
    others = [
        _fp_chars(h.fingerprint)
        for h in hosts
        if h is not host and h.name == host.name and h.fingerprint != host.fingerprint
    ]
    length = PREFIX_MIN
    while length < len(mine) and any(o.startswith(mine[:length]) for o in others):
        length += 4
    shown = "-".join(mine[i : i + 4] for i in range(0, length, 4))
    return f"{host.name}@{shown}"


def _mark(host: HostInfo, pinned: PinLookup | None) -> str:
    pin = pinned(host.fingerprint) if pinned is not None and host.fingerprint else None
    if pin is None:
        return ""
    as_name = "" if pin.name == host.name else f" as {display_name(pin.name)}"
    return f"pinned{as_name}, verified" if pin.verified else f"pinned{as_name}"


def host_listing(hosts: Sequence[HostInfo], pinned: PinLookup | None = None) -> str:
    """The hosts, one numbered row each: name, (instance name), the start of its
    fingerprint, where it is, and whether its key is pinned. Names come from
    the network: escaped."""
    rows = []
    for h in hosts:
        fp = format_fingerprint(h.fingerprint)[:14] if h.fingerprint else "(no fingerprint)"
        where = f"{h.addresses[0]} port {h.port}" if h.addresses else f"port {h.port}"
        rows.append(
            (display_name(h.name), f"({sanitize(instance_of(h))})", fp, where, _mark(h, pinned))
        )
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(4)]
    lines = []
    for n, row in enumerate(rows, 1):
        cols = [col.ljust(w) for col, w in zip(row[:4], widths, strict=True)]
        lines.append(f"{n:3}. {'  '.join([*cols, row[4]]).rstrip()}")
    return "\n".join(lines)


def choose_hint(hosts: Sequence[HostInfo]) -> str:
    """How to pick one of ``hosts`` from the command line."""
    first = next((h for h in hosts if h.fingerprint), None)
    sel = selector(first, hosts) if first is not None else None
    some = hosts[0]
    addr = some.addresses[0] if some.addresses else "ADDR"
    addr = f"[{addr}]" if ":" in addr else addr
    connect = f"'p2pchat join --connect {addr}:{some.port}'"
    if sel is None:
        return f"join one by its address: {connect}"
    return (
        f"join one by its name and the start of its fingerprint, e.g. "
        f"'p2pchat join {shlex.quote(sanitize(sel))}', or by its address: {connect}"
    )
