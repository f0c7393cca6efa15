"""A chat's outgoing transfer outlives the chat: remembered under --home and
offered again by itself on the next session with that peer.

Real processes on loopback: bob hosts, carol joins with ``--accept-files DIR
--json``, alice is a joiner driven through the Room API (tests/resume_sender.py:
``Room.send_file`` is what the chat screen's ``/send`` calls; the chat has no
``--limit-rate`` to keep a transfer running long enough to cut it). Every
process stays on 127.0.0.1; every wait is for a line or an event, with a
deadline.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest
from procs import Proc, ProcPool, run_p2pchat, start_host, wait_session
from test_files_cli import make_file, progress_at_least, receiver, send_args, sha256_file

from p2pchat.store.identity import TrustStore
from p2pchat.store.outgoing import FILE_NAME

pytestmark = pytest.mark.timeout(90)

SIZE = 4 * 1024 * 1024
RATE = str(1024 * 1024)  #: bytes per second: about 4 s for the whole file
DRIVER = Path(__file__).with_name("resume_sender.py")


def alice(procs: ProcPool, port: int, src: Path | None, label: str) -> Proc:
    args = [str(procs.home("alice")), str(port), RATE, *([str(src)] if src is not None else [])]
    proc = Proc([sys.executable, str(DRIVER), *args], name=label)
    procs.procs.append(proc)  # killed at teardown if still running
    return proc


def remembered(procs: ProcPool) -> list[dict[str, object]]:
    doc = json.loads((procs.home("alice") / FILE_NAME).read_text(encoding="utf-8"))
    return list(doc["outgoing"])


def starts(carol: Proc) -> list[int]:
    """Where each run of carol's transfer began (bytes)."""
    return [e["from"] for e in carol.json_events("file-progress") if e["bytes"] == e["from"]]


def interrupted(tmp_path: Path, procs: ProcPool) -> tuple[Path, str, Proc, Proc, int]:
    """alice offers big.bin to carol and is under way (carol has a quarter)."""
    src = tmp_path / "big.bin"
    digest = make_file(src, SIZE)
    _, port = start_host(procs, procs.home("bob"))
    carol = receiver(procs, port, tmp_path / "inbox")
    wait_session(carol, "bob")
    first = alice(procs, port, src, "alice-1")
    first.wait_for_line("stdout", r"^offering big\.bin \(4\.2 MB\) to carol$")
    progress_at_least(carol, 0.25)
    (entry,) = remembered(procs)
    assert entry["path"] == str(src.absolute()) and entry["size"] == SIZE
    assert entry["sha256"] == digest and entry["to_name"] == "carol"
    return src, digest, carol, first, port


def resumed(procs: ProcPool, carol: Proc, port: int, digest: str, inbox: Path) -> Proc:
    """alice again, on the same home, without the file: the transfer resumes by itself."""
    second = alice(procs, port, None, "alice-2")
    second.wait_for_line("stdout", r"^sent big\.bin to carol, SHA-256 verified by carol", 30)
    # it says this is the earlier run's file, offered again by itself
    again = "offering big.bin (4.2 MB) to carol again: the last chat left it unfinished"
    assert again in second.stdout, second.stdout
    done = carol.wait_for_event("file-done", timeout=10)
    first_start, *_, last_start = starts(carol)
    assert first_start == 0 and last_start >= 0.25 * SIZE, starts(carol)
    assert done["from"] == last_start and done["sha256"] == digest
    assert sha256_file(inbox / "big.bin") == digest
    assert sorted(p.name for p in inbox.iterdir()) == ["big.bin"]
    assert any("receiving big.bin from alice: resuming at" in ln for ln in carol.stderr), (
        carol.stderr
    )
    assert remembered(procs) == []  # sent: forgotten
    return second


def test_a_sender_killed_mid_transfer_resumes_by_itself_next_time(
    tmp_path: Path, procs: ProcPool
) -> None:
    _, digest, carol, first, port = interrupted(tmp_path, procs)
    first.popen.send_signal(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    carol.wait_for_event("file-progress", paused=True, why="peer-left")

    second = resumed(procs, carol, port, digest, tmp_path / "inbox")
    second.close_stdin()
    assert second.wait(20) == 0, second.describe()
    assert not any("Traceback" in ln for ln in carol.stderr + second.stderr)


def test_our_own_quit_does_not_say_the_peer_is_gone_and_it_resumes(
    tmp_path: Path, procs: ProcPool
) -> None:
    _, digest, carol, first, port = interrupted(tmp_path, procs)
    first.close_stdin()  # leaving on purpose, as /quit does
    assert first.wait(20) == 0, first.describe()
    paused = [ln for ln in first.stdout if "paused" in ln]
    assert len(paused) == 1, first.describe()
    assert paused[0].startswith("sending big.bin to carol: paused at "), paused
    assert paused[0].endswith("; it resumes the next time you chat with carol"), paused
    assert not any("gone" in ln for ln in first.stdout), first.describe()
    # carol's side: alice did leave
    carol.wait_for_line("stderr", r"receiving big\.bin from alice: paused at \d+%, alice is gone")

    second = resumed(procs, carol, port, digest, tmp_path / "inbox")
    second.close_stdin()
    assert second.wait(20) == 0, second.describe()


def test_leaving_during_a_fast_transfer_is_a_goodbye_not_a_drop(
    tmp_path: Path, procs: ProcPool
) -> None:
    """Leaving while a file streams at full speed is a goodbye for the others.
    Seen by hand in two namespaces: 2 of 6 /quit showed "alice disconnected"
    to carol (the goodbye sat behind the file data, and closing with carol's
    acks unread reset the connection, which lost it); 0 of 8 with the fix.
    On loopback the reset did not happen in 6 runs before the fix either:
    this guards the behaviour, the race itself needs a slower link."""
    src = tmp_path / "big.bin"
    with src.open("wb") as f:  # sparse: quick to make, long enough to send
        f.truncate(1024 * 1024 * 1024)
    _, port = start_host(procs, procs.home("bob"))
    carol = receiver(procs, port, tmp_path / "inbox")
    wait_session(carol, "bob")
    proc = Proc(
        [sys.executable, str(DRIVER), str(procs.home("alice")), str(port), "1e10", str(src)],
        name="alice-fast",
    )
    procs.procs.append(proc)
    progress_at_least(carol, 0.05)
    proc.close_stdin()  # leaving on purpose, as /quit does
    assert proc.wait(20) == 0, proc.describe()
    left = carol.wait_for_event("leave", peer="alice")
    assert left["clean"] is True, carol.describe()


@pytest.mark.parametrize(
    ("change", "why"),
    [("rewrite", "the file changed since"), ("delete", r"the file is gone \(or cannot be read\)")],
)
def test_a_file_changed_or_gone_meanwhile_is_not_resumed_and_it_says_so(
    tmp_path: Path, procs: ProcPool, change: str, why: str
) -> None:
    src, _, carol, first, port = interrupted(tmp_path, procs)
    first.popen.send_signal(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    if change == "rewrite":
        with src.open("r+b") as f:  # same size, other bytes
            f.write(b"changed")
    else:
        src.unlink()

    second = alice(procs, port, None, "alice-2")
    second.wait_for_line("stdout", rf"^not resuming big\.bin to carol: {why}$", 30)
    assert remembered(procs) == []  # dropped, not tried again
    second.close_stdin()
    assert second.wait(20) == 0, second.describe()
    assert not any(ln.startswith(("offering", "sent")) for ln in second.stdout), second.stdout
    assert len(carol.json_events("file-offer")) == 1  # nothing offered again


def test_a_file_the_chat_left_and_send_finished_is_not_offered_again(
    tmp_path: Path, procs: ProcPool
) -> None:
    """The chat left big.bin unfinished; ``p2pchat send`` (which remembers
    nothing) finishes it: it is crossed off, or the next chat would offer an
    already delivered file again, and carol would take a second copy."""
    src, digest, carol, first, port = interrupted(tmp_path, procs)
    first.popen.send_signal(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    one_shot = procs.start(*send_args(procs, src, port), name="send")
    assert one_shot.wait(60) == 0, one_shot.describe()
    assert carol.wait_for_event("file-done", timeout=10)["sha256"] == digest
    assert remembered(procs) == []
    second = alice(procs, port, None, "alice-2")
    second.wait_for_line("stdout", "^session with carol$", 30)
    second.close_stdin()
    assert second.wait(20) == 0, second.describe()
    assert not any(ln.startswith(("offering", "sent", "not resuming")) for ln in second.stdout), (
        second.stdout
    )
    assert len(carol.json_events("file-offer")) == 1  # (the send resumed the same transfer)


@pytest.mark.parametrize("how", ["trust-forget", "pin-gone"])
def test_a_key_forgotten_since_gets_nothing_by_itself(
    tmp_path: Path, procs: ProcPool, how: str
) -> None:
    """alice forgot carol's key (she may have found it was not carol's): the
    remembered file is not offered to that key again, whatever name it uses.
    ``trust forget`` drops it at once; a pin gone any other way (a forget
    while a chat ran) is caught at the session, where the key is new again."""
    _, _, carol, first, port = interrupted(tmp_path, procs)
    first.popen.send_signal(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    home = procs.home("alice")
    if how == "trust-forget":
        result = run_p2pchat("trust", "forget", "carol", "--home", home)
        assert result.returncode == 0, result
        assert "and 1 unfinished file(s) sent to that key" in result.stdout, result
        assert remembered(procs) == []
    else:
        assert TrustStore.open(home).forget("carol")

    second = alice(procs, port, None, "alice-2")
    second.wait_for_line("stdout", "^session with carol$", 30)
    if how == "pin-gone":
        second.wait_for_line(
            "stdout", r"^not resuming big\.bin to carol: its key was forgotten since", 30
        )
        assert remembered(procs) == []
    second.close_stdin()
    assert second.wait(20) == 0, second.describe()
    assert not any(ln.startswith(("offering", "sent")) for ln in second.stdout), second.stdout
    assert len(carol.json_events("file-offer")) == 1  # nothing offered again


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP (POSIX)")
def test_the_chat_screen_remembers_a_send_interrupted_by_quit(
    tmp_path: Path, procs: ProcPool
) -> None:
    """/send on the chat screen, /quit before carol has answered: one line
    says it resumes next time, and the next chat screen sends it by itself."""
    from ttyscreen import TtyScreen

    src = tmp_path / "big.bin"
    digest = make_file(src, SIZE)
    inbox = tmp_path / "inbox"
    _, port = start_host(procs, procs.home("bob"))
    carol = receiver(procs, port, inbox)
    wait_session(carol, "bob")
    args = ["join", "--connect", f"127.0.0.1:{port}", "--name", "alice",
            "--home", procs.home("alice")]  # fmt: skip

    tty = TtyScreen(args, rows=30, cols=160)
    try:
        tty.wait_for(r"secure session with carol")
        carol.popen.send_signal(signal.SIGSTOP)  # she cannot answer the offer
        try:
            tty.type(f"/send carol {src}")
            tty.wait_for(r"offering big\.bin \(4\.2 MB\) to carol")
            tty.type("/quit")
            tty.wait_for(r"1 file transfer\(s\) under way: leave anyway\? \[y/N\]")
            tty.type("y")
            assert tty.exit_code() == 0
        finally:
            carol.popen.send_signal(signal.SIGCONT)
    finally:
        tty.close()
    said = "p2pchat: big.bin to carol: paused at 0%; it resumes the next time you chat with carol"
    assert said in tty.output, tty.output[-500:]
    assert "gone" not in tty.output
    (entry,) = remembered(procs)
    assert entry["path"] == str(src) and entry["sha256"] == digest

    again = TtyScreen(args, rows=30, cols=160)
    try:
        again.wait_for(r"sent big\.bin to carol, SHA-256 verified by carol", 30)
        again.type("/quit")
        assert again.exit_code() == 0
    finally:
        again.close()
    assert carol.wait_for_event("file-done", timeout=10)["sha256"] == digest
    assert sha256_file(inbox / "big.bin") == digest
    assert remembered(procs) == []
