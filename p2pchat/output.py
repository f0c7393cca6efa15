"""What the user sees in line mode: one stdout line per message, status on stderr.

Line mode prints every received message as ``NAME: TEXT`` exactly; with
``--json`` every event is one JSON object per line (schema in README.md).
Text from the network is untrusted: control and bidirectional-override
characters are shown as ``\\xNN``/``\\uNNNN`` escapes so a peer cannot move the
cursor, clear the screen or fake a line from someone else.
"""

from __future__ import annotations

import json
import sys
import time
import unicodedata
from typing import Any, TextIO

from p2pchat.proto.keys import format_fingerprint
from p2pchat.session import (
    Delivered,
    Disconnected,
    Event,
    MessageReceived,
    PeerInfo,
    PeerJoined,
    PeerLeft,
    PeerRefused,
    SessionReady,
)

__all__ = ["LineOutput", "mismatch_warning", "sanitize"]


def sanitize(text: str) -> str:
    """``text`` with every control, format or line/paragraph separator escaped."""
    out = []
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def mismatch_warning(name: str, presented: str, pinned: list[str]) -> str:
    """The SSH-style warning printed when a pinned name presents another key."""
    bar = "@" * 64
    lines = [
        bar,
        "@    WARNING: THE KEY OF THIS PEER HAS CHANGED!                @",
        bar,
        "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!",
        f"{name!r} is pinned with the fingerprint",
        *[f"    {fp}" for fp in pinned],
        "but this peer proved the key",
        f"    {presented}",
        "Someone could be impersonating them (a man in the middle), or they",
        "made a new key. Nothing was sent. Ask them, by another channel, for",
        "the output of 'p2pchat id'; if it matches the new key, run",
        f"    p2pchat trust forget {name}",
        "and connect again.",
    ]
    return "\n".join(lines)


def _peer_json(peer: PeerInfo) -> dict[str, Any]:
    return {"peer": peer.name, "peer_id": peer.peer_id, "fingerprint": peer.fingerprint_text}


class LineOutput:
    """Prints session events for line mode (``json=False``) or JSON mode."""

    def __init__(
        self, *, json_mode: bool, out: TextIO | None = None, err: TextIO | None = None
    ) -> None:
        self.json_mode = json_mode
        self._out = out
        self._err = err

    # looked up at each print, so that the interactive UI's patched streams are used
    @property
    def out(self) -> TextIO:
        return self._out or sys.stdout

    @property
    def err(self) -> TextIO:
        return self._err or sys.stderr

    def status(self, text: str) -> None:
        """A status line (stderr), not part of the message stream."""
        print(f"p2pchat: {text}", file=self.err, flush=True)

    def json(self, kind: str, **fields: Any) -> None:
        obj = {"type": kind, "time": round(time.time(), 3), **fields}
        print(json.dumps(obj, ensure_ascii=False), file=self.out, flush=True)

    def error(self, text: str, **fields: Any) -> None:
        if self.json_mode:
            self.json("error", message=text, **fields)
        self.status(f"error: {text}")

    def sent(self, msg_id: bytes, text: str, recipients: list[str]) -> None:
        if self.json_mode:
            self.json("sent", id=msg_id.hex(), text=text, to=recipients)

    def __call__(self, event: Event) -> None:
        if isinstance(event, MessageReceived):
            if self.json_mode:
                self.json(
                    "message",
                    id=event.msg_id.hex(),
                    text=event.text,
                    direct=event.direct,
                    **_peer_json(event.peer),
                )
            else:
                print(f"{event.peer.name}: {sanitize(event.text)}", file=self.out, flush=True)
        elif isinstance(event, SessionReady):
            if self.json_mode:
                self.json("session", sas=event.sas, trust=event.trust, **_peer_json(event.peer))
            note = {
                "new": "first contact, pinned",
                "known": "known key",
                "verified": "verified key",
            }[event.trust]
            self.status(
                f"secure session with {event.peer.name} ({note})\n"
                f"    fingerprint {event.peer.fingerprint_text}\n"
                f"    short authentication string: {event.sas} "
                "(compare it with theirs; /verify in the interactive chat)"
            )
        elif isinstance(event, PeerJoined):
            if self.json_mode:
                self.json("join", **_peer_json(event.peer))
            self.status(f"{event.peer.name} joined")
        elif isinstance(event, PeerLeft):
            if self.json_mode:
                self.json("leave", clean=event.clean, **_peer_json(event.peer))
            how = "left" if event.clean else "disconnected"
            self.status(f"{event.peer.name} {how}")
        elif isinstance(event, Delivered):
            if self.json_mode:
                self.json(
                    "delivered",
                    id=event.msg_id.hex(),
                    complete=event.complete,
                    delivered=event.delivered,
                    of=event.total,
                    **_peer_json(event.peer),
                )
        elif isinstance(event, PeerRefused):
            if event.mismatch:
                print(
                    mismatch_warning(
                        event.peer.name,
                        event.peer.fingerprint_text,
                        [format_fingerprint(fp) for fp in event.pinned]
                        or ["(not pinned: the key expected for this host)"],
                    ),
                    file=self.err,
                    flush=True,
                )
            if self.json_mode:
                self.json("refused", reason=event.reason, **_peer_json(event.peer))
            self.status(f"refused {event.peer.name}: {event.reason}")
        elif isinstance(event, Disconnected):
            if self.json_mode:
                self.json("disconnected", reason=event.reason, clean=event.clean)
            self.status(event.reason)
