"""The text policy through real processes (loopback only): the names people
write are accepted by ``--name`` and shown as written on the other side,
messages keep ZWJ sequences and flags and show terminal-driving characters
escaped, and a name with a bidi override is refused in one line."""

from __future__ import annotations

import re

import pytest
from procs import LOOPBACK, ProcPool, run_p2pchat, start_host, start_join, wait_session

pytestmark = pytest.mark.timeout(90)

ZOE = "Zoë 👩\u200d💻"
PERSIAN = "می\u200cخواهم"  # noqa: RUF001 (Persian, with a ZWNJ)
FLAG = "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"
FAMILY = "👨\u200d👩\u200d👧"


def test_names_and_messages_people_write(procs: ProcPool) -> None:
    host, port = start_host(procs, procs.home("zoe"), "--port", "0", name=ZOE)
    join = start_join(
        procs, procs.home("persian"), "--timeout", "15", "--connect", f"127.0.0.1:{port}",
        name=PERSIAN,
    )  # fmt: skip
    assert wait_session(join, ZOE) == wait_session(host, PERSIAN)
    hosting = next(line for line in host.stderr if "advertised at" in line)
    assert f"hosting as {ZOE} on port {port}" in hosting  # not escaped, nor repr()'d
    assert f" as '{ZOE} " in hosting, hosting

    join.send_line(f"{FAMILY} {FLAG} \U0001fae8 क्\u200dष")
    join.send_line("evil \x1b[2J \u202eexe.txt \u2066x\u2069 typed \\x1b")
    assert host.wait_for_lines("stdout", 2) == [
        f"{PERSIAN}: {FAMILY} {FLAG} \U0001fae8 क्\u200dष",
        f"{PERSIAN}: evil \\x1b[2J \\u202eexe.txt \\u2066x\\u2069 typed \\\\x1b",
    ]
    host.send_line(f"hi {PERSIAN} {FAMILY}")
    assert join.wait_for_lines("stdout", 1) == [f"{ZOE}: hi {PERSIAN} {FAMILY}"]
    for text in host.stdout + join.stdout:
        assert not re.search("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", text), text

    join.close_stdin()
    assert join.wait() == 0, join.describe()
    host.terminate()
    assert host.wait() == 0, host.describe()


def test_a_name_with_a_bidi_override_is_refused(procs: ProcPool) -> None:
    done = run_p2pchat(
        "host", "--name", "alice\u202egpj.exe", "--home", procs.home("x"), *LOOPBACK, "--port", "0"
    )
    assert done.returncode != 0
    lines = done.stderr.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("p2pchat: name contains U+202E"), done.stderr
