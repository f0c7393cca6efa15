"""The example bot (examples/echo_bot.py), run as its own process against a real host.

It imports nothing but ``p2pchat``: if the library's public surface breaks,
this test does too.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from procs import Proc, ProcPool, base_env, start_host, start_join, wait_session

BOT = Path(__file__).resolve().parent.parent / "examples" / "echo_bot.py"


def test_the_bot_imports_only_the_package() -> None:
    tree = ast.parse(BOT.read_text(encoding="utf-8"))
    ours = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            ours |= {a.name for a in node.names if a.name.startswith("p2pchat")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("p2pchat"):
            ours.add(node.module or "")
    assert ours == {"p2pchat"}


def _start_bot(procs: ProcPool, port: int, *extra: str) -> Proc:
    proc = Proc(
        [
            sys.executable,
            str(BOT),
            "--name",
            "echo",
            "--home",
            str(procs.home("echo")),
            "--interface",
            "127.0.0.1",
            "--connect",
            f"127.0.0.1:{port}",
            *extra,
        ],
        name="bot",
        env=base_env(),
    )
    procs.procs.append(proc)
    return proc


def test_the_echo_bot_answers_through_a_real_host(procs: ProcPool) -> None:
    bob, port = start_host(procs, procs.home("bob"))
    bot = _start_bot(procs, port, "--count", "2")
    bot.wait_for_line("stdout", "^echo bot echo joined$")
    bot.wait_for_line("stdout", "^secure session with bob$")
    alice = start_join(procs, procs.home("alice"), "--connect", f"127.0.0.1:{port}")
    wait_session(alice, "echo")
    alice.send_line("hello bot")
    alice.wait_for_line("stdout", "^echo: echo: hello bot$")
    bob.send_line("and one from bob")
    bob.wait_for_line("stdout", "^echo: echo: and one from bob$")
    assert bot.wait() == 0, bot.describe()
    assert bot.stdout[-1] == "all answers delivered"
    assert "alice said 'hello bot'" in bot.stdout
    # the bot answered each sender alone, not the room
    assert not any("echo: and one from bob" in line for line in alice.stdout)


def test_the_bot_reports_no_host_in_one_line(procs: ProcPool) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bot = _start_bot(procs, port, "--timeout", "2")
    code = bot.wait()
    assert code == 1, bot.describe()
    assert len(bot.stderr) == 1 and bot.stderr[0].startswith("echo bot: could not connect")
