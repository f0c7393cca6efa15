"""One encrypted state file, saved off the event loop: debounced, coalesced, ordered.

The owner (the outbox) says when its state changed (``changed``) and how to
take a snapshot of it; the ``Saver`` decides when to write. Saving is
debounced (a burst of changes is one write), and the write itself stays off
the event loop (on the host, that loop is the relay): the loop only takes a
snapshot, a worker thread encrypts, writes and fsyncs. Saves are coalesced:
one runs at a time, requests meanwhile make at most one more follow.

``on_saved`` runs on the loop once a write covering every change marked
``new_ids`` so far is on disk (acks wait for it); if more were marked during
the write it waits for the next one (under a steady stream, at most about
``MAX_ACK_WAIT``: then one save is done on the loop). ``save()`` itself blocks
(close, connection lost): it waits for a running write, never races it, and an
older snapshot is never written over a newer one.

The file is ``MAGIC + nonce + AES-GCM(msgpack state)`` under the local storage
key, replaced atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p2pchat.store.identity import write_private

__all__ = ["MAGIC", "AAD", "SAVE_DELAY", "ACK_SAVE_DELAY", "MAX_ACK_WAIT", "Saver", "Snapshot"]

log = logging.getLogger("p2pchat.store.outbox")

MAGIC: Final = b"P2PO1"
AAD: Final = b"p2pchat outbox v1"
SAVE_DELAY: Final = 0.05
#: Acks wait for a save; this bounds how long (a save costs about 0.6 ms here).
ACK_SAVE_DELAY: Final = 0.005
#: ``on_saved`` waits at most about this long under a steady stream of new ids
#: (then one save is done on the loop, see ``Saver._saved_in_worker``)
MAX_ACK_WAIT: Final = 0.25
#: encrypted piecewise (the same bytes as ``AESGCM.encrypt``): a one-shot
#: encryption of a full table holds the GIL, and so the event loop, for ms
_SEAL_CHUNK: Final = 256 * 1024

#: ``snapshot(complete)``: the state to write (never mutated afterwards), and
#: when it left something out to be written later, the wall-clock time it is
#: due (``time.time()``), else None
Snapshot = Callable[[bool], tuple[Any, "float | None"]]


def _seal(key: bytes, pieces: list[bytes]) -> bytes:
    """The encrypted file: ``MAGIC + nonce + AESGCM.encrypt``, computed piecewise."""
    nonce = os.urandom(12)
    enc = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
    enc.authenticate_additional_data(AAD)
    out = [MAGIC, nonce]
    for piece in pieces:
        view = memoryview(piece)
        out.extend(enc.update(view[i : i + _SEAL_CHUNK]) for i in range(0, len(view), _SEAL_CHUNK))
    out.append(enc.finalize())
    out.append(enc.tag)
    return b"".join(out)


class Saver:
    """When and how the state file is written (see the module doc)."""

    def __init__(
        self,
        path: Path,
        key: bytes,
        snapshot: Snapshot,
        encode: Callable[[Any], list[bytes]],
    ) -> None:
        self.path = path
        self._key = key
        self._snapshot_state = snapshot
        self._encode = encode  # state -> msgpack pieces (in the worker)
        self._handle: asyncio.TimerHandle | None = None
        self._dirty = False
        self._gen = 0  # changes marked new_ids: on_saved waits for a save covering them
        self._saved_gen = 0  # the generation known to be on disk
        self._owed_since: float | None = None  # monotonic time of the oldest waiting request
        self._inflight: asyncio.Future[str | None] | None = None
        self._followup = False
        self._lock = threading.Lock()  # one write at a time, worker or blocking save
        self._seq = 0  # snapshots taken
        self._written_seq = 0  # the newest snapshot on disk
        #: called after every save (see the module doc)
        self.on_saved: Callable[[], None] | None = None

    def load(self) -> Any | None:
        """The saved state, or None when there is none or it cannot be read
        (then it is moved aside, and why is logged)."""
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("outbox: cannot read %s: %s", self.path, exc.strerror or exc)
            return None
        try:
            if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 12 + 16:
                raise ValueError("not an outbox file")
            nonce = blob[len(MAGIC) : len(MAGIC) + 12]
            # authenticated with our own key: the content is ours, no hostile limits needed
            plain = AESGCM(self._key).decrypt(nonce, blob[len(MAGIC) + 12 :], AAD)
            return msgpack.unpackb(plain)
        except (ValueError, InvalidTag) as exc:
            self.set_aside(exc)
            return None

    def set_aside(self, why: Exception) -> None:
        """The file is unreadable: keep it aside, for a person to look at."""
        aside = self.path.with_name(self.path.name + ".unreadable")
        with contextlib.suppress(OSError):
            os.replace(self.path, aside)
        log.warning("outbox: %s is unreadable (%s); moved aside to %s", self.path, why, aside)

    def changed(self, delay: float = SAVE_DELAY, *, new_ids: bool = False) -> None:
        """The state changed: save within ``delay``. ``new_ids``: ``on_saved``
        waits for a save that covers this change."""
        if new_ids:
            self._gen += 1
        self._dirty = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.save()
            return
        when = loop.time() + delay
        if self._handle is not None:
            if self._handle.when() <= when:
                return
            self._handle.cancel()
        self._handle = loop.call_at(when, self._scheduled_save)

    def request_save(self) -> None:
        """Make sure a save (and so ``on_saved``) happens very soon, even with
        nothing new: acknowledgements wait for it."""
        if self._owed_since is None:
            self._owed_since = time.monotonic()
        self.changed(ACK_SAVE_DELAY)

    def _scheduled_save(self) -> None:
        self._handle = None
        if self._inflight is not None:
            self._followup = True  # coalesced: one more save once this one is done
            return
        if not self._dirty:
            return
        loop = asyncio.get_running_loop()
        seq, gen, state, later = self._snapshot(complete=False)
        try:
            fut = loop.run_in_executor(None, self._write, seq, state)
        except RuntimeError:  # the loop is shutting down its executor: write here
            self._dirty = True
            self.save(complete=False)
            return
        self._inflight = fut
        fut.add_done_callback(lambda f: self._saved_in_worker(f, gen, later))

    def _saved_in_worker(
        self, fut: asyncio.Future[str | None], gen: int, later: float | None
    ) -> None:
        """On the loop, once a worker save is done (written, or failed)."""
        self._inflight = None
        error = "cancelled" if fut.cancelled() else fut.result()
        if error is not None:
            log.warning("outbox: cannot save %s: %s", self.path, error)
            self._dirty = True
        if later is not None:
            self.changed(max(SAVE_DELAY, later - time.time()))
        if error is None:
            self._saved_gen = max(self._saved_gen, gen)
        if self._saved_gen >= self._gen:  # (a blocking save may have covered more)
            self._notify()
        elif self._owed_since is not None and time.monotonic() - self._owed_since > MAX_ACK_WAIT:
            # ids were seen during the write, and on_saved releases every waiting
            # ack: under a steady stream that could go on forever; bound it
            self.save(complete=False)
            return
        else:
            self.changed(ACK_SAVE_DELAY)  # the ids seen during the write, soon
        if self._followup:
            self._followup = False
            if self._dirty and self._handle is None:
                self._scheduled_save()

    def _notify(self) -> None:
        self._owed_since = None
        if self.on_saved is not None:
            self.on_saved()

    def save(self, complete: bool = True) -> None:
        """Write the state now if it changed (atomic, encrypted), blocking:
        waits for a save running in the worker, never races it.
        ``complete=False`` lets the snapshot leave things for later."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._inflight is not None:
            # the worker's write took the dirty mark but is not on disk yet:
            # write now (its later snapshot is then skipped), so what waits
            # for a save (the acks) is released here, not after a goodbye
            self._dirty = True
        if not self._dirty:
            return
        seq, gen, state, later = self._snapshot(complete)
        error = self._write(seq, state)
        if error is not None:
            log.warning("outbox: cannot save %s: %s", self.path, error)
            self._dirty = True
        else:
            self._saved_gen = max(self._saved_gen, gen)
        if later is not None:
            self.changed(max(SAVE_DELAY, later - time.time()))
        self._notify()

    def _snapshot(self, complete: bool) -> tuple[int, int, Any, float | None]:
        """On the loop: the owner's snapshot, numbered; clears the dirty mark.
        Returns the save's sequence number, the generation it covers, the
        state, and when what it left out is due (or None)."""
        state, later = self._snapshot_state(complete)
        self._dirty = False
        self._seq += 1
        return self._seq, self._gen, state, later

    def _write(self, seq: int, state: Any) -> str | None:
        """Encrypt and atomically replace the file (in the worker, or blocking
        from ``save``); None when done, else why not. A snapshot older than
        the one already written is skipped."""
        blob = _seal(self._key, self._encode(state))
        with self._lock:
            if seq <= self._written_seq:
                return None
            try:
                write_private(self.path, blob)
            except OSError as exc:
                return str(exc.strerror or exc)
            self._written_seq = seq
        return None
