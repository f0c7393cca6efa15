"""Discovery and connection on networks built like real ones (root: namespaces).

Each scenario is two "devices" on one veth link (tests/netlab.py), made worse
the way real machines are: a container bridge on the host, multicast blocked
after a first meeting, a dead address that swallows connection attempts.
Times are printed for the benchmark table, never asserted.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from netlab import Device, ip, router_of
from procs import ProcPool, fingerprint_of, start_host, start_join, wait_session

pytestmark = pytest.mark.timeout(120)


def test_a_container_bridge_on_the_host_is_not_advertised(
    two_devices: tuple[Device, Device], procs: ProcPool
) -> None:
    dev_a, dev_b = two_devices
    # docker0 as Docker leaves it with no container running: a bridge, no ports
    ip("-n", dev_a.netns, "link", "add", "docker0", "type", "bridge")
    ip("-n", dev_a.netns, "addr", "add", "172.17.0.1/16", "dev", "docker0")
    ip("-n", dev_a.netns, "link", "set", "docker0", "up")
    bob, port = start_host(procs, procs.home("bob"), interface=(), prefix=dev_a.prefix)
    line = next(ln for ln in bob.stderr if "advertised at" in ln)
    assert dev_a.address in line and "172.17.0.1" not in line, line
    start = time.monotonic()
    alice = start_join(procs, procs.home("alice"), interface=(), prefix=dev_b.prefix)
    alice.wait_for_line("stderr", rf"^p2pchat: connected to {re.escape(dev_a.address)}:{port}$")
    wait_session(alice, "bob")
    print(f"scenario docker0: join -> session {time.monotonic() - start:.2f} s")


def test_two_subnets_connect_then_by_name_from_memory(
    routed_devices: tuple[Device, Device], procs: ProcPool
) -> None:
    """bob and alice on two subnets (mDNS does not cross the router). alice joins
    once with --connect ADDR (no port: the default one), and from then on
    'join bob' works, from where bob was, past a remembered address that now
    swallows every SYN (tried in parallel, so it costs nothing)."""
    dev_a, dev_b = routed_devices
    home_bob, home_alice = procs.home("bob"), procs.home("alice")
    bob, port = start_host(procs, home_bob, interface=(), prefix=dev_a.prefix)
    alice = start_join(procs, home_alice, "--connect", dev_a.address, interface=(),
                       prefix=dev_b.prefix)  # fmt: skip
    wait_session(alice, "bob")
    alice.close_stdin()
    assert alice.wait(20) == 0, alice.describe()
    book = json.loads((home_alice / "known_hosts.json").read_text())
    (entry,) = book["hosts"].values()
    assert entry["addresses"][0] == dev_a.address and entry["port"] == port

    # a remembered address that now leads nowhere: the router drops it silently
    ip("-n", router_of(), "route", "add", "blackhole", "10.99.0.0/16")
    entry["addresses"] = ["10.99.0.7", *entry["addresses"]]
    (home_alice / "known_hosts.json").write_text(json.dumps(book))

    start = time.monotonic()
    again = start_join(procs, home_alice, "bob", "--timeout", "15", interface=(),
                       prefix=dev_b.prefix)  # fmt: skip
    again.wait_for_line("stderr", rf"^p2pchat: connected to {re.escape(dev_a.address)}:{port}$")
    wait_session(again, "bob")
    print(f"scenario two subnets, by name from memory: {time.monotonic() - start:.2f} s")
    again.send_line("from memory")
    bob.wait_for_line("stdout", "^alice: from memory$")
    again.close_stdin()
    assert again.wait(20) == 0, again.describe()
    assert fingerprint_of(home_bob)  # bob is who he was: the key check decided


def test_doctor_across_a_router_hears_nothing_and_says_what_to_do(
    routed_devices: tuple[Device, Device], procs: ProcPool
) -> None:
    from procs import Proc, base_env, p2pchat_cmd

    dev_a, dev_b = routed_devices
    start_host(procs, procs.home("bob"), interface=(), prefix=dev_a.prefix)
    doctor = Proc(
        [*dev_b.prefix, *p2pchat_cmd("doctor", "--home", procs.home("alice"), "--timeout", "1")],
        env=base_env(),
    )
    procs.procs.append(doctor)
    assert doctor.wait(30) == 2, doctor.describe()
    assert doctor.stdout[-1].startswith("advice: no mDNS answer at all"), doctor.stdout


def test_a_firewalled_port_is_said_as_such(
    two_devices: tuple[Device, Device], procs: ProcPool
) -> None:
    """Found by address but nothing answers (every SYN dropped): one line that
    says the port does not answer and names the address."""
    dev_a, dev_b = two_devices
    ip("-n", dev_b.netns, "route", "add", "10.99.0.0/16", "via", dev_a.address)
    from procs import Proc, base_env, p2pchat_cmd

    proc = Proc(
        [*dev_b.prefix, *p2pchat_cmd("join", "--home", procs.home("alice"),
                                     "--connect", "10.99.0.7:47474", "--timeout", "2")],
        env=base_env(),
    )  # fmt: skip
    procs.procs.append(proc)
    assert proc.wait(20) == 1, proc.describe()
    (line,) = proc.stderr
    assert line == (
        "p2pchat: error: could not connect to the host: its port does not answer: "
        "a firewall on that machine? (10.99.0.7:47474 timed out)"
    ), line


def test_an_ipv6_only_network(two_v6_devices: tuple[Device, Device], procs: ProcPool) -> None:
    """No IPv4 anywhere: mDNS runs over IPv6 and join connects to the IPv6 address."""
    dev_a, dev_b = two_v6_devices
    bob, _ = start_host(procs, procs.home("bob"), interface=(), prefix=dev_a.prefix)
    line = next(ln for ln in bob.stderr if "advertised at" in ln)
    assert dev_a.address in line, line
    start = time.monotonic()
    alice = start_join(procs, procs.home("alice"), "--timeout", "15", interface=(),
                       prefix=dev_b.prefix)  # fmt: skip
    wait_session(alice, "bob")
    print(f"scenario IPv6 only: join -> session {time.monotonic() - start:.2f} s")
    assert any(dev_a.address in ln and "connected to" in ln for ln in alice.stderr), alice.stderr
    alice.send_line("over IPv6")
    bob.wait_for_line("stdout", "^alice: over IPv6$")


def test_interface_by_name_on_a_dual_stack_interface(
    two_dual_devices: tuple[Device, Device], procs: ProcPool
) -> None:
    """--interface IFNAME where the interface also has IPv6 (link-local included):
    the host binds every address with its scope instead of failing."""
    dev_a, dev_b = two_dual_devices
    bob, _ = start_host(procs, procs.home("bob"), interface=("--interface", dev_a.ifname),
                           prefix=dev_a.prefix)  # fmt: skip
    alice = start_join(procs, procs.home("alice"), interface=("--interface", dev_b.ifname),
                       prefix=dev_b.prefix)  # fmt: skip
    wait_session(alice, "bob")
    alice.send_line("dual stack")
    bob.wait_for_line("stdout", "^alice: dual stack$")


def test_doctor_sees_the_host_and_its_reachable_address(
    two_devices: tuple[Device, Device], procs: ProcPool
) -> None:
    from procs import Proc, base_env, p2pchat_cmd

    dev_a, dev_b = two_devices
    start_host(procs, procs.home("bob"), interface=(), prefix=dev_a.prefix)
    doctor = Proc(
        [*dev_b.prefix, *p2pchat_cmd("doctor", "--home", procs.home("alice"), "--json")],
        env=base_env(),
    )
    procs.procs.append(doctor)
    assert doctor.wait(30) == 0, doctor.describe()
    report = json.loads(doctor.stdout[0])
    (iface,) = [i for i in report["interfaces"] if i["name"] == dev_b.ifname]
    assert iface["skip"] is None
    (host,) = report["hosts"]
    assert host["name"] == "bob" and host["addresses"][dev_a.address] == "reachable"
    assert report["mdns"]["records"] > 0
    assert report["advice"] == "everything looks fine: 'p2pchat join' should work"
