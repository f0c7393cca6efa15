"""The orchestrator's process plumbing: child processes speaking JSON lines,
and RSS and CPU watchers (psutil)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import subprocess
import threading
import time
from typing import Any

import psutil

from benchkit.common import BenchError


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PCHAT_")}
    env.update(PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8", PYTHONUTF8="1")
    return env


class Proc:
    """A child process speaking JSON lines on stdout; stderr is kept for errors."""

    def __init__(self, label: str, cmd: list[str]) -> None:
        self.label = label
        self.started = time.time()
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
            env=child_env(),
        )
        self.lines: queue.Queue[tuple[float, str] | None] = queue.Queue()
        self.stderr: list[str] = []
        #: time.monotonic() when stdout ended (the process is exiting), once it has
        self.eof_at: float | None = None
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.time(), line))
        self.eof_at = time.monotonic()
        self.lines.put(None)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip())
            del self.stderr[:-40]

    def fail(self, why: str) -> BenchError:
        tail = "\n    ".join(self.stderr[-15:])
        return BenchError(f"{self.label}: {why}\n    {tail}")

    def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        """The next JSON line whose type is ``kind`` (with ``_at``, when it was read)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self.fail(f"no {kind!r} within {timeout:g} s")
            try:
                item = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if item is None:
                self.lines.put(None)
                self.proc.wait(5)
                raise self.fail(f"exited with {self.proc.returncode} before {kind!r}")
            at, line = item
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if not isinstance(obj, dict):
                continue
            if obj.get("type") == "error":
                raise self.fail(str(obj.get("message")))
            if obj.get("type") == kind:
                obj["_at"] = at
                return obj

    def next_json(self, timeout: float) -> dict[str, Any] | None:
        """The next JSON object on stdout, whatever its type (with ``_at``); None
        if none came within ``timeout`` or stdout has ended."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if item is None:
                self.lines.put(None)
                return None
            at, line = item
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                obj["_at"] = at
                return obj

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self, timeout: float = 10.0, *, sigterm: bool = False) -> int | None:
        """End stdin (``sigterm``: and send SIGTERM, as ``p2pchat host`` keeps
        serving after stdin ends), wait; then terminate, then kill (this
        process only)."""
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        if sigterm and self.proc.poll() is None:
            self.proc.terminate()
        for action in (None, self.proc.terminate, self.proc.kill):
            if action is not None and self.proc.poll() is None:
                action()
            try:
                return self.proc.wait(timeout if action is None else 3.0)
            except subprocess.TimeoutExpired:
                continue
        return self.proc.poll()


class RssWatch:
    """Peak RSS (KiB) of one process, sampled every 50 ms by a thread until stopped."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while not self.done.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.process.memory_info().rss / 1024)
            self.done.wait(0.05)

    def stop(self) -> float:
        self.done.set()
        self.thread.join(2.0)
        return self.peak


class CpuWatch:
    """CPU seconds (user + system) each named process uses from now until stop()."""

    def __init__(self, **pids: int) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.start = {name: self._cpu(p) for name, p in self.procs.items()}

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            return float(times.user + times.system)
        return math.nan

    def stop(self) -> dict[str, float]:
        return {name: self._cpu(p) - self.start[name] for name, p in self.procs.items()}
