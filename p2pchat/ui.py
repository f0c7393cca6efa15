"""Interactive terminal chat (stdin and stdout are a TTY), built on prompt_toolkit.

The input line stays at the bottom; messages, joins, leaves and errors print
above it with the time and the sender's name. Commands: /help /who /verify
/quit; Ctrl-C and Ctrl-D leave cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, Protocol

from p2pchat.errors import P2PChatError
from p2pchat.output import mismatch_warning, sanitize
from p2pchat.proto.keys import format_fingerprint
from p2pchat.session import (
    Delivered,
    Disconnected,
    Event,
    MessageReceived,
    Participant,
    PeerJoined,
    PeerLeft,
    PeerRefused,
    SessionReady,
)

__all__ = ["HELP", "run_interactive"]

HELP = """commands:
  /who            who is here, with fingerprints and trust state
  /verify [NAME]  show fingerprints and the short authentication string; mark verified
  /msg NAME TEXT  send TEXT to NAME only
  /quit           leave (also Ctrl-C or Ctrl-D)
  /help           this text
anything else is sent to everyone in the chat"""


def _now() -> str:
    return time.strftime("%H:%M:%S")


class _Screen:
    def __init__(self) -> None:
        self.texts: dict[bytes, str] = {}

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


class Room(Protocol):
    """The way into the chat: the current participant (a joiner's is replaced
    on every reconnect) and, once it cannot go on, an exit code."""

    participant: Participant | None
    fatal: int | None


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
                if not await _command(line.strip(), current(), screen, session.prompt_async):
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
