"""A p2pchat chat screen in a pseudo-terminal, read as a person sees it.

pexpect runs the process with a fixed terminal size; everything it writes is
fed to pyte, a terminal emulator, so a test waits for text *on the screen*
(after cursor moves, redraws and updates in place), not in the byte stream.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Sequence

import pexpect
import pyte
from procs import LOOPBACK, base_env

TIMEOUT = 20.0

#: SGR parameters that set a colour (foreground, background, bright of each)
_COLOURS = {*range(30, 38), *range(40, 48), *range(90, 98), *range(100, 108)}


class TtyScreen:
    def __init__(
        self,
        args: Sequence[str | os.PathLike[str]],
        *,
        rows: int = 30,
        cols: int = 100,
        **env: str,
    ) -> None:
        argv = ["-m", "p2pchat", *map(str, args), *LOOPBACK]
        # nothing here answers cursor-position requests (a real terminal does)
        environ = base_env(TERM="xterm-256color", PROMPT_TOOLKIT_NO_CPR="1", **env)
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.Stream(self.screen)
        self.child = pexpect.spawn(
            sys.executable,
            argv,
            env=environ,
            dimensions=(rows, cols),
            encoding="utf-8",
            codec_errors="replace",
        )
        self.output = ""  #: everything written, as text
        self.ended = False  #: the process closed the terminal

    def _pump(self, timeout: float) -> None:
        try:
            data = self.child.read_nonblocking(1 << 16, timeout=max(0.05, timeout))
        except pexpect.TIMEOUT:
            return
        except pexpect.EOF:
            self.ended = True
            return
        self.output += data
        self.stream.feed(data)

    def colours(self) -> set[str]:
        """The colour parameters of every SGR sequence written (30-37, 38;..., 90-97...)."""
        found = set()
        for params in re.findall(r"\x1b\[([0-9;]*)m", self.output):
            parts = params.split(";")
            for n, part in enumerate(parts):
                if part in ("38", "48"):
                    found.add(";".join(parts[n : n + 3]))
                    break
                if part.isdigit() and int(part) in _COLOURS:
                    found.add(part)
        return found

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def wait_for(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        """Read until ``pattern`` (a regex, multi-line) is on the screen."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.text(), re.MULTILINE)
            if match:
                return match
            left = deadline - time.monotonic()
            if left <= 0 or self.ended:
                raise AssertionError(f"{pattern!r} not on the screen:\n{self.text()}")
            self._pump(min(left, 0.5))

    def wait_gone(self, pattern: str, timeout: float = TIMEOUT) -> None:
        """Read until ``pattern`` is no longer on the screen."""
        deadline = time.monotonic() + timeout
        while re.search(pattern, self.text(), re.MULTILINE):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} still on the screen:\n{self.text()}")
            self._pump(min(left, 0.5))

    def type(self, text: str) -> None:
        """Keys typed, then Enter."""
        self.child.send(text + "\r")

    def paste(self, text: str) -> None:
        """A bracketed paste, as a terminal sends one."""
        self.child.send("\x1b[200~" + text + "\x1b[201~")

    def resize(self, rows: int, cols: int) -> None:
        self.screen.resize(rows, cols)
        self.child.setwinsize(rows, cols)  # SIGWINCH: the application redraws

    def exit_code(self, timeout: float = TIMEOUT) -> int:
        """Read to the end; the exit status."""
        deadline = time.monotonic() + timeout
        while not self.ended:
            if time.monotonic() > deadline:
                raise AssertionError(f"still running:\n{self.text()}")
            self._pump(min(0.5, deadline - time.monotonic()))
        self.child.close()
        assert self.child.exitstatus is not None, self.child.signalstatus
        return int(self.child.exitstatus)

    def close(self) -> None:
        self.child.close(force=True)
