"""Every row of the README's exit-code table, with real processes.

Each test asserts the code and that the last line on stderr is one clear
``p2pchat...`` line, with no traceback anywhere. Every process outside a
network namespace stays on loopback (``--interface 127.0.0.1``, ``--connect
127.0.0.1:PORT``); the tests that need discovery to see only their own hosts
run in a namespace with a loopback of its own (root), else they skip.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pexpect
import pytest
from procs import (
    LOOPBACK,
    Proc,
    ProcPool,
    base_env,
    fingerprint_of,
    p2pchat_cmd,
    run_p2pchat,
    start_host,
    start_join,
    wait_session,
)

from p2pchat.proto.messages import ErrorCode, ErrorFrame, encode

pytestmark = pytest.mark.timeout(90)

TIMEOUT = 20


def last_line(lines: Sequence[str] | str, pattern: str, *, prefixed: bool = True) -> str:
    """stderr has no traceback, and its last line is one 'p2pchat...' line
    matching ``pattern`` (``prefixed=False``: the last line of a message that
    spans several, such as a list of hosts); returns that line."""
    text = lines if isinstance(lines, str) else "\n".join(lines)
    assert "Traceback" not in text, text
    rows = text.strip("\n").splitlines()
    assert rows, "nothing on stderr"
    last = rows[-1]
    assert last.startswith("p2pchat") or not prefixed, text
    assert re.search(pattern, last), text
    return last


def closed_port() -> int:
    """A loopback TCP port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def join_and_close(procs: ProcPool, home: Path, port: int, *extra: str, text: str) -> Proc:
    """alice joins 127.0.0.1:port in line mode, sends ``text``, ends stdin."""
    alice = start_join(procs, home, "--connect", f"127.0.0.1:{port}", "--timeout", "15", *extra)
    alice.send_line(text)
    alice.close_stdin()
    return alice


def spawn_tty_join(home: Path, port: int) -> pexpect.spawn:  # type: ignore[type-arg]
    """alice joins on the chat screen (a pty), as tests/test_interactive.py does."""
    env = base_env(TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1", COLUMNS="120", LINES="40")
    argv = ["-m", "p2pchat", "join", "--connect", f"127.0.0.1:{port}", "--name", "alice"]
    return pexpect.spawn(
        sys.executable,
        [*argv, "--home", str(home), *LOOPBACK],
        env=env,
        dimensions=(40, 120),
        encoding="utf-8",
        codec_errors="replace",
        timeout=TIMEOUT,
    )


def need_root(private_lo: list[str]) -> None:
    if not private_lo:
        pytest.skip("needs root: a loopback of its own, with only this test's hosts on it")


# ---------------------------------------------------------------- 0 done


def test_0_stdin_ends_and_everything_was_delivered(procs: ProcPool) -> None:
    bob, port = start_host(procs, procs.home("bob"))
    alice = join_and_close(procs, procs.home("alice"), port, text="all of it")
    assert alice.wait() == 0, alice.describe()
    bob.wait_for_line("stdout", "^alice: all of it$")
    assert "Traceback" not in "\n".join(alice.stderr)


# ---------------------------------------------------------------- 1 failed, or the chat ended


def test_1_the_host_closed_the_chat_line_mode(procs: ProcPool) -> None:
    bob, port = start_host(procs, procs.home("bob"))
    alice = start_join(procs, procs.home("alice"), "--connect", f"127.0.0.1:{port}")
    wait_session(alice, "bob")
    bob.terminate()  # a goodbye: the host ends the chat on purpose
    assert bob.wait() == 0, bob.describe()
    assert alice.wait() == 1, alice.describe()  # stdin still open: the end is the host's
    last_line(alice.stderr, "closed")


def test_1_the_host_closed_the_chat_on_the_chat_screen(procs: ProcPool) -> None:
    bob, port = start_host(procs, procs.home("bob"))
    child = spawn_tty_join(procs.home("alice"), port)
    try:
        child.expect("you are alice; type /help for commands")
        wait_session(bob, "alice")
        bob.terminate()
        assert bob.wait() == 0, bob.describe()
        child.expect("the host closed the chat")
        child.expect(pexpect.EOF)
        transcript = child.before or ""
    finally:
        child.close(force=True)
    assert "Traceback" not in transcript, transcript
    # README: the host leaving is 1 on both faces (it was 0 on the chat screen)
    assert child.exitstatus == 1, (child.exitstatus, child.signalstatus)


def test_0_leaving_the_chat_screen_on_purpose(procs: ProcPool) -> None:
    bob, port = start_host(procs, procs.home("bob"))
    child = spawn_tty_join(procs.home("alice"), port)
    try:
        child.expect("you are alice; type /help for commands")
        child.send("/quit\r")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, (child.exitstatus, child.signalstatus)
    bob.wait_for_line("stderr", "^p2pchat: alice left$")


def test_1_the_host_cannot_be_reached(procs: ProcPool) -> None:
    port = closed_port()
    result = run_p2pchat(
        "join", "--home", procs.home("alice"), *LOOPBACK, "--connect", f"127.0.0.1:{port}"
    )
    assert result.returncode == 1, result
    last_line(result.stderr, "could not connect")


@pytest.fixture
def relay_from_the_future() -> Iterator[int]:
    """A listener on loopback that answers any hello as a relay speaking only
    a future protocol version would: an error frame, then close."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(TIMEOUT)
    port: int = server.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(TIMEOUT)
            try:
                conn.recv(65536)  # the hello
                conn.sendall(
                    encode(ErrorFrame("incompatible version: relay speaks [9]", ErrorCode.VERSION))
                )
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        server.close()
        thread.join(TIMEOUT)


def test_1_incompatible_version(procs: ProcPool, relay_from_the_future: int) -> None:
    result = run_p2pchat(
        "join",
        "--home",
        procs.home("alice"),
        *LOOPBACK,
        "--connect",
        f"127.0.0.1:{relay_from_the_future}",
        "--timeout",
        "5",
    )
    assert result.returncode == 1, result
    last_line(result.stderr, "incompatible version")


# ---------------------------------------------------------------- 2 bad usage or input


def test_2_bad_usage(procs: ProcPool) -> None:
    result = run_p2pchat("join", "--timeout", "soon", "--home", procs.home("alice"), *LOOPBACK)
    assert result.returncode == 2, result
    last_line(result.stderr, "--timeout")


def test_2_a_line_that_cannot_be_sent(procs: ProcPool) -> None:
    """Refused locally (over 64 KiB): said at once, the rest is sent, and the
    run does not end 0 (it did, as if all had gone)."""
    bob, port = start_host(procs, procs.home("bob"))
    alice = start_join(procs, procs.home("alice"), "--connect", f"127.0.0.1:{port}")
    wait_session(alice, "bob")
    alice.send_line("x" * (64 * 1024 + 1))
    alice.send_line("the next line")
    alice.close_stdin()
    assert alice.wait() == 2, alice.describe()
    bob.wait_for_line("stdout", "^alice: the next line$")
    assert any("line not sent: text over 65536 bytes" in line for line in alice.stderr)
    last_line(alice.stderr, r"^p2pchat: error: 1 line\(s\) of stdin not sent; the last: text over")


def test_2_a_line_the_host_cannot_send(procs: ProcPool) -> None:
    """The host in line mode serves on after a refused line; stopped, it exits 2."""
    bob, _ = start_host(procs, procs.home("bob"))
    bob.send_line("y" * (64 * 1024 + 1))
    bob.wait_for_line("stderr", "line not sent: text over 65536 bytes")
    bob.terminate()
    assert bob.wait() == 2, bob.describe()
    last_line(bob.stderr, r"^p2pchat: error: 1 line\(s\) of stdin not sent")


def test_2_no_host_of_that_name(procs: ProcPool) -> None:
    wanted = f"nobody-{secrets.token_hex(4)}"
    result = run_p2pchat("join", wanted, "--home", procs.home("alice"), *LOOPBACK, "--timeout", "1")
    assert result.returncode == 2, result
    last_line(result.stderr, re.escape(repr(wanted)))


def test_2_no_host_found(private_lo: list[str], procs: ProcPool) -> None:
    need_root(private_lo)
    alice = start_join(procs, procs.home("alice"), "--timeout", "1", prefix=private_lo)
    alice.close_stdin()
    assert alice.wait() == 2, alice.describe()
    last_line(alice.stderr, "no p2pchat host found within 1 s")


def test_2_several_hosts_and_none_named(private_lo: list[str], procs: ProcPool) -> None:
    need_root(private_lo)
    start_host(procs, procs.home("bob"), "--port", "0", prefix=private_lo)
    start_host(procs, procs.home("carol"), "--port", "0", name="carol", prefix=private_lo)
    alice = start_join(procs, procs.home("alice"), "--timeout", "3", prefix=private_lo)
    alice.close_stdin()
    assert alice.wait() == 2, alice.describe()
    assert alice.stderr[0] == "p2pchat: looking for hosts (up to 3 s)", alice.describe()
    assert alice.stderr[1] == "p2pchat: 2 hosts found:", alice.describe()
    # the list is part of the one message; its last line says how to pick one
    last_line(alice.stderr, r"^join one by its name .*'p2pchat join (bob|carol)@", prefixed=False)


def _unusable_home(tmp_path: Path, how: str) -> tuple[Path, list[str]]:
    """A --home that cannot be used, and the command prefix that makes it so."""
    if how == "cannot-be-created":
        (tmp_path / "a-file").write_text("not a directory")
        return tmp_path / "a-file" / "home", []
    home = tmp_path / "ro-home"
    home.mkdir()
    if how == "read-only-with-key":  # the key is there: the lock is the first write
        assert run_p2pchat("id", "--home", home).returncode == 0
    if os.geteuid() != 0:
        home.chmod(0o500)
        return home, []
    # root writes anywhere: make the home read-only in a mount namespace of its own
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("a read-only home as root needs unshare -m")
    script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
    return home, ["unshare", "-m", "sh", "-c", script, str(home)]


@pytest.mark.parametrize("how", ["cannot-be-created", "read-only", "read-only-with-key"])
def test_2_home_unusable(tmp_path: Path, how: str) -> None:
    """One cause, one code: a read-only home gave 1, one that cannot be created 2."""
    home, prefix = _unusable_home(tmp_path, how)
    argv = ["join", "--home", str(home), *LOOPBACK, "--connect", f"127.0.0.1:{closed_port()}"]
    result = subprocess.run(
        [*prefix, *p2pchat_cmd(*argv)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=TIMEOUT,
        env=base_env(),
        check=False,
    )
    assert result.returncode == 2, result
    last_line(
        result.stderr, rf"^p2pchat: error: cannot (use|create) p2pchat home {re.escape(str(home))}"
    )
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("second", ["join", "host", "send"])
def test_2_a_second_process_on_the_same_home(procs: ProcPool, tmp_path: Path, second: str) -> None:
    home = procs.home("alice")
    bob, port = start_host(procs, procs.home("bob"))
    first = start_join(procs, home, "--connect", f"127.0.0.1:{port}")
    wait_session(first, "bob")
    to = ["--connect", f"127.0.0.1:{port}", "--timeout", "5"]
    argv = {
        "join": ["join", "--name", "alice", *to],
        "host": ["host", "--name", "alice", "--port", "0"],
        "send": ["send", str(tmp_path / "a-file"), "--to", "bob", *to],
    }[second]
    (tmp_path / "a-file").write_bytes(b"payload")
    result = run_p2pchat(*argv, "--home", home, *LOOPBACK)
    assert result.returncode == 2, result
    line = last_line(result.stderr, "another p2pchat is using")
    assert line == (
        f"p2pchat: error: another p2pchat is using {home} (pid {first.pid}); "
        "use another --home to run two at once"
    )
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    # the running one is untouched, and read-only commands take no lock
    assert run_p2pchat("id", "--home", home).returncode == 0
    assert run_p2pchat("trust", "list", "--home", home).returncode == 0
    first.send_line("still here")
    bob.wait_for_line("stdout", "^alice: still here$")


def test_a_killed_process_leaves_no_lock(procs: ProcPool) -> None:
    home = procs.home("alice")
    bob, port = start_host(procs, procs.home("bob"))
    first = start_join(procs, home, "--connect", f"127.0.0.1:{port}")
    wait_session(first, "bob")
    first.popen.send_signal(signal.SIGKILL)
    first.popen.wait(TIMEOUT)
    again = join_and_close(procs, home, port, text="after the crash")
    assert again.wait() == 0, again.describe()
    bob.wait_for_line("stdout", "^alice: after the crash$")


# ---------------------------------------------------------------- 3 refused for trust


def test_3_key_mismatch(procs: ProcPool) -> None:
    _, port = start_host(procs, procs.home("bob"))
    wrong = fingerprint_of(procs.home("someone-else"))
    alice = join_and_close(
        procs, procs.home("alice"), port, "--expect-fingerprint", wrong, text="nope"
    )
    assert alice.wait() == 3, alice.describe()
    last_line(alice.stderr, "not connecting to bob: its key is not the one expected")


def test_3_refused_by_require_known(procs: ProcPool) -> None:
    _, port = start_host(procs, procs.home("bob"))
    alice = join_and_close(procs, procs.home("alice"), port, "--require-known", text="nope")
    assert alice.wait() == 3, alice.describe()
    last_line(alice.stderr, "--require-known")


# ---------------------------------------------------------------- 130 interrupted


@pytest.mark.parametrize("command", ["join", "send"])
def test_130_interrupted_before_there_is_a_chat(
    procs: ProcPool, tmp_path: Path, command: str
) -> None:
    """Ctrl-C while connecting (a host that accepts and then says nothing) ends
    the command at once, not at --timeout, and says so: nothing to leave yet."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(TIMEOUT)
    port: int = server.getsockname()[1]
    target = ["--connect", f"127.0.0.1:{port}", "--timeout", "60"]
    if command == "send":
        (tmp_path / "f.txt").write_text("x")
        alice = procs.start(
            "send",
            tmp_path / "f.txt",
            "--to",
            "bob",
            "--home",
            procs.home("alice"),
            *LOOPBACK,
            *target,
        )
    else:
        alice = start_join(procs, procs.home("alice"), *target)
    try:
        conn, _ = server.accept()  # it is connecting now
        with conn:
            conn.recv(65536)  # its hello, never answered
            alice.popen.send_signal(signal.SIGINT)
            assert alice.wait(TIMEOUT) == 130, alice.describe()
    finally:
        server.close()
    last_line(alice.stderr, "^p2pchat: interrupted$")


def test_130_interrupted_while_waiting_for_the_hosts_session(procs: ProcPool) -> None:
    """Ctrl-C after the relay took us but before the host's secure session:
    130 and nothing else said; the join leaves in order (it used to add that
    "the host's relay closed the connection", which it had not)."""
    silent = Proc(
        [sys.executable, str(Path(__file__).with_name("silent_host.py")), str(procs.home("bob"))],
        name="silent-host",
    )
    procs.procs.append(silent)
    port = int(silent.wait_for_line("stdout", r"^\d+$"))
    alice = start_join(procs, procs.home("alice"), "--connect", f"127.0.0.1:{port}")
    alice.wait_for_line("stderr", rf"^p2pchat: connected to 127\.0\.0\.1:{port}$")
    alice.popen.send_signal(signal.SIGINT)
    assert alice.wait(TIMEOUT) == 130, alice.describe()
    last_line(alice.stderr, "^p2pchat: interrupted$")
    assert not any("closed" in ln or "lost" in ln for ln in alice.stderr), alice.describe()


def test_130_interrupted_while_doctor_browses(tmp_path: Path) -> None:
    """Ctrl-C in a command with no chat at all: 130, not 0 ("a host was found")."""
    child = subprocess.Popen(
        p2pchat_cmd("doctor", "--timeout", "60", "--home", tmp_path / "home", *LOOPBACK),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=base_env(),
        # Python takes Ctrl-C only if it was not ignored when it started (a
        # shell's background job ignores it): the child starts with the default
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "interfaces:\n"  # running, handler installed
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=TIMEOUT)
    finally:
        child.kill()
    assert child.returncode == 130, (out, err)
    last_line(err, "^p2pchat: interrupted$")


# ---------------------------------------------------------------- 4 not delivered in time


def test_4_not_delivered_within_timeout(procs: ProcPool) -> None:
    bob, port = start_host(procs, procs.home("bob"))
    alice = start_join(
        procs, procs.home("alice"), "--connect", f"127.0.0.1:{port}", "--timeout", "2"
    )
    wait_session(alice, "bob")
    bob.popen.send_signal(signal.SIGSTOP)  # the host hangs: nothing is acknowledged
    try:
        alice.send_line("written while the host hung")
        alice.close_stdin()
        assert alice.wait(TIMEOUT) == 4, alice.describe()
        last_line(alice.stderr, r"1 message\(s\) not delivered within 2 s")
    finally:
        bob.popen.send_signal(signal.SIGKILL)
        bob.popen.wait(TIMEOUT)


def test_4_stopped_with_messages_not_delivered(procs: ProcPool) -> None:
    """Ctrl-C in line mode while something sent is not acknowledged: 4 and
    the line that says so (it was 0, in silence)."""
    bob, port = start_host(procs, procs.home("bob"))
    alice = start_join(procs, procs.home("alice"), "--connect", f"127.0.0.1:{port}", "--json")
    alice.wait_for_event("session", peer="bob")
    bob.popen.send_signal(signal.SIGSTOP)  # the host hangs: nothing is acknowledged
    try:
        alice.send_line("written while the host hung")
        alice.wait_for_event("sent", text="written while the host hung")
        alice.popen.send_signal(signal.SIGINT)
        assert alice.wait(TIMEOUT) == 4, alice.describe()
        last_line(alice.stderr, r"1 message\(s\) not delivered when stopped: bob is missing 1")
    finally:
        bob.popen.send_signal(signal.SIGKILL)
        bob.popen.wait(TIMEOUT)
