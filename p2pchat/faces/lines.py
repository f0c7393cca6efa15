"""What the user sees in line mode: one stdout line per message, status on stderr.

Line mode prints every received message as ``NAME: TEXT`` exactly; with
``--json`` every event is one JSON object per line (schema in README.md).
Text from the network is untrusted: control and bidirectional-override
characters are shown as ``\\xNN``/``\\uNNNN`` escapes so a peer cannot move the
cursor, clear the screen or fake a line from someone else. Every name is shown
through :func:`~p2pchat.room.display_name`, which marks a name that mixes
scripts (``NAME[mixed scripts]``: a Cyrillic ``o`` in a Latin name, say); JSON
mode gives the name as sent and ``mixed_scripts`` beside it.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from p2pchat.room import (
    Connected,
    Delivered,
    DeliveryFailed,
    Dialing,
    Disconnected,
    Event,
    FileCompleted,
    FileEvent,
    FileFailed,
    FileOffered,
    FileProgress,
    KeyHint,
    Looking,
    MessageReceived,
    MessageSent,
    PauseReason,
    PeerInfo,
    PeerJoined,
    PeerLeft,
    PeerRefused,
    Reconnected,
    Reconnecting,
    RoomEnded,
    SessionBroken,
    SessionReady,
    Trust,
    display_name,
    format_duration,
    format_fingerprint,
    format_size,
    instance_of,
    is_mixed_script,
    refusal_advice,
    refused_text,
    sanitize,
)

__all__ = [
    "LineOutput",
    "Seen",
    "Spinner",
    "Warnings",
    "describe_trouble",
    "describe_file_event",
    "describe_link_event",
    "describe_looking",
    "file_json",
    "mismatch_warning",
]

#: The hint added when line mode refuses a file.
ACCEPT_HINT = "start with --accept-files DIR to receive files"
#: events held for a chat screen that may not come (``LineOutput.release``):
#: the few before the screen; beyond this, what a hostile room floods with
HELD_MAX = 200


def progress_bar(done: int, total: int, width: int = 20) -> str:
    """``[#########-----------]``: ``done`` of ``total`` as a fixed-width bar."""
    filled = width if total <= 0 else min(width, done * width // total)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def _banner(title: str) -> list[str]:
    bar = "@" * 64
    return [bar, f"@    {title}".ljust(63) + "@", bar]


def mismatch_warning(event: PeerRefused, hint: KeyHint | None = None) -> str:
    """The SSH-style warning printed when a peer is refused for its key: a
    pinned name with another key, or a host without the key it was expected
    to have. ``hint`` (:meth:`Room.key_hint`) decides the advice: forgetting
    the pin is never advised while the pinned key is advertised too."""
    name, presented = display_name(event.peer.name), event.peer.fingerprint_text
    if not event.pinned:
        expected = hint.expected if hint is not None else None
        source = {
            "given": " (--expect-fingerprint)",
            "pinned": " (pinned)",
            "advertised": " (advertised by the host)",
        }.get(hint.expected_by if hint is not None else "", "")
        return "\n".join(
            [
                *_banner("WARNING: THIS HOST DOES NOT HAVE THE KEY EXPECTED!"),
                f"expected{source}",
                f"    {format_fingerprint(expected) if expected else '(another key)'}",
                f"but {name} presented the key",
                f"    {presented}",
                "Someone could be impersonating the host, or the fingerprint you were",
                "given is not this host's. Nothing was sent. Compare it, by another",
                "channel, with the output of 'p2pchat id' on the host.",
            ]
        )
    at = hint.pinned_at if hint is not None else None
    lines = [
        *_banner(
            "WARNING: ANOTHER KEY UNDER A PINNED NAME!"
            if at is not None
            else "WARNING: THE KEY OF THIS PEER HAS CHANGED!"
        ),
        "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!",
        f"{name} is pinned (as that name or one that looks like it) with the fingerprint",
        *[f"    {format_fingerprint(fp)}" for fp in event.pinned],
        "but this peer proved the key",
        f"    {presented}",
    ]
    if at is not None and hint is not None:
        where = f"{at.addresses[0]} port {at.port}" if at.addresses else f"port {at.port}"
        lines += [
            "The pinned key is on the network too: it is advertised by",
            f"    '{sanitize(instance_of(at))}' at {where}",
            f"so this is another device calling itself {name}. Nothing was sent.",
            "Keep the pin. To join the pinned one:",
            f"    p2pchat join {shlex.quote(sanitize(hint.pinned_selector or at.name))}",
        ]
        return "\n".join(lines)
    lines += [
        "Someone could be impersonating them (a man in the middle), or they",
        "made a new key. Nothing was sent. Ask them, by another channel, for",
    ]
    if hint is None or not hint.looked:
        lines += [
            "the output of 'p2pchat id'; if it matches the new key",
            "and 'p2pchat discover' does not list the pinned key (if it does, that",
            f"is {name}, and this is someone else: keep the pin), run",
        ]
    else:
        lines += ["the output of 'p2pchat id'; if it matches the new key, run"]
    # by fingerprint: a pin under a look-alike name is not found by this name
    forget = [f"    p2pchat trust forget {format_fingerprint(fp)}" for fp in event.pinned]
    lines += [*forget, "and connect again."]
    return "\n".join(lines)


class Warnings:
    """The key-changed warning in full once per name and key in a run; a peer
    that tries again gets one line, so a loop cannot flood everyone's screen."""

    def __init__(self) -> None:
        self._shown: set[tuple[str, bytes]] = set()

    def mismatch(self, event: PeerRefused, hint: KeyHint | None = None) -> str:
        key = (event.peer.name, event.peer.fingerprint)
        if key in self._shown:
            return (
                f"(the same unknown key for {display_name(event.peer.name)} again: "
                f"{event.peer.fingerprint_text[:19]}...; see the warning above)"
            )
        self._shown.add(key)
        return mismatch_warning(event, hint)


class Seen:
    """The peers whose secure session a face has shown: only those are shown
    leaving (a registration that never proved a key was never shown)."""

    def __init__(self) -> None:
        self._ids: set[int] = set()

    def add(self, peer_id: int) -> None:
        self._ids.add(peer_id)

    def left(self, peer_id: int) -> bool:
        """``peer_id`` left: True if it had been shown."""
        if peer_id in self._ids:
            self._ids.discard(peer_id)
            return True
        return False


def describe_trouble(event: PeerRefused | SessionBroken | DeliveryFailed) -> str:
    """One line for a refusal (ours or the peer's), a broken session, or
    messages that will not reach someone."""
    name = display_name(event.peer.name)
    if isinstance(event, PeerRefused):
        if event.by_peer:
            advice = refusal_advice(event)
            return refused_text(event) + (f"; {advice}" if advice else "")
        return f"refused {name}: {event.reason}"
    if isinstance(event, SessionBroken):
        when = f" in {event.retry_in:.1f} s" if event.retry_in >= 0.1 else ""
        return (
            f"the session with {name} broke ({event.reason}); renewing it{when}: "
            "what it had not acknowledged will be sent again"
        )
    n = len(event.msg_ids)
    return f"{n} message(s) will not reach {name}: {event.reason}"


def describe_looking(event: Looking) -> str:
    """What a joiner browsing for its host is doing, without the time."""
    return f"looking for hosts named {event.name!r}" if event.name else "looking for hosts"


class Spinner:
    """One status line redrawn in place on a terminal (``\\r``) while a joiner
    looks for its host, with the seconds gone; :meth:`stop` erases it."""

    FRAMES = "|/-\\"
    INTERVAL = 0.25  #: seconds between redraws

    def __init__(self, stream: Callable[[], TextIO]) -> None:
        self._stream = stream
        self._task: asyncio.Task[None] | None = None
        self._shown = False
        self._text, self._timeout, self._t0, self._turn = "", 0.0, 0.0, 0

    def start(self, text: str, timeout: float) -> None:
        self.stop()
        self._text, self._timeout, self._t0 = text, timeout, time.monotonic()
        self._draw()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a test feeding events): drawn once
        self._task = loop.create_task(self._run(), name="p2pchat-spinner")

    async def _run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.INTERVAL)
                self._draw()
        except asyncio.CancelledError:
            self._erase()  # the loop is closing (an error follows): leave a clean line
            raise

    def _draw(self) -> None:
        gone = min(int(time.monotonic() - self._t0), int(self._timeout))
        frame = self.FRAMES[self._turn % len(self.FRAMES)]
        self._turn += 1
        err = self._stream()
        err.write(f"\rp2pchat: {self._text}\u2026 {frame} {gone} s of {self._timeout:g}\x1b[K")
        err.flush()
        self._shown = True

    def _erase(self) -> None:
        if self._shown:
            err = self._stream()
            err.write("\r\x1b[K")
            err.flush()
            self._shown = False

    def stop(self) -> None:
        """Stop redrawing and erase the line (if it is there)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._erase()


def describe_link_event(event: Dialing | Connected | Reconnecting | Reconnected) -> list[str]:
    """The status lines for a change of the joiner's link to the host."""
    if isinstance(event, Dialing):
        who = f"{display_name(event.name)} at " if event.name else ""
        where = ", ".join(f"[{a}]:{p}" if ":" in a else f"{a}:{p}" for a, p in event.addresses)
        return [f"trying {who}{where}"]
    if isinstance(event, Connected):
        return [f"connected to {event.address}:{event.port}"]
    if isinstance(event, Reconnected):
        return ["reconnected; sending what was not delivered"]
    failed = [f"reconnect failed: {event.last_error}"] if event.last_error else []
    return [*failed, f"reconnecting in {event.delay:.1f} s (attempt {event.attempt})"]


def _peer_json(peer: PeerInfo) -> dict[str, Any]:
    return {
        "peer": peer.name,
        "peer_id": peer.peer_id,
        "fingerprint": peer.fingerprint_text,
        "mixed_scripts": is_mixed_script(peer.name),
    }


def percent(done: int, size: int) -> str:
    return f"{100 * done // size if size else 100}%"


def resumes_next_chat(peer: str) -> str:
    """What a remembered transfer of ours promises when we leave."""
    return f"it resumes the next time you chat with {peer}"


def paused_text(where: str, pct: str, peer: str, event: FileProgress) -> str:
    """A paused transfer, saying who left (never the peer when it was us) and
    what resumes it: only a transfer of ours that is remembered resumes by
    itself; one we receive resumes when the sender offers it again."""
    why = event.why
    if why is PauseReason.WE_LEFT:
        if event.incoming:
            return f"{where}: paused at {pct}, kept; it resumes when {peer} offers it again"
        if event.remembered:
            return f"{where}: paused at {pct}; {resumes_next_chat(peer)}"
        return f"{where}: paused at {pct}; send it again to resume ({peer} keeps what it has)"
    if why is PauseReason.DISCONNECTED:
        return f"{where}: paused at {pct}, the connection dropped; it resumes when it is back"
    return f"{where}: paused at {pct}, {peer} is gone; it resumes when they are back"


def describe_file_event(event: FileEvent) -> str:
    """One line for a person: what a file event means (text from the network escaped)."""
    peer = display_name(event.peer.name)
    name = sanitize(event.name)
    incoming = event.incoming
    verb, prep = ("receiving", "from") if incoming else ("sending", "to")
    if isinstance(event, FileOffered):
        size = format_size(event.size)
        if not incoming:
            if event.remembered:
                return f"offering {name} ({size}) to {peer} again: the last chat left it unfinished"
            return f"offering {name} ({size}) to {peer}"
        if event.pending:
            short = event.transfer_id.hex()[:8]
            return f"{peer} offers {name} ({size}): /accept {short} or /reject {short}"
        return f"{peer} offers {name} ({size})"
    if isinstance(event, FileProgress):
        where = f"{verb} {name} {prep} {peer}"
        pct = percent(event.done, event.size)
        if event.paused:
            return paused_text(where, pct, peer, event)
        if event.done == event.start:
            if event.start == 0:
                return f"{where}: started ({format_size(event.size)})"
            return f"{where}: resuming at {pct} ({format_size(event.start)} already there)"
        return (
            f"{where}: {progress_bar(event.done, event.size)} {pct} "
            f"({format_size(event.done)} of {format_size(event.size)}), "
            f"{format_size(event.rate)}/s, {format_duration(event.eta)} left"
        )
    if isinstance(event, FileCompleted):
        how = (
            f"{format_size(event.size)} in {format_duration(event.seconds)}, "
            f"{format_size(event.rate)}/s"
            + (f", resumed at {percent(event.start, event.size)}" if event.start else "")
        )
        if incoming:
            return f"received {name} from {peer}, SHA-256 verified: {sanitize(event.path)} ({how})"
        return f"sent {name} to {peer}, SHA-256 verified by {peer} ({how})"
    reason = sanitize(event.reason)
    if event.not_resumed:
        return f"not resuming {name} to {peer}: {reason}"
    if incoming:
        if event.by_peer:
            return f"{peer} cancelled {name}: {reason}"
        hint = f" ({ACCEPT_HINT})" if reason == "not accepting files" else ""
        return f"not receiving {name} from {peer}: {reason}{hint}"
    if event.by_peer:
        return f"{peer} refused {name}: {reason}"
    return f"sending {name} to {peer} failed: {reason}"


def file_json(event: FileEvent) -> tuple[str, dict[str, Any]]:
    """The JSON event type and fields for a file event (README, JSON mode)."""
    fields: dict[str, Any] = {
        "direction": "in" if event.incoming else "out",
        "id": event.transfer_id.hex(),
        "name": event.name,
    }
    if isinstance(event, FileOffered):
        fields.update(
            size=event.size,
            sha256=event.sha256.hex(),
            pending=event.pending,
            remembered=event.remembered,
        )
        kind = "file-offer"
    elif isinstance(event, FileProgress):
        fields.update(
            {
                "bytes": event.done,
                "size": event.size,
                "from": event.start,
                "rate": round(event.rate),
                "eta": None if event.eta is None else round(event.eta, 1),
                "paused": event.paused,
                "why": None if event.why is None else str(event.why),
                "remembered": event.remembered,
            }
        )
        kind = "file-progress"
    elif isinstance(event, FileCompleted):
        fields.update(
            {
                "size": event.size,
                "sha256": event.sha256.hex(),
                "path": event.path,
                "from": event.start,
                "seconds": round(event.seconds, 3),
                "rate": round(event.rate),
            }
        )
        kind = "file-done"
    else:
        fields.update(reason=event.reason, by_peer=event.by_peer, not_resumed=event.not_resumed)
        kind = "file-failed"
    return kind, {**fields, **_peer_json(event.peer)}


class LineOutput:
    """Prints session events for line mode (``json=False``) or JSON mode."""

    def __init__(
        self,
        *,
        json_mode: bool,
        out: TextIO | None = None,
        err: TextIO | None = None,
        hint: Callable[[PeerRefused], KeyHint] | None = None,
        looking_only: bool = False,
    ) -> None:
        self.json_mode = json_mode
        #: show only the "looking for hosts" line: the chat screen, which
        #: replays every event from the start, shows the rest (printed here as
        #: well, they were left on the terminal under the screen after /quit).
        #: The rest is held meanwhile, for ``release`` when no screen comes.
        self.looking_only = looking_only
        self._held: list[Event] = []
        self.hint = hint  #: Room.key_hint, for the advice on a refused key
        self._out = out
        self._err = err
        self._warnings = Warnings()
        self._seen = Seen()
        self._spinner = Spinner(lambda: self.err)

    # looked up at each print, so that the interactive UI's patched streams are used
    @property
    def out(self) -> TextIO:
        return self._out or sys.stdout

    @property
    def err(self) -> TextIO:
        return self._err or sys.stderr

    def status(self, text: str) -> None:
        """A status line (stderr), not part of the message stream."""
        self._spinner.stop()
        print(f"p2pchat: {text}", file=self.err, flush=True)

    def close(self) -> None:
        """Erase the "looking for hosts" line, if it is showing: before a
        prompt, the chat screen or the command's error line takes the terminal."""
        self._spinner.stop()
        self._held.clear()

    def release(self) -> None:
        """The chat screen will not come (the join failed before it): show what
        was held for it, such as the warning about a refused key, in lines."""
        self.looking_only = False
        held, self._held = self._held, []
        for event in held:
            self(event)

    def json(self, kind: str, **fields: Any) -> None:
        obj = {"type": kind, "time": round(time.time(), 3), **fields}
        print(json.dumps(obj, ensure_ascii=False), file=self.out, flush=True)

    def error(self, text: str, **fields: Any) -> None:
        if self.json_mode:
            self.json("error", message=text, **fields)
        self.status(f"error: {text}")

    def __call__(self, event: Event) -> None:
        if isinstance(event, Looking):
            if self.json_mode:
                self.json("looking", name=event.name, timeout=event.timeout)
            if self.err.isatty():
                self._spinner.start(describe_looking(event), event.timeout)
            else:  # one line: a script sees why it waits
                self.status(f"{describe_looking(event)} (up to {event.timeout:g} s)")
            return
        self._spinner.stop()  # whatever follows ends the looking
        if self.looking_only:
            if len(self._held) < HELD_MAX:
                self._held.append(event)
            return
        if isinstance(event, MessageSent):
            if self.json_mode:
                self.json("sent", id=event.msg_id.hex(), text=event.text, to=list(event.to))
        elif isinstance(event, Dialing):
            if self.err.isatty():  # on a terminal only: scripts read one line per failure
                for line in describe_link_event(event):
                    self.status(line)
        elif isinstance(event, Connected | Reconnecting | Reconnected):
            for line in describe_link_event(event):
                self.status(line)
        elif isinstance(event, RoomEnded):
            if event.by_host:
                self.status(event.reason)
            else:
                self.error(event.reason)
        elif isinstance(event, MessageReceived):
            if self.json_mode:
                self.json(
                    "message",
                    id=event.msg_id.hex(),
                    text=event.text,
                    direct=event.direct,
                    **_peer_json(event.peer),
                )
            else:
                print(
                    f"{display_name(event.peer.name)}: {sanitize(event.text)}",
                    file=self.out,
                    flush=True,
                )
        elif isinstance(event, SessionReady):
            self._seen.add(event.peer.peer_id)
            if self.json_mode:
                self.json(
                    "session",
                    sas=event.sas,
                    trust=event.trust,
                    renewed=event.renewed,
                    **_peer_json(event.peer),
                )
            if event.renewed:
                self.status(f"secure session with {display_name(event.peer.name)} renewed")
                return
            note = {
                Trust.NEW: "first contact, pinned",
                Trust.KNOWN: "known key",
                Trust.VERIFIED: "verified key",
            }[event.trust]
            advice = (
                "(verified before: nothing to compare)"
                if event.trust is Trust.VERIFIED
                else "(compare it with theirs; /verify in the interactive chat)"
            )
            self.status(
                f"secure session with {display_name(event.peer.name)} ({note})\n"
                f"    fingerprint {event.peer.fingerprint_text}\n"
                f"    short authentication string: {event.sas} {advice}"
            )
        elif isinstance(event, PeerJoined):
            # the relay's word only: a person reads of a peer once its key is
            # proven ("secure session with ..."), never of a bare registration
            if self.json_mode:
                self.json("join", **_peer_json(event.peer))
        elif isinstance(event, PeerLeft):
            if self.json_mode:
                self.json("leave", clean=event.clean, **_peer_json(event.peer))
            if self._seen.left(event.peer.peer_id):
                how = "left" if event.clean else "disconnected"
                self.status(f"{display_name(event.peer.name)} {how}")
        elif isinstance(event, Delivered):
            if self.json_mode:
                self.json(
                    "delivered",
                    id=event.msg_id.hex(),
                    complete=event.complete,
                    delivered=event.delivered,
                    of=event.total,
                    dropped=event.dropped,
                    **_peer_json(event.peer),
                )
        elif isinstance(event, PeerRefused):
            if event.mismatch:
                hint = self.hint(event) if self.hint is not None else None
                print(self._warnings.mismatch(event, hint), file=self.err, flush=True)
            if self.json_mode:
                self.json(
                    "refused",
                    reason=event.reason,
                    why=event.kind,
                    by_peer=event.by_peer,
                    **_peer_json(event.peer),
                )
            self.status(describe_trouble(event))
        elif isinstance(event, SessionBroken):
            if self.json_mode:
                self.json(
                    "session-broken",
                    reason=event.reason,
                    retry_in=round(event.retry_in, 3),
                    **_peer_json(event.peer),
                )
            self.status(describe_trouble(event))
        elif isinstance(event, DeliveryFailed):
            if self.json_mode:
                self.json(
                    "undelivered",
                    ids=[i.hex() for i in event.msg_ids],
                    reason=event.reason,
                    **_peer_json(event.peer),
                )
            self.status(describe_trouble(event))
        elif isinstance(event, Disconnected):
            if self.json_mode:
                self.json("disconnected", reason=event.reason, clean=event.clean)
            self.status(event.reason)
        elif isinstance(event, FileOffered | FileProgress | FileCompleted | FileFailed):
            if self.json_mode:
                kind, fields = file_json(event)
                self.json(kind, **fields)
            self.status(describe_file_event(event))
