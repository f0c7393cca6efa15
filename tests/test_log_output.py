"""Where log records go: never among the status lines of line mode without
-v (the chat screen keeps them off the terminal too: tests/test_chatlog.py)."""

from __future__ import annotations

import os

from procs import ProcPool, run_p2pchat


def test_a_warning_reaches_stderr_only_with_verbose(procs: ProcPool, tmp_path) -> None:
    home = procs.home("alice")
    key = home / "identity.pem"
    log_file = tmp_path / "p2pchat.log"

    def loosened(*flags: str | os.PathLike[str]) -> str:
        key.chmod(0o644)  # the identity warns, and makes it 0600
        result = run_p2pchat("id", "--home", home, *flags)
        assert result.returncode == 0, result.stderr
        assert key.stat().st_mode & 0o077 == 0
        return result.stderr

    assert loosened() == ""
    assert loosened("--log-file", log_file) == ""
    assert "was accessible by other users" in log_file.read_text()
    assert "WARNING p2pchat.store.identity: " in loosened("-v")
