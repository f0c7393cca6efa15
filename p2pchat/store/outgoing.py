"""Unfinished outgoing transfers of the chat: ``outgoing.json`` under --home.

A file offered with ``/send`` (:meth:`p2pchat.Room.send_file` in a durable
room) is remembered here until it is sent, refused, cancelled or fails for
good, so that a chat started again on the same home offers it again by itself
on the next session with that peer (the receiver resumes from its .part),
as long as its key is still pinned: ``trust forget`` takes its entries along,
and a key that is new again gets nothing by itself.

Only our own offers are written here, never anything a peer sends, so no peer
can grow the file; it is bounded anyway (:data:`MAX_ENTRIES`, the newest
kept) and entries that made no progress for longer than the receiver's .part
expiry are dropped (the receiver has thrown the .part away by then). It is written atomically, 0600;
a broken file is ignored (and rewritten), never fatal: it only costs an
automatic resume.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from p2pchat.errors import P2PChatError
from p2pchat.store.identity import write_private

__all__ = ["EXPIRY", "FILE_NAME", "MAX_ENTRIES", "OutgoingBook", "Remembered"]

log = logging.getLogger("p2pchat.store.outgoing")

FILE_NAME: Final = "outgoing.json"
#: Transfers remembered, at most (the oldest are forgotten first).
MAX_ENTRIES: Final = 64
#: Seconds after which an entry is dropped: the receiver's .part expiry
#: (:attr:`p2pchat.room.receiving.DiskLimits.part_expiry`).
EXPIRY: Final = 7 * 24 * 3600.0
_MAX_FILE: Final = 256 * 1024
_MAX_TEXT: Final = 4096


@dataclass(frozen=True, slots=True)
class Remembered:
    """One unfinished outgoing transfer."""

    transfer_id: bytes
    path: str  #: absolute
    name: str  #: as offered
    size: int
    sha256: bytes
    fingerprint: bytes  #: the recipient's
    peer_name: str  #: the recipient's name when it was offered
    when: float  #: Unix time of the offer

    @property
    def key(self) -> tuple[bytes, bytes]:
        return (self.fingerprint, self.transfer_id)


def _fits(entry: Remembered) -> bool:
    """An absolute path, and texts short enough to be read back whole."""
    texts = (entry.path, entry.name, entry.peer_name)
    return Path(entry.path).is_absolute() and max(map(len, texts)) <= _MAX_TEXT


class OutgoingBook:
    """The remembered outgoing transfers of one home (module doc). Read once;
    every change is written through."""

    def __init__(self, path: Path, *, now: float | None = None) -> None:
        self.path = path
        self._entries = self._read(time.time() if now is None else now)
        self._saved = True  #: the last write succeeded (see ``holds``)

    @classmethod
    def open(cls, home: Path) -> OutgoingBook:
        return cls(home / FILE_NAME)

    def entries(self, fingerprint: bytes | None = None) -> list[Remembered]:
        """What is remembered (for that recipient), oldest first."""
        return [
            e for e in self._entries.values() if fingerprint is None or e.fingerprint == fingerprint
        ]

    def holds(self, fingerprint: bytes, transfer_id: bytes) -> bool:
        """The transfer is remembered on disk: the next chat offers it again."""
        return self._saved and (fingerprint, transfer_id) in self._entries

    def add(self, entry: Remembered) -> None:
        """Remember ``entry``. An offer again keeps the time it had: only
        progress (:meth:`touch`) keeps it longer, as the receiver's .part
        expires from its last write; an offer nobody takes still expires.
        Paths too long to read back are not remembered."""
        old = self._entries.pop(entry.key, None)
        if old is not None:
            entry = replace(entry, when=old.when)
        if _fits(entry):
            self._entries[entry.key] = entry
        while len(self._entries) > MAX_ENTRIES:
            del self._entries[next(iter(self._entries))]
        self._write()

    def touch(self, fingerprint: bytes, transfer_id: bytes, now: float | None = None) -> None:
        """The transfer moved (the receiver wrote to its .part, which it keeps
        for its expiry from then): it is kept as long from now."""
        entry = self._entries.get((fingerprint, transfer_id))
        if entry is not None:
            self._entries[entry.key] = replace(entry, when=time.time() if now is None else now)
            self._write()

    def remove(self, fingerprint: bytes, transfer_id: bytes) -> None:
        if self._entries.pop((fingerprint, transfer_id), None) is not None:
            self._write()

    def forget(self, fingerprint: bytes) -> int:
        """Drop every transfer to ``fingerprint`` (its pin is forgotten);
        returns how many there were."""
        keys = [k for k in self._entries if k[0] == fingerprint]
        for key in keys:
            del self._entries[key]
        if keys:
            self._write()
        return len(keys)

    def _write(self) -> None:
        rows = [
            {
                "id": e.transfer_id.hex(),
                "path": e.path,
                "name": e.name,
                "size": e.size,
                "sha256": e.sha256.hex(),
                "to": e.fingerprint.hex(),
                "to_name": e.peer_name,
                "when": e.when,
            }
            for e in self._entries.values()
        ]
        # ASCII, escaped: a file name that is not UTF-8 (surrogates) stays writable
        data = json.dumps({"outgoing": rows}, indent=1).encode("ascii")
        while len(data) > _MAX_FILE:  # what _read would cut: the oldest go first
            del self._entries[next(iter(self._entries))]
            rows.pop(0)
            data = json.dumps({"outgoing": rows}, indent=1).encode("ascii")
        try:
            write_private(self.path, data)
        except (OSError, P2PChatError) as exc:  # a read-only home: no automatic resume
            log.info("cannot remember the outgoing transfers: %s", exc)
            self._saved = False
        else:
            self._saved = True

    def _read(self, now: float) -> dict[tuple[bytes, bytes], Remembered]:
        try:
            raw = self.path.read_bytes()[:_MAX_FILE]
        except OSError:
            return {}
        out: list[Remembered] = []
        with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
            doc: Any = json.loads(raw)
            for item in list(doc["outgoing"]):
                with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
                    entry = Remembered(
                        bytes.fromhex(item["id"]),
                        str(item["path"]),
                        str(item["name"]),
                        int(item["size"]),
                        bytes.fromhex(item["sha256"]),
                        bytes.fromhex(item["to"]),
                        str(item["to_name"]),
                        float(item["when"]),
                    )
                    fresh = now - EXPIRY <= entry.when <= now + EXPIRY
                    shapes = len(entry.sha256) == 32 and len(entry.fingerprint) == 32
                    # (a cut path would be another file: an over-long entry is dropped)
                    if fresh and shapes and _fits(entry) and entry.size >= 0:
                        out.append(entry)
        out.sort(key=lambda e: e.when)
        return {e.key: e for e in out[-MAX_ENTRIES:]}
