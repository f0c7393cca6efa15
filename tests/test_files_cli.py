"""File transfer with real processes on loopback: ``p2pchat send`` to a
``join --accept-files DIR`` receiver through a host, interrupted halfway by
SIGKILL of either side, then resumed. Every process gets ``--interface
127.0.0.1``; every wait is for a line or an event, with a deadline.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from procs import LOOPBACK, Proc, ProcPool, run_p2pchat, start_host, start_join, wait_session

pytestmark = pytest.mark.timeout(90)

SIZE = 50 * 1000 * 1000
#: MiB/s for the runs that get killed halfway: slow enough to cut them there
#: for sure, fast enough to keep the test short (the relay does not limit)
SLOW = "16"


def make_file(path: Path, size: int) -> str:
    """``size`` random bytes at ``path`` (written in blocks); their SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 1 << 20))
            digest.update(block)
            f.write(block)
            left -= len(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def send_args(procs: ProcPool, src: Path, port: int, *extra: str) -> list[str | Path]:
    return [
        "send",
        src,
        "--to",
        "carol",
        "--connect",
        f"127.0.0.1:{port}",
        "--name",
        "alice",
        "--home",
        procs.home("alice"),
        *LOOPBACK,
        *extra,
    ]


def receiver(procs: ProcPool, port: int, inbox: Path, *extra: str, json: bool = True) -> Proc:
    return start_join(
        procs,
        procs.home("carol"),
        "--connect",
        f"127.0.0.1:{port}",
        "--accept-files",
        inbox,
        *(["--json"] if json else []),
        *extra,
        name="carol",
    )


def progress_at_least(proc: Proc, fraction: float, timeout: float = 30) -> dict[str, Any]:
    def reached(event: dict[str, Any]) -> bool:
        return event["type"] == "file-progress" and event["bytes"] >= fraction * event["size"]

    return proc.wait_until(
        "stdout",
        lambda lines: next((e for e in map(_json, lines) if reached(e)), None),
        timeout,
        what=f"file-progress at {fraction:.0%}",
    )


def _json(line: str) -> dict[str, Any]:
    import json

    return dict(json.loads(line))


def working_files(inbox: Path) -> list[str]:
    return sorted(p.name for p in inbox.iterdir() if p.suffix in (".part", ".resume"))


def test_sender_killed_halfway_then_run_again_resumes(tmp_path: Path, procs: ProcPool) -> None:
    src = tmp_path / "big.bin"
    digest = make_file(src, SIZE)
    inbox = tmp_path / "inbox"
    bob, port = start_host(procs, procs.home("bob"))
    carol = receiver(procs, port, inbox)
    wait_session(carol, "bob")

    first = procs.start(*send_args(procs, src, port, "--limit-rate", SLOW), name="send-1")
    progress_at_least(carol, 0.4)
    first.popen.send_signal(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    # carol notices alice is gone and keeps what she has
    carol.wait_for_event("file-progress", paused=True)
    assert working_files(inbox) == [
        "big.bin." + _key(carol) + ".part",
        "big.bin." + _key(carol) + ".resume",
    ]

    # the very same command again: it resumes
    second = procs.start(*send_args(procs, src, port, "--limit-rate", SLOW), name="send-2")
    assert second.wait(60) == 0, second.describe()
    done = carol.wait_for_event("file-done", timeout=10)
    starts = [e["from"] for e in carol.json_events("file-progress") if e["bytes"] == e["from"]]
    assert starts[0] == 0 and starts[-1] >= 0.4 * SIZE, starts  # started at 0, resumed late
    assert done["from"] == starts[-1] and done["sha256"] == digest
    assert sha256_file(inbox / "big.bin") == digest
    assert sorted(p.name for p in inbox.iterdir()) == ["big.bin"]
    assert any("sent big.bin to carol, SHA-256 verified by carol" in ln for ln in second.stderr)
    assert not any("Traceback" in ln for ln in carol.stderr + second.stderr)
    # the sender's status lines: at most about two a second
    progress = [ln for ln in second.stderr if "sending big.bin to carol: " in ln]
    assert 1 <= len(progress) <= 2 * 6 + 3, second.describe()
    bob.terminate()


def test_send_interrupted_says_how_it_resumes_and_exits_130(
    tmp_path: Path, procs: ProcPool
) -> None:
    """``send`` remembers nothing: Ctrl-C halfway promises no resume by itself
    (the chat's wording, "the next time you chat", would be untrue here)."""
    src = tmp_path / "big.bin"
    make_file(src, SIZE)
    _, port = start_host(procs, procs.home("bob"))
    carol = receiver(procs, port, tmp_path / "inbox")
    wait_session(carol, "bob")
    first = procs.start(*send_args(procs, src, port, "--limit-rate", SLOW), name="send")
    progress_at_least(carol, 0.2)
    first.popen.send_signal(signal.SIGINT)
    assert first.wait(20) == 130, first.describe()
    paused = [ln for ln in first.stderr if "paused at" in ln]
    assert len(paused) == 1, first.describe()
    assert re.fullmatch(
        r"p2pchat: sending big\.bin to carol: paused at \d+%; send it again to resume "
        r"\(carol keeps what it has\)",
        paused[0],
    ), paused
    assert "p2pchat: interrupted; run the same command again to resume" in first.stderr
    assert not any("next time" in ln or "Traceback" in ln for ln in first.stderr), first.stderr


def _key(carol: Proc) -> str:
    """The 12-hex key in the receiver's working file names (from the offer's id)."""
    from p2pchat.proto.keys import parse_fingerprint
    from p2pchat.store.filestore import part_key

    offer = carol.json_events("file-offer")[0]
    return part_key(bytes.fromhex(offer["id"]), parse_fingerprint(offer["fingerprint"]))


def test_receiver_killed_halfway_and_restarted_resumes(tmp_path: Path, procs: ProcPool) -> None:
    src = tmp_path / "big.bin"
    digest = make_file(src, SIZE)
    inbox = tmp_path / "inbox"
    bob, port = start_host(procs, procs.home("bob"))
    carol = receiver(procs, port, inbox)
    wait_session(carol, "bob")

    alice = procs.start(*send_args(procs, src, port, "--limit-rate", SLOW), name="send")
    progress_at_least(carol, 0.4)
    carol.popen.send_signal(signal.SIGKILL)
    carol.popen.wait(10)
    alice.wait_for_line("stderr", "paused at .*carol is gone")

    carol2 = receiver(procs, port, inbox)
    assert alice.wait(60) == 0, alice.describe()
    done = carol2.wait_for_event("file-done", timeout=10)
    (start,) = [e for e in carol2.json_events("file-progress") if e["bytes"] == e["from"]]
    # resumed from its last checkpoint (every 8 MiB), not from zero
    assert start["from"] >= 8 * 1024 * 1024, start
    assert done["from"] == start["from"] and done["sha256"] == digest
    assert sha256_file(inbox / "big.bin") == digest
    assert sorted(p.name for p in inbox.iterdir()) == ["big.bin"]
    assert any("resuming at" in ln for ln in carol2.stderr)
    bob.terminate()


def test_line_mode_refuses_files_and_send_says_why(tmp_path: Path, procs: ProcPool) -> None:
    src = tmp_path / "notes.txt"
    src.write_text("hello\n")
    bob, port = start_host(procs, procs.home("bob"))
    carol = start_join(procs, procs.home("carol"), "--connect", f"127.0.0.1:{port}", name="carol")
    wait_session(carol, "bob")
    alice = procs.start(*send_args(procs, src, port), name="send")
    assert alice.wait(30) == 1, alice.describe()
    assert alice.stderr[-1] == "p2pchat: error: carol refused notes.txt: not accepting files"
    assert alice.stdout == []
    carol.wait_for_line(
        "stderr",
        r"not receiving notes\.txt from alice: not accepting files \(start with --accept-files DIR",
    )
    bob.terminate()


def test_files_quota_flag_refuses_what_does_not_fit(tmp_path: Path, procs: ProcPool) -> None:
    src = tmp_path / "big.bin"
    make_file(src, 2 * 1000 * 1000)
    inbox = tmp_path / "inbox"
    bob, port = start_host(procs, procs.home("bob"))
    carol = receiver(procs, port, inbox, "--files-quota", "0.001", json=False)  # about 1 MB
    wait_session(carol, "bob")
    alice = procs.start(*send_args(procs, src, port), name="send")
    assert alice.wait(30) == 1, alice.describe()
    assert alice.stderr[-1] == (
        "p2pchat: error: carol refused big.bin: the receiver has no room for it now"
    )
    carol.wait_for_line(
        "stderr", r"not receiving big\.bin from alice: over the quota for unfinished files"
    )
    assert working_files(inbox) == []
    bob.terminate()


def test_send_usage_errors_are_one_line(tmp_path: Path, procs: ProcPool) -> None:
    missing = run_p2pchat(
        "send",
        tmp_path / "nope.bin",
        "--to",
        "carol",
        "--home",
        procs.home("alice"),
        *LOOPBACK,
        "--connect",
        "127.0.0.1:9",
    )
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"p2pchat: {tmp_path / 'nope.bin'}: no such file"
    ]

    src = tmp_path / "notes.txt"
    src.write_text("hello\n")
    bob, port = start_host(procs, procs.home("bob"))
    nobody = run_p2pchat(
        "send", src, "--to", "nobody", "--connect", f"127.0.0.1:{port}", "--name", "alice",
        "--home", procs.home("alice"), *LOOPBACK, "--timeout", "3",
    )  # fmt: skip
    assert nobody.returncode == 2, nobody.stderr
    assert nobody.stderr.strip().splitlines()[-1] == (
        "p2pchat: nobody called 'nobody' is in the chat (waited 3 s)"
    )
    assert "Traceback" not in nobody.stderr
    bob.terminate()
