"""Messages not yet acknowledged, and ids already shown: state that outlives a connection.

The outbox keeps every chat message until each of its recipients (by
fingerprint, since peer ids change with every connection) has acknowledged
it end to end, in the order typed; after a reconnect, what is still pending
for a peer is sent again and the receiver drops duplicates by id. With a path
the state is also kept on disk, encrypted with the local storage key (never a
session key), so it survives a restart; saving is debounced to at most one
write per ``SAVE_DELAY`` seconds (a message acknowledged within ``PERSIST_AFTER``
never reaches the disk), and done in full on close and when a connection drops.

Saves stay off the event loop and are coalesced (``p2pchat.store.saving``);
``on_saved`` runs once every id seen so far is on disk.

Seen ids are bounded against throw-away identities: peers known to us (see
``Outbox.is_known``, e.g. pinned) keep up to ``SEEN_PER_PEER`` ids each, for the
``SEEN_PEERS`` most recently active; other peers live in a separate table of
``SEEN_STRANGERS`` peers with ``SEEN_PER_STRANGER`` ids each. Strangers only ever
evict strangers, so no number of new identities can push out a known peer's
ids, and the whole stays bounded (memory and file: 64 x 4096 + 64 x 256 ids).
Until ``is_known`` is set, every peer counts as known (one table, as before).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgpack

from p2pchat.store.saving import SAVE_DELAY, Saver

__all__ = ["OutMessage", "Outbox"]

#: A message still unacknowledged after this many seconds is written to disk
#: (at once on close or when the connection drops).
PERSIST_AFTER: Final = 1.0
#: ids remembered per peer to drop duplicates (a resend never reaches this far back)
SEEN_PER_PEER: Final = 4096
#: peers whose seen ids are kept (the most recently active): bounds the file
SEEN_PEERS: Final = 64
#: peers not known (see ``Outbox.is_known``) are kept apart, fewer ids each
SEEN_STRANGERS: Final = 64
SEEN_PER_STRANGER: Final = 256
#: a message nobody acknowledged for this long is given up on
EXPIRY: Final = 7 * 24 * 3600.0
#: messages whose failed recipients are remembered (this run only), at most
FAILED_KEPT: Final = 10_000


@dataclass
class OutMessage:
    msg_id: bytes
    text: str
    recipients: set[bytes]  #: fingerprints that have not acknowledged it yet
    created: float
    total: int = 0  #: how many recipients it had when sent
    direct: bool = False  #: to one participant only (/msg)
    #: recipients it can never reach (refused for trust: never the peer we meant),
    #: with why; this run only, never saved (such a fingerprint is nobody to resend to)
    failed: dict[bytes, str] = field(default_factory=dict)


class _Packed:
    """One peer's seen ids as of a snapshot (never mutated), packed once."""

    __slots__ = ("ids", "packed")

    def __init__(self, ids: list[bytes]) -> None:
        self.ids = ids
        self.packed: bytes | None = None

    def pack(self) -> bytes:
        if self.packed is None:
            self.packed = msgpack.packb(self.ids)
        return self.packed


def _pack(state: dict[str, Any]) -> list[bytes]:
    """msgpack of ``state`` in pieces, the per-peer id lists packed once and
    reused (joined, the same bytes as ``msgpack.packb`` with plain lists)."""
    packer = msgpack.Packer()
    out = [packer.pack_map_header(len(state))]
    for key, value in state.items():
        out.append(packer.pack(key))
        if key in ("seen", "seen_new"):
            out.append(packer.pack_map_header(len(value)))
            for fp, ids in value.items():
                out.append(packer.pack(fp))
                out.append(ids.pack())
        else:
            out.append(packer.pack(value))
    return out


class Outbox:
    """Pending messages and seen ids, optionally persisted (see the module doc)."""

    def __init__(self, path: Path | None = None, key: bytes | None = None) -> None:
        if (path is None) != (key is None):
            raise ValueError("path and key go together")
        self._messages: OrderedDict[bytes, OutMessage] = OrderedDict()
        #: messages none of whose remaining recipients can be reached (see ``fail``)
        self._failed: OrderedDict[bytes, OutMessage] = OrderedDict()
        self._seen: dict[bytes, OrderedDict[bytes, None]] = {}
        self._last_known: set[bytes] = set()
        #: peers whose seen ids are kept in the smaller, separate table (see the module doc)
        self._seen_new: dict[bytes, OrderedDict[bytes, None]] = {}
        #: tells whether a fingerprint is known (pinned); None: every peer counts as known
        self.is_known: Callable[[bytes], bool] | None = None
        self._snap: dict[bytes, _Packed] = {}  # per-peer id lists of the last snapshot
        self._saver = (
            Saver(path, key, self._snapshot, _pack)
            if path is not None and key is not None
            else None
        )
        if self._saver is not None:
            self._load(self._saver)

    @property
    def path(self) -> Path | None:
        return self._saver.path if self._saver is not None else None

    @property
    def on_saved(self) -> Callable[[], None] | None:
        """Called after every save: acks wait for it, so that a message is
        acknowledged only once its id is on disk (never shown twice, even
        across a crash of the receiver)."""
        return self._saver.on_saved if self._saver is not None else None

    @on_saved.setter
    def on_saved(self, callback: Callable[[], None] | None) -> None:
        if self._saver is not None:
            self._saver.on_saved = callback

    # ------------------------------------------------------------ messages

    def add(
        self,
        msg_id: bytes,
        text: str,
        recipients: set[bytes],
        *,
        direct: bool = False,
        failed: dict[bytes, str] | None = None,
    ) -> OutMessage:
        """A message sent to ``recipients`` (each to acknowledge it) and to the
        ``failed`` ones, present but unreachable (with why)."""
        lost = dict(failed or {})
        total = len(recipients | lost.keys())
        msg = OutMessage(
            msg_id, text, set(recipients) - lost.keys(), time.time(), total, direct, lost
        )
        if msg.recipients:
            self._messages[msg_id] = msg
            self._changed(PERSIST_AFTER)
        elif lost:
            self._keep_failed(msg)
        return msg

    def _keep_failed(self, msg: OutMessage) -> None:
        self._failed[msg.msg_id] = msg
        while len(self._failed) > FAILED_KEPT:
            self._failed.popitem(last=False)

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
            if msg.failed:
                self._keep_failed(msg)
        self._changed()
        return msg

    def drop_recipient(self, fp: bytes) -> None:
        """``fp`` left for good, on purpose: stop waiting for it."""
        for mid, msg in list(self._messages.items()):
            msg.recipients.discard(fp)
            if not msg.recipients:
                del self._messages[mid]
                if msg.failed:
                    self._keep_failed(msg)
        self._last_known.discard(fp)
        self._changed()

    def forget(self, fp: bytes, msg_ids: list[bytes]) -> list[OutMessage]:
        """``fp`` was never a participant for these messages (it was there, but
        never proved its key): it is no recipient of them after all. Returns
        the messages whose counts changed."""
        changed = []
        for mid in msg_ids:
            msg = self._messages.get(mid)
            if msg is None or fp not in msg.recipients:
                continue
            msg.recipients.discard(fp)
            msg.total -= 1
            changed.append(msg)
            if not msg.recipients:
                del self._messages[mid]
                if msg.failed:
                    self._keep_failed(msg)
        self._changed()
        return changed

    def fail(self, fp: bytes, why: str) -> list[bytes]:
        """``fp`` can never be reached (refused for trust): what it had not
        acknowledged counts as undelivered to it, for this run, and is not
        kept for it on disk. Returns the ids of those messages."""
        ids = []
        for mid, msg in list(self._messages.items()):
            if fp in msg.recipients:
                msg.recipients.discard(fp)
                msg.failed[fp] = why
                ids.append(mid)
                if not msg.recipients:
                    del self._messages[mid]
                    self._keep_failed(msg)
        self._last_known.discard(fp)
        self._changed()
        return ids

    def undelivered(self) -> list[OutMessage]:
        """Every message some recipient has not acknowledged: still pending, or
        failed for a recipient (``failed``), oldest first."""
        out = [*self._messages.values(), *self._failed.values()]
        return sorted(out, key=lambda m: m.created)

    @property
    def all_delivered(self) -> bool:
        """Every message was acknowledged by each of its recipients (or the
        recipient left on purpose): nothing pending, nothing failed."""
        return not self._messages and not self._failed

    def get(self, msg_id: bytes) -> OutMessage | None:
        """The message, while some recipient has not acknowledged it."""
        return self._messages.get(msg_id) or self._failed.get(msg_id)

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
        known = self.is_known is None or self.is_known(fp)
        table, other = (self._seen, self._seen_new) if known else (self._seen_new, self._seen)
        seen = table.pop(fp, None)
        if seen is None:
            seen = other.pop(fp, None)  # promoted (or no longer known): its ids move along
            if seen is None:
                seen = OrderedDict()
        table[fp] = seen  # most recently active peers last
        peers, per_peer = (
            (SEEN_PEERS, SEEN_PER_PEER) if known else (SEEN_STRANGERS, SEEN_PER_STRANGER)
        )
        if len(table) > peers:
            self._snap.pop(next(iter(table)), None)
            del table[next(iter(table))]
        if msg_id in seen:
            return False
        seen[msg_id] = None
        while len(seen) > per_peer:
            seen.popitem(last=False)
        self._snap.pop(fp, None)
        self._changed(new_ids=True)
        return True

    # ------------------------------------------------------------ persistence

    @property
    def durable(self) -> bool:
        """True when the state is kept on disk (acks then wait for a save)."""
        return self._saver is not None

    def request_save(self) -> None:
        """Make sure a save (and so ``on_saved``) happens very soon, even with
        nothing new: acknowledgements wait for it."""
        if self._saver is not None:
            self._saver.request_save()

    def _changed(self, delay: float = SAVE_DELAY, *, new_ids: bool = False) -> None:
        if self._saver is not None:
            self._saver.changed(delay, new_ids=new_ids)

    def save(self, complete: bool = True) -> None:
        """Write the state now if it changed (atomic, encrypted), blocking.

        A scheduled save (``complete=False``) leaves out messages younger than
        ``PERSIST_AFTER``: most are acknowledged well before, and writing each
        one would cost the whole outbox per message at full speed. They are
        written once they have waited that long, and by every explicit save
        (on close, and when the connection drops)."""
        if self._saver is not None:
            self._saver.save(complete)

    def _snapshot(self, complete: bool) -> tuple[dict[str, Any], float | None]:
        """On the loop: what to write, cheaply (the per-peer id lists are cached
        until they change), and when the messages left out are due on disk."""
        now = time.time()
        kept: list[list[Any]] = []
        young: float | None = None
        for m in self._messages.values():
            if complete or now - m.created >= PERSIST_AFTER:
                kept.append([m.msg_id, m.text, sorted(m.recipients), m.created, m.total, m.direct])
            elif young is None or m.created < young:
                young = m.created
        state = {
            "messages": kept,
            "seen": {fp: self._ids(fp, ids) for fp, ids in self._seen.items()},
            "seen_new": {fp: self._ids(fp, ids) for fp, ids in self._seen_new.items()},
            "last_known": sorted(self._last_known),
        }
        return state, None if young is None else young + PERSIST_AFTER

    def _ids(self, fp: bytes, ids: OrderedDict[bytes, None]) -> _Packed:
        snap = self._snap.get(fp)
        if snap is None:
            snap = self._snap[fp] = _Packed(list(ids))
        return snap

    def _load(self, saver: Saver) -> None:
        state = saver.load()
        if state is None:
            return
        try:
            self._restore(state)
        except (ValueError, TypeError, KeyError) as exc:
            saver.set_aside(exc)
            self._messages.clear()
            self._seen.clear()
            self._seen_new.clear()
            self._last_known.clear()

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
        for fp, ids in state.get("seen_new", {}).items():
            self._seen_new[bytes(fp)] = OrderedDict(
                (bytes(i), None) for i in ids[-SEEN_PER_STRANGER:]
            )
        self._last_known = {bytes(fp) for fp in state["last_known"]}
