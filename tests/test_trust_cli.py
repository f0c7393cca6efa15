"""Trust from the command line: pins, a changed key, --expect-fingerprint,
--require-known, and ``p2pchat trust list|verify|forget``.

Every refusal must happen before anything is sent: the refused joiner has a
line on its stdin, and the host must never print it. The host learns that the
joiner left (the relay's notice comes after anything the joiner sent, in
order), so checking the host's stdout at that point is conclusive.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
from procs import (
    FP_RE,
    Proc,
    ProcPool,
    fingerprint_of,
    run_p2pchat,
    start_host,
    start_join,
    wait_session,
)

from p2pchat.proto.keys import format_fingerprint
from p2pchat.store.identity import TrustStore

pytestmark = pytest.mark.timeout(90)


def join_once(procs: ProcPool, home: Path, port: int, *extra: str, text: str) -> Proc:
    """alice joins 127.0.0.1:port, sends ``text`` and ends stdin."""
    alice = start_join(procs, home, "--connect", f"127.0.0.1:{port}", "--timeout", "15", *extra)
    alice.send_line(text)
    alice.close_stdin()
    return alice


def assert_refused_quietly(alice: Proc, host: Proc, secret: str, *, session: bool = True) -> None:
    """alice was refused with exit 3 and one clear reason; the host got nothing.
    ``session``: the handshake completed before alice refused, so the host is
    told (a refusal, not a goodbye); else the host was never shown alice."""
    assert alice.wait() == 3, alice.describe()
    err = "\n".join(alice.stderr)
    assert "Traceback" not in err
    assert alice.stderr[-1].startswith("p2pchat: error: not connecting to bob"), err
    assert not any(secret in line for line in alice.stdout)
    if session:
        host.wait_for_line("stderr", r"^p2pchat: alice refused us: ")
        host.wait_for_line("stderr", r"^p2pchat: alice (left|disconnected)$")
    else:
        assert not any("alice" in line for line in host.stderr), host.describe()
    assert not any(secret in line for line in host.stdout), host.describe()
    assert not any(line.startswith("alice:") for line in host.stdout), host.describe()


def test_changed_key_is_refused_loudly_and_nothing_is_sent(procs: ProcPool) -> None:
    home_alice = procs.home("alice")
    real_bob, port = start_host(procs, procs.home("bob"))
    first = join_once(procs, home_alice, port, text="first contact")
    assert first.wait() == 0, first.describe()
    real_bob.wait_for_line("stdout", "^alice: first contact$")
    real_bob.terminate()
    assert real_bob.wait() == 0

    # another "bob", with another key
    fake_bob, port = start_host(procs, procs.home("fake-bob"))
    alice = join_once(procs, home_alice, port, text="for the real bob only")
    assert_refused_quietly(alice, fake_bob, "for the real bob only")
    err = "\n".join(alice.stderr)
    assert "WARNING: THE KEY OF THIS PEER HAS CHANGED!" in err
    assert "Nothing was sent." in err
    assert fingerprint_of(procs.home("bob")) in err  # the pinned key
    assert fingerprint_of(procs.home("fake-bob")) in err  # the key it proved
    # nobody looked whether the pinned bob is on the network (--connect): the
    # advice to forget the pin (by its fingerprint) says to look first
    assert f"p2pchat trust forget {fingerprint_of(procs.home('bob'))}" in err
    assert "'p2pchat discover' does not list the pinned key" in err
    assert "pinned name presented a different key" in alice.stderr[-1]
    # the pin is unchanged: still the real bob only
    listing = run_p2pchat("trust", "list", "--home", home_alice).stdout
    assert fingerprint_of(procs.home("bob")) in listing
    assert fingerprint_of(procs.home("fake-bob")) not in listing


def test_expect_fingerprint(procs: ProcPool) -> None:
    home_bob = procs.home("bob")
    bob, port = start_host(procs, home_bob)
    wrong = fingerprint_of(procs.home("someone-else"))

    alice = join_once(procs, procs.home("alice"), port, "--expect-fingerprint", wrong, text="nope")
    assert_refused_quietly(alice, bob, "nope", session=False)
    # nothing is pinned: no "trust forget", but both keys, and which is which
    err = "\n".join(alice.stderr)
    assert "WARNING: THIS HOST DOES NOT HAVE THE KEY EXPECTED!" in err
    assert "trust forget" not in err
    assert f"expected (--expect-fingerprint)\n    {wrong}\nbut bob presented the key\n" in err
    assert f"presented the key\n    {fingerprint_of(home_bob)}\n" in err
    assert alice.stderr[-1] == (
        "p2pchat: error: not connecting to bob: its key is not the one expected for this "
        f"host (expected {wrong}, the host presented {fingerprint_of(home_bob)})"
    )
    # refused before any handshake: nothing was pinned on either side
    for home in (procs.home("alice"), home_bob):
        assert "no pinned peers" in run_p2pchat("trust", "list", "--home", home).stdout

    # the right one, in another accepted spelling (lower case, no dashes)
    right = fingerprint_of(home_bob).replace("-", "").lower()
    alice2 = join_once(procs, procs.home("alice2"), port, "--expect-fingerprint", right, text="yes")
    assert alice2.wait() == 0, alice2.describe()
    bob.wait_for_line("stdout", "^alice: yes$")
    assert bob.stdout == ["alice: yes"]


def test_require_known(procs: ProcPool) -> None:
    home_alice = procs.home("alice")
    bob, port = start_host(procs, procs.home("bob"))
    alice = join_once(procs, home_alice, port, "--require-known", text="too early")
    assert_refused_quietly(alice, bob, "too early")
    assert "--require-known" in alice.stderr[-1]

    # once pinned (a plain first join), --require-known lets bob in
    first = join_once(procs, home_alice, port, text="hello")
    assert first.wait() == 0, first.describe()
    again = join_once(procs, home_alice, port, "--require-known", text="known now")
    assert again.wait() == 0, again.describe()
    bob.wait_for_line("stdout", "^alice: known now$")
    assert bob.stdout == ["alice: hello", "alice: known now"]


def test_trust_list_verify_forget(procs: ProcPool) -> None:
    home_bob, home_alice = procs.home("bob"), procs.home("alice")
    fp_bob = fingerprint_of(home_bob)
    assert run_p2pchat("trust", "list", "--home", home_alice).stdout.strip() == (
        "no pinned peers yet"
    )
    bob, port = start_host(procs, home_bob)
    alice = start_join(procs, home_alice, "--connect", f"127.0.0.1:{port}")
    wait_session(alice, "bob")
    alice.close_stdin()
    assert alice.wait() == 0, alice.describe()

    def listing() -> list[str]:
        result = run_p2pchat("trust", "list", "--home", home_alice)
        assert result.returncode == 0, result
        return result.stdout.splitlines()

    (line,) = listing()
    assert re.match(rf"bob\s+{re.escape(fp_bob)}\s+unverified,", line), line

    verified = run_p2pchat("trust", "verify", "bob", "--home", home_alice, stdin="yes\n")
    assert verified.returncode == 0, verified
    assert fp_bob in verified.stdout
    (line,) = listing()
    assert re.match(rf"bob\s+{re.escape(fp_bob)}\s+verified,", line), line

    # a verified pin shows up as such in the next session
    alice = start_join(procs, home_alice, "--connect", f"127.0.0.1:{port}")
    alice.wait_for_line("stderr", r"secure session with bob \(verified key\)")
    alice.close_stdin()
    assert alice.wait() == 0, alice.describe()

    forgot = run_p2pchat("trust", "forget", "bob", "--home", home_alice)
    assert forgot.returncode == 0, forgot
    assert "bob" in forgot.stdout and fp_bob in forgot.stdout
    assert listing() == ["no pinned peers yet"]

    for action in ("forget", "verify"):
        missing = run_p2pchat("trust", action, "nobody", "--home", home_alice)
        assert missing.returncode == 2, missing  # a usage error, not a trust refusal (3)
        assert "Traceback" not in missing.stderr
        lines = missing.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("p2pchat:"), missing.stderr
        assert "nobody" in lines[0]

    # forgetting by fingerprint works too: pin bob again, forget him by fingerprint
    alice = start_join(procs, home_alice, "--connect", f"127.0.0.1:{port}")
    alice.wait_for_line("stderr", r"secure session with bob \(first contact")
    alice.close_stdin()
    assert alice.wait() == 0, alice.describe()
    assert FP_RE.search(listing()[0])
    by_fp = run_p2pchat("trust", "forget", fp_bob, "--home", home_alice)
    assert by_fp.returncode == 0, by_fp
    assert listing() == ["no pinned peers yet"]
    bob.terminate()
    assert bob.wait() == 0


def status(home: Path) -> str:
    """bob's word in ``trust list``: verified or unverified."""
    (line,) = run_p2pchat("trust", "list", "--home", home).stdout.splitlines()
    return line.split()[2].rstrip(",")


def test_trust_verify_shows_both_fingerprints_and_the_last_sas_then_asks(
    procs: ProcPool,
) -> None:
    """The issue: ``trust verify`` marked at once, showing nothing to compare.
    It shows both fingerprints and the SAS both sides printed in their last
    session, and only a yes marks the key verified."""
    home_bob, home_alice = procs.home("bob"), procs.home("alice")
    fp_bob, fp_alice = fingerprint_of(home_bob), fingerprint_of(home_alice)
    bob, port = start_host(procs, home_bob)
    alice = start_join(procs, home_alice, "--connect", f"127.0.0.1:{port}")
    sas = wait_session(alice, "bob")
    assert wait_session(bob, "alice") == sas
    alice.close_stdin()
    assert alice.wait() == 0, alice.describe()
    bob.terminate()  # a clean stop: what it recorded is on disk
    assert bob.wait() == 0, bob.describe()

    def verify(home: Path, peer: str, *extra: str, stdin: str = "") -> tuple[int, str, str]:
        result = run_p2pchat("trust", "verify", peer, *extra, "--home", home, stdin=stdin)
        assert "Traceback" not in result.stderr, result.stderr
        return result.returncode, result.stdout, result.stderr

    for answer in ("n\n", "", "maybe\n"):  # no, end of input, anything else
        code, out, err = verify(home_alice, "bob", stdin=answer)
        assert code == 1, (answer, out, err)
        assert re.search(rf"your fingerprint:\s+{re.escape(fp_alice)}$", out, re.M), out
        assert re.search(rf"bob's fingerprint:\s+{re.escape(fp_bob)}$", out, re.M), out
        assert re.search(rf"last session \(\d{{4}}-\d\d-\d\d \d\d:\d\d\): {sas}$", out, re.M)
        assert "(bob sees theirs with 'p2pchat trust verify' and your name, or /verify" in out
        assert "Do these match what bob sees? [y/N] " in out
        (line,) = err.strip().splitlines()
        assert line == f"p2pchat: error: bob {fp_bob} not marked verified (only y or yes marks it)"
        assert status(home_alice) == "unverified"

    code, out, _ = verify(home_alice, "bob", stdin="y\n")
    assert code == 0
    assert out.rstrip().endswith(f"marked bob {fp_bob} as verified")
    assert status(home_alice) == "verified"

    # bob's side shows the same SAS, and --yes marks without asking
    code, out, _ = verify(home_bob, "alice", "--yes")
    assert code == 0
    assert re.search(rf"alice's fingerprint:\s+{re.escape(fp_alice)}$", out, re.M), out
    assert sas in out and "[y/N]" not in out
    assert status(home_bob) == "verified"


def test_trust_verify_of_an_old_store_compares_fingerprints_only(tmp_path: Path) -> None:
    """A known_peers.json from before the SAS was recorded (and no last_sas.json)
    still loads; verify says there is no SAS and to compare the fingerprints."""
    home = tmp_path / "home"
    fp = fingerprint_of(home)  # creates the identity
    fp_bob = bytes(range(32))
    old = {"name": "bob", "first_seen": 1700000000.0, "last_seen": 1700000000.0}
    doc = {"version": 1, "peers": {fp_bob.hex(): {**old, "verified": False}}}
    (home / "known_peers.json").write_text(json.dumps(doc))
    result = run_p2pchat("trust", "verify", "bob", "--home", home, stdin="yes\n")
    assert result.returncode == 0, result
    assert fp in result.stdout and format_fingerprint(fp_bob) in result.stdout
    assert (
        "short authentication string: no session since this version recorded it: "
        "compare the fingerprints"
    ) in result.stdout
    assert TrustStore.open(home).get(fp_bob).verified  # type: ignore[union-attr]


def test_trust_verify_lists_look_alike_pins_and_takes_a_fingerprint_start(
    tmp_path: Path,
) -> None:
    """Two keys under bob and a look-alike: verify lists both and guesses
    neither (exit 2); NAME@FP, as listed, or the whole fingerprint picks one."""
    home = tmp_path / "home"
    fingerprint_of(home)
    store = TrustStore.open(home)
    one, two = bytes(32), bytes([0] * 3 + [0xFF] + [0] * 28)  # first 4 chars equal
    store.pin("bob", one, now=1700000000.0)
    store.pin(SPOOF, two, now=1700000001.0)
    result = run_p2pchat("trust", "verify", "bob", "--home", home, stdin="y\n")
    assert result.returncode == 2, result
    assert "2 keys are pinned under names like 'bob'" in result.stderr.strip().splitlines()[-1]
    short_one, short_two = format_fingerprint(one)[:9], format_fingerprint(two)[:9]
    assert short_one != short_two and short_one[:4] == short_two[:4]
    assert f"p2pchat trust verify bob@{short_one}" in result.stdout, result.stdout
    assert f"p2pchat trust verify bob@{short_two}" in result.stdout, result.stdout
    assert not any(p.verified for p in store.all())

    picked = run_p2pchat("trust", "verify", f"bob@{short_two}", "--yes", "--home", home)
    assert picked.returncode == 0, picked
    assert format_fingerprint(two) in picked.stdout
    by_fp = run_p2pchat("trust", "verify", format_fingerprint(one), "--yes", "--home", home)
    assert by_fp.returncode == 0, by_fp
    assert [p.verified for p in store.all()] == [True, True]


# ---------------------------------------------------------------- look-alike names

SPOOF = "b\u043eb"  # bob with a Cyrillic o
FLAGGED = SPOOF + "[mixed scripts]"


def test_a_look_alike_of_a_pinned_name_is_refused_as_a_changed_key(procs: ProcPool) -> None:
    """The issue: with bob pinned and verified, a host called b\u043eb with another
    key is not a new contact: join exits 3 with one clear line, nothing sent."""
    home_alice = procs.home("alice")
    fp_bob, fp_mallory = fingerprint_of(procs.home("bob")), fingerprint_of(procs.home("mallory"))
    real_bob, port = start_host(procs, procs.home("bob"))
    first = join_once(procs, home_alice, port, text="first contact")
    assert first.wait() == 0, first.describe()
    real_bob.wait_for_line("stdout", "^alice: first contact$")
    assert run_p2pchat("trust", "verify", "--yes", "bob", "--home", home_alice).returncode == 0
    real_bob.terminate()
    assert real_bob.wait() == 0

    # mallory's client lets her take the name (ours needs --allow-mixed-scripts for it)
    fake, port = start_host(procs, procs.home("mallory"), "--allow-mixed-scripts", name=SPOOF)
    secret = "I am bob, please send me the file"
    alice = join_once(procs, home_alice, port, text=secret)
    assert alice.wait() == 3, alice.describe()
    err = "\n".join(alice.stderr)
    assert "Traceback" not in err
    assert alice.stderr[-1] == (
        f"p2pchat: error: not connecting to {FLAGGED}: "
        "a pinned name presented a different key (it looks like bob)"
    ), err
    assert "WARNING: THE KEY OF THIS PEER HAS CHANGED!" in err
    assert f"{FLAGGED} is pinned (as that name or one that looks like it)" in err
    assert f"p2pchat trust forget {fp_bob}" in err  # bob's pin is not named b\u043eb
    assert fp_mallory in err
    fake.wait_for_line("stderr", r"^p2pchat: alice (left|disconnected)$")
    assert not any(secret in line for line in fake.stdout), fake.describe()
    # bob's pin is unchanged, and nothing else was pinned
    (line,) = run_p2pchat("trust", "list", "--home", home_alice).stdout.splitlines()
    assert re.match(rf"bob\s+{re.escape(fp_bob)}\s+verified,", line), line


def test_a_mixed_script_name_is_flagged_on_its_lines_and_in_trust_list(procs: ProcPool) -> None:
    """Nobody pinned under a look-alike: b\u043eb gets in (a name from the network is
    flagged, not refused), and every line shows it flagged."""
    home_carol = procs.home("carol")
    carol, port = start_host(procs, home_carol, name="carol")
    spoof = start_join(
        procs,
        procs.home("mallory"),
        "--connect",
        f"127.0.0.1:{port}",
        "--allow-mixed-scripts",
        name=SPOOF,
    )
    carol.wait_for_line("stderr", rf"^p2pchat: secure session with {re.escape(FLAGGED)} ")
    spoof.send_line("I am bob, please send me the file")
    spoof.close_stdin()
    assert spoof.wait() == 0, spoof.describe()
    carol.wait_for_line("stdout", f"^{re.escape(FLAGGED)}: I am bob, please send me the file$")
    carol.wait_for_line("stderr", rf"^p2pchat: {re.escape(FLAGGED)} (left|disconnected)$")
    bare = re.compile(re.escape(SPOOF) + r"(?!\[mixed scripts\])")
    assert not any(bare.search(line) for line in carol.stdout + carol.stderr), carol.describe()

    listing = run_p2pchat("trust", "list", "--home", home_carol)
    assert listing.returncode == 0, listing
    (line,) = listing.stdout.splitlines()
    fp = re.escape(fingerprint_of(procs.home("mallory")))
    assert re.match(
        rf"{re.escape(FLAGGED)}\s+{fp}\s+unverified, mixed scripts: Cyrillic\+Latin, first", line
    ), line


def test_trust_list_flags_look_alike_pins(tmp_path: Path) -> None:
    """Two keys pinned under names that look alike (a store from before names
    were compared by skeleton): each line says so; a one-script name is not flagged."""
    fp_a, fp_b, fp_c = b"\x0a" * 32, b"\x0b" * 32, b"\x0c" * 32
    store = TrustStore.open(tmp_path)
    store.pin("bob", fp_a, now=1.0)
    store.pin(SPOOF, fp_b, now=2.0)  # pin() itself does not check: Sessions does
    store.pin("\u0431\u043e\u0431", fp_c, now=3.0)  # Cyrillic only, and no b
    result = run_p2pchat("trust", "list", "--home", tmp_path)
    assert result.returncode == 0, result
    lines = {line[:24].rstrip(): line for line in result.stdout.splitlines()}  # name column
    assert set(lines) == {"bob", FLAGGED, "\u0431\u043e\u0431"}
    hex_a = re.escape(format_fingerprint(fp_a)[:9])
    hex_b = re.escape(format_fingerprint(fp_b)[:9])
    assert re.search(rf"unverified, looks like {re.escape(FLAGGED)} {hex_b}, first", lines["bob"])
    assert re.search(
        rf"unverified, mixed scripts: Cyrillic\+Latin, looks like bob {hex_a}, first",
        lines[FLAGGED],
    )
    assert re.search(r"  unverified, first seen", lines["\u0431\u043e\u0431"])


def test_our_own_name_may_not_mix_scripts_unless_asked(tmp_path: Path) -> None:
    for command in ("host", "join"):
        home = tmp_path / command
        result = run_p2pchat(command, "--name", SPOOF, "--home", home, "--interface", "127.0.0.1")
        assert result.returncode == 2, result
        (line,) = result.stderr.splitlines()
        assert line == (
            f"p2pchat: --name {SPOOF!r} mixes Cyrillic and Latin letters, which others would "
            f"see flagged as {FLAGGED}: use letters of one script, or --allow-mixed-scripts"
        )
        assert not home.exists()  # refused before anything was created


def test_ctrl_c_at_the_verify_prompt_is_a_no(tmp_path: Path, procs: ProcPool) -> None:
    """Ctrl-C while ``trust verify`` asks marks nothing and exits 1 (it exited 0)."""
    home = tmp_path / "home"
    fingerprint_of(home)  # creates the identity
    fp_bob = bytes(range(32))
    TrustStore.open(home).pin("bob", fp_bob)
    asking = procs.start("trust", "verify", "bob", "--home", home)
    asking.wait_for_line("stdout", r"sees theirs with 'p2pchat trust verify'")
    asking.popen.send_signal(signal.SIGINT)  # at the prompt (printed without a newline)
    assert asking.wait() == 1, asking.describe()
    assert "not marked verified" in asking.stderr[-1], asking.describe()
    assert not TrustStore.open(home).get(fp_bob).verified  # type: ignore[union-attr]
