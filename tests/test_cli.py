"""The command line end to end, on loopback only (no root needed).

Real ``p2pchat host`` and ``p2pchat join`` processes, every one bound to
127.0.0.1 (``--interface 127.0.0.1``: the mDNS traffic stays on this machine
too), each identity in its own ``--home``. Line mode and JSON mode as README.md
describes them, exit codes, one-line errors, and group routing through the
relay with three participants.
"""

from __future__ import annotations

import re
import secrets
import socket
from pathlib import Path

import pytest
from procs import (
    FP_RE,
    LOOPBACK,
    Proc,
    ProcPool,
    after_looking,
    fingerprint_of,
    run_p2pchat,
    start_host,
    start_join,
    wait_session,
)

pytestmark = pytest.mark.timeout(90)

README = Path(__file__).resolve().parent.parent / "README.md"

#: What alice types (the empty line is not sent) and what bob must print for each.
ALICE_LINES = [
    "hello bob",
    "",
    "grüße aus Köln — 世界 🎉",
    "evil \x1b[2J\x1b]0;pwned\x07 done",
    "tab\there, rtl \u202eoverride",
    "  leading and trailing spaces  ",
    "bob: a fake line from bob",
]
BOB_SEES = [
    "alice: hello bob",
    "alice: grüße aus Köln — 世界 🎉",
    "alice: evil \\x1b[2J\\x1b]0;pwned\\x07 done",
    "alice: tab\\x09here, rtl \\u202eoverride",
    "alice:   leading and trailing spaces  ",
    "alice: bob: a fake line from bob",
]
BOB_LINES = ["hi alice", "ünïcödé ✓", "bell \x07 and esc \x1b[1m"]
ALICE_SEES = ["bob: hi alice", "bob: ünïcödé ✓", "bob: bell \\x07 and esc \\x1b[1m"]


def assert_one_line_error(stderr: str) -> str:
    """stderr is exactly one line, 'p2pchat: ...', and no traceback; returns it."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip("\n").splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("p2pchat:"), stderr
    return lines[0]


def closed_port() -> int:
    """A loopback TCP port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# ---------------------------------------------------------------- line mode


@pytest.mark.parametrize("how", ["mdns", "connect"])
def test_line_mode_both_ways(private_lo: list[str], procs: ProcPool, how: str) -> None:
    """alice's lines reach bob as 'alice: TEXT' in order, escaped, and back;
    join exits 0 at EOF, the host reports the leave and exits 0 on SIGTERM.
    With "mdns", join is given no name and no address: the one host it sees
    on loopback is bob (in a loopback-only namespace when root, so that other
    hosts running on this machine cannot interfere)."""
    prefix = private_lo if how == "mdns" else []
    bob, port = start_host(procs, procs.home("bob"), prefix=prefix)
    connect = ["--connect", f"127.0.0.1:{port}"] if how == "connect" else []
    alice = start_join(procs, procs.home("alice"), "--timeout", "15", *connect, prefix=prefix)

    alice.wait_for_line("stderr", rf"^p2pchat: connected to 127\.0\.0\.1:{port}$")
    sas_alice = wait_session(alice, "bob")
    sas_bob = wait_session(bob, "alice")
    assert sas_alice == sas_bob

    for line in ALICE_LINES:
        alice.send_line(line)
    assert bob.wait_for_lines("stdout", len(BOB_SEES)) == BOB_SEES

    for line in BOB_LINES:
        bob.send_line(line)
    assert alice.wait_for_lines("stdout", len(ALICE_SEES)) == ALICE_SEES

    # the host keeps serving after its own stdin ends
    bob.close_stdin()
    alice.send_line("after bob's EOF")
    bob.wait_for_line("stdout", "^alice: after bob's EOF$")

    alice.close_stdin()
    assert alice.wait() == 0, alice.describe()
    bob.wait_for_line("stderr", r"^p2pchat: alice left$")
    # nothing else reached either side, and no raw control character got through
    assert bob.stdout == [*BOB_SEES, "alice: after bob's EOF"]
    assert alice.stdout == ALICE_SEES
    for text in (*bob.stdout, *alice.stdout):
        assert not re.search(r"[\x00-\x1f\x7f\u202e]", text), text
    both = "\n".join(alice.stderr + bob.stderr)
    assert "Traceback" not in both, both

    bob.terminate()
    assert bob.wait() == 0, bob.describe()
    assert bob.stderr[-1] == "p2pchat: host stopped"


# ---------------------------------------------------------------- JSON mode


def test_json_mode(private_lo: list[str], procs: ProcPool) -> None:
    """--json on both sides: hosting, join, session (same SAS, fingerprints as
    'p2pchat id' prints them), sent/message/delivered with matching ids, leave."""
    home_bob, home_alice = procs.home("bob"), procs.home("alice")
    fp_bob, fp_alice = fingerprint_of(home_bob), fingerprint_of(home_alice)
    assert fp_bob != fp_alice

    bob, port = start_host(procs, home_bob, "--json", prefix=private_lo)
    hosting = bob.wait_for_event("hosting")
    assert hosting["name"] == "bob"
    assert hosting["port"] == port
    assert hosting["addresses"] == ["127.0.0.1"]
    assert hosting["fingerprint"] == fp_bob

    # what 'discover' sees is what the host advertises
    discover = procs.start(
        "discover", "--home", home_alice, *LOOPBACK, "--json", "--timeout", "1",
        name="discover", prefix=private_lo,
    )  # fmt: skip
    assert discover.wait() == 0, discover.describe()
    seen = [e for e in discover.json_events() if e["fingerprint"] == fp_bob]
    assert len(seen) == 1, discover.describe()
    assert seen[0]["name"] == "bob"
    assert seen[0]["port"] == port
    assert seen[0]["addresses"] == ["127.0.0.1"]
    assert seen[0]["version"] == 1

    # by name, through mDNS
    alice = start_join(procs, home_alice, "bob", "--json", "--timeout", "15", prefix=private_lo)
    s_alice = alice.wait_for_event("session", peer="bob")
    s_bob = bob.wait_for_event("session", peer="alice")
    assert re.fullmatch(r"\d{3} \d{3}", s_alice["sas"])
    assert s_alice["sas"] == s_bob["sas"]
    assert s_alice["fingerprint"] == fp_bob
    assert s_bob["fingerprint"] == fp_alice
    assert s_alice["trust"] == s_bob["trust"] == "new"
    assert alice.wait_for_event("join", peer="bob")["fingerprint"] == fp_bob
    assert bob.wait_for_event("join", peer="alice")["fingerprint"] == fp_alice

    texts = ["one", "zwei ✓", "with \x1b[31m escape", 'quote " and \\ backslash']
    for text in texts:
        alice.send_line(text)
    got = [bob.wait_for_event("message", text=t) for t in texts]
    assert [m["text"] for m in bob.json_events("message")] == texts  # in order, raw in JSON
    for message in got:
        assert message["peer"] == "alice"
        assert message["fingerprint"] == fp_alice
        assert message["peer_id"] == s_bob["peer_id"]
        assert re.fullmatch(r"[0-9a-f]{32}", message["id"])
    sent = [alice.wait_for_event("sent", text=t) for t in texts]
    assert alice.json_events("sent") == sent
    assert all(s["to"] == ["bob"] for s in sent)
    assert [s["id"] for s in sent] == [m["id"] for m in got]
    for s in sent:
        delivered = alice.wait_for_event("delivered", id=s["id"])
        assert delivered["peer"] == "bob"
        assert delivered["fingerprint"] == fp_bob
        assert delivered["complete"] is True

    bob.send_line("from bob")
    reply = alice.wait_for_event("message", text="from bob")
    assert reply["peer"] == "bob"
    assert reply["fingerprint"] == fp_bob
    assert bob.wait_for_event("delivered", id=reply["id"])["peer"] == "alice"

    alice.close_stdin()
    assert alice.wait() == 0, alice.describe()
    leave = bob.wait_for_event("leave", peer="alice")
    assert leave["clean"] is True
    assert leave["fingerprint"] == fp_alice
    bob.terminate()
    assert bob.wait() == 0, bob.describe()

    for proc in (alice, bob):
        for event in proc.json_events():  # every stdout line is one JSON object
            assert isinstance(event["type"], str)
            assert isinstance(event["time"], int | float)
        assert not proc.json_events("error")
        assert not proc.json_events("refused")


# ---------------------------------------------------------------- errors


def test_no_host_found(private_lo: list[str], procs: ProcPool) -> None:
    # procs.home() comes with a key: the time below is spent on discovery only
    alice = start_join(procs, procs.home("alice"), "--timeout", "1", prefix=private_lo)
    alice.close_stdin()
    assert alice.wait() == 2, alice.describe()
    # the looking line (what it waits for), then the one-line error
    line = assert_one_line_error("\n".join(after_looking(alice.stderr, None, "1")))
    assert "no p2pchat host found within 1 s" in line
    assert "--connect" in line
    assert alice.stdout == []


def test_named_host_not_found(procs: ProcPool) -> None:
    wanted = f"nobody-{secrets.token_hex(4)}"
    result = run_p2pchat("join", wanted, "--home", procs.home("alice"), *LOOPBACK, "--timeout", "1")
    assert result.returncode == 2, result
    line = assert_one_line_error("\n".join(after_looking(result.stderr.splitlines(), wanted, "1")))
    assert repr(wanted) in line
    # the other hosts seen, or (none seen) what was heard and where to look next
    assert "hosts seen:" in line or "p2pchat doctor" in line, line


def test_connect_refused(procs: ProcPool) -> None:
    port = closed_port()
    result = run_p2pchat(
        "join", "--home", procs.home("alice"), *LOOPBACK, "--connect", f"127.0.0.1:{port}"
    )
    assert result.returncode == 1, result
    line = assert_one_line_error(result.stderr)
    assert f"127.0.0.1:{port}" in line
    assert "could not connect" in line


@pytest.mark.parametrize(
    "value", ["127.0.0.1:0", "127.0.0.1:99999", ":80", "[::1", "[::1]x", "127.0.0.1:abc"]
)
def test_bad_connect_value(procs: ProcPool, value: str) -> None:
    result = run_p2pchat("join", "--home", procs.home("alice"), *LOOPBACK, "--connect", value)
    assert result.returncode == 2, result  # README: 2 is bad usage
    line = assert_one_line_error(result.stderr)
    assert "--connect wants ADDR[:PORT]" in line
    assert repr(value) in line


@pytest.mark.parametrize(
    "args",
    [
        ["join", "--timeout", "0"],
        ["join", "--timeout", "soon"],
        ["host", "--port", "70000"],
        ["join", "--expect-fingerprint", "not-a-fingerprint"],
        ["bogus"],
    ],
)
def test_bad_arguments(procs: ProcPool, args: list[str]) -> None:
    result = run_p2pchat(*args, "--home", procs.home("x"), *LOOPBACK)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert "usage:" in result.stderr


def test_id(procs: ProcPool) -> None:
    home = procs.home("bob", fresh=True)
    assert not any(home.iterdir())
    first = run_p2pchat("id", "--home", home)
    assert first.returncode == 0, first
    assert FP_RE.fullmatch(first.stdout.strip())
    assert len(first.stdout.strip().split("-")) == 13
    again = run_p2pchat("id", "--home", home)
    assert again.stdout == first.stdout  # the key is created once, then reused
    other = run_p2pchat("id", "--home", procs.home("alice", fresh=True))
    assert other.stdout != first.stdout


def _readme_flags() -> dict[str, set[str]]:
    """Flags README.md documents, per command (from 'Commands and flags')."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### Commands and flags", 1)[1].split("Exit codes:", 1)[0]
    flags: dict[str, set[str]] = {}
    shared: set[str] = set()
    if "Relay limits (`host` only" in section:
        relay = section.split("Relay limits (`host` only", 1)[1].split("\n\n", 1)[0]
        flags["host"] = set(re.findall(r"--[a-z][a-z-]*", relay))
    for line in section.splitlines():
        row = re.match(r"\| `p2pchat (\w+)", line)
        if row:
            flags.setdefault(row.group(1), set()).update(re.findall(r"--[a-z][a-z-]*", line))
        elif line.startswith("- `join "):
            flags.setdefault("join", set()).update(re.findall(r"--[a-z][a-z-]*", line))
        elif line.startswith("- `-"):
            head = line.split(":", 1)[0]
            shared.update(re.findall(r"(?<![\w-])--?[a-z][a-z-]*", head))
    for command in ("host", "join"):
        flags[command] |= shared
    return flags


def test_help_mentions_every_documented_flag() -> None:
    documented = _readme_flags()
    # the parse itself must have found the README's table
    assert {"host", "join", "send", "discover", "id", "trust"} <= documented.keys()
    assert {"--name", "--port", "--interface", "--json", "--home", "--log-file"} <= documented[
        "host"
    ]
    assert {"--connect", "--timeout", "--expect-fingerprint", "--require-known", "-v"} <= (
        documented["join"]
    )

    top = run_p2pchat("--help")
    assert top.returncode == 0, top
    for command in documented:
        assert re.search(rf"\b{command}\b", top.stdout), command
    for command in ("host", "join", "discover", "send"):
        result = run_p2pchat(command, "--help")
        assert result.returncode == 0, result
        for flag in documented[command]:
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", result.stdout), (
                f"{command} --help does not mention {flag}"
            )
    join_help = run_p2pchat("join", "--help").stdout
    assert "NAME[@FP]" in join_help  # the host to join, as README's table writes it
    assert "bob@JG3F" in join_help
    for action in ("list", "forget", "verify"):
        assert action in run_p2pchat("trust", "--help").stdout


# ---------------------------------------------------------------- group chat


def test_three_participants_group_routing(procs: ProcPool) -> None:
    """A message from any one of host, alice and carol reaches both others."""
    bob, port = start_host(procs, procs.home("bob"))
    target = ["--connect", f"127.0.0.1:{port}", "--timeout", "15"]
    alice = start_join(procs, procs.home("alice"), *target)
    wait_session(alice, "bob")
    carol = start_join(procs, procs.home("carol"), *target, name="carol")
    sas_ca = wait_session(carol, "alice")
    wait_session(carol, "bob")
    sas_ac = wait_session(alice, "carol")
    assert sas_ac == sas_ca
    wait_session(bob, "alice")
    wait_session(bob, "carol")

    alice.send_line("from alice to all")
    bob.wait_for_line("stdout", "^alice: from alice to all$")
    carol.wait_for_line("stdout", "^alice: from alice to all$")
    carol.send_line("carol here")
    bob.wait_for_line("stdout", "^carol: carol here$")
    alice.wait_for_line("stdout", "^carol: carol here$")
    bob.send_line("bob to both")
    alice.wait_for_line("stdout", "^bob: bob to both$")
    carol.wait_for_line("stdout", "^bob: bob to both$")

    # join exits 0 only once every recipient acknowledged: both were there
    alice.close_stdin()
    assert alice.wait() == 0, alice.describe()
    carol.wait_for_line("stderr", "^p2pchat: alice left$")
    bob.wait_for_line("stderr", "^p2pchat: alice left$")
    carol.close_stdin()
    assert carol.wait() == 0, carol.describe()
    bob.wait_for_line("stderr", "^p2pchat: carol left$")

    assert bob.stdout == ["alice: from alice to all", "carol: carol here"]
    assert alice.stdout == ["carol: carol here", "bob: bob to both"]
    assert carol.stdout == ["alice: from alice to all", "bob: bob to both"]
    bob.terminate()
    assert bob.wait() == 0, bob.describe()


# ---------------------------------------------------------------- host leaves


def _last_status(proc: Proc) -> str:
    lines = [ln for ln in proc.stderr if ln.startswith("p2pchat:")]
    assert lines, proc.describe()
    return lines[-1]


def test_host_leaves_while_joined(procs: ProcPool) -> None:
    """The host says goodbye (SIGTERM): a joiner whose stdin is still open
    exits 1 with one line naming the reason."""
    bob, port = start_host(procs, procs.home("bob"))
    alice = start_join(procs, procs.home("alice"), "--connect", f"127.0.0.1:{port}")
    wait_session(alice, "bob")
    wait_session(bob, "alice")
    alice.send_line("still here")
    bob.wait_for_line("stdout", "^alice: still here$")

    bob.terminate()
    assert bob.wait() == 0, bob.describe()
    # alice's stdin stays open: she must notice on her own, and fail
    assert alice.wait(timeout=10) == 1, alice.describe()
    err = "\n".join(alice.stderr)
    assert "Traceback" not in err
    last = _last_status(alice)
    assert re.search(r"left|closed", last), last
    # a goodbye from the host is final: no attempt to reconnect to nothing
    assert not any("reconnect" in line for line in alice.stderr), alice.describe()


# ---------------------------------------------------------------- too long


def test_over_long_line_does_not_break_the_session(procs: ProcPool) -> None:
    bob, port = start_host(procs, procs.home("bob"))
    alice = start_join(procs, procs.home("alice"), "--connect", f"127.0.0.1:{port}")
    wait_session(alice, "bob")
    wait_session(bob, "alice")
    alice.send_line("x" * (64 * 1024 + 1))
    alice.send_line("the next line")
    # however the sender deals with it (refuse it locally, split it), the
    # session must survive and the next line must arrive
    bob.wait_for_line("stdout", "^alice: the next line$", timeout=3)
    assert not any("refused alice" in line for line in bob.stderr), bob.describe()
    # the sender said why the long line went nowhere
    alice.wait_for_line("stderr", "line not sent: text over 65536 bytes", timeout=3)


def test_progress_bar_shape() -> None:
    from p2pchat.faces.lines import progress_bar

    assert progress_bar(0, 200) == "[" + "-" * 20 + "]"
    assert progress_bar(100, 200) == "[" + "#" * 10 + "-" * 10 + "]"
    assert progress_bar(200, 200) == "[" + "#" * 20 + "]"
    assert progress_bar(300, 200) == "[" + "#" * 20 + "]"  # never past full
