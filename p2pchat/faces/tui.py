"""The chat screen (stdin and stdout are a terminal): a full-screen prompt_toolkit application.

From the top: the chat (:class:`~p2pchat.faces.chatlog.ChatLog`, one entry per
message with its delivery mark updated in place), a status bar (who is here,
how many are not verified, transfers, the link's state) and the input. Enter
sends; a bracketed paste of many lines goes into the input as it is and is
sent as one message; Alt-Enter (Esc, Enter) starts a new line; Up recalls
what was sent before; Tab completes commands, names and /send paths;
PageUp/PageDown scroll. Typed lines go to the face-independent commands
(:mod:`p2pchat.faces.commands`), plus the screen's own ``/clear`` and
``/log``. While the screen runs no log record reaches the terminal: they go
to ``--log-file`` if given, and to a bounded view that ``/log`` shows.
Ctrl-C leaves at once; Ctrl-D (on an empty input) is ``/quit``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sys
from collections.abc import Coroutine, Iterable, Iterator
from typing import Any, cast

from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent, merge_key_bindings
from prompt_toolkit.key_binding.defaults import load_key_bindings
from prompt_toolkit.layout import (
    BufferControl,
    Float,
    FloatContainer,
    FormattedTextControl,
    HSplit,
    Layout,
    VSplit,
    Window,
)
from prompt_toolkit.layout.controls import UIContent, UIControl
from prompt_toolkit.layout.dimension import Dimension
from prompt_toolkit.layout.menus import CompletionsMenu
from prompt_toolkit.styles import Style

from p2pchat.faces.chatlog import NICK_COLOURS, ChatLog, Row, status_bar
from p2pchat.faces.commands import COMMANDS, HELP, async_run_command
from p2pchat.faces.lines import percent, resumes_next_chat
from p2pchat.room import Room, display_name, sanitize

__all__ = ["HELP", "SCREEN_HELP", "LogView", "run_interactive"]

SCREEN_HELP = """on this screen:
  /clear          empty the chat window
  /log            the last log records (warnings; more with -v), never shown otherwise
  Enter sends, Alt-Enter (or Esc then Enter) starts a new line, a pasted block is one
  message; Up/Down: what you sent before; Tab completes; PageUp/PageDown scroll"""

#: The screen's own commands, handled before the room's.
SCREEN_COMMANDS = ("/clear", "/log")

_NICKS = (
    "ansigreen",
    "ansiyellow",
    "ansiblue",
    "ansimagenta",
    "ansicyan",
    "ansibrightgreen",
    "ansibrightblue",
    "ansibrightmagenta",
)
assert len(_NICKS) == NICK_COLOURS

STYLE = Style.from_dict(
    {
        "time": "#8a8a8a",
        "status": "#8a8a8a",
        "mark": "#8a8a8a",
        "ok": "ansigreen",
        "warning": "ansired bold",
        "toolbar": "reverse",
        "toolbar.me": "reverse bold",
        "toolbar.warning": "reverse bold ansired",
        "prompt": "bold",
        **{f"nick.{n}": f"{colour} bold" for n, colour in enumerate(_NICKS)},
    }
)


_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogView(logging.Handler):
    """The last ``capacity`` log records, formatted, for ``/log``."""

    def __init__(self, capacity: int = 200) -> None:
        super().__init__()
        self.records: collections.deque[str] = collections.deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append(self.format(record))
        except Exception:  # a logging call must never break the screen
            self.handleError(record)


@contextlib.contextmanager
def routed_logging(view: LogView) -> Iterator[None]:
    """While the screen runs: no handler writes to the terminal (a file handler
    stays), and every record also goes to ``view``."""
    root = logging.getLogger()
    taken = [
        h
        for h in root.handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    formatter = next((h.formatter for h in root.handlers if h.formatter), None)
    view.setFormatter(formatter or logging.Formatter(_FORMAT))
    for h in taken:
        root.removeHandler(h)
    root.addHandler(view)
    try:
        yield
    finally:
        root.removeHandler(view)
        for h in taken:
            root.addHandler(h)


class _Completer(Completer):
    """Commands at the start, a /send path, else the names of who is here."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self._paths = PathCompleter(expanduser=True)

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        text = document.text_before_cursor
        if "\n" in text:
            return
        if text.startswith("/") and " " not in text:
            for cmd in sorted({*COMMANDS, *SCREEN_COMMANDS}):
                if cmd.startswith(text):
                    yield Completion(cmd, start_position=-len(text))
            return
        if text.startswith("/send ") and text.count(" ") == 1:
            yield from self._paths.get_completions(Document(text[6:]), complete_event)
            return
        word = document.get_word_before_cursor(WORD=True)
        for m in self.room.members:
            name = m.peer.name
            if name.lower().startswith(word.lower()) and name != word:
                yield Completion(name, start_position=-len(word), display=display_name(name))


class _LogControl(UIControl):
    """The chat window: the last rows of the log that fit, at the bottom."""

    def __init__(self, screen: ChatScreen) -> None:
        self.screen = screen

    def create_content(self, width: int, height: int | None) -> UIContent:
        height = max(1, height or 1)
        scroll = self.screen.scroll
        rows = self.screen.log.rows(width, height + scroll)
        scroll = self.screen.scroll = max(0, min(scroll, len(rows) - height))
        end = len(rows) - scroll
        visible: list[Row] = rows[max(0, end - height) : end]
        visible = [[] for _ in range(height - len(visible))] + visible
        return UIContent(
            get_line=lambda i: cast("StyleAndTextTuples", visible[i]),
            line_count=len(visible),
            show_cursor=False,
        )


class _Console:
    """Where the commands' words go on the chat screen."""

    def __init__(self, screen: ChatScreen) -> None:
        self.screen = screen
        self.tasks: list[asyncio.Task[None]] = []

    def say(self, text: str) -> None:
        log = self.screen.log
        if text.startswith("! "):
            log.warn(text[2:])
        else:
            log.note(text.removeprefix("* "))
        self.screen.app.invalidate()

    def show(self, text: str) -> None:
        self.screen.log.block(text)
        self.screen.app.invalidate()

    async def ask(self, question: str) -> str | None:
        return await self.screen.ask(question)

    def spawn(self, job: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.ensure_future(job))


def _typed(text: str) -> str:
    """One line as typed is stripped; a block keeps its lines' indentation and
    loses only blank lines around it."""
    lines = text.split("\n")
    if len(lines) == 1:
        return text.strip()
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(line.rstrip() for line in lines)


class ChatScreen:
    """The application: the log, the status bar, the input; :meth:`run` until left."""

    def __init__(self, room: Room, stop: asyncio.Event) -> None:
        self.room = room
        self.stop = stop
        self.log = ChatLog(room.name, room.key_hint)
        self.logs = LogView()
        self.scroll = 0
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self._question: asyncio.Future[str | None] | None = None
        self._prompt = "> "
        self.console = _Console(self)
        self.buffer = Buffer(
            multiline=True,
            history=InMemoryHistory(),
            completer=_Completer(room),
            complete_while_typing=False,
        )
        input_window = Window(
            BufferControl(self.buffer),
            height=Dimension(min=1, max=8),
            dont_extend_height=True,
            wrap_lines=True,
        )
        body = HSplit(
            [
                Window(_LogControl(self)),
                Window(FormattedTextControl(self._bar), height=1, style="class:toolbar"),
                VSplit(
                    [
                        Window(
                            FormattedTextControl(lambda: [("class:prompt", self._prompt)]),
                            dont_extend_width=True,
                        ),
                        input_window,
                    ]
                ),
            ]
        )
        layout = FloatContainer(
            body,
            floats=[Float(xcursor=True, ycursor=True, content=CompletionsMenu(max_height=8))],
        )
        self.app: Application[None] = Application(
            layout=Layout(layout, focused_element=input_window),
            key_bindings=merge_key_bindings([load_key_bindings(), self._keys()]),
            style=STYLE,
            full_screen=True,
            refresh_interval=1.0,  # the status bar's countdown
        )

    def _bar(self) -> StyleAndTextTuples:
        transfers = self.room.files.transfers()
        row = status_bar(self.room.name, self.room.members, transfers, self.log.reconnect_at)
        return cast("StyleAndTextTuples", row)

    def _keys(self) -> KeyBindings:
        kb = KeyBindings()
        empty = Condition(lambda: not self.buffer.text)

        @kb.add("enter")
        def _enter(event: KeyPressEvent) -> None:
            text = self.buffer.text
            if self._question is not None:
                question, self._question = self._question, None
                self.buffer.reset()
                if not question.done():
                    question.set_result(text)
                return
            if not text.strip():
                return
            self.buffer.reset(append_to_history=True)
            self.scroll = 0
            self.lines.put_nowait(text)

        @kb.add("escape", "enter")
        def _newline(event: KeyPressEvent) -> None:
            self.buffer.insert_text("\n")

        @kb.add("c-c")
        def _interrupt(event: KeyPressEvent) -> None:
            self._exit()

        @kb.add("c-d", filter=empty)
        def _eof(event: KeyPressEvent) -> None:
            if self._question is not None:
                question, self._question = self._question, None
                question.set_result(None)
            else:
                self.lines.put_nowait("/quit")

        @kb.add("pageup")
        def _up(event: KeyPressEvent) -> None:
            self.scroll += max(1, self._height() - 2)

        @kb.add("pagedown")
        def _down(event: KeyPressEvent) -> None:
            self.scroll = max(0, self.scroll - max(1, self._height() - 2))

        return kb

    def _exit(self) -> None:
        """Leave the application (once: Ctrl-C, /quit and the room's end may meet)."""
        if self.app.is_running and not self.app.is_done:
            self.app.exit()

    def _height(self) -> int:
        return self.app.output.get_size().rows - 3

    async def ask(self, question: str) -> str | None:
        """The next line typed, the prompt showing ``question``; None on Ctrl-D."""
        self.log.note(question.strip())
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._question, self._prompt = future, question
        self.app.invalidate()
        try:
            return await future
        finally:
            self._prompt = "> "
            self.app.invalidate()

    async def _handle(self, text: str) -> bool:
        """One typed line or block; False to leave."""
        line = _typed(text)
        if line in ("/clear", "/log", "/help"):
            if line == "/clear":
                self.log.clear()
            elif line == "/log":
                records = "\n".join(self.logs.records) or "(no log records)"
                self.log.block(records, "class:status")
            else:
                self.log.block(HELP + "\n" + SCREEN_HELP)
            return True
        return await async_run_command(self.room, line, self.console)

    async def _work(self) -> None:
        while True:
            text = await self.lines.get()
            try:
                go_on = await self._handle(text)
            except Exception as exc:  # a command's bug must not freeze the input
                logging.getLogger(__name__).exception("command failed")
                self.log.warn(f"that failed: {exc}")
                go_on = True
            self.app.invalidate()
            if not go_on:
                self._exit()
                return

    async def _events(self) -> None:
        async for event in self.room.events():  # the first stream replays what came before
            self.log.feed(event)
            self.app.invalidate()

    async def _watch(self) -> None:
        await self.room.wait_for(lambda: self.stop.is_set() or self.room.ended is not None)
        self._exit()

    async def _stop_watch(self) -> None:
        await self.stop.wait()
        self.room.bus.notify()

    async def run(self) -> None:
        self.log.note(f"you are {display_name(self.room.name)}; type /help for commands")
        hosting = self.room.hosting
        if hosting is not None:
            self.log.note(
                f"hosting on port {hosting.port}; your fingerprint "
                f"{self.room.identity.fingerprint_text}"
            )
        tasks: list[asyncio.Task[None]] = []

        def start() -> None:  # once the application runs: each job may end it
            jobs = (self._events(), self._work(), self._watch(), self._stop_watch())
            tasks.extend(asyncio.ensure_future(job) for job in jobs)

        try:
            with routed_logging(self.logs):
                await self.app.run_async(pre_run=start)
        finally:
            for task in tasks + self.console.tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def run_interactive(room: Room, stop: asyncio.Event, *, replaced: Any = None) -> None:
    """Run the chat until /quit, Ctrl-C/D, ``stop`` or the room's end. ``replaced``
    is the line-mode printer the screen takes over from (removed from the bus)."""
    if replaced is not None:
        replaced()
    await ChatScreen(room, stop).run()
    # the chat screen is gone with the application: why it ended stays visible
    if room.ended is not None:
        print(f"p2pchat: {room.ended.reason}", file=sys.stderr, flush=True)
    for line in remembered_lines(room):
        print(f"p2pchat: {line}", file=sys.stderr, flush=True)
    print("p2pchat: leaving", flush=True)


def remembered_lines(room: Room) -> list[str]:
    """One line per file we are sending that leaving now interrupts and that
    the next chat offers again by itself (so nobody retypes /send): only
    those that are remembered on disk."""
    lines = []
    for t in room.files.transfers():
        if not t.incoming and room.files.remembered(t):
            peer = display_name(t.peer.name)
            lines.append(
                f"{sanitize(t.name)} to {peer}: paused at {percent(t.done, t.size)}; "
                f"{resumes_next_chat(peer)}"
            )
    return lines
