"""File transfers over the chat's sessions: the asyncio service.

:class:`FileTransfers` sits between the participant (which hands it every
file message and tells it when sessions come and go), the pure transfer logic
(:mod:`p2pchat.proto.transfer`) and the disk (:mod:`p2pchat.store.filestore`, always in a
worker thread). It outlives the participants of a joiner, which are replaced
on every reconnect: transfers are keyed by the peer's fingerprint and the
transfer id, so one interrupted by a drop continues on the next session with
that peer, from the offset the receiver reports.

Flow control, so that a transfer never crowds out chat or fills the relay:
one pump task sends chunks, round robin over the running transfers, each
limited to a window of unacknowledged chunks (and the connection to
:data:`~p2pchat.proto.transfer.MAX_IN_FLIGHT` bytes in all), and only while the
connection's write buffer is below a small threshold
(:meth:`Participant.async_writable`). Chat is written at once, so it queues
behind at most that much.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

from p2pchat.errors import TransferError
from p2pchat.proto.app import (
    FileAccept,
    FileAck,
    FileCancel,
    FileData,
    FileDone,
    FileMessage,
    FileOffer,
    FileRefuse,
)
from p2pchat.proto.bucket import TokenBucket
from p2pchat.proto.transfer import MAX_IN_FLIGHT, Incoming, Meter, Outgoing, Phase, offer_name
from p2pchat.room.bus import EventBus
from p2pchat.room.events import (
    Event,
    FileCompleted,
    FileFailed,
    FileOffered,
    FileProgress,
    PeerInfo,
)
from p2pchat.room.participant import Participant
from p2pchat.store.filestore import HashMismatchError, NoSpaceError, Part, Source

__all__ = ["FileTransfers", "Policy", "Prepared", "Transfer"]

log = logging.getLogger("p2pchat.room.transfers")

#: What to do with an offer: accept it into the directory, ask the user, or refuse it.
Policy = Literal["auto", "ask", "refuse"]
#: Undecided offers kept per peer, at most (more are refused).
MAX_PENDING_PER_PEER = 8
#: Unfinished incoming transfers per peer, at most: each holds an open file.
MAX_INCOMING_PER_PEER = 16
#: Transfers received in this run remembered (to answer a late re-offer), at most.
MAX_FINISHED = 1024
#: Longest reason we send or show.
REASON_CHARS = 200

#: What a peer is told when a transfer fails here for a local reason (the
#: details, with local paths, are only shown here).
CANNOT_STORE = "the receiver cannot store the file"
CANNOT_READ = "the sender cannot read the file any more"

_Link: TypeAlias = tuple[Participant, int]
_Key: TypeAlias = tuple[bytes, bytes]  # (peer fingerprint, transfer id)


@dataclass(eq=False)
class _Out:
    machine: Outgoing
    source: Source
    peer: PeerInfo  #: the receiver as last seen (its fingerprint is the key)
    link: _Link | None = None
    meter: Meter | None = None
    gen: int = 0  #: bumped at every (re)offer: data read for an older run is dropped
    offered_once: bool = False


@dataclass(eq=False)
class _In:
    machine: Incoming
    peer: PeerInfo  #: the sender as last seen
    offered_name: str
    link: _Link | None = None
    directory: Path | None = None
    part: Part | None = None
    meter: Meter | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  #: one disk operation at a time


@dataclass(frozen=True, slots=True)
class Prepared:
    """A local file, hashed, ready to offer."""

    path: Path
    name: str  #: as offered
    size: int
    sha256: bytes


@dataclass(frozen=True, slots=True)
class Transfer:
    """One transfer as the user sees it (``/files``, the ``send`` command)."""

    transfer_id: bytes
    peer: PeerInfo
    name: str
    incoming: bool
    phase: Phase
    done: int
    size: int

    @property
    def short_id(self) -> str:
        return self.transfer_id.hex()[:8]


class FileTransfers:
    """Every file transfer of one chat, both ways (see the module doc)."""

    def __init__(
        self,
        bus: EventBus[Event],
        *,
        policy: Policy = "refuse",
        directory: Path | None = None,
        refuse_reason: str = "not accepting files",
        limit_rate: float | None = None,
    ) -> None:
        """``policy`` decides offers; ``directory`` is where accepted files go
        (for "auto", and the default for :meth:`async_accept`). ``limit_rate``
        caps what we send, in bytes per second. Events go to ``bus``, and every
        change notifies it (``activity`` counts them)."""
        if policy == "auto" and directory is None:
            raise ValueError("auto-accepting files needs a directory")
        self.bus = bus
        self._emit = bus.publish
        self.policy = policy
        self.directory = directory
        self.refuse_reason = refuse_reason
        self.limit_rate = limit_rate
        self.activity = 0  #: goes up whenever a transfer moves
        self._outs: dict[_Key, _Out] = {}
        self._ins: dict[_Key, _In] = {}
        self._finished: dict[_Key, Path] = {}  #: received this run, for a late re-offer
        self._sessions: dict[_Link, PeerInfo] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pump_task: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        self._bucket: TokenBucket | None = None
        self._closed = False

    # ------------------------------------------------------------ public API

    def transfers(self) -> list[Transfer]:
        """Every transfer not finished yet, outgoing first."""
        out = [
            Transfer(
                t.machine.transfer_id,
                t.peer,
                t.machine.name,
                False,
                t.machine.phase,
                t.machine.acked,
                t.machine.size,
            )
            for t in self._outs.values()
        ]
        out += [
            Transfer(
                t.machine.transfer_id,
                t.peer,
                t.machine.name,
                True,
                t.machine.phase,
                t.machine.received,
                t.machine.size,
            )
            for t in self._ins.values()
        ]
        return out

    def pending(self) -> list[Transfer]:
        """Offers waiting for :meth:`async_accept` or :meth:`reject`."""
        return [t for t in self.transfers() if t.incoming and t.phase is Phase.OFFERED]

    def phase(self, peer_fp: bytes, transfer_id: bytes, *, incoming: bool) -> Phase | None:
        """Where that transfer is (DONE for one received in this run; None if unknown)."""
        key = (peer_fp, transfer_id)
        if incoming:
            if key in self._finished:
                return Phase.DONE
            inc = self._ins.get(key)
            return inc.machine.phase if inc else None
        out = self._outs.get(key)
        return out.machine.phase if out else None

    async def async_prepare(self, path: Path) -> Prepared:
        """Hash ``path`` (in a worker thread), ready to offer with :meth:`async_offer`.
        Raises TransferError."""
        loop = asyncio.get_running_loop()
        source = await loop.run_in_executor(None, Source, path)
        try:
            digest = await loop.run_in_executor(None, source.hash)
        finally:
            source.close()
        return Prepared(path, offer_name(path.name), source.size, digest)

    async def async_offer(self, prepared: Prepared, peer: PeerInfo) -> bytes:
        """Offer a prepared file to ``peer`` (now if a session is up, else as
        soon as one is); returns the transfer id. The same file to the same
        peer again is the same transfer: it resumes. Raises TransferError."""
        machine = Outgoing(prepared.name, prepared.size, prepared.sha256)
        key = (peer.fingerprint, machine.transfer_id)
        old = self._outs.get(key)
        if old is not None and not old.machine.final:
            return machine.transfer_id  # already under way
        source = await asyncio.get_running_loop().run_in_executor(None, Source, prepared.path)
        if source.size != prepared.size:
            source.close()
            raise TransferError(f"{prepared.path} changed since it was hashed")
        old = self._outs.get(key)
        if old is not None and not old.machine.final:
            source.close()
            return machine.transfer_id
        out = _Out(machine, source, peer)
        self._outs[key] = out
        link = self._link_for(peer.fingerprint)
        if link is not None:
            self._offer(out, link)
        self._touch()
        return machine.transfer_id

    async def async_send(self, path: Path, peer: PeerInfo) -> bytes:
        """:meth:`async_prepare` then :meth:`async_offer`."""
        return await self.async_offer(await self.async_prepare(path), peer)

    def find(self, prefix: str = "", *, pending: bool = False) -> list[Transfer]:
        """Transfers whose id starts with the hex ``prefix`` (offers only if ``pending``)."""
        pool = self.pending() if pending else self.transfers()
        return [t for t in pool if t.transfer_id.hex().startswith(prefix.lower())]

    async def async_accept(self, transfer: Transfer, directory: Path | None = None) -> None:
        """Accept an offer into ``directory`` (default: the configured one)."""
        inc = self._ins.get((transfer.peer.fingerprint, transfer.transfer_id))
        target = directory or self.directory
        if inc is None or inc.machine.phase is not Phase.OFFERED or target is None:
            raise TransferError("no such offer waiting")
        await self._accept(inc, target)

    def reject(self, transfer: Transfer, reason: str = "declined") -> None:
        """Refuse an offer (or stop receiving): the sender is told."""
        inc = self._ins.get((transfer.peer.fingerprint, transfer.transfer_id))
        if inc is None or inc.machine.final:
            raise TransferError("no such transfer")
        self._spawn(self._fail_in(inc, reason, by_peer=False, tell=reason))

    async def async_close(self) -> None:
        """Stop sending; record every incoming transfer's resume point."""
        self._closed = True
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)
        loop = asyncio.get_running_loop()
        for inc in list(self._ins.values()):
            if inc.part is not None:
                async with inc.lock:
                    with contextlib.suppress(TransferError):
                        await loop.run_in_executor(None, inc.part.checkpoint)
                    inc.part.close()
        for out in list(self._outs.values()):
            out.source.close()

    # ------------------------------------------------------------ hooks (FileHandler)

    def session_ready(self, participant: Participant, peer: PeerInfo) -> None:
        link = (participant, peer.peer_id)
        self._sessions[link] = peer
        for out in self._outs.values():
            mine = out.peer.fingerprint == peer.fingerprint
            if mine and out.link is None and out.machine.phase is Phase.WAITING:
                out.peer = peer
                self._offer(out, link)

    def session_lost(self, participant: Participant, peer_id: int) -> None:
        link = (participant, peer_id)
        if self._sessions.pop(link, None) is None:
            return
        now = time.monotonic()
        for out in self._outs.values():
            if out.link == link:
                out.link = None
                out.gen += 1
                out.machine.detach()
                self._progress_out(out, now, paused=True)
                other = self._link_for(out.peer.fingerprint)
                if other is not None:
                    self._offer(out, other)
        for inc in self._ins.values():
            if inc.link == link:
                inc.link = None
                was_running = inc.machine.phase is Phase.RUNNING
                inc.machine.detach()
                if was_running:
                    self._progress_in(inc, now, paused=True)
                    self._spawn(self._checkpoint(inc))
        self._touch()

    async def async_on_message(
        self, participant: Participant, peer: PeerInfo, msg: FileMessage
    ) -> None:
        link = (participant, peer.peer_id)
        if isinstance(msg, FileData):
            await self._on_data(link, peer, msg)
        elif isinstance(msg, FileAck):
            self._on_ack(link, peer, msg)
        elif isinstance(msg, FileOffer):
            self._on_offer(link, peer, msg)
        elif isinstance(msg, FileAccept):
            self._on_accept(link, peer, msg)
        elif isinstance(msg, FileDone):
            self._on_done(link, peer, msg)
        elif isinstance(msg, FileRefuse):
            out = self._outs.get((peer.fingerprint, msg.transfer_id))
            if out is not None and out.link == link and not out.machine.final:
                self._fail_out(out, msg.reason[:REASON_CHARS], by_peer=True)
        else:  # FileCancel
            inc = self._ins.get((peer.fingerprint, msg.transfer_id))
            if inc is not None and inc.link == link and not inc.machine.final:
                await self._fail_in(inc, msg.reason[:REASON_CHARS], by_peer=True)
        self._touch()

    # ------------------------------------------------------------ sending

    def _link_for(self, fp: bytes) -> _Link | None:
        return next((link for link, p in self._sessions.items() if p.fingerprint == fp), None)

    def _offer(self, out: _Out, link: _Link) -> None:
        participant, peer_id = link
        out.link = link
        out.gen += 1
        offer = out.machine.offer()
        participant.send_app(peer_id, offer)
        if not out.offered_once:
            out.offered_once = True
            m = out.machine
            self._emit(FileOffered(out.peer, m.transfer_id, m.name, m.size, m.sha256, False))

    def _on_accept(self, link: _Link, peer: PeerInfo, msg: FileAccept) -> None:
        out = self._outs.get((peer.fingerprint, msg.transfer_id))
        if out is None or out.link != link or out.machine.phase is not Phase.OFFERED:
            return  # stale (an answer to an offer from an earlier session)
        try:
            out.machine.on_accept(msg.offset)
        except TransferError as exc:
            self._violation_out(out, exc)
            return
        now = time.monotonic()
        out.meter = Meter(now, msg.offset)
        self._progress_out(out, now, force=True)
        self._ensure_pump()
        self._kick.set()

    def _on_ack(self, link: _Link, peer: PeerInfo, msg: FileAck) -> None:
        out = self._outs.get((peer.fingerprint, msg.transfer_id))
        if out is None or out.link != link or out.machine.final:
            return
        if out.machine.phase not in (Phase.RUNNING, Phase.VERIFYING):
            return
        try:
            out.machine.on_ack(msg.offset)
        except TransferError as exc:
            self._violation_out(out, exc)
            return
        self._progress_out(out, time.monotonic())
        self._kick.set()

    def _on_done(self, link: _Link, peer: PeerInfo, msg: FileDone) -> None:
        out = self._outs.get((peer.fingerprint, msg.transfer_id))
        if out is None or out.link != link or out.machine.final:
            return
        try:
            out.machine.on_done()
        except TransferError as exc:
            self._violation_out(out, exc)
            return
        now = time.monotonic()
        m = out.machine
        meter = out.meter or Meter(now, m.size)
        del self._outs[(peer.fingerprint, m.transfer_id)]
        out.source.close()
        self._emit(
            FileCompleted(
                out.peer,
                m.transfer_id,
                m.name,
                False,
                m.size,
                m.sha256,
                str(out.source.path),
                m.start,
                now - meter.began,
                meter.average(now, m.size),
            )
        )

    def _violation_out(self, out: _Out, exc: TransferError) -> None:
        reason = f"protocol violation: {exc}"
        self._fail_out(out, reason, by_peer=False, tell=reason)

    def _fail_out(self, out: _Out, reason: str, *, by_peer: bool, tell: str | None = None) -> None:
        """End an outgoing transfer; ``tell`` is the reason the receiver gets, if any."""
        m = out.machine
        if m.final:
            return
        if tell is not None and out.link is not None:
            participant, peer_id = out.link
            participant.send_app(peer_id, FileCancel(m.transfer_id, tell[:REASON_CHARS]))
        m.fail()
        out.gen += 1
        self._outs.pop((out.peer.fingerprint, m.transfer_id), None)
        out.source.close()
        self._emit(FileFailed(out.peer, m.transfer_id, m.name, False, reason, by_peer))
        self._touch()

    def _progress_out(
        self, out: _Out, now: float, *, force: bool = False, paused: bool = False
    ) -> None:
        m = out.machine
        self._progress(out.peer, out.meter, m, False, m.acked, now, force or paused, paused)

    def _ensure_pump(self) -> None:
        if self._pump_task is None and not self._closed:
            self._pump_task = asyncio.get_running_loop().create_task(
                self._pump(), name="p2pchat-file-pump"
            )

    def _in_flight(self, participant: Participant) -> int:
        return sum(
            o.machine.in_flight
            for o in self._outs.values()
            if o.link is not None and o.link[0] is participant
        )

    async def _pump(self) -> None:
        """Send chunks while windows, the connection's budget and its write buffer allow."""
        loop = asyncio.get_running_loop()
        while True:
            self._kick.clear()
            sent = False
            for out in list(self._outs.values()):
                link = out.link
                if link is None or out.machine.phase is not Phase.RUNNING:
                    continue
                participant, peer_id = link
                if self._in_flight(participant) >= MAX_IN_FLIGHT:
                    continue
                if out.machine.next_offset >= out.machine.size:
                    continue
                if not await participant.async_writable():
                    continue
                if out.link != link or out.machine.phase is not Phase.RUNNING:
                    continue  # things changed while we waited
                span = out.machine.next_chunk()
                if span is None:
                    continue
                gen = out.gen
                await self._pace(span[1])
                try:
                    data = await loop.run_in_executor(None, out.source.read, *span)
                except TransferError as exc:
                    if out.gen == gen:
                        self._fail_out(out, str(exc), by_peer=False, tell=CANNOT_READ)
                    continue
                if out.gen != gen:
                    continue  # read for a run that has ended
                if participant.send_app(peer_id, FileData(out.machine.transfer_id, span[0], data)):
                    sent = True
            if not sent:
                await self._kick.wait()

    async def _pace(self, size: int) -> None:
        """Hold back to ``limit_rate`` bytes per second (a token bucket, 1/4 s deep)."""
        rate = self.limit_rate
        if not rate:
            return
        now = time.monotonic()
        if self._bucket is None:
            self._bucket = TokenBucket(rate, max(rate / 4, float(size)), now)
            self._bucket.tokens = 0.0
        wait = self._bucket.charge(now, size)
        if wait > 0:
            await asyncio.sleep(wait)

    # ------------------------------------------------------------ receiving

    def _on_offer(self, link: _Link, peer: PeerInfo, msg: FileOffer) -> None:
        key = (peer.fingerprint, msg.transfer_id)
        participant, peer_id = link
        if key in self._finished:
            participant.send_app(peer_id, FileDone(msg.transfer_id))
            return
        inc = self._ins.get(key)
        if inc is not None:
            # offered again: a new session (after a drop, or the sender restarted)
            inc.link, inc.peer = link, peer
            answer = inc.machine.reoffer()
            if answer is not None:
                participant.send_app(peer_id, answer)
                now = time.monotonic()
                inc.meter = Meter(now, answer.offset)
                self._progress_in(inc, now, force=True)
            return
        inc = _In(Incoming.from_offer(msg), peer, msg.name, link)
        m = inc.machine
        theirs = [t for t in self._ins.values() if t.peer.fingerprint == peer.fingerprint]
        undecided = sum(1 for t in theirs if t.machine.phase is Phase.OFFERED)
        refusal = None
        if self.policy == "refuse":
            refusal = self.refuse_reason
        elif len(theirs) >= MAX_INCOMING_PER_PEER:
            refusal = "too many transfers at once"
        elif self.policy == "ask" and undecided >= MAX_PENDING_PER_PEER:
            refusal = "too many offers waiting for an answer"
        pending = refusal is None and self.policy == "ask"
        self._emit(FileOffered(peer, m.transfer_id, m.name, m.size, m.sha256, True, pending))
        if refusal is not None:
            participant.send_app(peer_id, FileRefuse(m.transfer_id, refusal))
            m.fail()
            self._emit(FileFailed(peer, m.transfer_id, m.name, True, refusal, False))
            return
        self._ins[key] = inc
        if self.policy == "auto":
            assert self.directory is not None
            self._spawn(self._accept(inc, self.directory))

    async def _accept(self, inc: _In, directory: Path) -> None:
        m = inc.machine
        m.accept()
        inc.directory = directory
        loop = asyncio.get_running_loop()
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
                )
            except TransferError as exc:
                public = "not enough disk space" if isinstance(exc, NoSpaceError) else CANNOT_STORE
                await self._fail_in(inc, str(exc), by_peer=False, tell=public, locked=True)
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
            self._progress_in(inc, now, force=True)
        self._touch()

    async def _on_data(self, link: _Link, peer: PeerInfo, msg: FileData) -> None:
        inc = self._ins.get((peer.fingerprint, msg.transfer_id))
        if inc is None or inc.link != link or inc.machine.phase is not Phase.RUNNING:
            return  # stale: a chunk from before a pause, a refusal or a takeover
        part = inc.part
        assert part is not None
        try:
            complete = inc.machine.on_data(msg.offset, len(msg.data))
        except TransferError as exc:
            reason = f"protocol violation: {exc}"
            await self._fail_in(inc, reason, by_peer=False, tell=reason)
            return
        loop = asyncio.get_running_loop()
        async with inc.lock:
            if inc.machine.final:
                return  # ended while we waited for the lock
            try:
                await loop.run_in_executor(None, part.write, msg.offset, msg.data)
            except TransferError as exc:
                await self._fail_in(inc, str(exc), by_peer=False, tell=CANNOT_STORE, locked=True)
                return
        participant, peer_id = link
        participant.send_app(peer_id, FileAck(msg.transfer_id, inc.machine.received))
        self._progress_in(inc, time.monotonic())
        if complete:
            self._spawn(self._finish(inc))

    async def _finish(self, inc: _In) -> None:
        """Verify and store (off the reader: syncing a large file can take a while)."""
        m, part = inc.machine, inc.part
        assert part is not None
        loop = asyncio.get_running_loop()
        async with inc.lock:
            try:
                path = await loop.run_in_executor(None, part.finish)
            except TransferError as exc:
                mismatch = isinstance(exc, HashMismatchError)
                await self._fail_in(
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
        self._finished[key] = path
        if len(self._finished) > MAX_FINISHED:
            del self._finished[next(iter(self._finished))]
        self._ins.pop(key, None)
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

    async def _checkpoint(self, inc: _In) -> None:
        part = inc.part
        if part is None:
            return
        async with inc.lock:
            if inc.machine.final:
                return
            try:
                await asyncio.get_running_loop().run_in_executor(None, part.checkpoint)
            except TransferError as exc:
                log.warning("files: %s", exc)

    async def _fail_in(
        self,
        inc: _In,
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
        self._ins.pop((inc.peer.fingerprint, m.transfer_id), None)
        if tell is not None and inc.link is not None:
            participant, peer_id = inc.link
            participant.send_app(peer_id, FileRefuse(m.transfer_id, tell[:REASON_CHARS]))
        part = inc.part
        if part is not None:
            loop = asyncio.get_running_loop()
            action = part.close if keep else part.discard
            if locked:
                await loop.run_in_executor(None, action)
            else:
                async with inc.lock:
                    await loop.run_in_executor(None, action)
        self._emit(FileFailed(inc.peer, m.transfer_id, m.name, True, reason, by_peer))
        self._touch()

    def _progress_in(
        self, inc: _In, now: float, *, force: bool = False, paused: bool = False
    ) -> None:
        m = inc.machine
        self._progress(inc.peer, inc.meter, m, True, m.received, now, force or paused, paused)

    def _progress(
        self,
        peer: PeerInfo,
        meter: Meter | None,
        m: Outgoing | Incoming,
        incoming: bool,
        done: int,
        now: float,
        force: bool,
        paused: bool,
    ) -> None:
        """Feed the rate meter; emit a FileProgress when it is due (one place for both ways)."""
        if meter is None:
            return
        meter.add(now, done)
        if meter.due(now, force=force):
            self._emit(
                FileProgress(
                    peer,
                    m.transfer_id,
                    m.name,
                    incoming,
                    done,
                    m.size,
                    m.start,
                    meter.rate,
                    meter.eta(m.size),
                    paused,
                )
            )

    # ------------------------------------------------------------ plumbing

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("files: a transfer task failed", exc_info=task.exception())
        self._touch()

    def _touch(self) -> None:
        self.activity += 1
        self.bus.notify()
