"""Test hosts in network namespaces: two "devices" on one veth link (root only).

The namespaces are created by the test and always removed; nothing is added
to the machine's own network namespace.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Device", "ip", "make_two_devices"]


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


def make_two_devices(tag: str = "") -> Iterator[tuple[Device, Device]]:
    """Two namespaces on one /24 over a veth pair, multicast routed over it."""
    pid = os.getpid()
    subnet = f"10.231.{pid % 200}"
    a = Device(f"p2pt-a{tag}-{pid}", f"p2pa{tag}{pid % 10000}", f"{subnet}.1")
    b = Device(f"p2pt-b{tag}-{pid}", f"p2pb{tag}{pid % 10000}", f"{subnet}.2")
    created: list[str] = []
    try:
        for dev in (a, b):
            ip("netns", "add", dev.netns)
            created.append(dev.netns)
        # the veth pair is born inside the namespaces: nothing in the root namespace
        ip(
            "link", "add", a.ifname, "netns", a.netns, "type", "veth",
            "peer", "name", b.ifname, "netns", b.netns,
        )  # fmt: skip
        for dev in (a, b):
            ip("-n", dev.netns, "link", "set", "lo", "up")
            ip("-n", dev.netns, "addr", "add", f"{dev.address}/24", "dev", dev.ifname)
            ip("-n", dev.netns, "link", "set", dev.ifname, "up", "multicast", "on")
            ip("-n", dev.netns, "route", "add", "224.0.0.0/4", "dev", dev.ifname)
        yield a, b
    finally:
        for name in reversed(created):  # deleting a namespace deletes its veth end
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=15)
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=15)
        assert not any(name in left.stdout for name in created), left.stdout
