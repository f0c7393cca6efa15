"""Where the chat screen's /accept saves: --download-dir, $P2PCHAT_DOWNLOADS, the platform's."""

from __future__ import annotations

import argparse

import platformdirs
import pytest

from p2pchat.faces import chat
from p2pchat.faces.cli import build_parser


def test_the_flag_then_the_environment_then_the_platform(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.delenv(chat.ENV_DOWNLOADS, raising=False)
    assert chat.download_dir(None) == platformdirs.user_downloads_dir()
    monkeypatch.setenv(chat.ENV_DOWNLOADS, "/srv/inbox")
    assert chat.download_dir(None) == "/srv/inbox"
    assert chat.download_dir("/tmp/mine") == "/tmp/mine"


@pytest.mark.parametrize("command", ["host", "join"])
def test_the_chat_screen_asks_and_saves_where_it_is_told(
    monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setattr(chat, "interactive", lambda args: True)
    extra = ["--name", "bob"] if command == "host" else []
    args: argparse.Namespace = build_parser().parse_args(
        [command, *extra, "--download-dir", "/tmp/elsewhere"]
    )
    options = chat.file_options(args)
    assert (options["file_policy"], options["file_dir"]) == ("ask", "/tmp/elsewhere")
    # --accept-files still wins: every offer accepted, into that directory
    args = build_parser().parse_args([command, *extra, "--accept-files", "/tmp/in"])
    options = chat.file_options(args)
    assert (options["file_policy"], options["file_dir"]) == ("auto", "/tmp/in")
