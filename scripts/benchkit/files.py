"""8. File transfer: the real ``p2pchat host``, ``join --accept-files`` and
``send`` commands, beside the unbatched raw chain's 64 KiB rate."""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import statistics
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchkit.baselines import raw_chain
from benchkit.common import LARGE, LOOPBACK, MIB, WINDOW_LARGE, BenchError
from benchkit.procs import CpuWatch, Proc

if TYPE_CHECKING:
    from benchkit.runner import Bench


def raw_large_mb_s(bench: Bench) -> tuple[float, str]:
    """The unbatched raw chain's 64 KiB rate (MB/s) of this run: step large's
    if it ran, else measured now the same way. Also says which."""
    large = bench.details.get("throughput_large")
    if large is not None:
        return large["raw_unbatched_msgs_s"] * LARGE / 1e6, "step large"
    warmup, duration = bench.plan["throughput"]
    args = {"mode": "tput", "size": LARGE, "window": WINDOW_LARGE, "warmup": warmup}
    args["duration"] = duration
    res, _rep, _peak = raw_chain(bench, False, 1, args)
    return res["rate"] * LARGE / 1e6, "measured in step file"


def random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; their SHA-256 (hex)."""
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        for _ in range(size // MIB):
            block = os.urandom(MIB)
            digest.update(block)
            fh.write(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(MIB):
            digest.update(block)
    return digest.hexdigest()


def measure(bench: Bench) -> None:
    """``p2pchat send FILE --to bob`` through a ``p2pchat host`` process to a
    ``p2pchat join --accept-files DIR --json`` receiver, all three with
    ``--interface 127.0.0.1``; one fresh random file per send (the same file
    again would be answered at once from the receiver's finished transfers)."""
    bench.check_time("file transfer")
    mib, sends = bench.plan["file"]
    size = mib * MIB
    raw, raw_from = raw_large_mb_s(bench)
    src_dir, inbox = bench.tmp / "files", bench.tmp / "inbox"
    src_dir.mkdir(exist_ok=True)
    local = ["--interface", LOOPBACK, "--json"]
    argv = ["host", *local, "--name", f"{bench.host_name}-file", "--home", bench.home("host")]
    host = bench.p2pchat("host", *argv)
    recv: Proc | None = None
    runs: list[dict[str, Any]] = []
    try:
        connect = f"{LOOPBACK}:{host.expect('hosting', 30)['port']}"
        argv = ["join", "--connect", connect, *local, "--accept-files", str(inbox)]
        argv += ["--timeout", "10", "--home", bench.home("bob"), "--name", "bob"]
        recv = bench.p2pchat("join", *argv)
        recv.expect("session", 20)  # with the host
        for i in range(sends):
            bench.check_time(f"file transfer {i + 1} of {sends}")
            runs.append(one_send(bench, host, recv, connect, src_dir / f"bench-{i}.bin", size))
    finally:
        if recv is not None:
            bench.stop(recv)
        host.close(sigterm=True)
        with contextlib.suppress(ValueError):
            bench.procs.remove(host)
    accept = statistics.median(r["accept_to_verified_mb_s"] for r in runs)
    wall = statistics.median(r["send_wall_mb_s"] for r in runs)
    bench.details["file"] = {
        "size_bytes": size,
        "sends": sends,
        "accept_to_verified_mb_s": accept,
        "send_wall_mb_s": wall,
        "raw_unbatched_64k_mb_s": raw,
        "raw_unbatched_64k_from": raw_from,
        "runs": runs,
    }
    bench.row(
        "8 file",
        f"{mib} MiB file, accept->verified (n={sends})",
        accept,
        raw,
        "MB/s",
        base_label="raw unbatched",
    )
    bench.row(
        "8 file",
        "  p2pchat send, start->exit",
        wall,
        raw,
        "MB/s",
        base_label="raw unbatched",
    )


def one_send(
    bench: Bench, host: Proc, recv: Proc, connect: str, path: Path, size: int
) -> dict[str, Any]:
    """One timed ``p2pchat send``: the receiver's accept -> verified
    (``seconds`` of its file-done event) and the command's wall time."""
    sha = random_file(path, size)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = CpuWatch(relay=host.pid, receiver=recv.pid)
    argv = ["send", str(path), "--to", "bob", "--connect", connect, "--interface", LOOPBACK]
    argv += ["--json", "--timeout", "30", "--home", bench.home("alice"), "--name", "alice"]
    t0, t0_unix = time.monotonic(), time.time()
    send = bench.p2pchat("send", *argv)
    try:
        # the receiver's events, until its file-done (bounded: 120 s in all)
        deadline = t0 + 120
        seen: dict[str, dict[str, Any]] = {}
        while "file-done" not in seen:
            if time.monotonic() > deadline:
                raise recv.fail("no file-done within 120 s")
            if send.proc.poll() not in (None, 0):
                raise send.fail(f"exited with {send.proc.returncode}")
            ev = recv.next_json(1.0)
            if ev is None:
                if recv.proc.poll() is not None:
                    raise recv.fail(f"exited with {recv.proc.returncode}")
                continue
            kind = ev.get("type", "")
            if kind in ("file-failed", "error", "disconnected"):
                raise recv.fail(f"{kind}: {ev}")
            if kind.startswith("file-") and ev.get("direction") == "in":
                seen.setdefault(kind, ev)
        code = send.proc.wait(30)
        for _ in range(200):  # the reader thread notes the end of stdout
            if send.eof_at is not None:
                break
            time.sleep(0.01)
    except subprocess.TimeoutExpired as exc:
        raise send.fail("did not exit within 30 s of the receiver's file-done") from exc
    finally:
        bench.stop(send)
    if code != 0:
        raise send.fail(f"exited with {code}")
    cpu_s = cpu.stop()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s["sender"] = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
    wall = (send.eof_at or time.monotonic()) - t0
    done = seen["file-done"]
    received = Path(done["path"])
    got = sha256_of(received)
    if got != sha or done["sha256"] != sha or received.stat().st_size != size:
        raise BenchError(f"file: the received file differs from the source ({received})")
    received.unlink()
    path.unlink()
    sender_events: list[dict[str, Any]] = []
    while (ev := send.next_json(0)) is not None:
        sender_events.append(ev)
    session = next(
        (e for e in sender_events if e.get("type") == "session" and e.get("peer") == "bob"),
        None,
    )
    out_done = next((e for e in sender_events if e.get("type") == "file-done"), {})
    offer = seen.get("file-offer", {}).get("time")
    accept = seen.get("file-progress", {}).get("time")
    return {
        "accept_to_verified_s": done["seconds"],
        "accept_to_verified_mb_s": done["rate"] / 1e6,
        "send_wall_s": wall,
        "send_wall_mb_s": size / wall / 1e6,
        # Unix times (ms) of the JSON events, from the send command's start
        "start_to_session_with_receiver_s": session["time"] - t0_unix if session else None,
        "start_to_offer_s": offer - t0_unix if offer is not None else None,
        "start_to_accept_s": accept - t0_unix if accept is not None else None,
        "start_to_verified_s": done["time"] - t0_unix,
        "sender_accept_to_done_s": out_done.get("seconds"),
        "cpu_s": cpu_s,
        "sha256_verified": True,
    }
