"""What the user is told about delivery and trust, with real processes.

A frame-level proxy (tests/tamper.py) plays a flaky or hostile relay between a
joiner and the host: it duplicates, drops or cuts. Each test asserts what the
user sees (the status lines on stderr) and the exit code.
"""

from __future__ import annotations

import re
import shutil
import threading
from typing import Any

import pytest
from procs import Proc, ProcPool, start_host, start_join, wait_session
from tamper import CUT, Tamper, is_record

pytestmark = pytest.mark.timeout(120)


class Armed:
    """A rule that does nothing until armed, then acts on matching frames."""

    def __init__(self) -> None:
        self.armed = threading.Event()
        self.hits = 0


def test_a_duplicated_record_heals_the_session_and_nothing_is_lost(procs: ProcPool) -> None:
    bob, port = start_host(procs, procs.home("bob"))
    state = Armed()

    def duplicate_one(direction: str, conn: int, frame: dict[str, Any], raw: bytes) -> list[bytes]:
        if direction == "down" and state.armed.is_set() and is_record(frame) and not state.hits:
            state.hits += 1
            return [raw, raw]  # the second copy is a replay
        return [raw]

    with Tamper(port, duplicate_one) as proxy:
        alice = start_join(procs, procs.home("alice"), "--connect", f"127.0.0.1:{proxy.port}")
        wait_session(alice, "bob")
        wait_session(bob, "alice")
        state.armed.set()
        bob.send_line("hello alice")
        alice.wait_for_line("stdout", "^bob: hello alice$")
        alice.wait_for_line("stderr", "the session with bob broke .*renewing it")
        alice.wait_for_line("stderr", "secure session with bob renewed")
        for i in range(5):
            alice.send_line(f"line {i}")
        alice.close_stdin()
        assert alice.wait(30) == 0, alice.describe()
    assert state.hits == 1
    assert alice.stdout == ["bob: hello alice"], alice.describe()
    got = [line for line in bob.stdout if line.startswith("alice: ")]
    assert got == [f"alice: line {i}" for i in range(5)], bob.describe()
    assert not any("refused" in line for line in alice.stderr + bob.stderr)


def test_undelivered_messages_are_counted_per_peer_and_exit_4(procs: ProcPool) -> None:
    bob, port = start_host(procs, procs.home("bob"))
    state = Armed()

    def drop_alices_records(
        direction: str, conn: int, frame: dict[str, Any], raw: bytes
    ) -> list[bytes]:
        if direction == "up" and state.armed.is_set() and is_record(frame):
            state.hits += 1
            return []
        return [raw]

    with Tamper(port, drop_alices_records) as proxy:
        alice = start_join(
            procs,
            procs.home("alice"),
            "--connect",
            f"127.0.0.1:{proxy.port}",
            "--timeout",
            "2",
        )
        wait_session(alice, "bob")
        state.armed.set()
        for i in range(3):
            alice.send_line(f"lost {i}")
        alice.close_stdin()
        assert alice.wait(30) == 4, alice.describe()
    assert state.hits >= 3
    assert alice.stderr[-1] == (
        "p2pchat: error: 3 message(s) not delivered within 2 s: "
        "bob is missing 3 (no acknowledgement yet)"
    ), alice.describe()
    assert not [line for line in bob.stdout if line.startswith("alice: ")]


def host_that_pinned_alice(procs: ProcPool) -> tuple[Proc, int]:
    """bob hosting, after alice's first contact (bob has her key pinned)."""
    bob, port = start_host(procs, procs.home("bob"))
    first = start_join(procs, procs.home("alice"), "--connect", f"127.0.0.1:{port}")
    wait_session(bob, "alice")
    first.close_stdin()
    assert first.wait(20) == 0, first.describe()
    return bob, port


def test_a_refused_joiner_is_told_why_and_does_not_loop(procs: ProcPool) -> None:
    bob, port = host_that_pinned_alice(procs)

    # alice again, with a new key (a new device): bob has the old one pinned
    start = len(bob.stderr)
    alice = start_join(procs, procs.home("alice-new"), "--connect", f"127.0.0.1:{port}")
    assert alice.wait(30) == 3, alice.describe()
    err = "\n".join(alice.stderr)
    assert "bob refused us: a pinned name presented a different key" in err, err
    assert "ask bob to check your new fingerprint" in err
    # a refusal is not a goodbye, and nothing is retried
    assert "reconnecting" not in err and "closed the chat" not in err
    assert "bob left" not in err and "bob disconnected" not in err
    bob.wait_for_line("stderr", "refused alice: a pinned name presented a different key")
    assert sum("THE KEY OF THIS PEER HAS CHANGED" in line for line in bob.stderr[start:]) == 1


def test_the_same_new_key_twice_gets_the_warning_once(procs: ProcPool) -> None:
    bob, port = host_that_pinned_alice(procs)
    new = procs.home("alice-new")
    for _ in range(3):
        alice = start_join(procs, new, "--connect", f"127.0.0.1:{port}")
        assert alice.wait(30) == 3, alice.describe()
    bob.wait_for_line("stderr", "the same unknown key for alice again")
    assert sum("THE KEY OF THIS PEER HAS CHANGED" in line for line in bob.stderr) == 1


def test_reconnects_after_quick_drops_keep_backing_off(procs: ProcPool) -> None:
    _bob, port = start_host(procs, procs.home("bob"))
    state = Armed()

    def cut_at_alices_first_record(
        direction: str, conn: int, frame: dict[str, Any], raw: bytes
    ) -> list[bytes] | None:
        if direction == "up" and state.armed.is_set() and is_record(frame):
            state.hits += 1
            return CUT  # each new session resends the pending line first: cut again
        return [raw]

    with Tamper(port, cut_at_alices_first_record) as proxy:
        alice = start_join(procs, procs.home("alice"), "--connect", f"127.0.0.1:{proxy.port}")
        wait_session(alice, "bob")
        state.armed.set()
        alice.send_line("never acknowledged")
        alice.wait_for_line("stderr", r"reconnecting in .* \(attempt 4\)", timeout=60)
    attempts = [
        int(m.group(1))
        for line in alice.stderr
        if (m := re.search(r"reconnecting in .* \(attempt (\d+)\)", line))
    ]
    # a session that drops soon after it came up does not start the backoff again
    assert attempts[:4] == [1, 2, 3, 4], alice.describe()
    assert proxy.connections >= 4


def test_two_processes_with_one_identity_refuse_each_other(procs: ProcPool) -> None:
    bob, port = start_host(procs, procs.home("bob"))
    home = procs.home("alice")
    twin = procs.tmp / "home-alice-twin"
    shutil.copytree(home, twin)  # the same key in another directory
    alice = start_join(procs, home, "--connect", f"127.0.0.1:{port}")
    wait_session(alice, "bob")
    again = start_join(procs, twin, "--connect", f"127.0.0.1:{port}")
    wait_session(again, "bob")
    line = again.wait_for_line("stderr", "alice refused us|refused alice")
    assert "our own key" in line, again.describe()
    alice.wait_for_line("stderr", "our own key")
    # neither is disturbed: both still reach bob
    alice.send_line("from the first")
    again.send_line("from the second")
    bob.wait_for_line("stdout", "^alice: from the first$")
    bob.wait_for_line("stdout", "^alice: from the second$")
