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


def test_interactive_send_accept_and_reject(tmp_path, procs: ProcPool) -> None:
    """/send to a host that accepts files; a file offered to the screen is
    /accept'ed into the downloads directory, another /reject'ed."""
    home_bob, home_alice = procs.home("bob"), procs.home("alice")
    inbox, downloads = tmp_path / "bob-inbox", tmp_path / "downloads"
    bob, port = start_host(procs, home_bob, "--accept-files", inbox)
    outgoing = tmp_path / "from alice.txt"
    outgoing.write_text("alice's notes\n")
    env = base_env(
        TERM="xterm",
        PROMPT_TOOLKIT_NO_CPR="1",
        COLUMNS="160",
        LINES="40",
        XDG_DOWNLOAD_DIR=str(downloads),
    )
    argv = ["-m", "p2pchat", "join", "--connect", f"127.0.0.1:{port}", "--name", "alice",
            "--home", str(home_alice), *LOOPBACK]  # fmt: skip
    child = pexpect.spawn(
        sys.executable,
        argv,
        env=env,
        dimensions=(40, 160),
        encoding="utf-8",
        codec_errors="replace",
        timeout=TIMEOUT,
    )
    try:
        child.expect("you are alice; type /help for commands")
        wait_session(bob, "alice")
        child.send(f"/send {outgoing}\r")
        child.expect(r"sent from alice\.txt to bob, SHA-256 verified by bob")
        assert (inbox / "from alice.txt").read_text() == "alice's notes\n"

        # bob's side of things, from a one-shot sender run by "carol"
        for name, text in (("wanted.txt", "yes please"), ("unwanted.txt", "no thanks")):
            (tmp_path / name).write_text(text)
        args = ["--to", "alice", "--connect", f"127.0.0.1:{port}", "--name", "carol",
                "--home", procs.home("carol"), *LOOPBACK]  # fmt: skip
        wanted = procs.start("send", tmp_path / "wanted.txt", *args, name="send-wanted")
        child.expect(r"carol offers wanted\.txt \(10 B\): /accept ([0-9a-f]{8})")
        short = child.match.group(1)
        child.send("/files\r")
        child.expect(rf"{short}\s+wanted\.txt from carol: offered, 0% of 10 B")
        child.send(f"/accept {short}\r")
        child.expect(r"received wanted\.txt from carol, SHA-256 verified")
        assert wanted.wait(20) == 0, wanted.describe()
        assert (downloads / "wanted.txt").read_text() == "yes please"

        unwanted = procs.start("send", tmp_path / "unwanted.txt", *args, name="send-unwanted")
        child.expect(r"carol offers unwanted\.txt")
        child.send("/reject\r")
        assert unwanted.wait(20) == 1, unwanted.describe()
        assert unwanted.stderr[-1] == "p2pchat: error: alice refused unwanted.txt: declined"
        assert not (downloads / "unwanted.txt").exists()

        child.send("/accept\r")
        child.expect("no file offer waiting")
        child.send("/send /no/such/file\r")
        child.expect("no such file: /no/such/file")
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, (child.exitstatus, child.signalstatus)
    bob.terminate()
    assert bob.wait() == 0
