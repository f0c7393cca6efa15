"""One p2pchat process at a time per home directory.

A running host, join or send keeps the outbox, the hosts it reached and the
pins in its home; two at once would write over each other's outbox. So a Room
takes an exclusive lock on ``home/lock`` when it starts, and a second one fails
at once with :class:`~p2pchat.errors.HomeInUseError` naming the pid inside.

The lock is the operating system's (``fcntl.flock`` on POSIX, ``msvcrt.locking``
on Windows) on an open file, so it goes when the process does, however it
ends: a crash never leaves a stale lock behind. The file itself stays; its
content (the holder's pid) is only for the message. Commands that only read
(``id``, ``trust list``, ``discover``, ``doctor``) take no lock, and neither
do ``trust forget/verify``: the pin store is rewritten atomically, with a
re-read just before, so they may run beside a chat.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from p2pchat.errors import HomeError, HomeInUseError

__all__ = ["LOCK_FILE", "HomeLock"]

LOCK_FILE = "lock"
#: Windows locks byte ranges, and a locked range cannot be read by others: the
#: byte locked lies past the pid, so the pid stays readable for the message.
_WIN_LOCK_OFFSET = 64


class HomeLock:
    """The lock on one home directory; :meth:`acquire` once, :meth:`release` when done."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise HomeInUseError (another process has it) or
        HomeError (the lock file cannot be created: the home is not writable)."""
        if self._fd is not None:
            return
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise HomeError(
                f"cannot use p2pchat home {self.home}: cannot write {self.path.name} there: "
                f"{exc.strerror or exc}"
            ) from exc
        try:
            if not _try_lock(fd):
                pid = _read_pid(fd)
                holder = f" (pid {pid})" if pid else ""
                raise HomeInUseError(
                    f"another p2pchat is using {self.home}{holder}; "
                    "use another --home to run two at once"
                )
            _write_pid(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock (closing the file does it; idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _WIN_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def _read_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, 32, 0) if hasattr(os, "pread") else _read_start(fd)
    except OSError:
        return None
    text = raw.split(b"\n", 1)[0].strip()
    return int(text) if text.isdigit() else None


def _read_start(fd: int) -> bytes:  # pragma: no cover - Windows has no pread
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 32)


def _write_pid(fd: int) -> None:
    """Best effort: the pid is only for the other process's message."""
    with contextlib.suppress(OSError):
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".ljust(32).encode("ascii"))
