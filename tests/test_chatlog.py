"""The chat screen's model without a terminal: events in, rows out."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from p2pchat.faces.chatlog import ChatLog, Row, nick_style, status_bar, wrap
from p2pchat.faces.commands import async_run_command
from p2pchat.faces.tui import LogView, _typed, routed_logging
from p2pchat.room import (
    Delivered,
    DeliveryFailed,
    Dialing,
    FileCompleted,
    FileFailed,
    FileProgress,
    Looking,
    Member,
    MessageReceived,
    MessageSent,
    PauseReason,
    PeerInfo,
    PeerRefused,
    Reconnected,
    Reconnecting,
    SessionReady,
    Transfer,
    Trust,
)

BOB = PeerInfo(1, "bob", b"\x01" * 32)
CAROL = PeerInfo(2, "carol", b"\x02" * 32)
MID, TID, SHA = b"\x07" * 16, b"\x03" * 16, b"\x04" * 32


def new_log() -> ChatLog:
    return ChatLog("alice", clock=lambda: "12:00")


def text(rows: list[Row]) -> list[str]:
    return ["".join(t for _, t in row) for row in rows]


def styles_of(rows: list[Row], needle: str) -> set[str]:
    return {style for row in rows for style, t in row if needle in t}


def test_a_sent_message_is_one_line_whose_mark_changes_in_place() -> None:
    log = new_log()
    log.feed(MessageSent(MID, "hello", ("bob",)))
    assert text(log.rows(80)) == ["12:00 alice: hello  …"]
    log.feed(Delivered(MID, BOB, complete=True))
    assert text(log.rows(80)) == ["12:00 alice: hello  ✓"]


def test_a_group_counts_deliveries_on_the_same_line() -> None:
    log = new_log()
    log.feed(MessageSent(MID, "hi all", ("bob", "carol", "dave")))
    log.feed(Delivered(MID, BOB, complete=False, delivered=1, total=3))
    log.feed(Delivered(MID, CAROL, complete=False, delivered=2, total=3))
    assert text(log.rows(80)) == ["12:00 alice: hi all  2/3"]
    log.feed(Delivered(MID, CAROL, complete=True, delivered=3, total=3))
    assert text(log.rows(80)) == ["12:00 alice: hi all  ✓"]


def test_undeliverable_and_unsent_messages_are_marked_red() -> None:
    log = new_log()
    log.feed(MessageSent(MID, "secret", ("bob",)))
    log.feed(DeliveryFailed(BOB, (MID,), "refused: a pinned name presented a different key"))
    rows = log.rows(200)
    assert text(rows)[0] == "12:00 alice: secret  ✗ not to bob"
    assert "class:warning" in styles_of(rows, "✗ not to bob")
    assert "will not reach bob" in text(rows)[1]
    log.clear()
    log.feed(MessageSent(b"\x08" * 16, "anyone?", (), queued=False))
    assert "reached no one" in text(log.rows(200))[0]
    # sent to one who never proved a key, and left: it reached no one either
    log.clear()
    log.feed(MessageSent(MID, "hello?", ("mallory",)))
    log.feed(Delivered(MID, BOB, complete=True, delivered=0, total=0, dropped=True))
    assert text(log.rows(200))[0] == "12:00 alice: hello?  ✗ it reached no one"
    # one of two never proved a key: what the other acknowledged completes it
    log.clear()
    other = b"\x09" * 16
    log.feed(MessageSent(other, "hi", ("bob", "mallory")))
    log.feed(Delivered(other, BOB, complete=False, delivered=1, total=2))
    assert text(log.rows(200))[0].endswith("1/2")
    log.feed(Delivered(other, BOB, complete=True, delivered=1, total=1, dropped=True))
    assert text(log.rows(200))[0].endswith("✓")


def test_a_multi_line_message_is_real_lines_indented_under_the_first() -> None:
    log = new_log()
    log.feed(MessageReceived(BOB, MID, "def f():\r\n    return 1\n\x1b[2Jdone"))
    assert text(log.rows(80)) == [
        "12:00 bob: def f():",
        "               return 1",
        "           \\x1b[2Jdone",  # control characters stay escaped, line by line
    ]


def test_long_lines_wrap_at_words_with_a_hanging_indent() -> None:
    log = new_log()
    log.feed(MessageReceived(BOB, MID, "the quick brown fox jumps over the lazy dog again"))
    rows = text(log.rows(40))
    assert rows == [
        "12:00 bob: the quick brown fox jumps",
        "           over the lazy dog again",
    ]
    # narrow: the indent is at most a third of the width
    rows = text(log.rows(30))
    assert rows[1] == " " * 10 + "jumps over the lazy"
    assert all(len(r) <= 30 for r in rows)


def test_a_word_longer_than_the_row_is_cut_and_wide_characters_count_twice() -> None:
    rows = text(wrap([("", "ab " + "x" * 25)], 10, 2))
    assert rows[0] == "ab xxxxxxx"
    assert all(len(r) <= 10 for r in rows) and "".join(rows).count("x") == 25
    emoji = text(wrap([("", "🎉" * 6)], 8, 0))
    assert emoji == ["🎉" * 4, "🎉" * 2]  # each is two cells wide


def test_a_nick_keeps_its_colour_and_mine_is_styled_too() -> None:
    log = new_log()
    log.feed(MessageReceived(BOB, MID, "one"))
    log.feed(MessageReceived(BOB, b"\x09" * 16, "two"))
    rows = log.rows(80)
    assert styles_of(rows[:1], "bob") == styles_of(rows[1:], "bob") == {nick_style("bob")}
    assert nick_style("bob").startswith("class:nick.")


def test_an_action() -> None:
    log = new_log()
    log.feed(MessageReceived(BOB, MID, "/me waves"))
    assert text(log.rows(80)) == ["12:00 * bob waves"]


def test_the_sas_block_is_shown_once_per_key_and_never_for_a_verified_peer() -> None:
    log = new_log()
    log.feed(SessionReady(BOB, "123 456", Trust.NEW))
    first = text(log.rows(200))
    assert len(first) == 3 and "123 456" in first[2] and BOB.fingerprint_text in first[1]
    log.clear()
    log.feed(SessionReady(BOB, "123 456", Trust.KNOWN))  # a reconnect, same key
    log.feed(SessionReady(BOB, "123 456", Trust.KNOWN, renewed=True))
    log.feed(SessionReady(CAROL, "654 321", Trust.VERIFIED))
    assert text(log.rows(200)) == [
        "12:00 secure session with bob again (known key, not verified: /verify)",
        "12:00 secure session with bob renewed",
        "12:00 secure session with carol (verified)",
    ]


def test_the_key_change_warning_is_red() -> None:
    log = new_log()
    log.feed(PeerRefused(BOB, "a pinned name presented a different key", True, (b"\x05" * 32,)))
    rows = log.rows(100)
    assert "class:warning" in styles_of(rows, "WARNING: THE KEY OF THIS PEER HAS CHANGED!")
    assert "class:warning" in styles_of(rows, "refused bob")


def test_file_progress_is_one_entry_updated_in_place() -> None:
    log = new_log()
    for done in (0, 250, 500):
        log.feed(FileProgress(BOB, TID, "f.bin", False, done, 1000, 0, 100.0, 5.0))
    rows = text(log.rows(200))
    assert len(rows) == 1 and "50%" in rows[0], rows
    log.feed(FileCompleted(BOB, TID, "f.bin", False, 1000, SHA, "/tmp/f.bin", 0, 1.0, 1000.0))
    rows = text(log.rows(200))
    assert len(rows) == 1 and rows[0].startswith("12:00 sent f.bin to bob"), rows


@pytest.mark.parametrize(
    ("why", "remembered", "said", "warning"),
    [
        (
            PauseReason.PEER_LEFT,
            False,
            "sending f.bin to bob: paused at 40%, bob is gone; it resumes when they are back",
            True,
        ),
        (
            PauseReason.DISCONNECTED,
            False,
            "sending f.bin to bob: paused at 40%, the connection dropped; "
            "it resumes when it is back",
            True,
        ),
        (
            PauseReason.WE_LEFT,
            True,
            "sending f.bin to bob: paused at 40%; it resumes the next time you chat with bob",
            False,
        ),
        # not remembered (p2pchat send, or a home that cannot keep it): no promise
        (
            PauseReason.WE_LEFT,
            False,
            "sending f.bin to bob: paused at 40%; send it again to resume (bob keeps what it has)",
            False,
        ),
    ],
)
def test_a_pause_says_who_left_and_never_blames_the_peer_for_our_quit(
    why: PauseReason, remembered: bool, said: str, warning: bool
) -> None:
    log = new_log()
    event = FileProgress(BOB, TID, "f.bin", False, 400, 1000, 0, 100.0, 5.0, True, why, remembered)
    log.feed(event)
    rows = log.rows(200)
    assert text(rows) == [f"12:00 {said}"]
    assert ("class:warning" in styles_of(rows, "paused")) is warning


def test_a_file_we_receive_paused_by_our_leaving_waits_for_its_sender() -> None:
    log = new_log()
    log.feed(
        FileProgress(BOB, TID, "f.bin", True, 400, 1000, 0, 100.0, 5.0, True, PauseReason.WE_LEFT)
    )
    assert text(log.rows(200)) == [
        "12:00 receiving f.bin from bob: paused at 40%, kept; it resumes when bob offers it again"
    ]


def test_a_remembered_transfer_not_resumed_says_so() -> None:
    log = new_log()
    log.feed(FileFailed(BOB, TID, "f.bin", False, "the file changed since", False, True))
    assert text(log.rows(200)) == ["12:00 not resuming f.bin to bob: the file changed since"]


def test_reconnecting_is_one_line_and_the_bar_counts_down() -> None:
    log = new_log()
    log.feed(Reconnecting(4.0, 1))
    log.feed(Dialing((("127.0.0.1", 47474),)))
    log.feed(Reconnecting(8.0, 2, "connection refused"))
    log.feed(Dialing((("127.0.0.1", 47474),)))
    rows = text(log.rows(200))
    assert len(rows) == 2 and "attempt 2" in rows[0], rows
    assert rows[1].strip() == "trying 127.0.0.1:47474", rows
    assert log.reconnect_at is not None
    at, _ = log.reconnect_at
    bar = "".join(t for _, t in status_bar("alice", [], [], log.reconnect_at, now=at - 4.2))
    assert "reconnecting in 4 s (attempt 2)" in bar
    log.feed(Reconnected())
    assert log.reconnect_at is None
    assert text(log.rows(200))[-1] == "12:00 reconnected; sending what was not delivered"


def test_a_reconnect_looking_for_the_host_is_on_the_reconnect_line() -> None:
    """A reconnect that browses for the host says so on its one line, and a
    Looking outside a reconnect (the screen starts after discovery) adds nothing."""
    log = new_log()
    log.feed(Looking("bob", 10.0))
    assert text(log.rows(200)) == []
    log.feed(Reconnecting(4.0, 1))
    log.feed(Looking("bob", 3.0))
    rows = text(log.rows(200))
    assert len(rows) == 2 and rows[1].strip() == "looking for hosts named 'bob' (up to 3 s)", rows
    log.feed(Dialing((("127.0.0.1", 47474),)))
    rows = text(log.rows(200))
    assert len(rows) == 2 and rows[1].strip() == "trying 127.0.0.1:47474", rows


def test_the_bar_says_who_is_here_what_is_not_verified_and_transfers() -> None:
    members = [Member(BOB, True, True), Member(CAROL, True, False)]
    transfers: list[Any] = [
        Transfer(TID, BOB, "big.iso", False, SimpleNamespace(value="sending"), 500, 1000)  # type: ignore[arg-type]
    ]
    bar = status_bar("alice", members, transfers, None)
    shown = "".join(t for _, t in bar)
    assert "here: bob, carol" in shown
    assert "1 not verified" in shown
    assert "↑ big.iso [#####-----] 50%" in shown
    assert "nobody else here" in "".join(t for _, t in status_bar("alice", [], [], None))


def test_a_pasted_block_keeps_its_indentation() -> None:
    assert _typed("  hi  ") == "hi"
    assert _typed("\n  a\n    b  \n\n") == "  a\n    b"


class FakeRoom:
    def __init__(self, undelivered: int = 0, transfers: int = 0) -> None:
        self.sent: list[str] = []
        self._undelivered = {bytes([i]) * 16: ["bob"] for i in range(undelivered)}
        self.files = SimpleNamespace(transfers=lambda: [object()] * transfers)

    async def send(self, text: str, *, to: str | None = None) -> bytes:
        self.sent.append(text)
        return MID

    def undelivered(self) -> dict[bytes, list[str]]:
        return self._undelivered


class FakeConsole:
    def __init__(self, answer: str | None = None) -> None:
        self.answer = answer
        self.asked: list[str] = []
        self.said: list[str] = []

    def say(self, text: str) -> None:
        self.said.append(text)

    def show(self, text: str) -> None:
        self.said.append(text)

    async def ask(self, question: str) -> str | None:
        self.asked.append(question)
        return self.answer

    def spawn(self, job: Any) -> None:
        job.close()


async def test_double_slash_and_me_send_text() -> None:
    room, console = FakeRoom(), FakeConsole()
    for line in ("//etc/hosts", "/me waves", "/me", "/etc/hosts"):
        assert await async_run_command(room, line, console)  # type: ignore[arg-type]
    assert room.sent == ["/etc/hosts", "/me waves"]
    assert console.said == ["usage: /me TEXT", "unknown command /etc/hosts; /help lists them"]


@pytest.mark.parametrize(
    ("undelivered", "transfers", "answer", "leaves"),
    [
        (0, 0, None, True),
        (2, 0, "n", False),
        (2, 1, "", False),
        (0, 1, "y", True),
        (1, 0, None, True),
    ],
)
async def test_quit_asks_when_something_is_on_the_way(
    undelivered: int, transfers: int, answer: str | None, leaves: bool
) -> None:
    room, console = FakeRoom(undelivered, transfers), FakeConsole(answer)
    assert await async_run_command(room, "/quit", console) is not leaves  # type: ignore[arg-type]
    if undelivered or transfers:
        assert console.asked and "leave anyway? [y/N]" in console.asked[0]
        assert ("2 message(s) not delivered yet" in console.asked[0]) == (undelivered == 2)
        assert ("1 file transfer(s) under way" in console.asked[0]) == (transfers == 1)
    else:
        assert console.asked == []


def test_the_screen_takes_the_stderr_handler_and_keeps_the_records() -> None:
    root = logging.getLogger()
    stderr = logging.StreamHandler()
    root.addHandler(stderr)
    view = LogView(capacity=2)
    try:
        with routed_logging(view):
            assert stderr not in root.handlers
            for n in range(3):
                logging.getLogger("p2pchat.test").warning("outbox: cannot save %d", n)
        assert stderr in root.handlers and view not in root.handlers
    finally:
        root.removeHandler(stderr)
    assert len(view.records) == 2 and view.records[-1].endswith("outbox: cannot save 2")


def test_the_chat_window_shows_the_last_rows_and_scrolls() -> None:
    from p2pchat.faces.tui import _LogControl

    log = new_log()
    screen = SimpleNamespace(log=log, scroll=0)
    control = _LogControl(screen)  # type: ignore[arg-type]

    def shown(height: int) -> list[str]:
        content = control.create_content(40, height)
        return ["".join(t for _, t in content.get_line(i)) for i in range(content.line_count)]

    log.feed(MessageReceived(BOB, MID, "only one"))
    assert shown(3) == ["", "", "12:00 bob: only one"]  # at the bottom, above the input
    for n in range(2, 51):
        log.feed(MessageReceived(BOB, bytes([n]) * 16, f"number {n}"))
    assert shown(3)[-1] == "12:00 bob: number 50"
    screen.scroll = 5  # PageUp
    assert shown(3)[-1] == "12:00 bob: number 45"
    screen.scroll = 1000  # past the top: the first rows, and no further
    assert shown(3)[0] == "12:00 bob: only one" and screen.scroll == 47
