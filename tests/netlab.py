"""Test hosts in network namespaces: two "devices" on one veth link (root only).

The namespaces are created by the test and always removed; nothing is added
to the machine's own network namespace.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Device", "ip", "make_routed_devices", "make_two_devices", "router_of"]


@dataclass(frozen=True)
class Device:
    netns: str
    ifname: str
    address: str

    @property
    def prefix(self) -> list[str]:
        """Run a command inside this device's namespace."""
        return ["ip", "netns", "exec", self.netns]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=15)


def make_two_devices(
    tag: str = "", *, ipv4: bool = True, ipv6: bool = False
) -> Iterator[tuple[Device, Device]]:
    """Two namespaces over a veth pair: on one IPv4 /24 with multicast routed
    over it, and/or (``ipv6``) on one IPv6 ULA /64 (``address`` is then the
    IPv6 one when there is no IPv4)."""
    pid = os.getpid()
    subnet = f"10.231.{pid % 200}"
    v6 = f"fd00:77:{pid % 65536:x}::"
    a = Device(f"p2pt-a{tag}-{pid}", f"p2pa{tag}{pid % 10000}", f"{subnet}.1" if ipv4 else f"{v6}1")
    b = Device(f"p2pt-b{tag}-{pid}", f"p2pb{tag}{pid % 10000}", f"{subnet}.2" if ipv4 else f"{v6}2")
    created: list[str] = []
    try:
        for dev in (a, b):
            ip("netns", "add", dev.netns)
            created.append(dev.netns)
            if ipv6:  # link-local addresses usable at once (no duplicate detection wait)
                subprocess.run(
                    ["ip", "netns", "exec", dev.netns, "sysctl", "-qw",
                     "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0"],
                    check=True, capture_output=True, timeout=15,
                )  # fmt: skip
        # the veth pair is born inside the namespaces: nothing in the root namespace
        ip(
            "link", "add", a.ifname, "netns", a.netns, "type", "veth",
            "peer", "name", b.ifname, "netns", b.netns,
        )  # fmt: skip
        for n, dev in enumerate((a, b), start=1):
            ip("-n", dev.netns, "link", "set", "lo", "up")
            if ipv4:
                ip("-n", dev.netns, "addr", "add", f"{subnet}.{n}/24", "dev", dev.ifname)
            if ipv6:  # nodad: usable at once, no duplicate address detection wait
                ip("-n", dev.netns, "addr", "add", f"{v6}{n}/64", "dev", dev.ifname, "nodad")
            ip("-n", dev.netns, "link", "set", dev.ifname, "up", "multicast", "on")
            if ipv4:
                ip("-n", dev.netns, "route", "add", "224.0.0.0/4", "dev", dev.ifname)
        yield a, b
    finally:
        for name in reversed(created):  # deleting a namespace deletes its veth end
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=15)
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=15)
        assert not any(name in left.stdout for name in created), left.stdout


def router_of() -> str:
    """The router namespace of this process's :func:`make_routed_devices`."""
    return f"p2pt-rr-{os.getpid()}"


def make_routed_devices() -> Iterator[tuple[Device, Device]]:
    """Two devices on two subnets with a router namespace between them: unicast
    is routed, link-local multicast (mDNS) never crosses, as between two VLANs
    or a guest Wi-Fi and the office one. Returns (host side, joiner side)."""
    pid = os.getpid()
    n = pid % 200
    a = Device(f"p2pt-ra-{pid}", f"p2pra{pid % 10000}", f"10.233.{n}.2")
    b = Device(f"p2pt-rb-{pid}", f"p2prb{pid % 10000}", f"10.234.{n}.2")
    router = router_of()
    created: list[str] = []
    try:
        for name in (a.netns, router, b.netns):
            ip("netns", "add", name)
            created.append(name)
            ip("-n", name, "link", "set", "lo", "up")
        for dev, side, net in ((a, "a", f"10.233.{n}"), (b, "b", f"10.234.{n}")):
            rside = f"p2pr{side}{pid % 10000}r"
            ip("link", "add", dev.ifname, "netns", dev.netns, "type", "veth",
               "peer", "name", rside, "netns", router)  # fmt: skip
            ip("-n", dev.netns, "addr", "add", f"{dev.address}/24", "dev", dev.ifname)
            ip("-n", router, "addr", "add", f"{net}.1/24", "dev", rside)
            ip("-n", dev.netns, "link", "set", dev.ifname, "up", "multicast", "on")
            ip("-n", router, "link", "set", rside, "up")
            ip("-n", dev.netns, "route", "add", "default", "via", f"{net}.1")
            ip("-n", dev.netns, "route", "add", "224.0.0.0/4", "dev", dev.ifname)
        subprocess.run(
            ["ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
            check=True, capture_output=True, timeout=15,
        )  # fmt: skip
        yield a, b
    finally:
        for name in reversed(created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=15)
