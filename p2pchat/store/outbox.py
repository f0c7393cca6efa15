"""Messages not yet acknowledged, and ids already shown: state that outlives a connection.

The outbox keeps every chat message until each of its recipients (by
fingerprint, since peer ids change with every connection) has acknowledged
it end to end, in the order typed; after a reconnect, what is still pending
for a peer is sent again and the receiver drops duplicates by id. With a path
the state is also kept on disk, encrypted with the local storage key (never a
session key), so it survives a restart; saving is debounced to at most one
write per ``SAVE_DELAY`` seconds (a message acknowledged within ``PERSIST_AFTER``
never reaches the disk), and done in full on close and when a connection drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p2pchat.store.identity import write_private

__all__ = ["OutMessage", "Outbox"]

log = logging.getLogger("p2pchat.store.outbox")

MAGIC: Final = b"P2PO1"
AAD: Final = b"p2pchat outbox v1"
SAVE_DELAY: Final = 0.05
#: Acks wait for a save; this bounds how long (a save costs about 0.6 ms here).
ACK_SAVE_DELAY: Final = 0.005
#: A message still unacknowledged after this many seconds is written to disk
#: (at once on close or when the connection drops).
PERSIST_AFTER: Final = 1.0
#: ids remembered per peer to drop duplicates (a resend never reaches this far back)
SEEN_PER_PEER: Final = 4096
#: peers whose seen ids are kept (the most recently active): bounds the file
SEEN_PEERS: Final = 64
#: a message nobody acknowledged for this long is given up on
EXPIRY: Final = 7 * 24 * 3600.0


@dataclass
class OutMessage:
    msg_id: bytes
    text: str
    recipients: set[bytes]  #: fingerprints that have not acknowledged it yet
    created: float
    total: int = 0  #: how many recipients it had when sent
    direct: bool = False  #: to one participant only (/msg)


class Outbox:
    """Pending messages and seen ids, optionally persisted (see the module doc)."""

    def __init__(self, path: Path | None = None, key: bytes | None = None) -> None:
        if (path is None) != (key is None):
            raise ValueError("path and key go together")
        self.path = path
        self._aead = AESGCM(key) if key is not None else None
        self._messages: OrderedDict[bytes, OutMessage] = OrderedDict()
        self._seen: dict[bytes, OrderedDict[bytes, None]] = {}
        self._last_known: set[bytes] = set()
        self._save_handle: asyncio.TimerHandle | None = None
        self._dirty = False
        #: called after every save: acks wait for it, so that a message is
        #: acknowledged only once its id is on disk (never shown twice, even
        #: across a crash of the receiver)
        self.on_saved: Callable[[], None] | None = None
        if path is not None:
            self._load()

    # ------------------------------------------------------------ messages

    def add(
        self, msg_id: bytes, text: str, recipients: set[bytes], *, direct: bool = False
    ) -> OutMessage:
        msg = OutMessage(msg_id, text, set(recipients), time.time(), len(recipients), direct)
        if recipients:
            self._messages[msg_id] = msg
            self._changed(PERSIST_AFTER)
        return msg

    def for_peer(self, fp: bytes) -> list[OutMessage]:
        """What ``fp`` still has to acknowledge, oldest first."""
        return [m for m in self._messages.values() if fp in m.recipients]

    def acked(self, fp: bytes, msg_id: bytes) -> OutMessage | None:
        """Record ``fp``'s ack; the message if ``fp`` was waited for (then
        ``msg.recipients`` tells whether anyone still is)."""
        msg = self._messages.get(msg_id)
        if msg is None or fp not in msg.recipients:
            return None
        msg.recipients.discard(fp)
        if not msg.recipients:
            del self._messages[msg_id]
        self._changed()
        return msg

    def drop_recipient(self, fp: bytes) -> None:
        """``fp`` left for good (or was refused): stop waiting for it."""
        for mid, msg in list(self._messages.items()):
            msg.recipients.discard(fp)
            if not msg.recipients:
                del self._messages[mid]
        self._last_known.discard(fp)
        self._changed()

    def pending(self) -> list[OutMessage]:
        return list(self._messages.values())

    def __len__(self) -> int:
        return len(self._messages)

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._messages

    @property
    def last_known(self) -> frozenset[bytes]:
        """Fingerprints present at the last connection: recipients while disconnected."""
        return frozenset(self._last_known)

    @last_known.setter
    def last_known(self, fps: set[bytes] | frozenset[bytes]) -> None:
        self._last_known = set(fps)
        self._changed()

    def note_peer(self, fp: bytes) -> None:
        """``fp`` is present now."""
        if fp not in self._last_known:
            self._last_known.add(fp)
            self._changed()

    # ------------------------------------------------------------ duplicates

    def first_sighting(self, fp: bytes, msg_id: bytes) -> bool:
        """True the first time ``msg_id`` arrives from ``fp``; False for a duplicate."""
        seen = self._seen.pop(fp, None)
        if seen is None:
            seen = OrderedDict()
        self._seen[fp] = seen  # most recently active peers last
        if len(self._seen) > SEEN_PEERS:
            del self._seen[next(iter(self._seen))]
        if msg_id in seen:
            return False
        seen[msg_id] = None
        if len(seen) > SEEN_PER_PEER:
            seen.popitem(last=False)
        self._changed()
        return True

    # ------------------------------------------------------------ persistence

    @property
    def durable(self) -> bool:
        """True when the state is kept on disk (acks then wait for a save)."""
        return self.path is not None

    def request_save(self) -> None:
        """Make sure a save (and so ``on_saved``) happens very soon, even with
        nothing new: acknowledgements wait for it."""
        self._changed(ACK_SAVE_DELAY)

    def _changed(self, delay: float = SAVE_DELAY) -> None:
        if self.path is None:
            return
        self._dirty = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.save()
            return
        when = loop.time() + delay
        if self._save_handle is not None:
            if self._save_handle.when() <= when:
                return
            self._save_handle.cancel()
        self._save_handle = loop.call_at(when, self.save, False)

    def save(self, complete: bool = True) -> None:
        """Write the state now if it changed (atomic, encrypted).

        A scheduled save (``complete=False``) leaves out messages younger than
        ``PERSIST_AFTER``: most are acknowledged well before, and writing each
        one would cost the whole outbox per message at full speed. They are
        written once they have waited that long, and by every explicit save
        (on close, and when the connection drops)."""
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
        if self.path is None or self._aead is None or not self._dirty:
            return
        now = time.time()
        kept: list[OutMessage] = []
        young: list[OutMessage] = []
        for m in self._messages.values():
            (kept if complete or now - m.created >= PERSIST_AFTER else young).append(m)
        state = {
            "messages": [
                [m.msg_id, m.text, sorted(m.recipients), m.created, m.total, m.direct] for m in kept
            ],
            "seen": {fp: list(ids) for fp, ids in self._seen.items()},
            "last_known": sorted(self._last_known),
        }
        nonce = os.urandom(12)
        blob = MAGIC + nonce + self._aead.encrypt(nonce, msgpack.packb(state), AAD)
        try:
            write_private(self.path, blob)
            self._dirty = False
        except OSError as exc:
            log.warning("outbox: cannot save %s: %s", self.path, exc.strerror or exc)
        if young:
            self._changed(max(SAVE_DELAY, min(m.created for m in young) + PERSIST_AFTER - now))
        if self.on_saved is not None:
            self.on_saved()

    def _load(self) -> None:
        assert self.path is not None and self._aead is not None
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("outbox: cannot read %s: %s", self.path, exc.strerror or exc)
            return
        try:
            if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 12 + 16:
                raise ValueError("not an outbox file")
            nonce = blob[len(MAGIC) : len(MAGIC) + 12]
            # authenticated with our own key: the content is ours, no hostile limits needed
            state = msgpack.unpackb(self._aead.decrypt(nonce, blob[len(MAGIC) + 12 :], AAD))
            self._restore(state)
        except (ValueError, InvalidTag, TypeError, KeyError) as exc:
            aside = self.path.with_name(self.path.name + ".unreadable")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            log.warning("outbox: %s is unreadable (%s); moved aside to %s", self.path, exc, aside)
            self._messages.clear()
            self._seen.clear()

    def _restore(self, state: Any) -> None:
        now = time.time()
        for mid, text, recipients, created, total, direct in state["messages"]:
            if not (isinstance(mid, bytes) and isinstance(text, str)):
                raise ValueError("bad message entry")
            if now - float(created) < EXPIRY and recipients:
                self._messages[mid] = OutMessage(
                    mid,
                    text,
                    {bytes(r) for r in recipients},
                    float(created),
                    int(total),
                    bool(direct),
                )
        for fp, ids in state["seen"].items():
            self._seen[bytes(fp)] = OrderedDict((bytes(i), None) for i in ids[-SEEN_PER_PEER:])
        self._last_known = {bytes(fp) for fp in state["last_known"]}
