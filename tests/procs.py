"""Helpers for the end-to-end tests: drive real ``p2pchat`` processes.

:class:`Proc` wraps one ``python -m p2pchat ...`` subprocess: stdin is a pipe,
stdout and stderr are read line by line by two daemon threads, and tests wait
for lines with a deadline instead of sleeping. :class:`ProcPool` (the
``procs`` fixture in conftest.py) kills whatever is still running at teardown.

Every wait is bounded; a process that exits while a test waits for a line
fails the wait at once, with both streams in the message.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "FP_RE",
    "Proc",
    "ProcPool",
    "base_env",
    "p2pchat_cmd",
    "run_p2pchat",
]

#: A fingerprint as ``p2pchat id`` prints it: 13 groups of 4 base32 characters.
FP_RE = re.compile(r"[A-Z2-7]{4}(?:-[A-Z2-7]{4}){12}")

DEFAULT_TIMEOUT = 20.0

Matcher = str | re.Pattern[str] | Callable[[str], bool]


def base_env(**extra: str) -> dict[str, str]:
    """The environment for a child: unbuffered UTF-8 I/O, no inherited p2pchat
    settings (every test passes ``--home``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PCHAT_")}
    env.update(PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8", PYTHONUTF8="1")
    env.update(extra)
    return env


def p2pchat_cmd(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "p2pchat", *map(str, args)]


def run_p2pchat(
    *args: str | os.PathLike[str], timeout: float = DEFAULT_TIMEOUT, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run a short p2pchat command to completion (``id``, ``trust``, ``--help``...)."""
    return subprocess.run(
        p2pchat_cmd(*args),
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        env=base_env(),
        check=False,
    )


def _matcher(pattern: Matcher) -> Callable[[str], bool]:
    if callable(pattern):
        return pattern
    rx = re.compile(pattern) if isinstance(pattern, str) else pattern
    return lambda line: rx.search(line) is not None


class Proc:
    """One running command with line-oriented, deadline-bounded access to its output."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str = "proc",
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._eof: dict[str, bool] = {"stdout": False, "stderr": False}
        self._cond = threading.Condition()
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env if env is not None else base_env(),
            cwd=cwd,
            start_new_session=True,  # our signals reach it alone, not the test runner
        )
        self._threads = [
            threading.Thread(target=self._pump, args=(s,), daemon=True, name=f"{name}-{s}")
            for s in ("stdout", "stderr")
        ]
        for t in self._threads:
            t.start()

    # ---------------------------------------------------------------- output

    def _pump(self, stream: str) -> None:
        pipe = getattr(self.popen, stream)
        try:
            for raw in iter(pipe.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                with self._cond:
                    self.lines[stream].append(line)
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._eof[stream] = True
                self._cond.notify_all()

    @property
    def stdout(self) -> list[str]:
        with self._cond:
            return list(self.lines["stdout"])

    @property
    def stderr(self) -> list[str]:
        with self._cond:
            return list(self.lines["stderr"])

    def describe(self) -> str:
        with self._cond:
            out, err = list(self.lines["stdout"]), list(self.lines["stderr"])
        return (
            f"[{self.name}] {' '.join(self.argv[1:])}\n"
            f"  returncode: {self.popen.poll()}\n"
            f"  stdout:\n    " + "\n    ".join(out) + "\n"
            "  stderr:\n    " + "\n    ".join(err)
        )

    def wait_until(
        self,
        stream: str,
        check: Callable[[list[str]], Any],
        timeout: float = DEFAULT_TIMEOUT,
        what: str = "condition",
    ) -> Any:
        """Wait until ``check(lines of stream)`` returns something truthy and return it.
        Fails (AssertionError) on timeout or once the stream has ended without it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = check(self.lines[stream])
                if result:
                    return result
                if self._eof[stream]:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, 0.5))
        ended = "stream ended" if self._eof[stream] else f"timed out after {timeout:g} s"
        raise AssertionError(
            f"{self.name}: {what} not seen on {stream} ({ended})\n{self.describe()}"
        )

    def wait_for_line(
        self,
        stream: str,
        pattern: Matcher,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        start: int = 0,
    ) -> str:
        """The first line of ``stream`` (from index ``start``) matching ``pattern``
        (a regex searched in the line, or a predicate)."""
        match = _matcher(pattern)

        def check(lines: list[str]) -> str | None:
            return next((ln for ln in lines[start:] if match(ln)), None)

        result: str = self.wait_until(stream, check, timeout, what=f"line matching {pattern!r}")
        return result

    def wait_for_lines(
        self, stream: str, count: int, timeout: float = DEFAULT_TIMEOUT
    ) -> list[str]:
        """The first ``count`` lines of ``stream``, once there are that many."""
        result: list[str] = self.wait_until(
            stream,
            lambda lines: list(lines[:count]) if len(lines) >= count else None,
            timeout,
            what=f"{count} lines",
        )
        return result

    def json_events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """stdout parsed as JSON lines (every line must parse), optionally one type only."""
        events = [json.loads(line) for line in self.stdout]
        return [e for e in events if kind is None or e.get("type") == kind]

    def wait_for_event(
        self,
        kind: str,
        timeout: float = DEFAULT_TIMEOUT,
        **fields: Any,
    ) -> dict[str, Any]:
        """The first JSON event of type ``kind`` whose fields include ``fields``."""

        def check(lines: list[str]) -> dict[str, Any] | None:
            for line in lines:
                event = json.loads(line)
                if event.get("type") == kind and all(event.get(k) == v for k, v in fields.items()):
                    return dict(event)
            return None

        result: dict[str, Any] = self.wait_until(
            "stdout", check, timeout, what=f"{kind} event with {fields}"
        )
        return result

    # ---------------------------------------------------------------- input

    def send_line(self, text: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(text.encode("utf-8") + b"\n")
        self.popen.stdin.flush()

    def close_stdin(self) -> None:
        if self.popen.stdin is not None and not self.popen.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.popen.stdin.close()

    # ---------------------------------------------------------------- lifetime

    @property
    def pid(self) -> int:
        return self.popen.pid

    def terminate(self) -> None:
        """SIGTERM (what Ctrl-C-free shutdown of a service looks like)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """The exit code, once the process has exited and both streams are drained."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running after {timeout:g} s\n{self.describe()}"
            ) from None
        for t in self._threads:
            t.join(5.0)
        return code

    def kill(self) -> None:
        """Teardown: SIGTERM, then SIGKILL if it does not go within 3 s. Idempotent."""
        self.close_stdin()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(3.0)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5.0)
        for t in self._threads:
            t.join(2.0)
        for pipe in (self.popen.stdout, self.popen.stderr):
            if pipe is not None:
                pipe.close()


class ProcPool:
    """Starts p2pchat processes for one test and kills the leftovers afterwards."""

    def __init__(self, tmp: Path, keys: Path | None = None) -> None:
        self.tmp = tmp
        self.keys = keys
        self.procs: list[Proc] = []

    def home(self, label: str, *, fresh: bool = False) -> Path:
        """The ``--home`` directory of identity ``label`` in this test (no pins,
        no outbox). Its key is made once per session per label, by ``p2pchat id``
        in a template home, and copied (RSA key generation is the slow part of
        these tests); ``fresh=True`` leaves the key to be created on first use."""
        path = self.tmp / f"home-{label}"
        if path.exists():
            return path
        path.mkdir()
        if fresh or self.keys is None:
            return path
        template = self.keys / label
        if not template.exists():
            template.mkdir()
            result = run_p2pchat("id", "--home", template)
            assert result.returncode == 0, result.stderr
        for item in template.iterdir():
            if item.is_file():
                shutil.copy2(item, path / item.name)
        return path

    def start(
        self,
        *args: str | os.PathLike[str],
        name: str = "p2pchat",
        prefix: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> Proc:
        """Start ``[*prefix, python, -m, p2pchat, *args]``."""
        proc = Proc([*prefix, *p2pchat_cmd(*args)], name=name, env=env)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.kill()
        self.procs.clear()


# -------------------------------------------------------------------- p2pchat roles

#: Outside a network namespace every host/join/discover stays on loopback.
LOOPBACK = ("--interface", "127.0.0.1")

_PORT_RE = re.compile(r"hosting as .* on port (\d+)")


def start_host(
    pool: ProcPool,
    home: Path,
    *extra: str | os.PathLike[str],
    name: str = "bob",
    interface: Sequence[str] = LOOPBACK,
    prefix: Sequence[str] = (),
    timeout: float = 30.0,
) -> tuple[Proc, int]:
    """Start ``p2pchat host --name NAME`` and wait until it serves; returns (proc, port)."""
    proc = pool.start(
        "host",
        "--name",
        name,
        "--home",
        home,
        *interface,
        *extra,
        name=f"host:{name}",
        prefix=prefix,
    )
    line = proc.wait_for_line("stderr", _PORT_RE, timeout)
    match = _PORT_RE.search(line)
    assert match is not None
    return proc, int(match.group(1))


def start_join(
    pool: ProcPool,
    home: Path,
    *extra: str | os.PathLike[str],
    name: str = "alice",
    interface: Sequence[str] = LOOPBACK,
    prefix: Sequence[str] = (),
) -> Proc:
    """Start ``p2pchat join --name NAME ...`` (line mode: stdin is a pipe)."""
    return pool.start(
        "join",
        "--name",
        name,
        "--home",
        home,
        *interface,
        *extra,
        name=f"join:{name}",
        prefix=prefix,
    )


def after_looking(lines: Sequence[str], name: str | None, timeout: str) -> list[str]:
    """The stderr of a join by discovery (line mode, not a terminal) after
    its first line, which must say it is looking for ``name`` (None: any host)."""
    what = f"hosts named {name!r}" if name else "hosts"
    assert lines and lines[0] == f"p2pchat: looking for {what} (up to {timeout} s)", lines
    return list(lines[1:])


def wait_session(proc: Proc, peer: str, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Wait for the line-mode status ``secure session with PEER``; returns its SAS."""
    start = proc.wait_for_line("stderr", f"secure session with {re.escape(peer)} ", timeout)
    lines = proc.stderr
    index = lines.index(start)
    sas_line = proc.wait_for_line(
        "stderr", r"short authentication string: \d{3} \d{3}", timeout, start=index
    )
    match = re.search(r"(\d{3} \d{3})", sas_line)
    assert match is not None
    return match.group(1)


def fingerprint_of(home: Path) -> str:
    """``p2pchat id --home HOME`` (creates the key on first use)."""
    result = run_p2pchat("id", "--home", home)
    assert result.returncode == 0, result.stderr
    fp = result.stdout.strip()
    assert FP_RE.fullmatch(fp), fp
    return fp
