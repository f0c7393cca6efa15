"""The interactive chat screen, driven for real in a pseudo-terminal.

alice runs ``p2pchat join`` under pexpect (stdin and stdout are a TTY, so the
prompt_toolkit screen runs); bob hosts in line mode. Every expect has a timeout.
"""

from __future__ import annotations

import re
import sys

import pexpect
import pytest
from procs import (
    LOOPBACK,
    ProcPool,
    base_env,
    fingerprint_of,
    run_p2pchat,
    start_host,
    wait_session,
)

pytestmark = pytest.mark.timeout(90)

TIMEOUT = 20


def test_interactive_join(procs: ProcPool) -> None:
    home_bob, home_alice = procs.home("bob"), procs.home("alice")
    fp_bob = fingerprint_of(home_bob)
    bob, port = start_host(procs, home_bob)

    # Nothing in the test answers cursor-position requests: tell prompt_toolkit
    # not to ask (a real terminal answers them).
    env = base_env(TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1", COLUMNS="120", LINES="40")
    argv = [
        "-m",
        "p2pchat",
        "join",
        "--connect",
        f"127.0.0.1:{port}",
        "--name",
        "alice",
        "--home",
        str(home_alice),
        *LOOPBACK,
    ]
    child = pexpect.spawn(
        sys.executable,
        argv,
        env=env,
        dimensions=(40, 120),
        encoding="utf-8",
        codec_errors="replace",
        timeout=TIMEOUT,
    )
    try:
        # the session notice (with the SAS to compare) comes before the screen starts
        child.expect(r"secure session with bob \(first contact")
        child.expect(re.escape(fp_bob))
        child.expect(r"short authentication string:?\s+(\d{3} \d{3})")
        sas = child.match.group(1)
        assert wait_session(bob, "alice") == sas
        child.expect("you are alice; type /help for commands")

        child.send("hello from the tty\r")
        bob.wait_for_line("stdout", "^alice: hello from the tty$")
        child.expect("delivered: hello from the tty")

        bob.send_line("hi alice \x1b[31mred")
        child.expect(re.escape("bob: hi alice \\x1b[31mred"))

        child.send("/who\r")
        child.expect(rf"bob\s+{re.escape(fp_bob)}\s+secure, not verified")

        child.send("/help\r")
        for command in ("/who", "/verify", "/quit"):
            child.expect(re.escape(command))

        child.send("/verify\r")
        child.expect(re.escape(f"short authentication string: {sas}"))
        child.expect(r"Mark verified \[y/N\]")
        child.send("y\r")
        child.expect("bob marked verified")

        child.send("/nonsense\r")
        child.expect("unknown command /nonsense")

        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, (child.exitstatus, child.signalstatus)
    bob.wait_for_line("stderr", "^p2pchat: alice left$")
    assert bob.stdout == ["alice: hello from the tty"]  # commands are not messages

    listing = run_p2pchat("trust", "list", "--home", home_alice).stdout
    assert re.search(rf"bob\s+{re.escape(fp_bob)}\s+verified,", listing), listing
    bob.terminate()
    assert bob.wait() == 0
