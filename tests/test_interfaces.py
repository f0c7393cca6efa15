"""Which interfaces are advertised (net/interfaces.py), and remembered hosts (store/hosts.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2pchat.net.interfaces import Interface, advertisable, classify
from p2pchat.store.hosts import MAX_ADDRESSES, MAX_HOSTS, HostBook

BY_NAME = "virtual by its name (containers, virtual machines or a VPN)"


def fake_if(sysfs: Path, name: str, **files: str) -> None:
    base = sysfs / name
    base.mkdir(parents=True)
    for key, value in {"operstate": "up", "carrier": "1", **files}.items():
        if key == "brif":
            (base / "bridge").mkdir()
            (base / "brif").mkdir()
            for port in filter(None, value.split(",")):
                (base / "brif" / port).mkdir()
        elif key == "master":
            (base / "master").mkdir()
        else:
            (base / key).write_text(value + "\n")


@pytest.mark.parametrize(
    ("name", "files", "expected"),
    [
        ("eth0", {}, None),
        ("wlan0", {"operstate": "down"}, "down"),
        ("eth1", {"carrier": "0"}, "no carrier"),
        ("tun0", {"tun_flags": "0x1001"}, "tun/tap (a VPN or a virtual machine)"),
        ("wgx", {"uevent": "DEVTYPE=wireguard\nINTERFACE=wgx"}, "WireGuard (a VPN)"),
        ("br0", {"brif": ""}, "a bridge with no ports"),
        ("br0", {"brif": "eth0,eth1"}, None),  # a real LAN bridge is kept
        ("vethab12", {"master": ""}, "a port of a bridge"),
        (
            "docker0",
            {"brif": "veth1"},
            "virtual by its name (containers, virtual machines or a VPN)",
        ),
        ("virbr0", {}, "virtual by its name (containers, virtual machines or a VPN)"),
    ],
)
def test_interfaces_by_kind_where_the_platform_tells(
    tmp_path: Path, name: str, files: dict[str, str], expected: str | None
) -> None:
    fake_if(tmp_path, name, **files)
    assert classify(name, tmp_path) == expected


@pytest.mark.parametrize("name", ["docker0", "br-1a2b", "vboxnet0", "utun3", "tailscale0", "zt7"])
def test_and_by_name_elsewhere(tmp_path: Path, name: str) -> None:
    assert classify(name, tmp_path) is not None  # no sysfs entry: the name decides
    assert classify("en0", tmp_path) is None


def test_what_is_advertised() -> None:
    lo = Interface("lo", ("127.0.0.1", "::1"), "loopback")
    eth = Interface("eth0", ("192.168.1.5", "fe80::1%eth0"), None)
    docker = Interface("docker0", ("172.17.0.1",), "a bridge with no ports")
    assert advertisable([lo, docker, eth]) == ["192.168.1.5", "fe80::1%eth0"]
    # nothing usable: the doubtful addresses rather than none; only loopback: loopback
    assert advertisable([lo, docker]) == ["172.17.0.1"]
    assert advertisable([lo]) == ["127.0.0.1", "::1"]


# ---------------------------------------------------------------- remembered hosts


def test_hosts_are_remembered_bounded_and_a_broken_file_is_ignored(tmp_path: Path) -> None:
    book = HostBook(tmp_path / "known_hosts.json")
    fp = bytes(range(32))
    assert book.get(fp) is None
    many = tuple(f"10.0.0.{i}" for i in range(20))
    book.remember(fp, "192.168.1.5", 47474, many)
    got = book.get(fp)
    assert got is not None and got.port == 47474
    assert got.addresses[0] == "192.168.1.5" and len(got.addresses) == MAX_ADDRESSES
    for i in range(MAX_HOSTS + 5):
        book.remember(bytes([i + 1]) * 32, "10.1.1.1", 1)
    assert len(json.loads(book.path.read_text())["hosts"]) == MAX_HOSTS
    assert book.get(fp) is None  # the least recently reached went first
    assert (book.path.stat().st_mode & 0o777) == 0o600
    for junk in (b"{", b"[]", b'{"hosts": {"AAAA": {"addresses": 5}}}', b"\xff" * 10):
        book.path.write_bytes(junk)
        assert book.get(fp) is None  # no exception: only a slower join


# ---------------------------------------------------------------- the local firewall


def _fake_tool(bin_dir: Path, name: str, output: str, code: int = 0) -> None:
    """A stand-in for ``name`` that prints ``output`` (shell builtins only: PATH
    holds nothing else)."""
    lines = "".join(f"echo '{line}'\n" for line in output.splitlines())
    tool = bin_dir / name
    tool.write_text(f"#!/bin/sh\n{lines}exit {code}\n")
    tool.chmod(0o755)


def test_the_firewall_view_reports_rules_that_block_mdns_or_the_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from p2pchat.net.firewall import read_firewall

    monkeypatch.setenv("PATH", str(tmp_path))
    assert not read_firewall(47474).readable  # no tool at all
    rules = "\n".join(
        [
            "-P INPUT ACCEPT",
            "-A INPUT -p udp -m udp --dport 5353 -j DROP",
            "-A INPUT -p tcp -m tcp --dport 47474 -j REJECT",
            "-A INPUT -p tcp -m tcp --dport 22 -j DROP",
            "-A INPUT -p udp -m udp --dport 5353 -j ACCEPT",
        ]
    )
    _fake_tool(tmp_path, "iptables", rules)
    view = read_firewall(47474)
    assert view.readable and view.source == "iptables"
    assert view.blocking == (
        "-A INPUT -p udp -m udp --dport 5353 -j DROP",
        "-A INPUT -p tcp -m tcp --dport 47474 -j REJECT",
    )
    assert "blocking rules" in view.describe()
    _fake_tool(tmp_path, "iptables", "", code=4)  # not root
    assert "not root" in read_firewall(47474).describe()
