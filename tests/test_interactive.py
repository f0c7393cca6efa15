"""The chat screen, driven for real in a pseudo-terminal and read through a
terminal emulator (tests/ttyscreen.py): what a person sees.

alice runs ``p2pchat join`` on a terminal (the full-screen application); bob
hosts in line mode. Every wait has a timeout.
"""

from __future__ import annotations

import re
import secrets
import signal
import socket

import pytest
from procs import (
    ProcPool,
    fingerprint_of,
    run_p2pchat,
    start_host,
    start_join,
    wait_session,
)
from ttyscreen import TtyScreen

pytestmark = pytest.mark.timeout(90)


def join_screen(
    procs: ProcPool, port: int, *extra: str, rows: int = 40, cols: int = 120, **env: str
) -> TtyScreen:
    home = procs.home("alice")
    args = ["join", "--connect", f"127.0.0.1:{port}", "--name", "alice", "--home", home, *extra]
    return TtyScreen(args, rows=rows, cols=cols, **env)


def test_interactive_join(procs: ProcPool) -> None:
    home_bob = procs.home("bob")
    fp_bob = fingerprint_of(home_bob)
    bob, port = start_host(procs, home_bob)
    tty = join_screen(procs, port)
    try:
        # first contact: the fingerprint and the SAS to compare
        tty.wait_for(r"secure session with bob \(first contact")
        tty.wait_for(re.escape(fp_bob))
        sas = tty.wait_for(r"short authentication string\s+(\d{3} \d{3})").group(1)
        assert wait_session(bob, "alice") == sas
        tty.wait_for(r"here: bob\s+1 not verified")
        tty.wait_for("you are alice; type /help for commands")

        tty.type("hello from the tty")
        bob.wait_for_line("stdout", "^alice: hello from the tty$")
        tty.wait_for(r"^\d\d:\d\d alice: hello from the tty  ✓$")  # one line, marked

        bob.send_line("hi alice \x1b[31mred")
        tty.wait_for(re.escape("bob: hi alice \\x1b[31mred"))

        tty.type("//etc/hosts")  # a leading slash, doubled
        bob.wait_for_line("stdout", "^alice: /etc/hosts$")
        tty.type("/me waves")
        bob.wait_for_line("stdout", "^alice: /me waves$")
        tty.wait_for(r"\* alice waves  ✓$")

        tty.type("/who")
        tty.wait_for(rf"bob\s+{re.escape(fp_bob)}\s+secure, not verified")
        tty.type("/help")
        for command in ("/who", "/verify", "/me", "/clear", "/log", "/quit"):
            tty.wait_for(re.escape(command))

        tty.type("/verify")
        tty.wait_for(re.escape(f"short authentication string: {sas}"))
        tty.wait_for(r"Mark verified \[y/N\]")
        tty.type("y")
        tty.wait_for("bob marked verified")
        tty.wait_for(r"here: bob\s*$")  # nobody unverified now

        tty.type("/nonsense")
        tty.wait_for("unknown command /nonsense")
        tty.child.send("\x1b[A")  # Up: what was sent last
        tty.wait_for(r"^> /nonsense$")
        tty.child.sendcontrol("u")
        tty.child.send("/ve\t")  # Tab completes a command ...
        tty.wait_for(r"^> /verify$")
        tty.child.sendcontrol("u")
        tty.child.send("/msg b\t")  # ... and a name
        tty.wait_for(r"^> /msg bob$")
        tty.child.sendcontrol("u")
        tty.wait_for(r"^>$")

        tty.type("/clear")
        tty.wait_gone("hello from the tty")

        tty.child.sendcontrol("d")  # everything delivered: it leaves without asking
        assert tty.exit_code() == 0
    finally:
        tty.close()
    bob.wait_for_line("stderr", "^p2pchat: alice left$")
    # commands are not messages
    assert bob.stdout == ["alice: hello from the tty", "alice: /etc/hosts", "alice: /me waves"]
    listing = run_p2pchat("trust", "list", "--home", procs.home("alice")).stdout
    assert re.search(rf"bob\s+{re.escape(fp_bob)}\s+verified,", listing), listing
    bob.terminate()
    assert bob.wait() == 0


def test_a_paste_is_one_message_shown_as_lines(procs: ProcPool) -> None:
    bob, port = start_host(procs, procs.home("bob"))
    tty = join_screen(procs, port, rows=30, cols=100)
    try:
        tty.wait_for("you are alice")
        wait_session(bob, "alice")
        block = "\n".join(f"line {n:02}" for n in range(1, 21))
        tty.paste(block + "\n")  # a trailing newline too, as a copied block often has
        tty.wait_for(r"^ +line 20$")  # in the input, not sent yet
        tty.type("")
        bob.wait_for_line("stdout", "^alice: line 01")
        # on alice's screen: real lines under the first, the mark after the last
        tty.wait_for(r"^ {13}line 19\n {13}line 20  ✓$")
        tty.child.send("typed\x1b\rby hand\r")  # Alt-Enter: a new line, not sent yet
        tty.wait_for(r"^\d\d:\d\d alice: typed\n {13}by hand  ✓$")
        bob.wait_for_line("stdout", "^alice: typed")
        tty.type("after the paste")
        bob.wait_for_line("stdout", "^alice: after the paste$")
        assert len(bob.stdout) == 3, bob.describe()  # the 20 lines were one message

        bob.send_line("party 🎉 time")
        tty.wait_for(r"^\d\d:\d\d bob: party 🎉 time$")

        words = " ".join(f"word{n:02}" for n in range(1, 26))
        bob.send_line(words)
        tty.wait_for(r"word25$")
        tty.resize(30, 60)
        tty.wait_for(r"^ {11}word08 ")  # drawn again for 60 columns
        text = tty.text()
        start = text.index("bob: word01")
        rows = [row for row in text[start:].split("\n") if "word" in row]
        # cut at words, each later row under the text (11 cells: "HH:MM bob: ")
        assert all(re.fullmatch(r"( *|bob: )(word\d\d ?)+", row) for row in rows), rows
        assert rows[1].startswith(" " * 11 + "word"), rows
        assert sum(row.count("word") for row in rows) == 25, rows
        assert tty.colours(), "no colour at all"
    finally:
        tty.close()


def test_a_reconnect_is_one_line_and_quit_asks_while_undelivered(procs: ProcPool) -> None:
    home_bob = procs.home("bob")
    bob, port = start_host(procs, home_bob)
    tty = join_screen(procs, port)
    try:
        tty.wait_for(r"short authentication string\s+\d{3} \d{3}")
        wait_session(bob, "alice")
        bob.popen.send_signal(signal.SIGKILL)
        bob.popen.wait(10)
        tty.wait_for(r"reconnecting")  # the status bar (and one log line)
        tty.type("while away")
        tty.wait_for(r"alice: while away  …$")
        tty.type("/quit")
        tty.wait_for(r"1 message\(s\) not delivered yet: leave anyway\? \[y/N\]")
        tty.type("n")

        bob2, _ = start_host(procs, home_bob, "--port", str(port))
        tty.wait_for(r"secure session with bob again \(known key, not verified: /verify\)")
        tty.wait_for(r"alice: while away  ✓$")
        bob2.wait_for_line("stdout", "^alice: while away$")
        text = tty.text()
        assert text.count("short authentication string") == 1, text  # not again
        assert len(re.findall(r"^\d\d:\d\d .*reconnecting", text, re.M)) == 1, text
        tty.type("/quit")
        assert tty.exit_code() == 0
    finally:
        tty.close()


def test_interactive_send_accept_and_reject(tmp_path, procs: ProcPool) -> None:
    """/send to a host that accepts files; a file offered to the screen is
    /accept'ed into the downloads directory, another /reject'ed."""
    home_bob = procs.home("bob")
    inbox, downloads = tmp_path / "bob-inbox", tmp_path / "downloads"
    bob, port = start_host(procs, home_bob, "--accept-files", inbox)
    outgoing = tmp_path / "from alice.txt"
    outgoing.write_text("alice's notes\n")
    tty = join_screen(procs, port, cols=160, XDG_DOWNLOAD_DIR=str(downloads))
    try:
        tty.wait_for("you are alice; type /help for commands")
        wait_session(bob, "alice")
        tty.type(f"/send {outgoing}")
        tty.wait_for(r"sent from alice\.txt to bob, SHA-256 verified by bob")
        assert (inbox / "from alice.txt").read_text() == "alice's notes\n"

        # bob's side of things, from a one-shot sender run by "carol"
        for name, text in (("wanted.txt", "yes please"), ("unwanted.txt", "no thanks")):
            (tmp_path / name).write_text(text)
        args = ["--to", "alice", "--connect", f"127.0.0.1:{port}", "--name", "carol",
                "--home", procs.home("carol"), "--interface", "127.0.0.1"]  # fmt: skip
        wanted = procs.start("send", tmp_path / "wanted.txt", *args, name="send-wanted")
        short = tty.wait_for(r"carol offers wanted\.txt \(10 B\): /accept ([0-9a-f]{8})").group(1)
        tty.type("/files")
        tty.wait_for(rf"{short}\s+wanted\.txt from carol: offered, 0% of 10 B")
        tty.type(f"/accept {short}")
        tty.wait_for(r"received wanted\.txt from carol, SHA-256 verified")
        assert wanted.wait(20) == 0, wanted.describe()
        assert (downloads / "wanted.txt").read_text() == "yes please"

        unwanted = procs.start("send", tmp_path / "unwanted.txt", *args, name="send-unwanted")
        tty.wait_for(r"carol offers unwanted\.txt")
        tty.type("/reject")
        assert unwanted.wait(20) == 1, unwanted.describe()
        assert unwanted.stderr[-1] == "p2pchat: error: alice refused unwanted.txt: declined"
        assert not (downloads / "unwanted.txt").exists()

        tty.type("/accept")
        tty.wait_for("no file offer waiting")
        tty.type("/send /no/such/file")
        tty.wait_for("no such file: /no/such/file")
        tty.child.sendcontrol("d")
        assert tty.exit_code() == 0
    finally:
        tty.close()
    bob.terminate()
    assert bob.wait() == 0


def test_a_transfer_is_one_line_and_a_bar_without_colour(tmp_path, procs: ProcPool) -> None:
    """A file coming in: a bar in the status bar while it runs, one entry in
    the chat updated in place; NO_COLOR leaves no colour on the screen."""
    bob, port = start_host(procs, procs.home("bob"))
    inbox = tmp_path / "inbox"
    home = procs.home("alice")
    args = ["join", "--connect", f"127.0.0.1:{port}", "--name", "alice", "--home", home,
            "--accept-files", inbox]  # fmt: skip
    tty = TtyScreen(args, rows=30, cols=120, NO_COLOR="1")
    try:
        tty.wait_for("you are alice")
        wait_session(bob, "alice")
        big = tmp_path / "big.bin"
        big.write_bytes(secrets.token_bytes(3 << 20))
        sender = procs.start("send", big, "--to", "alice", "--connect", f"127.0.0.1:{port}",
                             "--name", "carol", "--home", procs.home("carol"),
                             "--limit-rate", "1", "--interface", "127.0.0.1")  # fmt: skip
        tty.wait_for(r"↓ big\.bin \[#*-+\] \d+%")  # under way, in the status bar
        tty.wait_for(r"received big\.bin from carol, SHA-256 verified")
        assert sender.wait(30) == 0, sender.describe()
        tty.wait_gone(r"↓ big\.bin")
        text = tty.text()
        assert len(re.findall(r"receiv(ing|ed) big\.bin", text)) == 1, text
        assert (inbox / "big.bin").read_bytes() == big.read_bytes()
        tty.type("/quit")
        assert tty.exit_code() == 0
    finally:
        tty.close()
    assert tty.colours() == set(), tty.colours()


def test_log_records_stay_off_the_host_screen(tmp_path, procs: ProcPool) -> None:
    """A connection sending garbage makes the relay log a warning: not on the
    chat screen, in --log-file and in /log."""
    log_file = tmp_path / "host.log"
    args = ["host", "--name", "bob", "--home", procs.home("bob"), "--port", "0",
            "--log-file", log_file]  # fmt: skip
    tty = TtyScreen(args, rows=30, cols=120)
    try:
        port = int(tty.wait_for(r"hosting on port (\d+)").group(1))
        alice = start_join(procs, procs.home("alice"), "--connect", f"127.0.0.1:{port}")
        wait_session(alice, "bob")
        tty.wait_for(r"secure session with alice")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"\xff" * 64)
            raw.settimeout(10)
            while raw.recv(4096):  # until the relay closes it
                pass
        alice.send_line("after the garbage")
        tty.wait_for(r"alice: after the garbage")
        assert "WARNING p2pchat.net.relay: relay: closed" in log_file.read_text()
        assert "relay: closed" not in tty.text()
        tty.type("/log")
        tty.wait_for(r"\d\d,\d{3} WARNING p2pchat\.net\.relay: relay: closed")
        tty.type("/quit")
        assert tty.exit_code() == 0
    finally:
        tty.close()
    assert "relay: closed" not in re.sub(r"/log.*", "", tty.output, flags=re.S)
    # the screen said where it hosts; line mode's copies are not left under it
    assert "p2pchat: hosting as" not in tty.output
    assert "p2pchat: your fingerprint" not in tty.output


def test_the_host_ending_the_chat_ends_the_screen(procs: ProcPool) -> None:
    bob, port = start_host(procs, procs.home("bob"))
    tty = join_screen(procs, port)
    try:
        tty.wait_for("you are alice")
        wait_session(bob, "alice")
        bob.terminate()  # the host closes the chat for everyone
        assert tty.exit_code() == 1  # README: the chat ended, not by us
    finally:
        tty.close()
    assert bob.wait() == 0
    # after the full screen: why it ended, then leaving
    assert re.search(r"p2pchat: [^\n]*host[^\n]*\r?\n(\x1b[^\n]*)?p2pchat: leaving", tty.output), (
        tty.output[-300:]
    )


def test_a_refused_key_before_the_screen_still_shows_its_warning(procs: ProcPool) -> None:
    """The chat screen never starts when the host's key is refused: the warning
    held for it (what changed, what to do) is shown in lines, then the error."""
    bob, port = start_host(procs, procs.home("bob"))
    alice_home = procs.home("alice")
    meet = start_join(procs, alice_home, "--connect", f"127.0.0.1:{port}")
    wait_session(meet, "bob")
    meet.close_stdin()
    assert meet.wait() == 0, meet.describe()
    bob.terminate()
    assert bob.wait() == 0
    _, port = start_host(procs, procs.home("another-bob"))  # another key, the same name
    tty = join_screen(procs, port)
    try:
        assert tty.exit_code() == 3
    finally:
        tty.close()
    out = tty.output
    assert "THE KEY OF THIS PEER HAS CHANGED" in out, out[-600:]
    assert out.index("HAS CHANGED") < out.rindex("p2pchat: error: not connecting to bob"), out
