"""Interactive terminal chat (stdin and stdout are a TTY), built on prompt_toolkit.

The input line stays at the bottom; messages, joins, leaves and errors print
above it with the time and the sender's name. Commands: /help /who /verify
/msg /send /accept /reject /files /quit; Ctrl-C and Ctrl-D leave cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from p2pchat.errors import P2PChatError
from p2pchat.faces.lines import describe_file_event, mismatch_warning, sanitize
from p2pchat.proto.keys import format_fingerprint
from p2pchat.proto.transfer import format_size
from p2pchat.room.participant import (
    Delivered,
    Disconnected,
    Event,
    FileCompleted,
    FileFailed,
    FileOffered,
    FileProgress,
    MessageReceived,
    Participant,
    PeerInfo,
    PeerJoined,
    PeerLeft,
    PeerRefused,
    SessionReady,
)

if TYPE_CHECKING:
    from p2pchat.room.transfers import FileTransfers

__all__ = ["HELP", "run_interactive"]

HELP = """commands:
  /who            who is here, with fingerprints and trust state
  /verify [NAME]  show fingerprints and the short authentication string; mark verified
  /msg NAME TEXT  send TEXT to NAME only
  /send PATH      offer the file PATH to everyone here (/send NAME PATH: to NAME only)
  /accept [ID]    accept a file offered to you (saved in your downloads directory)
  /reject [ID]    refuse a file offered to you
  /files          transfers under way, with their ids
  /quit           leave (also Ctrl-C or Ctrl-D)
  /help           this text
anything else is sent to everyone in the chat"""


def _now() -> str:
    return time.strftime("%H:%M:%S")


#: Seconds between two progress lines of one transfer on the chat screen.
PROGRESS_EVERY = 2.0


class _Screen:
    def __init__(self) -> None:
        self.texts: dict[bytes, str] = {}
        self._progress_at: dict[bytes, float] = {}

    def say(self, text: str) -> None:
        print(f"[{_now()}] {text}", flush=True)

    def __call__(self, event: Event) -> None:
        if isinstance(event, MessageReceived):
            private = " (to you only)" if event.direct else ""
            self.say(f"{event.peer.name}{private}: {sanitize(event.text)}")
        elif isinstance(event, SessionReady):
            note = {
                "new": "first contact, now pinned",
                "known": "known key",
                "verified": "verified",
            }[event.trust]
            self.say(
                f"* secure session with {event.peer.name} ({note})\n"
                f"    fingerprint  {event.peer.fingerprint_text}\n"
                f"    short authentication string  {event.sas}  (compare aloud; /verify)"
            )
        elif isinstance(event, PeerJoined):
            self.say(f"* {event.peer.name} joined")
        elif isinstance(event, PeerLeft):
            self.say(f"* {event.peer.name} {'left' if event.clean else 'disconnected'}")
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
                    f"({event.peer.name}): {short}"
                )
        elif isinstance(event, PeerRefused):
            if event.mismatch:
                print(
                    mismatch_warning(
                        event.peer.name,
                        event.peer.fingerprint_text,
                        [format_fingerprint(fp) for fp in event.pinned]
                        or ["(the key this host was expected to have)"],
                    ),
                    flush=True,
                )
            self.say(f"! refused {event.peer.name}: {event.reason}")
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


class Room(Protocol):
    """The way into the chat: the current participant (a joiner's is replaced
    on every reconnect) and, once it cannot go on, an exit code."""

    participant: Participant | None
    fatal: int | None
    files: FileTransfers | None


async def run_interactive(room: Room, events: Any, stop: asyncio.Event, *, joiner: bool) -> None:
    """Run the chat until /quit, Ctrl-C/D or ``stop``; a joiner also stops when
    its link to the host fails for good, the host when its relay connection ends."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.patch_stdout import patch_stdout

    def current() -> Participant:
        assert room.participant is not None
        return room.participant

    screen = _Screen()
    events.sinks[0] = screen  # the line-mode printer gives way to the screen
    # the typed line is erased on Enter: the screen shows it once, as 'you: ...'
    session: PromptSession[str] = PromptSession(erase_when_done=True)

    def ended() -> bool:
        if stop.is_set() or room.fatal is not None:
            return True
        return not joiner and current().disconnected is not None

    async def watch() -> None:
        await events.wait_until(ended, None)
        if session.app.is_running:
            session.app.exit(exception=EOFError())

    async def stop_watch() -> None:
        await stop.wait()
        events.wake.set()

    with patch_stdout(raw=True):
        screen.say(f"you are {current().name}; type /help for commands")
        tasks = [asyncio.ensure_future(watch()), asyncio.ensure_future(stop_watch())]
        try:
            while not ended():
                try:
                    line = await session.prompt_async("> ")
                except (EOFError, KeyboardInterrupt):
                    break
                if not await _command(
                    line.strip(), current(), screen, session.prompt_async, room.files, tasks
                ):
                    break
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        screen.say("leaving")


async def _command(
    line: str,
    participant: Participant,
    screen: _Screen,
    ask: Callable[..., Any],
    files: FileTransfers | None = None,
    tasks: list[asyncio.Task[None]] | None = None,
) -> bool:
    """Handle one input line; False means quit."""
    if not line:
        return True
    if not line.startswith("/"):
        try:
            msg_id = participant.send_text(line)
        except P2PChatError as exc:
            screen.say(f"! not sent: {exc}")
            return True
        if msg_id in participant.outbox:
            screen.texts[msg_id] = line
            screen.say(f"you: {sanitize(line)}  (sending…)")
        else:
            screen.say("(nobody else is here: the message reached no one)")
        return True
    cmd, _, rest = line.partition(" ")
    if cmd in ("/quit", "/exit"):
        return False
    if cmd == "/help":
        print(HELP, flush=True)
    elif cmd == "/who":
        peers = participant.peers
        if not peers:
            screen.say("nobody else is here")
        for p in peers:
            pin = participant.trust.get(p.fingerprint)
            state = "verified" if pin and pin.verified else "not verified"
            ready = "secure" if participant.is_ready(p.peer_id) else "connecting"
            print(f"  {p.name:20} {p.fingerprint_text}  {ready}, {state}", flush=True)
    elif cmd == "/verify":
        await _verify(rest.strip(), participant, screen, ask)
    elif cmd in ("/send", "/accept", "/reject", "/files"):
        if files is None:
            screen.say("file transfers are not available here")
        elif cmd == "/send":
            _send(rest.strip(), participant, screen, files, tasks)
        elif cmd == "/files":
            _list_files(files, screen)
        else:
            await _decide(cmd, rest.strip(), screen, files)
    elif cmd == "/msg":
        name, _, text = rest.strip().partition(" ")
        targets = [p for p in participant.peers if p.name == name]
        if not name or not text.strip():
            screen.say("usage: /msg NAME TEXT")
        elif len(targets) != 1:
            screen.say(
                f"no one here is called {name!r}"
                if not targets
                else f"several participants are called {name!r}"
            )
        else:
            try:
                msg_id = participant.send_text(text, to=targets[0].fingerprint)
            except P2PChatError as exc:
                screen.say(f"! not sent: {exc}")
                return True
            screen.texts[msg_id] = text
            screen.say(f"you to {name} only: {sanitize(text)}  (sending…)")
    else:
        screen.say(f"unknown command {cmd}; /help lists them")
    return True


async def _verify(
    name: str, participant: Participant, screen: _Screen, ask: Callable[..., Any]
) -> None:
    peers = [p for p in participant.peers if participant.is_ready(p.peer_id)]
    if name:
        peers = [p for p in peers if p.name == name]
    if not peers:
        screen.say("no secure session to verify" + (f" with {name!r}" if name else ""))
        return
    if len(peers) > 1:
        screen.say("several peers: /verify NAME (one of " + ", ".join(p.name for p in peers) + ")")
        return
    peer = peers[0]
    print(
        f"  you        {participant.identity.fingerprint_text}\n"
        f"  {peer.name:10} {peer.fingerprint_text}\n"
        f"  short authentication string: {participant.peer_sas(peer.peer_id)}\n"
        "  Compare the string (or both fingerprints) with your peer, by voice or in person.",
        flush=True,
    )
    try:
        answer = await ask(f"Does {peer.name} see the same? Mark verified [y/N] ")
    except (EOFError, KeyboardInterrupt):
        return
    if str(answer).strip().lower() in ("y", "yes"):
        participant.trust.set_verified(peer.fingerprint, True)
        screen.say(f"* {peer.name} marked verified")
    else:
        screen.say("* not marked")


def _send(
    arg: str,
    participant: Participant,
    screen: _Screen,
    files: FileTransfers,
    tasks: list[asyncio.Task[None]] | None,
) -> None:
    """/send PATH (to everyone here) or /send NAME PATH (to NAME only)."""
    if not arg:
        screen.say("usage: /send PATH  or  /send NAME PATH")
        return
    peers = [p for p in participant.peers if participant.is_ready(p.peer_id)]
    path = Path(arg).expanduser()
    if not path.is_file():
        name, _, rest = arg.partition(" ")
        named = [p for p in peers if p.name == name]
        if not named or not rest.strip() or not Path(rest.strip()).expanduser().is_file():
            screen.say(f"! no such file: {sanitize(arg)}")
            return
        peers, path = named, Path(rest.strip()).expanduser()
    if not peers:
        screen.say("nobody here to send it to")
        return
    job = asyncio.create_task(_offer(path, peers, screen, files))
    if tasks is not None:
        tasks.append(job)


async def _offer(path: Path, peers: list[PeerInfo], screen: _Screen, files: FileTransfers) -> None:
    try:
        prepared = await files.async_prepare(path)  # hashing: off the loop
        for peer in peers:
            await files.async_offer(prepared, peer)
    except P2PChatError as exc:
        screen.say(f"! cannot send {sanitize(str(path))}: {exc}")


async def _decide(cmd: str, arg: str, screen: _Screen, files: FileTransfers) -> None:
    """/accept [ID] and /reject [ID]: the one offer waiting, or the one whose id starts so."""
    offers = files.find(arg, pending=True)
    if len(offers) != 1:
        if not offers:
            screen.say("no file offer waiting" + (f" with id {sanitize(arg)}" if arg else ""))
        else:
            ids = ", ".join(f"{t.short_id} ({sanitize(t.name)})" for t in offers)
            screen.say(f"several offers waiting: {cmd} ID, one of {ids}")
        return
    offer = offers[0]
    try:
        if cmd == "/accept":
            await files.async_accept(offer)
            screen.say(f"* accepted {sanitize(offer.name)}, saving it in {files.directory}")
        else:
            files.reject(offer)
    except P2PChatError as exc:
        screen.say(f"! {exc}")


def _list_files(files: FileTransfers, screen: _Screen) -> None:
    transfers = files.transfers()
    if not transfers:
        screen.say("no file transfers under way")
    for t in transfers:
        way = f"from {t.peer.name}" if t.incoming else f"to {t.peer.name}"
        pct = 100 * t.done // t.size if t.size else 100
        print(
            f"  {t.short_id}  {sanitize(t.name)} {way}: {t.phase.value}, "
            f"{pct}% of {format_size(t.size)}",
            flush=True,
        )
