"""Which of this machine's interfaces a peer on the LAN can reach us through.

A laptop with Docker, libvirt or a VPN has addresses no peer can use: an
empty ``docker0`` bridge, ``virbr0``, a ``tun0`` without carrier. Advertising
them makes joiners try dead addresses. Each interface is judged by what the
platform says of it where it says (Linux: ``/sys/class/net``: down, no
carrier, tun/tap, WireGuard, a bridge with no ports, a port of a bridge), and
by its name otherwise (``docker*``, ``br-*``, ``virbr*``, ``vboxnet*``,
``vmnet*``, ``tailscale*``, ``zt*``, ``wg*``, ``tun*``, ``tap*``, ``utun*``,
``veth*``). ``--interface`` overrides all of this.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import ifaddr

__all__ = ["Interface", "adapter_addresses", "advertisable", "classify", "list_interfaces"]

SYSFS: Final = Path("/sys/class/net")

_VIRTUAL_NAMES: Final = re.compile(
    r"^(docker|br-|virbr|vboxnet|vmnet|tailscale|zt|wg|tun|tap|utun|veth)", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class Interface:
    name: str
    addresses: tuple[str, ...]  #: IPv6 link-local ones with their ``%name`` scope
    skip: str | None  #: why it is not advertised (None: it is)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def classify(name: str, sysfs: Path = SYSFS) -> str | None:
    """Why interface ``name`` is not a way to reach us, or None if it may be."""
    base = sysfs / name
    if base.is_dir():  # the platform tells (Linux)
        if _read(base / "operstate") == "down":
            return "down"
        if _read(base / "carrier") == "0":
            return "no carrier"
        if (base / "tun_flags").exists():
            return "tun/tap (a VPN or a virtual machine)"
        uevent = (_read(base / "uevent") or "").splitlines()
        devtype = next((line[8:] for line in uevent if line.startswith("DEVTYPE=")), "")
        if devtype == "wireguard":
            return "WireGuard (a VPN)"
        if (base / "master").exists():
            return "a port of a bridge"
        if (base / "bridge").is_dir():
            ports = list((base / "brif").iterdir()) if (base / "brif").is_dir() else []
            if not ports:
                return "a bridge with no ports"
    if _VIRTUAL_NAMES.match(name):
        return "virtual by its name (containers, virtual machines or a VPN)"
    return None


def adapter_addresses(adapter: ifaddr.Adapter) -> tuple[str, ...]:
    """An adapter's addresses, IPv6 link-local ones with their ``%name`` scope."""
    out = []
    for ip in adapter.ips:
        if isinstance(ip.ip, tuple):  # IPv6: (address, flowinfo, scope id)
            addr = ip.ip[0]
            if ipaddress.ip_address(addr.split("%", 1)[0]).is_link_local and "%" not in addr:
                addr = f"{addr}%{adapter.name}"
            out.append(addr)
        else:
            out.append(str(ip.ip))
    return tuple(out)


def list_interfaces(sysfs: Path = SYSFS) -> list[Interface]:
    """Every interface with an address, judged (loopback: "loopback")."""
    try:
        adapters = ifaddr.get_adapters()
    except OSError:
        return []
    out = []
    for adapter in adapters:
        addrs = adapter_addresses(adapter)
        if not addrs:
            continue
        plain = [ipaddress.ip_address(a.split("%", 1)[0]) for a in addrs]
        if all(a.is_loopback for a in plain):
            out.append(Interface(adapter.name, addrs, "loopback"))
        else:
            out.append(Interface(adapter.name, addrs, classify(adapter.name, sysfs)))
    return out


def advertisable(interfaces: list[Interface]) -> list[str]:
    """The addresses to advertise: those of usable interfaces; if none is
    usable, every non-loopback address (better a doubtful one than none); on a
    machine with only loopback, the loopback addresses."""
    usable = [a for i in interfaces if i.skip is None for a in i.addresses]
    if usable:
        return usable
    others = [a for i in interfaces if i.skip != "loopback" for a in i.addresses]
    return others or [a for i in interfaces for a in i.addresses]
