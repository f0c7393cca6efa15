"""Two devices: host and joiner in two network namespaces joined by a veth pair.

No ``--interface`` and no ``--connect``: the host advertises over real
multicast on its veth, the joiner finds it there and connects to the veth
address. Needs root and iproute2; the namespaces are always removed.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import pytest
from netlab import Device
from procs import ProcPool, start_host, start_join, wait_session

pytestmark = [
    pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() != 0,
        reason="network namespaces need root",
    ),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2's 'ip'"),
    pytest.mark.timeout(120),
]


def test_two_devices_over_multicast(two_devices: tuple[Device, Device], procs: ProcPool) -> None:
    dev_a, dev_b = two_devices
    # the netns processes: all on their own (veth) network, no loopback restriction
    bob, port = start_host(procs, procs.home("bob"), interface=(), prefix=dev_a.prefix)
    host_line = next(ln for ln in bob.stderr if "hosting as bob" in ln)
    assert dev_a.address in host_line, host_line  # advertised at the veth address
    assert "127.0.0.1" not in host_line.split("advertised at", 1)[1].split(" as ")[0]

    alice = start_join(
        procs, procs.home("alice"), "--timeout", "20", interface=(), prefix=dev_b.prefix
    )
    alice.wait_for_line("stderr", rf"^p2pchat: connected to {re.escape(dev_a.address)}:{port}$")
    sas = wait_session(alice, "bob")
    assert wait_session(bob, "alice") == sas

    alice.send_line("hello across the veth")
    alice.send_line("zweite Zeile ✓")
    assert bob.wait_for_lines("stdout", 2) == [
        "alice: hello across the veth",
        "alice: zweite Zeile ✓",
    ]
    bob.send_line("hello back")
    assert alice.wait_for_lines("stdout", 1) == ["bob: hello back"]

    alice.close_stdin()
    assert alice.wait() == 0, alice.describe()
    bob.wait_for_line("stderr", "^p2pchat: alice left$")
    bob.terminate()
    assert bob.wait() == 0, bob.describe()


def test_a_file_between_devices(
    two_devices: tuple[Device, Device], procs: ProcPool, tmp_path: Path
) -> None:
    """Three participants: bob hosts on device A; carol (accepting files) and
    alice (``p2pchat send``) are on device B and find bob by multicast. The file
    goes B -> A (the relay) -> B over the veth, end to end encrypted."""
    dev_a, dev_b = two_devices
    src = tmp_path / "small file.txt"
    data = os.urandom(200_000)
    src.write_bytes(data)
    inbox = tmp_path / "carol-inbox"
    bob, _ = start_host(procs, procs.home("bob"), interface=(), prefix=dev_a.prefix)
    carol = start_join(
        procs, procs.home("carol"), "--timeout", "20", "--accept-files", inbox,
        name="carol", interface=(), prefix=dev_b.prefix,
    )  # fmt: skip
    wait_session(carol, "bob")
    alice = procs.start(
        "send", src, "--to", "carol", "--name", "alice", "--home", procs.home("alice"),
        "--timeout", "20", "--json", name="send", prefix=dev_b.prefix,
    )  # fmt: skip
    assert alice.wait(40) == 0, alice.describe()
    done = alice.wait_for_event("file-done", direction="out", peer="carol")
    assert done["sha256"] == hashlib.sha256(data).hexdigest() and done["size"] == len(data)
    carol.wait_for_line("stderr", r"received small file\.txt from alice, SHA-256 verified")
    assert (inbox / "small file.txt").read_bytes() == data
    carol.send_line("got it")
    bob.wait_for_line("stdout", "^carol: got it$")
    carol.close_stdin()
    assert carol.wait() == 0, carol.describe()
    bob.terminate()
    assert bob.wait() == 0, bob.describe()
