"""Nothing lost across faults: a host killed and restarted, a joiner restarted.

Real processes on loopback (mDNS bound to 127.0.0.1; with root, inside a
namespace of their own so that other hosts on this machine stay out of view).
"""

from __future__ import annotations

import signal

import pytest
from procs import ProcPool, start_host, start_join, wait_session

pytestmark = pytest.mark.timeout(120)


def test_host_killed_and_restarted_on_another_port(private_lo: list[str], procs: ProcPool) -> None:
    home_bob, home_alice = procs.home("bob"), procs.home("alice")
    # --port 0: any free port, so that the restarted host is on another one
    bob, port = start_host(procs, home_bob, "--port", "0", prefix=private_lo)
    alice = start_join(procs, home_alice, "bob", "--json", prefix=private_lo)
    wait_session(bob, "alice")
    alice.wait_for_event("session", timeout=20)
    alice.send_line("one")
    bob.wait_for_line("stdout", "^alice: one$")
    alice.wait_for_event("delivered", timeout=10)

    bob.popen.send_signal(signal.SIGKILL)  # no goodbye, no mDNS withdrawal
    bob.popen.wait(10)
    alice.wait_for_line("stderr", "reconnecting in", timeout=20)
    # typed while the host is down: they wait in the outbox
    alice.send_line("two")
    alice.send_line("three")

    bob2, port2 = start_host(procs, home_bob, "--port", "0", prefix=private_lo)
    assert port2 != port  # the port changed: found again by fingerprint, not address
    bob2.wait_for_line("stdout", "^alice: three$", timeout=40)
    alice.wait_for_line("stderr", "reconnected", timeout=10)
    alice.send_line("four")
    bob2.wait_for_line("stdout", "^alice: four$", timeout=10)
    # exactly once each, in order, on the new host ("one" was acknowledged before)
    assert bob2.stdout == ["alice: two", "alice: three", "alice: four"], bob2.describe()
    alice.close_stdin()
    assert alice.wait(20) == 0, alice.describe()


def test_outbox_survives_a_restart_of_the_joiner(procs: ProcPool) -> None:
    home_bob, home_alice = procs.home("bob"), procs.home("alice")
    bob, port = start_host(procs, home_bob)
    alice = start_join(procs, home_alice, "--connect", f"127.0.0.1:{port}", "--timeout", "3")
    wait_session(alice, "bob")
    bob.popen.send_signal(signal.SIGSTOP)  # the host hangs: nothing is acknowledged
    try:
        alice.send_line("written while the host hung")
        alice.close_stdin()
        code = alice.wait(20)  # --timeout bounds the wait for delivery
        assert code == 4, alice.describe()
        assert any("not delivered" in line for line in alice.stderr), alice.describe()
    finally:
        # the host dies with the line unread in its socket buffer
        bob.popen.send_signal(signal.SIGKILL)
        bob.popen.wait(10)
    bob2, port2 = start_host(procs, home_bob)
    # a new join process with the same home: the line comes from its outbox on disk
    alice2 = start_join(procs, home_alice, "--connect", f"127.0.0.1:{port2}")
    wait_session(alice2, "bob")
    bob2.wait_for_line("stdout", "^alice: written while the host hung$", timeout=20)
    alice2.close_stdin()
    assert alice2.wait(20) == 0, alice2.describe()
    assert bob2.stdout == ["alice: written while the host hung"], bob2.describe()
