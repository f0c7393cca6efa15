"""Choosing among hosts of one name: ``join NAME@FP``, the numbered list, the
name the host proves, and what a refused key advises.

Two hosts call themselves bob: the real one (home "bob") and another
(home "mallory"). The tests with real processes run in a network namespace
with only a loopback (root): hosts other tests, or other programs on this
machine, advertise on the shared loopback would make the lists unpredictable.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from procs import (
    Proc,
    ProcPool,
    after_looking,
    base_env,
    fingerprint_of,
    run_p2pchat,
    start_host,
    wait_session,
)

from p2pchat.room import HostInfo, HostQuery, Pin, format_fingerprint, host_listing
from p2pchat.room.hostpick import choose_hint, selector

pytestmark = pytest.mark.timeout(120)


def need_root(private_lo: list[str]) -> None:
    if not private_lo:
        pytest.skip("needs root: a loopback of its own, with only our hosts on it")


def join(procs: ProcPool, prefix: list[str], home: Path, *args: str) -> Proc:
    """``p2pchat join ARGS`` in the namespace, in line mode, as alice."""
    return procs.start(
        "join", *args, "--home", home, "--interface", "127.0.0.1", "--name", "alice",
        name="join", prefix=prefix,
    )  # fmt: skip


def start(fp: str, chars: int) -> str:
    """The first ``chars`` characters of a fingerprint as it is shown (with dashes)."""
    return fp[: chars + (chars - 1) // 4]


def unique_start(mine: str, other: str) -> str:
    """The shortest start (4, 8, ... characters) of ``mine`` that ``other`` lacks."""
    n = 4
    while other.replace("-", "").startswith(mine.replace("-", "")[:n]):
        n += 4
    return start(mine, n)


def two_bobs(procs: ProcPool, prefix: list[str]) -> tuple[int, int]:
    """The other bob, then the real one; their ports."""
    _, other = start_host(procs, procs.home("mallory"), "--port", "0", prefix=prefix)
    _, real = start_host(procs, procs.home("bob"), "--port", "0", prefix=prefix)
    return real, other


def meet(procs: ProcPool, prefix: list[str], home: Path, port: int) -> None:
    """alice meets the host at ``port`` once, by address: it is pinned."""
    met = join(procs, prefix, home, "--connect", f"127.0.0.1:{port}")
    wait_session(met, "bob")
    met.close_stdin()
    assert met.wait(20) == 0, met.describe()


def test_same_named_hosts_are_listed_with_how_to_choose(
    private_lo: list[str], procs: ProcPool
) -> None:
    need_root(private_lo)
    real, other = two_bobs(procs, private_lo)
    fp_real, fp_other = fingerprint_of(procs.home("bob")), fingerprint_of(procs.home("mallory"))
    home = procs.home("alice")
    first = join(procs, private_lo, home, "bob", "--timeout", "3")
    assert first.wait(20) == 2, first.describe()
    err = after_looking(first.stderr, "bob", "3")
    assert err[0] == "p2pchat: 2 hosts are called 'bob' (anyone can advertise any name):", err
    rows = {line.split(".")[0].strip(): line for line in err[1:3]}
    assert set(rows) == {"1", "2"}, err
    for fp, port in ((fp_real, real), (fp_other, other)):
        (row,) = [r for r in rows.values() if start(fp, 12) in r]
        tag = fp.replace("-", "")[:8]
        assert re.fullmatch(
            rf"  [12]\. bob  \(bob {tag}\)  {re.escape(start(fp, 12))}  127\.0\.0\.1 port {port}",
            row,
        ), row
    # line mode cannot ask: it says how to pick one on the command line
    assert len(err) == 4, err
    assert re.fullmatch(
        r"join one by its name and the start of its fingerprint, e\.g\. 'p2pchat join "
        r"bob@[A-Z2-7]{4}', or by its address: 'p2pchat join --connect 127\.0\.0\.1:\d+'",
        err[3],
    ), err[3]
    assert "name one" not in "\n".join(err)

    # once the real bob is pinned, a list shows which one that is
    meet(procs, private_lo, home, real)
    listed = join(procs, private_lo, home, "--timeout", "3")
    assert listed.wait(20) == 2, listed.describe()
    rows = after_looking(listed.stderr, None, "3")
    assert rows[0] == "p2pchat: 2 hosts found:", listed.stderr
    (pinned,) = [r for r in rows[1:3] if start(fp_real, 12) in r]
    (unpinned,) = [r for r in rows[1:3] if start(fp_other, 12) in r]
    assert pinned.endswith(f"port {real}  pinned"), pinned
    assert unpinned.endswith(f"port {other}"), unpinned


def test_join_name_at_fingerprint_start(private_lo: list[str], procs: ProcPool) -> None:
    need_root(private_lo)
    real, _ = two_bobs(procs, private_lo)
    fp_real, fp_other = fingerprint_of(procs.home("bob")), fingerprint_of(procs.home("mallory"))
    home = procs.home("alice")
    # a first contact: lower case, no dashes, as someone might type it
    typed = unique_start(fp_real, fp_other).replace("-", "").lower()
    alice = join(procs, private_lo, home, f"bob@{typed}")
    wait_session(alice, "bob")
    alice.wait_for_line("stderr", rf"^p2pchat: connected to 127\.0\.0\.1:{real}$")
    alice.close_stdin()
    assert alice.wait(20) == 0, alice.describe()
    assert fp_real in run_p2pchat("trust", "list", "--home", home).stdout

    # a start no bob has
    none = join(procs, private_lo, home, "bob@ZZZZ-ZZZZ", "--timeout", "2")
    assert none.wait(20) == 2, none.describe()
    assert after_looking(none.stderr, "bob@ZZZZ-ZZZZ", "2") == [
        "p2pchat: no host named 'bob' with a fingerprint starting ZZZZZZZZ found within "
        "2 s; hosts seen: bob"
    ], none.stderr


def test_the_other_bob_is_refused_with_the_way_to_the_pinned_one(
    private_lo: list[str], procs: ProcPool
) -> None:
    """bob is pinned and on the network; alice asks for the other bob by its
    fingerprint. It is refused (a pinned name, another key), and the advice is
    not to forget the pin, which would pin the impostor, but to join the
    pinned bob."""
    need_root(private_lo)
    real, _ = two_bobs(procs, private_lo)
    fp_real, fp_other = fingerprint_of(procs.home("bob")), fingerprint_of(procs.home("mallory"))
    home = procs.home("alice")
    meet(procs, private_lo, home, real)
    alice = join(procs, private_lo, home, f"bob@{unique_start(fp_other, fp_real)}")
    alice.send_line("for the real bob only")
    alice.close_stdin()
    assert alice.wait(20) == 3, alice.describe()
    err = "\n".join(alice.stderr)
    assert "WARNING: ANOTHER KEY UNDER A PINNED NAME!" in err
    assert "trust forget" not in err
    assert f"\n    p2pchat join bob@{unique_start(fp_real, fp_other)}\n" in err, err
    tag = fp_real.replace("-", "")[:8]
    assert f"\n    'bob {tag}' at 127.0.0.1 port {real}\n" in err, err
    assert alice.stderr[-1] == (
        "p2pchat: error: not connecting to bob: a pinned name presented a different key"
    )
    listing = run_p2pchat("trust", "list", "--home", home).stdout
    assert fp_real in listing and fp_other not in listing


ADVERTISE = """
import asyncio, sys
from p2pchat.net.discovery import Advertiser
from p2pchat.room import parse_fingerprint

async def main():
    name, port, fp = sys.argv[1], int(sys.argv[2]), parse_fingerprint(sys.argv[3])
    async with Advertiser(name=name, port=port, fingerprint=fp, addresses=["127.0.0.1"],
                          interfaces=["127.0.0.1"]):
        print("advertising", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def test_a_host_must_prove_the_name_it_was_found_by(private_lo: list[str], procs: ProcPool) -> None:
    """mallory's relay advertised as "bob" (with mallory's key, so the key
    check passes): the handshake says "mallory", and join bob refuses it."""
    need_root(private_lo)
    mallory, port = start_host(
        procs, procs.home("mallory"), "--port", "0", name="mallory", prefix=private_lo
    )
    fp = fingerprint_of(procs.home("mallory"))
    spoof = Proc(
        [*private_lo, sys.executable, "-c", ADVERTISE, "bob", str(port), fp],
        name="spoof", env=base_env(),
    )  # fmt: skip
    procs.procs.append(spoof)
    spoof.wait_for_line("stdout", "^advertising$")
    home = procs.home("alice")
    alice = join(procs, private_lo, home, "bob")
    assert alice.wait(20) == 3, alice.describe()
    assert "Traceback" not in "\n".join(alice.stderr)
    assert alice.stderr[-1] == (
        f"p2pchat: not trusted: you asked for 'bob', but the host at 127.0.0.1:{port} proved "
        f"the name 'mallory' (key {fp}); not joining it (if it is the one you mean: "
        f"p2pchat join mallory@{fp[:4]})"
    ), alice.stderr
    # refused: not pinned, under any name
    assert "no pinned peers" in run_p2pchat("trust", "list", "--home", home).stdout
    mallory.wait_for_line("stderr", r"^p2pchat: alice (left|disconnected)$")


def test_expect_fingerprint_by_name_shows_both_keys(private_lo: list[str], procs: ProcPool) -> None:
    need_root(private_lo)
    start_host(procs, procs.home("bob"), "--port", "0", prefix=private_lo)
    fp_bob, wrong = fingerprint_of(procs.home("bob")), fingerprint_of(procs.home("carol"))
    alice = join(procs, private_lo, procs.home("alice"), "bob", "--expect-fingerprint", wrong)
    assert alice.wait(20) == 3, alice.describe()
    assert after_looking(alice.stderr, "bob", "10") == [
        f"p2pchat: key mismatch: the host 'bob' advertises the key {start(fp_bob, 12)}..., "
        f"not the key expected (--expect-fingerprint {wrong}); nothing was sent"
    ], alice.stderr


# ---------------------------------------------------------------- without processes


def host(name: str, fp: bytes | None, port: int = 47474) -> HostInfo:
    label = f"{name} {format_fingerprint(fp).replace('-', '')[:8]}" if fp else name
    return HostInfo(f"{label}._p2pchat._tcp.local.", name, fp, 1, ("10.0.0.1",), port)


def test_a_query_is_a_name_or_a_name_and_a_fingerprint_start() -> None:
    assert HostQuery.parse("bob@jg3f-ab") == HostQuery("bob@jg3f-ab", "bob", "JG3FAB")
    assert HostQuery.parse("bob") == HostQuery("bob", "bob", None)
    # too short, or not base32 (0, 1, 8, 9 are not): a name with an "@" in it
    for text in ("bob@JG3", "alice@host-01", "@JG3F"):
        assert HostQuery.parse(text) == HostQuery(text, text, None)
    # "alice@laptop" reads as both; the host of that whole name is found
    laptop = host("alice@laptop", b"\x07" * 32)
    assert HostQuery.parse("alice@laptop").select([laptop]) == [laptop]


def test_a_fingerprint_start_beats_a_host_named_after_it() -> None:
    real = host("bob", b"\x01" * 32)
    tag = format_fingerprint(b"\x01" * 32)[:4]
    squatter = host(f"bob@{tag}", b"\x02" * 32)
    assert HostQuery.parse(f"bob@{tag}").select([squatter, real]) == [real]


def test_the_selector_grows_until_it_is_unique() -> None:
    a, b = b"\x00" * 31 + b"\x01", b"\x00" * 31 + b"\x02"
    ha, hb, carol = host("bob", a), host("bob", b), host("carol", b"\x00" * 32)
    sel = selector(ha, [ha, hb, carol])
    assert sel is not None
    assert len(sel.removeprefix("bob@").replace("-", "")) == 52  # differ at the end only
    zeros = format_fingerprint(b"\x00" * 32)[:4]
    assert selector(carol, [ha, hb, carol]) == f"carol@{zeros}"
    assert selector(host("dave", None), [ha]) is None


def test_the_listing_marks_pinned_keys() -> None:
    b1, b2, noname = host("bob", b"\x01" * 32, 1), host("bob", b"\x02" * 32, 2), host("x", None)
    pins = {
        b"\x01" * 32: Pin(b"\x01" * 32, "bob", 0.0, 0.0, verified=True),
        b"\x02" * 32: Pin(b"\x02" * 32, "robert", 0.0, 0.0, verified=False),
    }
    rows = host_listing([b1, b2, noname], pins.get).splitlines()
    assert re.search(r"  AEAQ-CAIB-AEAQ  +10\.0\.0\.1 port 1  +pinned, verified$", rows[0])
    assert re.search(r"  AIBA-EAQC-AIBA  +10\.0\.0\.1 port 2  +pinned as robert$", rows[1])
    assert rows[2] == "  3. x    (x)             (no fingerprint)  10.0.0.1 port 47474"
    assert (
        choose_hint([noname]) == "join one by its address: 'p2pchat join --connect 10.0.0.1:47474'"
    )


def test_the_picker_takes_a_name_and_fingerprint_start() -> None:
    from p2pchat.faces.chat import pick_host

    bob1, bob2 = host("bob", b"\x01" * 32), host("bob", b"\x02" * 32)
    typed = format_fingerprint(b"\x02" * 32)[:4].lower()
    assert pick_host([bob1, bob2], f"bob@{typed}") is bob2


def test_the_picker_on_a_terminal(private_lo: list[str], procs: ProcPool) -> None:
    """``join`` on a terminal with two bobs, the real one pinned: numbered rows
    (the pinned one marked), an ambiguous name asked again, NAME@FP picks."""
    need_root(private_lo)
    import pexpect

    real, _ = two_bobs(procs, private_lo)
    fp_real, fp_other = fingerprint_of(procs.home("bob")), fingerprint_of(procs.home("mallory"))
    home = procs.home("alice")
    meet(procs, private_lo, home, real)
    env = base_env(TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1", COLUMNS="160", LINES="40")
    argv = [
        *private_lo[1:], sys.executable, "-m", "p2pchat", "join", "--name", "alice",
        "--home", str(home), "--interface", "127.0.0.1",
    ]  # fmt: skip
    child = pexpect.spawn(
        private_lo[0], argv, env=env, dimensions=(40, 160), encoding="utf-8", timeout=20
    )
    try:
        child.expect("Several hosts found:")
        child.expect(rf"  [12]\. bob  \(bob [A-Z2-7]{{8}}\)  {re.escape(start(fp_real, 12))}  "
                     rf"127\.0\.0\.1 port {real}  pinned")  # fmt: skip
        child.expect(re.escape("Join which one (number, name or start of the fingerprint)? "))
        child.send("bob\r")
        child.expect("2 hosts are called 'bob': type the number of the one you mean")
        child.send(f"bob@{unique_start(fp_real, fp_other).lower()}\r")
        # the chat screen (the line output goes quiet before it)
        child.expect("you are alice; type /help for commands")
        child.expect(r"secure session with bob \(known key")
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, (child.exitstatus, child.signalstatus)


def test_ctrl_c_at_the_picker_ends_the_join_at_once(private_lo: list[str], procs: ProcPool) -> None:
    """Ctrl-C while the picker asks: exit 130 now, not after someone presses
    Enter (the answer is read in a thread the exit does not wait for)."""
    need_root(private_lo)
    import pexpect

    two_bobs(procs, private_lo)
    env = base_env(TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1", COLUMNS="160", LINES="40")
    argv = [
        *private_lo[1:], sys.executable, "-m", "p2pchat", "join", "--name", "alice",
        "--home", str(procs.home("alice")), "--interface", "127.0.0.1",
    ]  # fmt: skip
    child = pexpect.spawn(
        private_lo[0], argv, env=env, dimensions=(40, 160), encoding="utf-8", timeout=20
    )
    try:
        child.expect(re.escape("Join which one (number, name or start of the fingerprint)? "))
        child.sendintr()  # the terminal's Ctrl-C: SIGINT to the foreground process
        child.expect("p2pchat: interrupted", timeout=5)
        child.expect(pexpect.EOF, timeout=5)
    finally:
        child.close(force=True)
    assert child.exitstatus == 130, (child.exitstatus, child.signalstatus, child.before)
