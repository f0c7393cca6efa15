"""``join`` says it is looking for hosts (the ``Looking`` event): one status
line when stderr is not a terminal, a line redrawn in place on one, erased
before anything else takes the terminal.

Every process stays on loopback (``--interface 127.0.0.1``); hosts get names
of their own, so hosts of other tests on this machine's loopback do not count.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import sys

import pexpect
import pytest
from procs import LOOPBACK, ProcPool, base_env, run_p2pchat, start_host

pytestmark = pytest.mark.timeout(90)


def test_join_by_a_name_nobody_has_says_it_looks_and_lists_the_hosts_seen(
    procs: ProcPool,
) -> None:
    """The issue: ``join nosuchname`` waited in silence, then did not list
    the hosts it saw. Now: the looking line first, the hosts seen last, exit 2."""
    bob = f"bob-{secrets.token_hex(3)}"
    start_host(procs, procs.home("bob"), name=bob)
    wanted = f"nosuchname-{secrets.token_hex(3)}"
    home = procs.home("alice")
    result = run_p2pchat("join", wanted, "--timeout", "2", "--home", home, *LOOPBACK)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert lines[0] == f"p2pchat: looking for hosts named '{wanted}' (up to 2 s)", lines
    assert re.fullmatch(
        rf"p2pchat: no host named '{wanted}' found within 2 s; hosts seen: .*\b{bob}\b.*",
        lines[-1],
    ), lines
    assert len(lines) == 2, lines  # nothing in between, and no spinner off a terminal

    # JSON mode: the event as an object on stdout
    result = run_p2pchat("join", wanted, "--json", "--timeout", "1", "--home", home, *LOOPBACK)
    assert result.returncode == 2, result
    first = json.loads(result.stdout.splitlines()[0])
    assert (first["type"], first["name"], first["timeout"]) == ("looking", wanted, 1)


def test_on_a_terminal_the_looking_line_is_redrawn_in_place_and_gone_once_found(
    procs: ProcPool,
) -> None:
    """On a terminal the line counts the seconds in place (``\\r``, no new
    lines); once the host is found it is erased before anything else is
    printed, and the chat screen comes up without it."""
    bob = f"bob-{secrets.token_hex(3)}"
    env = base_env(TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1", COLUMNS="120", LINES="40")
    argv = ["-m", "p2pchat", "join", bob, "--name", "alice", "--timeout", "30"]
    child = pexpect.spawn(
        sys.executable,
        [*argv, "--home", str(procs.home("alice")), *LOOPBACK],
        env=env,
        dimensions=(40, 120),
        encoding="utf-8",
        codec_errors="replace",
        timeout=20,
    )
    raw = io.StringIO()
    child.logfile_read = raw
    draw = f"\rp2pchat: looking for hosts named '{bob}'\u2026 "
    try:
        child.expect_exact(draw)
        # redrawn: the same line again (a spinner frame and the seconds gone)
        child.expect(re.escape(draw) + r"[|/\\-] \d+ s of 30\x1b\[K")
        child.expect(re.escape(draw) + r"[|/\\-] \d+ s of 30\x1b\[K")
        start_host(procs, procs.home("bob"), name=bob)  # found while it looks
        child.expect(f"secure session with {re.escape(bob)}")
        child.send("/quit\r")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    out = raw.getvalue()
    assert "Traceback" not in out, out
    first, last = out.index(draw), out.rindex(draw)
    assert out.count(draw) >= 3, out
    assert "\n" not in out[first:last], out[first:last]  # in place: never a new line
    end = out.index("\x1b[K", last) + len("\x1b[K")
    assert out[end:].startswith("\r\x1b[K"), out[end : end + 80]  # erased at once
    assert "looking for hosts" not in out[end:], out[end:]
    assert out.index("trying ", end) > end  # what comes next starts on a clean line
    # the chat screen shows the connection and the session (it replays them);
    # line mode's copies are not left on the terminal under it after /quit
    for line in ("p2pchat: trying", "p2pchat: connected", "p2pchat: secure session"):
        assert line not in out, out
    assert child.exitstatus == 0, (child.exitstatus, child.signalstatus)
