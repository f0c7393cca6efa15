"""The incoming side of the file-transfer service (:mod:`p2pchat.room.transfers`).

:class:`Receiving` decides offers (by the policy, or by the user through
:meth:`Receiving.async_accept` and :meth:`Receiving.reject`), writes the chunks
through :mod:`p2pchat.store.filestore` (always in a worker thread, one disk
operation per transfer at a time), acknowledges them, checkpoints a transfer
when its session drops (so it resumes from there), and at the end verifies
the hash and stores the file. A transfer received in this run is remembered,
to answer a late re-offer with "done".

What a sender can make us store is bounded (:class:`DiskLimits`): the
unfinished transfers (accepted ones at their full size, and the .part files
kept from earlier runs) stay under a quota; senders first met in this run
share one part of it and one transfer count, so a fresh fingerprint buys no
more room; accepting leaves a reserve of free space; and working files left
untouched for a week are removed when the next transfer is accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from p2pchat.errors import TransferError
from p2pchat.proto.app import FileAck, FileCancel, FileData, FileDone, FileOffer, FileRefuse
from p2pchat.proto.transfer import Incoming, Meter, Phase, format_size
from p2pchat.room.events import (
    Event,
    FileCompleted,
    FileFailed,
    FileOffered,
    PauseReason,
    PeerInfo,
)
from p2pchat.room.sending import REASON_CHARS, Key, Link, emit_progress
from p2pchat.store.filestore import HashMismatchError, NoSpaceError, Part, kept_parts, part_key

__all__ = [
    "CANNOT_STORE",
    "NO_ROOM",
    "DiskLimits",
    "MAX_FINISHED",
    "MAX_INCOMING_PER_PEER",
    "MAX_PENDING_PER_PEER",
    "BackgroundTasks",
    "IncomingFile",
    "Policy",
    "Receiving",
    "refusal_for",
]

log = logging.getLogger("p2pchat.room.transfers")

#: What to do with an offer: accept it into the directory, ask the user, or refuse it.
Policy = Literal["auto", "ask", "refuse"]
#: Undecided offers kept per peer, at most (more are refused).
MAX_PENDING_PER_PEER = 8
#: Unfinished incoming transfers per peer, at most: each holds an open file.
MAX_INCOMING_PER_PEER = 16
#: Transfers received in this run remembered (to answer a late re-offer), at most.
MAX_FINISHED = 1024

#: What a sender is told when the file cannot be stored here (the details,
#: with local paths, are only shown here).
CANNOT_STORE = "the receiver cannot store the file"
#: What a sender is told when the file is over a quota here.
NO_ROOM = "the receiver has no room for it now"

GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class DiskLimits:
    """How much incoming files may take (module doc)."""

    #: unfinished incoming files, in bytes: accepted transfers at full size
    #: plus the .part files kept in the directory
    quota: int = 10 * GIB
    #: the part of ``quota`` that all senders first met in this run share
    stranger_share: float = 0.25
    #: free space an accepted file must leave on the file system
    keep_free: int = 1 * GIB
    #: working files untouched this long (seconds) are removed
    part_expiry: float = 7 * 24 * 3600.0


@dataclass(eq=False)
class IncomingFile:
    """One file being received."""

    machine: Incoming
    peer: PeerInfo  #: the sender as last seen
    offered_name: str
    link: Link | None = None
    known: bool = False  #: the sender was pinned before this run
    committed: int = 0  #: bytes of the quota this transfer holds, once accepted
    directory: Path | None = None
    part: Part | None = None
    meter: Meter | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  #: one disk operation at a time

    async def async_checkpoint(self) -> None:
        """Record the resume point of a running transfer (a failure is only logged)."""
        part = self.part
        if part is None:
            return
        async with self.lock:
            if self.machine.final:
                return
            try:
                await asyncio.get_running_loop().run_in_executor(None, part.checkpoint)
            except TransferError as exc:
                log.warning("files: %s", exc)

    async def async_shelve(self) -> None:
        """Record the resume point and close the working files (at shutdown)."""
        part = self.part
        if part is None:
            return
        async with self.lock:
            with contextlib.suppress(TransferError):
                await asyncio.get_running_loop().run_in_executor(None, part.checkpoint)
            part.close()

    async def async_drop(self, *, keep: bool, locked: bool) -> None:
        """Close the working files, and remove them unless ``keep``; ``locked``
        if the caller holds :attr:`lock` already."""
        part = self.part
        if part is None:
            return
        loop = asyncio.get_running_loop()
        action = part.close if keep else part.discard
        if locked:
            await loop.run_in_executor(None, action)
        else:
            async with self.lock:
                await loop.run_in_executor(None, action)


def refusal_for(policy: Policy, refuse_reason: str, theirs: list[IncomingFile]) -> str | None:
    """Why a new offer is refused (None: it is kept), given the peer's
    unfinished transfers ``theirs``."""
    if policy == "refuse":
        return refuse_reason
    if len(theirs) >= MAX_INCOMING_PER_PEER:
        return "too many transfers at once"
    undecided = sum(1 for t in theirs if t.machine.phase is Phase.OFFERED)
    if policy == "ask" and undecided >= MAX_PENDING_PER_PEER:
        return "too many offers waiting for an answer"
    return None


class BackgroundTasks:
    """Tasks run on the side (disk work): waited for at close, logged if they fail."""

    def __init__(self, touch: Callable[[], None]) -> None:
        """``touch`` is called as each task ends."""
        self._touch = touch
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def async_wait(self, timeout: float) -> None:
        """Wait for the running tasks to end (``timeout`` seconds at most)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("files: a transfer task failed", exc_info=task.exception())
        self._touch()


class Receiving:
    """Every incoming transfer of one chat (see the module doc)."""

    def __init__(
        self,
        emit: Callable[[Event], None],
        touch: Callable[[], None],
        *,
        policy: Policy,
        directory: Path | None,
        refuse_reason: str,
        disk: DiskLimits | None = None,
    ) -> None:
        """``emit`` publishes an event, ``touch`` notes a change; ``policy``
        decides offers, ``directory`` is where "auto" puts files, ``disk``
        bounds what they take."""
        self.disk = disk or DiskLimits()
        self._emit = emit
        self._touch = touch
        self.policy = policy
        self.directory = directory
        self.refuse_reason = refuse_reason
        self.ins: dict[Key, IncomingFile] = {}
        self.finished: dict[Key, Path] = {}  #: received this run, for a late re-offer
        self._tasks = BackgroundTasks(touch)
        self._spawn = self._tasks.spawn

    # ------------------------------------------------------------ the user's decisions

    async def async_accept(self, key: Key, directory: Path | None) -> None:
        """Accept the offer ``key`` into ``directory``. Raises TransferError."""
        inc = self.ins.get(key)
        if inc is None or inc.machine.phase is not Phase.OFFERED or directory is None:
            raise TransferError("no such offer waiting")
        await self._accept(inc, directory)

    def reject(self, key: Key, reason: str) -> None:
        """Refuse the offer ``key`` (or stop receiving): the sender is told."""
        inc = self.ins.get(key)
        if inc is None or inc.machine.final:
            raise TransferError("no such transfer")
        self._spawn(self._fail(inc, reason, by_peer=False, tell=reason))

    async def async_close(self) -> None:
        """Let the running disk work end (5 s at most); record every transfer's resume point."""
        await self._tasks.async_wait(5.0)
        for inc in list(self.ins.values()):
            await inc.async_shelve()

    def session_lost(self, link: Link, now: float, why: PauseReason) -> None:
        """Pause the transfers on ``link`` (``why``: who left) and checkpoint the running ones."""
        for inc in self.ins.values():
            if inc.link == link:
                inc.link = None
                was_running = inc.machine.phase is Phase.RUNNING
                inc.machine.detach()
                if was_running:
                    self._progress(inc, now, paused=True, why=why)
                    self._spawn(inc.async_checkpoint())

    # ------------------------------------------------------------ the sender's messages

    def on_offer(self, link: Link, peer: PeerInfo, msg: FileOffer) -> None:
        key = (peer.fingerprint, msg.transfer_id)
        participant, peer_id = link
        if key in self.finished:
            participant.send_app(peer_id, FileDone(msg.transfer_id))
            return
        inc = self.ins.get(key)
        if inc is not None:
            # offered again: a new session (after a drop, or the sender restarted)
            inc.link, inc.peer = link, peer
            answer = inc.machine.reoffer()
            if answer is not None:
                participant.send_app(peer_id, answer)
                now = time.monotonic()
                inc.meter = Meter(now, answer.offset)
                self._progress(inc, now, force=True)
            return
        known = peer.fingerprint in participant.known_peers
        inc = IncomingFile(Incoming.from_offer(msg), peer, msg.name, link, known=known)
        m = inc.machine
        # senders first met in this run count as one: a new fingerprint is free
        theirs = [
            t
            for t in self.ins.values()
            if t.peer.fingerprint == peer.fingerprint or not (known or t.known)
        ]
        refusal = refusal_for(self.policy, self.refuse_reason, theirs)
        pending = refusal is None and self.policy == "ask"
        self._emit(FileOffered(peer, m.transfer_id, m.name, m.size, m.sha256, True, pending))
        if refusal is not None:
            participant.send_app(peer_id, FileRefuse(m.transfer_id, refusal))
            m.fail()
            self._emit(FileFailed(peer, m.transfer_id, m.name, True, refusal, False))
            return
        self.ins[key] = inc
        if self.policy == "auto":
            assert self.directory is not None
            self._spawn(self._accept(inc, self.directory))

    async def async_on_data(self, link: Link, peer: PeerInfo, msg: FileData) -> None:
        inc = self.ins.get((peer.fingerprint, msg.transfer_id))
        if inc is None or inc.link != link or inc.machine.phase is not Phase.RUNNING:
            return  # stale: a chunk from before a pause, a refusal or a takeover
        part = inc.part
        assert part is not None
        try:
            complete = inc.machine.on_data(msg.offset, len(msg.data))
        except TransferError as exc:
            reason = f"protocol violation: {exc}"
            await self._fail(inc, reason, by_peer=False, tell=reason)
            return
        loop = asyncio.get_running_loop()
        async with inc.lock:
            if inc.machine.final:
                return  # ended while we waited for the lock
            try:
                await loop.run_in_executor(None, part.write, msg.offset, msg.data)
            except TransferError as exc:
                await self._fail(inc, str(exc), by_peer=False, tell=CANNOT_STORE, locked=True)
                return
        participant, peer_id = link
        participant.send_app(peer_id, FileAck(msg.transfer_id, inc.machine.received))
        self._progress(inc, time.monotonic())
        if complete:
            self._spawn(self._finish(inc))

    async def async_on_cancel(self, link: Link, peer: PeerInfo, msg: FileCancel) -> None:
        inc = self.ins.get((peer.fingerprint, msg.transfer_id))
        if inc is not None and inc.link == link and not inc.machine.final:
            await self._fail(inc, msg.reason[:REASON_CHARS], by_peer=True)

    # ------------------------------------------------------------ disk work

    def _over_quota(self, inc: IncomingFile, kept: dict[str, int]) -> str | None:
        """Why ``inc`` does not fit the quota (None: it does); ``kept`` is
        what :func:`kept_parts` found in its directory."""
        m, disk = inc.machine, self.disk
        own = part_key(m.transfer_id, inc.peer.fingerprint)
        others = [t for t in self.ins.values() if t is not inc and t.committed]
        used = sum(t.committed for t in others)
        live = {part_key(t.machine.transfer_id, t.peer.fingerprint) for t in others}
        used += sum(size for key, size in kept.items() if key != own and key not in live)
        if used + m.size > disk.quota:
            return (
                f"over the quota for unfinished files: {format_size(used)} of "
                f"{format_size(disk.quota)} in use (--files-quota)"
            )
        if not inc.known:
            share = int(disk.quota * disk.stranger_share)
            strangers = sum(t.committed for t in others if not t.known)
            if strangers + m.size > share:
                return (
                    f"over the {format_size(share)} that senders met in this run share: "
                    f"{format_size(strangers)} in use"
                )
        return None

    async def _accept(self, inc: IncomingFile, directory: Path) -> None:
        m = inc.machine
        m.accept()
        inc.directory = directory
        loop = asyncio.get_running_loop()
        busy = {part_key(t.machine.transfer_id, t.peer.fingerprint) for t in self.ins.values()}
        kept = await loop.run_in_executor(
            None, kept_parts, directory, self.disk.part_expiry, busy, time.time()
        )
        if m.final:
            return  # cancelled meanwhile
        # from here to the reservation nothing awaits: two accepts never share room
        refusal = self._over_quota(inc, kept)
        if refusal is not None:
            await self._fail(inc, refusal, by_peer=False, tell=NO_ROOM)
            return
        inc.committed = m.size
        # what the other accepted transfers will still write is not free space
        owed = sum(t.committed - t.machine.received for t in self.ins.values() if t is not inc)
        keep_free = self.disk.keep_free + max(0, owed)
        async with inc.lock:
            try:
                part = await loop.run_in_executor(
                    None,
                    Part,
                    directory,
                    m.name,
                    m.transfer_id,
                    inc.peer.fingerprint,
                    m.size,
                    m.sha256,
                    keep_free,
                )
            except TransferError as exc:
                public = "not enough disk space" if isinstance(exc, NoSpaceError) else CANNOT_STORE
                await self._fail(inc, str(exc), by_peer=False, tell=public, locked=True)
                return
        if m.final:  # cancelled meanwhile
            await loop.run_in_executor(None, part.discard)
            return
        inc.part = part
        answer = m.opened(part.offset)
        now = time.monotonic()
        inc.meter = Meter(now, part.offset)
        if m.phase is Phase.VERIFYING:
            self._spawn(self._finish(inc))
        elif inc.link is None:
            m.detach()  # the sender is gone: the answer goes with its next offer
        else:
            participant, peer_id = inc.link
            participant.send_app(peer_id, answer)
            self._progress(inc, now, force=True)
        self._touch()

    async def _finish(self, inc: IncomingFile) -> None:
        """Verify and store (off the reader: syncing a large file can take a while)."""
        m, part = inc.machine, inc.part
        assert part is not None
        loop = asyncio.get_running_loop()
        async with inc.lock:
            try:
                path = await loop.run_in_executor(None, part.finish)
            except TransferError as exc:
                mismatch = isinstance(exc, HashMismatchError)
                await self._fail(
                    inc,
                    str(exc),
                    by_peer=False,
                    tell=str(exc) if mismatch else CANNOT_STORE,
                    locked=True,
                    keep=not mismatch,
                )
                return
        if m.phase is not Phase.VERIFYING:
            return  # cancelled meanwhile (the file is stored all the same)
        m.verified()
        key = (inc.peer.fingerprint, m.transfer_id)
        self.finished[key] = path
        if len(self.finished) > MAX_FINISHED:
            del self.finished[next(iter(self.finished))]
        self.ins.pop(key, None)
        if inc.link is not None:
            participant, peer_id = inc.link
            participant.send_app(peer_id, FileDone(m.transfer_id))
        now = time.monotonic()
        meter = inc.meter or Meter(now, m.start)
        self._emit(
            FileCompleted(
                inc.peer,
                m.transfer_id,
                m.name,
                True,
                m.size,
                m.sha256,
                str(path),
                m.start,
                now - meter.began,
                meter.average(now, m.size),
            )
        )
        self._touch()

    async def _fail(
        self,
        inc: IncomingFile,
        reason: str,
        *,
        by_peer: bool,
        tell: str | None = None,
        locked: bool = False,
        keep: bool = False,
    ) -> None:
        """End an incoming transfer; ``tell`` is the reason the sender gets, if
        any; the working files go unless ``keep``."""
        m = inc.machine
        if m.final:
            return
        m.fail()
        self.ins.pop((inc.peer.fingerprint, m.transfer_id), None)
        if tell is not None and inc.link is not None:
            participant, peer_id = inc.link
            participant.send_app(peer_id, FileRefuse(m.transfer_id, tell[:REASON_CHARS]))
        await inc.async_drop(keep=keep, locked=locked)
        self._emit(FileFailed(inc.peer, m.transfer_id, m.name, True, reason, by_peer))
        self._touch()

    def _progress(
        self,
        inc: IncomingFile,
        now: float,
        *,
        force: bool = False,
        paused: bool = False,
        why: PauseReason | None = None,
    ) -> None:
        m = inc.machine
        emit_progress(
            self._emit, inc.peer, inc.meter, m, True, m.received, now, force or paused, paused, why
        )
