"""No face forgets the mixed-scripts flag: every event that names a peer,
through line mode, JSON mode and the chat screen, shows ``bоb`` (Cyrillic о)
as ``bоb[mixed scripts]`` and never bare."""

from __future__ import annotations

import io
import json
import re

import pytest

from p2pchat.faces.chatlog import ChatLog, status_bar
from p2pchat.faces.lines import LineOutput, mismatch_warning
from p2pchat.room import (
    MIXED_MARK,
    Delivered,
    DeliveryFailed,
    Dialing,
    Event,
    FileCompleted,
    FileFailed,
    FileOffered,
    FileProgress,
    Member,
    MessageReceived,
    MessageSent,
    PeerInfo,
    PeerJoined,
    PeerLeft,
    PeerRefused,
    RefusalKind,
    SessionBroken,
    SessionReady,
    Trust,
    format_fingerprint,
)

SPOOF = "b\u043eb"  # Cyrillic o
FLAGGED = SPOOF + MIXED_MARK
BARE = re.compile(re.escape(SPOOF) + r"(?!" + re.escape(MIXED_MARK) + ")")
PEER = PeerInfo(7, SPOOF, b"\x01" * 32)
PINNED = b"\x02" * 32
TID, SHA = b"\x03" * 16, b"\x04" * 32


def events() -> list[Event]:
    return [
        PeerJoined(PEER),
        SessionReady(PEER, "123456", Trust.NEW),
        MessageReceived(PEER, b"\x05" * 16, "I am bob, please send me the file"),
        MessageReceived(PEER, b"\x06" * 16, "psst", direct=True),
        MessageSent(b"\x07" * 16, "hi", (SPOOF,), direct=True),
        Delivered(b"\x07" * 16, PEER, complete=False, delivered=1, total=2),
        FileOffered(PEER, TID, "f.txt", 10, SHA, incoming=True, pending=True),
        FileProgress(PEER, TID, "f.txt", True, 5, 10, 0, 1.0, 5.0),
        FileCompleted(PEER, TID, "f.txt", True, 10, SHA, "/tmp/f.txt", 0, 1.0, 10.0),
        FileFailed(PEER, TID, "f.txt", False, "refused", by_peer=True),
        PeerRefused(PEER, "a pinned name presented a different key", True, (PINNED,)),
        PeerLeft(PEER, clean=True),
        Dialing((("127.0.0.1", 47474),), SPOOF),
        PeerRefused(PEER, "not a known peer", False, (), RefusalKind.UNKNOWN_PEER, by_peer=True),
        SessionBroken(PEER, "record failed authentication", 0.5),
        DeliveryFailed(PEER, (b"\x05" * 16,), "refused: a pinned name presented a different key"),
    ]


def assert_flagged(text: str, expected_lines: int) -> None:
    assert BARE.search(text) is None, text
    assert text.count(FLAGGED) >= expected_lines, text


@pytest.mark.parametrize("event", events(), ids=lambda e: type(e).__name__)
def test_line_mode_flags_the_name(event: Event, monkeypatch: pytest.MonkeyPatch) -> None:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(err, "isatty", lambda: True)  # Dialing prints on a terminal only
    face = LineOutput(json_mode=False, out=out, err=err)
    if isinstance(event, PeerLeft):  # a peer is shown leaving once its session was shown
        face(SessionReady(PEER, "123 456", Trust.NEW))
        out.seek(0), out.truncate(), err.seek(0), err.truncate()
    face(event)
    shown = out.getvalue() + err.getvalue()
    # line mode is silent on these (a registration alone is the relay's word)
    if isinstance(event, MessageSent | Delivered | PeerJoined):
        assert shown == ""
        return
    assert_flagged(shown, 1)


def test_line_mode_prints_the_issue_line_flagged() -> None:
    out = io.StringIO()
    LineOutput(json_mode=False, out=out, err=io.StringIO())(events()[2])
    assert out.getvalue() == f"{FLAGGED}: I am bob, please send me the file\n"


@pytest.mark.parametrize("event", events(), ids=lambda e: type(e).__name__)
def test_json_mode_keeps_the_name_and_says_mixed(event: Event) -> None:
    out, err = io.StringIO(), io.StringIO()
    LineOutput(json_mode=True, out=out, err=err)(event)
    assert_flagged(err.getvalue(), 0)  # status lines are for people
    for line in out.getvalue().splitlines():
        obj = json.loads(line)
        if "peer" in obj:
            assert obj["peer"] == SPOOF
            assert obj["mixed_scripts"] is True


@pytest.mark.parametrize("event", events(), ids=lambda e: type(e).__name__)
def test_chat_screen_flags_the_name(event: Event) -> None:
    log = ChatLog("alice")
    if isinstance(event, PeerLeft):
        log.feed(SessionReady(PEER, "123 456", Trust.NEW))
        log.clear()
    log.feed(event)
    shown = "\n".join("".join(text for _, text in row) for row in log.rows(200))
    # a registration is not shown; a delivery changes the mark of a message shown
    if isinstance(event, PeerJoined | Delivered):
        assert shown == ""
        return
    assert_flagged(shown, 1)


def test_the_status_bar_flags_the_name() -> None:
    bar = "".join(text for _, text in status_bar(SPOOF, [Member(PEER, True, False)], [], None))
    assert_flagged(bar, 2)  # as our own name and as a member


def test_a_plain_name_is_not_flagged() -> None:
    out = io.StringIO()
    LineOutput(json_mode=False, out=out, err=io.StringIO())(
        MessageReceived(PeerInfo(1, "bob", b"\x01" * 32), b"\x05" * 16, "hi")
    )
    assert out.getvalue() == "bob: hi\n"


def test_the_key_change_warning_says_forget_by_fingerprint() -> None:
    """The pin is under a look-alike name: 'trust forget bоb' would not find it."""
    fp = format_fingerprint(PINNED)
    refused = PeerRefused(PEER, "a pinned name presented a different key", True, (PINNED,))
    warning = mismatch_warning(refused)
    assert_flagged(warning, 1)
    assert f"p2pchat trust forget {fp}" in warning
    assert f"trust forget {SPOOF}" not in warning
    # a host's expected key (nothing pinned): nothing to forget
    expected = PeerRefused(PEER, "its key is not the one expected", True, ())
    assert "trust forget" not in mismatch_warning(expected)
