"""What the chat screen shows, as a pure model: events in, styled rows out.

:class:`ChatLog` keeps the entries of the chat (one per message, one per
status line, one per file transfer) and turns them into rows of
``(style, text)`` fragments for a given width: word-wrapped with a hanging
indent, a message's later lines indented under its first. A message entry
keeps its id, so a :class:`~p2pchat.room.Delivered` event changes its mark in
place (``…``, ``2/3``, ``✓``); a transfer is one entry updated in place. The
status bar is :func:`status_bar`. Nothing here knows prompt_toolkit's
application or a terminal: tests feed events and read rows.

Styles are prompt_toolkit class names (``class:warning``...); the screen maps
them to colours, and with ``NO_COLOR`` only bold and reverse remain.
"""

from __future__ import annotations

import collections
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from prompt_toolkit.utils import get_cwidth

from p2pchat.faces.commands import ACTION
from p2pchat.faces.lines import (
    Seen,
    Warnings,
    describe_file_event,
    describe_link_event,
    describe_looking,
    describe_trouble,
    progress_bar,
)
from p2pchat.room import (
    Connected,
    Delivered,
    DeliveryFailed,
    Dialing,
    Disconnected,
    Event,
    FileCompleted,
    FileFailed,
    FileOffered,
    FileProgress,
    KeyHint,
    Looking,
    Member,
    MessageReceived,
    MessageSent,
    PauseReason,
    PeerLeft,
    PeerRefused,
    Reconnected,
    Reconnecting,
    RoomEnded,
    SessionBroken,
    SessionReady,
    Transfer,
    Trust,
    display_name,
    sanitize,
)

__all__ = ["ACTION", "ChatLog", "Fragment", "Row", "nick_style", "split_lines", "status_bar"]

Fragment = tuple[str, str]
Row = list[Fragment]

#: Entries kept; older ones scroll away for good (memory stays bounded).
MAX_ENTRIES = 5000

#: Nick colours (style classes nick.0 ... nick.N-1), chosen by a hash of the name.
NICK_COLOURS = 8

STATUS, WARNING, TIME, MARK, OK = (
    "class:status",
    "class:warning",
    "class:time",
    "class:mark",
    "class:ok",
)


def nick_style(name: str) -> str:
    """The same colour for the same name in every run (not the fingerprint:
    the mixed-scripts mark, not a colour, is what tells look-alikes apart)."""
    return f"class:nick.{zlib.crc32(name.encode('utf-8', 'surrogatepass')) % NICK_COLOURS}"


def split_lines(text: str) -> list[str]:
    """A message's lines (CR LF, CR and LF end a line), each made safe to show."""
    return [sanitize(line) for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]


def _width(text: str) -> int:
    return sum(get_cwidth(ch) for ch in text)


@dataclass(eq=False)  # an entry is itself: two alike are two lines
class Entry:
    """One thing shown: a head (time, nick) and a body of lines of fragments."""

    stamp: str
    head: Row
    body: list[Row]
    mark: Row = field(default_factory=list)  #: after the last line: a message's delivery
    msg_id: bytes = b""
    total: int = 1

    def rows(self, width: int) -> list[Row]:
        prefix: Row = [(TIME, self.stamp + " "), *self.head]
        indent = min(sum(_width(t) for _, t in prefix), max(2, width // 3))
        lines = [list(line) for line in self.body] or [[]]
        if self.mark:
            lines[-1] = [*lines[-1], ("", "  "), *self.mark]
        out: list[Row] = []
        for n, line in enumerate(lines):
            first = prefix if n == 0 else [("", " " * indent)]
            out.extend(wrap([*first, *line], width, indent))
        return out


def _tokens(row: Row) -> Iterable[tuple[str, str]]:
    """The fragments cut into words and runs of spaces, each keeping its style."""
    for style, text in row:
        word = ""
        for ch in text:
            if word and (ch == " ") != (word[-1] == " "):
                yield style, word
                word = ""
            word += ch
        if word:
            yield style, word


def _put(row: Row, style: str, text: str) -> None:
    if row and row[-1][0] == style:
        row[-1] = (style, row[-1][1] + text)
    else:
        row.append((style, text))


def _trim(row: Row) -> None:
    """Spaces at the end of a row are not shown."""
    while row and not row[-1][1].strip() and len(row) > 1:
        row.pop()
    if row:
        row[-1] = (row[-1][0], row[-1][1].rstrip() or row[-1][1])


def wrap(row: Row, width: int, indent: int) -> list[Row]:
    """``row`` cut into rows of at most ``width`` cells at spaces, each row after
    the first starting with ``indent`` spaces; a word longer than a row is cut."""
    width = max(width, 1)
    indent = min(indent, width - 1) if width > 1 else 0
    rows: list[Row] = [[]]

    def new_row() -> int:
        _trim(rows[-1])
        rows.append([("", " " * indent)] if indent else [])
        return indent

    used = 0
    for style, token in _tokens(row):
        size = _width(token)
        if used + size <= width:
            _put(rows[-1], style, token)
            used += size
        elif token.startswith(" "):  # spaces at a break are dropped
            used = new_row()
        elif size <= width - indent:
            used = new_row()
            _put(rows[-1], style, token)
            used += size
        else:
            for ch in token:  # a long word (a URL, a path): cut where the row ends
                cw = get_cwidth(ch)
                if used + cw > width:
                    used = new_row()
                _put(rows[-1], style, ch)
                used += cw
    return rows


def _trust_note(trust: Trust) -> str:
    return {
        Trust.NEW: "first contact, now pinned",
        Trust.KNOWN: "known key, not verified",
        Trust.VERIFIED: "verified",
    }[trust]


class ChatLog:
    """The chat as entries; :meth:`feed` takes every room event."""

    def __init__(
        self,
        own_name: str,
        hint: Callable[[PeerRefused], KeyHint] | None = None,
        *,
        clock: Callable[[], str] | None = None,
        limit: int = MAX_ENTRIES,
    ) -> None:
        self.own_name = own_name
        self.hint = hint  #: Room.key_hint, for the advice on a refused key
        self._clock = clock or (lambda: time.strftime("%H:%M"))
        self.entries: collections.deque[Entry] = collections.deque(maxlen=limit)
        self._by_msg: dict[bytes, Entry] = {}
        self._by_transfer: dict[bytes, Entry] = {}
        self._link: Entry | None = None  #: the reconnecting line, updated in place
        self._warnings = Warnings()
        self._seen = Seen()
        self._blocks_shown: set[bytes] = set()  #: fingerprints whose SAS was shown
        #: (monotonic time of the next attempt, attempt) while the link is down
        self.reconnect_at: tuple[float, int] | None = None
        self.version = 0  #: goes up on every change, for the screen to redraw

    # ------------------------------------------------------------ adding

    def _add(self, entry: Entry) -> Entry:
        if len(self.entries) == self.entries.maxlen:
            old = self.entries[0]
            self._by_msg.pop(old.msg_id, None)
        self.entries.append(entry)
        self.version += 1
        return entry

    def note(self, text: str, style: str = STATUS) -> Entry:
        """A status line (a multi-line text is indented under its first line)."""
        return self._add(Entry(self._clock(), [], [[(style, t)] for t in text.split("\n")]))

    def warn(self, text: str) -> Entry:
        return self.note(text, WARNING)

    def block(self, text: str, style: str = "") -> Entry:
        """Text shown as it is, under one time stamp (help, listings, the log)."""
        return self._add(Entry(self._clock(), [], [[(style, t)] for t in text.split("\n")]))

    def clear(self) -> None:
        self.entries.clear()
        self._by_msg.clear()
        self._by_transfer.clear()
        self._link = None
        self.version += 1

    def _message(self, name: str, text: str, *, to: str = "", own: bool = False) -> Entry:
        style = nick_style(name)
        shown = display_name(name)
        if text.startswith(ACTION):
            head: Row = [(style, f"* {shown}"), ("", " ")]
            text = text[len(ACTION) :]
        else:
            head = [(style, shown), ("", f"{to}: ")]
        body = [[("class:own" if own else "", line)] for line in split_lines(text)]
        return Entry(self._clock(), head, body)

    # ------------------------------------------------------------ events

    def feed(self, event: Event) -> None:
        """Show ``event``: a new entry, or a change to one already shown."""
        self.version += 1
        if isinstance(event, MessageSent):
            to = f" → {display_name(event.to[0])}" if event.direct and event.to else ""
            entry = self._message(self.own_name, event.text, to=to, own=True)
            if not event.queued:
                entry.mark = [(WARNING, "✗ nobody else is here: it reached no one")]
            else:
                entry.msg_id, entry.total = event.msg_id, max(1, len(event.to))
                entry.mark = [(MARK, "…")]
                self._by_msg[event.msg_id] = entry
            self._add(entry)
        elif isinstance(event, MessageReceived):
            to = " → you" if event.direct else ""
            self._add(self._message(event.peer.name, event.text, to=to))
        elif isinstance(event, Delivered):
            shown = self._by_msg.get(event.msg_id)
            if shown is not None:
                if event.complete and event.total == 0:
                    # its only recipient never proved a key: it reached no one
                    shown.mark = [(WARNING, "✗ it reached no one")]
                    del self._by_msg[event.msg_id]
                elif event.complete:
                    shown.mark = [(OK, "✓")]
                    del self._by_msg[event.msg_id]
                else:
                    shown.mark = [(MARK, f"{event.delivered}/{event.total}")]
        elif isinstance(event, DeliveryFailed):
            for msg_id in event.msg_ids:
                failed = self._by_msg.pop(msg_id, None)
                if failed is not None:
                    failed.mark = [(WARNING, f"✗ not to {display_name(event.peer.name)}")]
            self.warn(describe_trouble(event))
        elif isinstance(event, SessionReady):
            self._session(event)
        elif isinstance(event, PeerLeft):
            if self._seen.left(event.peer.peer_id):  # (PeerJoined: see lines.Seen)
                how = "left" if event.clean else "disconnected"
                self.note(f"{display_name(event.peer.name)} {how}")
        elif isinstance(event, PeerRefused):
            if event.mismatch:
                hint = self.hint(event) if self.hint is not None else None
                self.block(self._warnings.mismatch(event, hint), WARNING)
            self.warn(describe_trouble(event))
        elif isinstance(event, SessionBroken):
            self.warn(describe_trouble(event))
        elif isinstance(event, Disconnected | RoomEnded):
            self.warn(event.reason)
        elif isinstance(event, Reconnecting):
            self.reconnect_at = (time.monotonic() + event.delay, event.attempt)
            text = "connection to the host lost; reconnecting"
            if event.attempt > 1:
                text += f" (attempt {event.attempt})"
            if event.last_error:
                text += f"; last try: {event.last_error}"
            if self._link is None:
                self._link = self.warn(text)
            else:
                self._link.body = [[(WARNING, text)]]
        elif isinstance(event, Looking):
            # only a reconnect looks once the screen is up: on its one line
            if self._link is not None:
                self._link.body = [
                    *self._link.body[:1],
                    [(STATUS, f"{describe_looking(event)} (up to {event.timeout:g} s)")],
                ]
        elif isinstance(event, Dialing) and self._link is not None:
            # while reconnecting, each attempt changes the one line (no flood)
            self._link.body = [
                *self._link.body[:1],
                [(STATUS, line) for line in describe_link_event(event)],
            ]
        elif isinstance(event, Reconnected | Connected | Dialing):
            if not isinstance(event, Dialing):
                self.reconnect_at = None
                self._link = None
            for line in describe_link_event(event):
                self.note(line)
        elif isinstance(event, FileOffered):
            self.note(describe_file_event(event))
        elif isinstance(event, FileProgress | FileCompleted | FileFailed):
            style = (
                WARNING
                if isinstance(event, FileFailed)
                or (
                    isinstance(event, FileProgress)
                    and event.paused
                    and event.why is not PauseReason.WE_LEFT  # our own doing: no alarm
                )
                else STATUS
            )
            body: list[Row] = [[(style, describe_file_event(event))]]
            known = self._by_transfer.get(event.transfer_id)
            if known is None or known not in self.entries:
                known = self._add(Entry(self._clock(), [], body))
            known.body = body
            if isinstance(event, FileProgress):
                self._by_transfer[event.transfer_id] = known
            else:
                self._by_transfer.pop(event.transfer_id, None)

    def _session(self, event: SessionReady) -> None:
        self._seen.add(event.peer.peer_id)
        name = display_name(event.peer.name)
        if event.renewed:
            self.note(f"secure session with {name} renewed")
            return
        if event.trust is Trust.VERIFIED:
            self.note(f"secure session with {name} (verified)")
            return
        if event.peer.fingerprint in self._blocks_shown:
            self.note(f"secure session with {name} again ({_trust_note(event.trust)}: /verify)")
            return
        self._blocks_shown.add(event.peer.fingerprint)
        self.note(
            f"secure session with {name} ({_trust_note(event.trust)})\n"
            f"fingerprint  {event.peer.fingerprint_text}\n"
            f"short authentication string  {event.sas}  (compare it with {name}; /verify)"
        )

    # ------------------------------------------------------------ rows

    def rows(self, width: int, wanted: int | None = None) -> list[Row]:
        """The rows of the last entries, oldest first: all of them, or at least
        ``wanted`` when there are that many (the screen needs only its height)."""
        out: list[list[Row]] = []
        count = 0
        for entry in reversed(self.entries):
            rows = entry.rows(width)
            out.append(rows)
            count += len(rows)
            if wanted is not None and count >= wanted:
                break
        return [row for rows in reversed(out) for row in rows]


def _seconds(left: float) -> str:
    return f"{max(0, round(left))} s"


def status_bar(
    own_name: str,
    members: Sequence[Member],
    transfers: Sequence[Transfer],
    reconnect_at: tuple[float, int] | None,
    *,
    now: float | None = None,
) -> Row:
    """The line under the chat: who is here, how many are not verified, the
    transfers with a bar, and the link's state."""
    now = time.monotonic() if now is None else now
    bar: Row = [("class:toolbar.me", f" {display_name(own_name)} ")]
    if reconnect_at is not None:
        at, attempt = reconnect_at
        left = at - now
        state = f"reconnecting in {_seconds(left)}" if left > 0.5 else "reconnecting…"
        if attempt > 1:
            state += f" (attempt {attempt})"
        bar.append(("class:toolbar.warning", f" {state} "))
    elif not members:
        bar.append(("class:toolbar", " nobody else here "))
    else:
        names = ", ".join(display_name(m.peer.name) for m in members)
        bar.append(("class:toolbar", f" here: {names} "))
        unverified = sum(1 for m in members if not m.verified)
        if unverified:
            bar.append(("class:toolbar.warning", f" {unverified} not verified "))
    for t in transfers:
        arrow = "↓" if t.incoming else "↑"
        pct = 100 * t.done // t.size if t.size else 100
        bar.append(
            (
                "class:toolbar",
                f" {arrow} {sanitize(t.name)} {progress_bar(t.done, t.size, 10)} {pct}% ",
            )
        )
    return bar
