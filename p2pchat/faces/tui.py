"""Interactive terminal chat (stdin and stdout are a TTY), built on prompt_toolkit.

The input line stays at the bottom; messages, joins, leaves and errors print
above it with the time and the sender's name. Typed lines go to the
face-independent commands (:mod:`p2pchat.faces.commands`); what happens in the
room comes from its events. Ctrl-C and Ctrl-D leave cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

from p2pchat.faces.commands import HELP, async_run_command
from p2pchat.faces.lines import (
    Seen,
    Warnings,
    describe_file_event,
    describe_link_event,
    describe_trouble,
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
    MessageReceived,
    MessageSent,
    PeerLeft,
    PeerRefused,
    Reconnected,
    Reconnecting,
    Room,
    RoomEnded,
    SessionBroken,
    SessionReady,
    Trust,
    display_name,
    sanitize,
)

__all__ = ["HELP", "run_interactive"]


def _now() -> str:
    return time.strftime("%H:%M:%S")


#: Seconds between two progress lines of one transfer on the chat screen.
PROGRESS_EVERY = 2.0


class _Screen:
    def __init__(self, hint: Callable[[PeerRefused], KeyHint] | None = None) -> None:
        self.hint = hint  #: Room.key_hint, for the advice on a refused key
        self.texts: dict[bytes, str] = {}
        self._progress_at: dict[bytes, float] = {}
        self._warnings = Warnings()
        self._seen = Seen()

    def say(self, text: str) -> None:
        print(f"[{_now()}] {text}", flush=True)

    def __call__(self, event: Event) -> None:
        if isinstance(event, MessageSent):
            if not event.queued:
                self.say("(nobody else is here: the message reached no one)")
                return
            self.texts[event.msg_id] = event.text
            who = f"you to {display_name(event.to[0])} only" if event.direct and event.to else "you"
            self.say(f"{who}: {sanitize(event.text)}  (sending…)")
        elif isinstance(event, Dialing | Connected | Reconnecting | Reconnected):
            for line in describe_link_event(event):
                self.say(f"{'!' if line.startswith('reconnect failed') else '*'} {line}")
        elif isinstance(event, RoomEnded):
            self.say(f"! {event.reason}")
        elif isinstance(event, MessageReceived):
            private = " (to you only)" if event.direct else ""
            self.say(f"{display_name(event.peer.name)}{private}: {sanitize(event.text)}")
        elif isinstance(event, SessionReady):
            self._seen.add(event.peer.peer_id)
            if event.renewed:
                self.say(f"* secure session with {display_name(event.peer.name)} renewed")
                return
            note = {
                Trust.NEW: "first contact, now pinned",
                Trust.KNOWN: "known key",
                Trust.VERIFIED: "verified",
            }[event.trust]
            self.say(
                f"* secure session with {display_name(event.peer.name)} ({note})\n"
                f"    fingerprint  {event.peer.fingerprint_text}\n"
                f"    short authentication string  {event.sas}  (compare aloud; /verify)"
            )
        elif isinstance(event, PeerLeft):
            if self._seen.left(event.peer.peer_id):  # (PeerJoined: see lines.Seen)
                how = "left" if event.clean else "disconnected"
                self.say(f"* {display_name(event.peer.name)} {how}")
        elif isinstance(event, Delivered):
            text = self.texts.get(event.msg_id, "")
            if event.complete:
                self.texts.pop(event.msg_id, None)
            short = sanitize(text if len(text) <= 30 else text[:29] + "…")
            if event.total == 1:
                self.say(f"  ✓ delivered: {short}")
            else:
                mark = "✓" if event.complete else "…"
                self.say(
                    f"  {mark} delivered to {event.delivered} of {event.total} "
                    f"({display_name(event.peer.name)}): {short}"
                )
        elif isinstance(event, PeerRefused):
            if event.mismatch:
                hint = self.hint(event) if self.hint is not None else None
                print(self._warnings.mismatch(event, hint), flush=True)
            self.say(f"! {describe_trouble(event)}")
        elif isinstance(event, SessionBroken | DeliveryFailed):
            self.say(f"! {describe_trouble(event)}")
        elif isinstance(event, Disconnected):
            self.say(f"! {event.reason}")
        elif isinstance(event, FileProgress):
            now = time.monotonic()
            quiet = now - self._progress_at.get(event.transfer_id, -PROGRESS_EVERY)
            first = event.done == event.start
            if event.paused or first or quiet >= PROGRESS_EVERY:
                self._progress_at[event.transfer_id] = now
                self.say(f"  {describe_file_event(event)}")
        elif isinstance(event, FileOffered | FileCompleted | FileFailed):
            if not isinstance(event, FileOffered):
                self._progress_at.pop(event.transfer_id, None)
            mark = "!" if isinstance(event, FileFailed) else "*"
            self.say(f"{mark} {describe_file_event(event)}")


class _Console:
    """Where the commands' words go on the chat screen."""

    def __init__(self, screen: _Screen, ask: Any) -> None:
        self.screen = screen
        self._ask = ask
        self.tasks: list[asyncio.Task[None]] = []

    def say(self, text: str) -> None:
        self.screen.say(text)

    def show(self, text: str) -> None:
        print(text, flush=True)

    async def ask(self, question: str) -> str | None:
        try:
            return str(await self._ask(question))
        except (EOFError, KeyboardInterrupt):
            return None

    def spawn(self, job: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.ensure_future(job))


async def run_interactive(room: Room, stop: asyncio.Event, *, replaced: Any = None) -> None:
    """Run the chat until /quit, Ctrl-C/D, ``stop`` or the room's end. ``replaced``
    is the line-mode printer the screen takes over from (removed from the bus)."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.patch_stdout import patch_stdout

    screen = _Screen(room.key_hint)
    if replaced is not None:
        replaced()
    remove = room.bus.add_sink(screen)
    # the typed line is erased on Enter: the screen shows it once, as 'you: ...'
    session: PromptSession[str] = PromptSession(erase_when_done=True)
    console = _Console(screen, session.prompt_async)

    def ended() -> bool:
        return stop.is_set() or room.ended is not None

    async def watch() -> None:
        await room.wait_for(ended)
        if session.app.is_running:
            session.app.exit(exception=EOFError())

    async def stop_watch() -> None:
        await stop.wait()
        room.bus.notify()

    with patch_stdout(raw=True):
        screen.say(f"you are {display_name(room.name)}; type /help for commands")
        tasks = [asyncio.ensure_future(watch()), asyncio.ensure_future(stop_watch())]
        try:
            while not ended():
                try:
                    line = await session.prompt_async("> ")
                except (EOFError, KeyboardInterrupt):
                    break
                if not await async_run_command(room, line.strip(), console):
                    break
        finally:
            for task in tasks + console.tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            remove()
        screen.say("leaving")
