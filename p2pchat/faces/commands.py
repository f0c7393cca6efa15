"""Chat commands (``/msg``, ``/verify``, ``/send``...), for every face that takes typed lines.

:func:`async_run_command` reads one line and acts on the :class:`Room`; what it
has to say goes to a :class:`Console`, which the face provides (the chat screen
prints it above the prompt; a web page would send it to the browser). Nothing
here knows a screen.
"""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Protocol

from p2pchat.errors import P2PChatError
from p2pchat.room import Room, Transfer, display_name, format_size, sanitize

__all__ = ["ACTION", "COMMANDS", "HELP", "Console", "async_run_command", "leave_warning"]

#: What ``/me TEXT`` sends: faces show such a message as an action ("* alice TEXT").
ACTION = "/me "

HELP = """commands:
  /who            who is here, with fingerprints and trust state
  /verify [NAME]  show fingerprints and the short authentication string; mark verified
  /msg NAME TEXT  send TEXT to NAME only
  /send PATH      offer the file PATH to everyone here (/send NAME PATH: to NAME only)
  /accept [ID]    accept a file offered to you (saved in your downloads directory)
  /reject [ID]    refuse a file offered to you
  /files          transfers under way, with their ids
  /me TEXT        an action: others see "* YOU TEXT"
  /quit           leave (asks first if messages or files are still on the way)
  /help           this text
anything else is sent to everyone in the chat; //TEXT sends /TEXT"""


class Console(Protocol):
    """Where a command's words go, and how it asks a question."""

    def say(self, text: str) -> None:
        """One status line (the face adds the time)."""

    def show(self, text: str) -> None:
        """A block shown as it is (help, listings)."""

    async def ask(self, question: str) -> str | None:
        """The user's answer, or None if there is nobody to ask."""

    def spawn(self, job: Coroutine[Any, Any, None]) -> None:
        """Run ``job`` in the background until the face ends."""


async def async_run_command(room: Room, line: str, console: Console) -> bool:
    """Act on one typed line: text is sent to everyone, ``/...`` is a command.
    Returns False for /quit."""
    if not line:
        return True
    if not line.startswith("/") or line.startswith("//"):
        await _send_text(room, line[1:] if line.startswith("//") else line, console)
        return True
    cmd, _, rest = line.partition(" ")
    rest = rest.strip()
    if cmd in ("/quit", "/exit"):
        return await _stay(room, console)  # True: stay
    handler = _COMMANDS.get(cmd)
    if handler is None:
        console.say(f"unknown command {cmd}; /help lists them")
    else:
        await handler(room, rest, console)
    return True


async def _send_text(room: Room, text: str, console: Console, to: str | None = None) -> None:
    try:
        await room.send(text, to=to)
    except P2PChatError as exc:
        console.say(f"! not sent: {exc}")


def leave_warning(room: Room) -> str | None:
    """What leaving now would leave behind (messages not acknowledged, files
    under way), or None."""
    left = []
    undelivered = len(room.undelivered())
    if undelivered:
        left.append(f"{undelivered} message(s) not delivered yet")
    transfers = len(room.files.transfers())
    if transfers:
        left.append(f"{transfers} file transfer(s) under way")
    return " and ".join(left) or None


async def _stay(room: Room, console: Console) -> bool:
    """Asked to leave with something still on the way: True to stay."""
    warning = leave_warning(room)
    if warning is None:
        return False
    answer = await console.ask(f"{warning}: leave anyway? [y/N] ")
    return answer is not None and answer.strip().lower() not in ("y", "yes")


async def _me(room: Room, rest: str, console: Console) -> None:
    if not rest:
        console.say("usage: /me TEXT")
        return
    await _send_text(room, ACTION + rest, console)


async def _help(room: Room, rest: str, console: Console) -> None:
    console.show(HELP)


async def _who(room: Room, rest: str, console: Console) -> None:
    members = room.members
    if not members:
        console.say("nobody else is here")
    for m in members:
        state = "verified" if m.verified else "not verified"
        ready = "secure" if m.secure else "connecting"
        console.show(
            f"  {display_name(m.peer.name):20} {m.peer.fingerprint_text}  {ready}, {state}"
        )


async def _msg(room: Room, rest: str, console: Console) -> None:
    name, _, text = rest.partition(" ")
    if not name or not text.strip():
        console.say("usage: /msg NAME TEXT")
        return
    await _send_text(room, text, console, to=name)


async def _verify(room: Room, name: str, console: Console) -> None:
    secure = [m.peer for m in room.members if m.secure]
    if name:
        secure = [p for p in secure if p.name == name]
    if not secure:
        console.say("no secure session to verify" + (f" with {name!r}" if name else ""))
        return
    if len(secure) > 1:
        console.say(
            "several peers: /verify NAME (one of "
            + ", ".join(display_name(p.name) for p in secure)
            + ")"
        )
        return
    v = room.verification(secure[0].fingerprint)
    shown = display_name(v.peer.name)
    console.show(
        f"  you        {v.own_fingerprint}\n"
        f"  {shown:10} {v.peer.fingerprint_text}\n"
        f"  short authentication string: {v.sas}\n"
        "  Compare the string (or both fingerprints) with your peer, by voice or in person."
    )
    answer = await console.ask(f"Does {shown} see the same? Mark verified [y/N] ")
    if answer is None:
        return
    if answer.strip().lower() in ("y", "yes"):
        room.mark_verified(v.peer.fingerprint)
        console.say(f"* {shown} marked verified")
    else:
        console.say("* not marked")


async def _send(room: Room, arg: str, console: Console) -> None:
    """/send PATH (to everyone here) or /send NAME PATH (to NAME only)."""
    if not arg:
        console.say("usage: /send PATH  or  /send NAME PATH")
        return
    to: str | None = None
    path = Path(arg).expanduser()  # noqa: ASYNC240 -- no disk access worth a thread
    if not path.is_file():
        name, _, rest = arg.partition(" ")
        other = Path(rest.strip()).expanduser()  # noqa: ASYNC240
        if not room.find(name, secure=True) or not rest.strip() or not other.is_file():
            console.say(f"! no such file: {sanitize(arg)}")
            return
        to, path = name, other
    if not (room.find(to, secure=True) if to else room.find_secure()):
        console.say("nobody here to send it to")
        return

    async def offer() -> None:
        try:
            await room.send_file(path, to=to)
        except P2PChatError as exc:
            console.say(f"! cannot send {sanitize(str(path))}: {exc}")

    console.spawn(offer())


async def _decide(room: Room, cmd: str, arg: str, console: Console) -> None:
    """/accept [ID] and /reject [ID]: the one offer waiting, or the one whose id starts so."""
    offers = room.files.find(arg, pending=True)
    if len(offers) != 1:
        if not offers:
            console.say("no file offer waiting" + (f" with id {sanitize(arg)}" if arg else ""))
        else:
            ids = ", ".join(f"{t.short_id} ({sanitize(t.name)})" for t in offers)
            console.say(f"several offers waiting: {cmd} ID, one of {ids}")
        return
    offer = offers[0]
    try:
        if cmd == "/accept":
            await room.files.async_accept(offer)
            console.say(f"* accepted {sanitize(offer.name)}, saving it in {room.files.directory}")
        else:
            room.files.reject(offer)
    except P2PChatError as exc:
        console.say(f"! {exc}")


async def _accept(room: Room, arg: str, console: Console) -> None:
    await _decide(room, "/accept", arg, console)


async def _reject(room: Room, arg: str, console: Console) -> None:
    await _decide(room, "/reject", arg, console)


async def _files(room: Room, rest: str, console: Console) -> None:
    transfers: list[Transfer] = room.files.transfers()
    if not transfers:
        console.say("no file transfers under way")
    for t in transfers:
        who = display_name(t.peer.name)
        way = f"from {who}" if t.incoming else f"to {who}"
        pct = 100 * t.done // t.size if t.size else 100
        console.show(
            f"  {t.short_id}  {sanitize(t.name)} {way}: {t.phase.value}, "
            f"{pct}% of {format_size(t.size)}"
        )


_COMMANDS = {
    "/help": _help,
    "/me": _me,
    "/who": _who,
    "/msg": _msg,
    "/verify": _verify,
    "/send": _send,
    "/accept": _accept,
    "/reject": _reject,
    "/files": _files,
}

#: Every command a face can complete (the chat screen adds its own).
COMMANDS = (*_COMMANDS, "/quit")
