"""The outgoing side of the file-transfer service (:mod:`p2pchat.room.transfers`).

:class:`Sending` offers files, follows the receiver's answers (accept, acks,
done, refusal) and runs the pump: one task that sends chunks, round robin over
the running transfers, each limited to a window of unacknowledged chunks (and
the connection to :data:`~p2pchat.proto.transfer.MAX_IN_FLIGHT` bytes in all),
only while the connection's write buffer is below a small threshold
(:meth:`Participant.async_writable`), and paced to ``limit_rate``. Files are
read in a worker thread.

Also here, public because the incoming side (:mod:`p2pchat.room.receiving`)
uses them too: the :data:`Link` and :data:`Key` types, :data:`REASON_CHARS`
and :func:`emit_progress`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from p2pchat.errors import TransferError
from p2pchat.proto.app import FileAccept, FileAck, FileCancel, FileData, FileDone, FileRefuse
from p2pchat.proto.bucket import TokenBucket
from p2pchat.proto.transfer import MAX_IN_FLIGHT, Incoming, Meter, Outgoing, Phase
from p2pchat.room.events import (
    Event,
    FileCompleted,
    FileFailed,
    FileOffered,
    FileProgress,
    PauseReason,
    PeerInfo,
)
from p2pchat.room.participant import Participant
from p2pchat.store.filestore import Source
from p2pchat.store.outgoing import OutgoingBook, Remembered

__all__ = [
    "CANNOT_READ",
    "REASON_CHARS",
    "Key",
    "Link",
    "OutgoingFile",
    "Prepared",
    "Sending",
    "emit_progress",
]

#: A session: the participant it runs on and the peer's id there.
Link: TypeAlias = tuple[Participant, int]
#: A transfer: (peer fingerprint, transfer id).
Key: TypeAlias = tuple[bytes, bytes]

#: Longest reason we send or show.
REASON_CHARS = 200
#: What a receiver is told when the file cannot be read here (the details,
#: with local paths, are only shown here).
CANNOT_READ = "the sender cannot read the file any more"


def emit_progress(
    emit: Callable[[Event], None],
    peer: PeerInfo,
    meter: Meter | None,
    m: Outgoing | Incoming,
    incoming: bool,
    done: int,
    now: float,
    force: bool,
    paused: bool,
    why: PauseReason | None = None,
    remembered: bool = False,
) -> None:
    """Feed the rate meter; emit a FileProgress when it is due (one place for both ways)."""
    if meter is None:
        return
    meter.add(now, done)
    if meter.due(now, force=force):
        emit(
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
                why if paused else None,
                remembered,
            )
        )


@dataclass(frozen=True, slots=True)
class Prepared:
    """A local file, hashed, ready to offer."""

    path: Path
    name: str  #: as offered
    size: int
    sha256: bytes


@dataclass(eq=False)
class OutgoingFile:
    """One file being sent."""

    machine: Outgoing
    source: Source
    peer: PeerInfo  #: the receiver as last seen (its fingerprint is the key)
    link: Link | None = None
    meter: Meter | None = None
    gen: int = 0  #: bumped at every (re)offer: data read for an older run is dropped
    offered_once: bool = False
    remembered: bool = False  #: offered again by itself (an earlier run left it)


class Sending:
    """Every outgoing transfer of one chat (see the module doc)."""

    def __init__(
        self,
        emit: Callable[[Event], None],
        touch: Callable[[], None],
        link_for: Callable[[bytes], Link | None],
        limit_rate: float | None,
        book: OutgoingBook | None = None,
        *,
        remember: bool = True,
    ) -> None:
        """``emit`` publishes an event, ``touch`` notes a change, ``link_for``
        finds a session with a peer (by fingerprint); ``limit_rate`` caps what
        we send, in bytes per second (read before every chunk). ``book``
        remembers every unfinished transfer for the next run (``remember=False``,
        a one-shot send: it only crosses off what this run finishes)."""
        self._emit = emit
        self._touch = touch
        self._link_for = link_for
        self.limit_rate = limit_rate
        self.outs: dict[Key, OutgoingFile] = {}
        self._pump_task: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        self._bucket: TokenBucket | None = None
        self._closed = False
        self.book = book
        self.remember = remember and book is not None

    async def async_offer(
        self, prepared: Prepared, peer: PeerInfo, *, remembered: bool = False
    ) -> bytes:
        """Offer a prepared file to ``peer`` (now if a session is up, else as
        soon as one is); returns the transfer id. The same file to the same
        peer again is the same transfer: it resumes. ``remembered``: an earlier
        run left it unfinished (its event says so). Raises TransferError."""
        machine = Outgoing(prepared.name, prepared.size, prepared.sha256)
        key = (peer.fingerprint, machine.transfer_id)
        old = self.outs.get(key)
        if old is not None and not old.machine.final:
            return machine.transfer_id  # already under way
        source = await asyncio.get_running_loop().run_in_executor(None, Source, prepared.path)
        if source.size != prepared.size:
            source.close()
            raise TransferError(f"{prepared.path} changed since it was hashed")
        old = self.outs.get(key)
        if old is not None and not old.machine.final:  # offered meanwhile (we awaited)
            source.close()
            return machine.transfer_id
        out = OutgoingFile(machine, source, peer, remembered=remembered)
        self.outs[key] = out
        if self.book is not None and self.remember:
            m, fp, where = machine, peer.fingerprint, source.absolute
            entry = Remembered(
                m.transfer_id, where, m.name, m.size, m.sha256, fp, peer.name, time.time()
            )
            self.book.add(entry)
        link = self._link_for(peer.fingerprint)
        if link is not None:
            self._offer(out, link)
        self._touch()
        return machine.transfer_id

    async def async_stop(self) -> None:
        """Stop sending (the pump ends and does not start again)."""
        self._closed = True
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task

    def close_sources(self) -> None:
        for out in list(self.outs.values()):
            out.source.close()

    # ------------------------------------------------------------ sessions

    def session_ready(self, link: Link, peer: PeerInfo) -> None:
        """Offer again every transfer to ``peer`` waiting for a session."""
        for out in self.outs.values():
            mine = out.peer.fingerprint == peer.fingerprint
            if mine and out.link is None and out.machine.phase is Phase.WAITING:
                out.peer = peer
                self._offer(out, link)

    def session_lost(self, link: Link, now: float, why: PauseReason) -> None:
        """Pause the transfers on ``link`` (``why``: who left); offer them on
        another session with the same peer, if there is one."""
        for out in self.outs.values():
            if out.link == link:
                out.link = None
                out.gen += 1
                m = out.machine
                m.detach()
                if self.book is not None and self.remember and m.acked > m.start:
                    # the receiver's .part was written to: it keeps it 7 days from now
                    self.book.touch(out.peer.fingerprint, m.transfer_id)
                self._progress(out, now, paused=True, why=why)
                other = self._link_for(out.peer.fingerprint)
                if other is not None:
                    self._offer(out, other)

    # ------------------------------------------------------------ the receiver's answers

    def _offer(self, out: OutgoingFile, link: Link) -> None:
        participant, peer_id = link
        out.link = link
        out.gen += 1
        offer = out.machine.offer()
        participant.send_app(peer_id, offer)
        if not out.offered_once:
            out.offered_once = True
            m = out.machine
            offered = FileOffered(
                out.peer, m.transfer_id, m.name, m.size, m.sha256, False, remembered=out.remembered
            )
            self._emit(offered)

    def on_accept(self, link: Link, peer: PeerInfo, msg: FileAccept) -> None:
        out = self.outs.get((peer.fingerprint, msg.transfer_id))
        if out is None or out.link != link or out.machine.phase is not Phase.OFFERED:
            return  # stale (an answer to an offer from an earlier session)
        try:
            out.machine.on_accept(msg.offset)
        except TransferError as exc:
            self._violation(out, exc)
            return
        now = time.monotonic()
        out.meter = Meter(now, msg.offset)
        self._progress(out, now, force=True)
        self._ensure_pump()
        self._kick.set()

    def on_ack(self, link: Link, peer: PeerInfo, msg: FileAck) -> None:
        out = self.outs.get((peer.fingerprint, msg.transfer_id))
        if out is None or out.link != link or out.machine.final:
            return
        if out.machine.phase not in (Phase.RUNNING, Phase.VERIFYING):
            return
        try:
            out.machine.on_ack(msg.offset)
        except TransferError as exc:
            self._violation(out, exc)
            return
        self._progress(out, time.monotonic())
        self._kick.set()

    def on_done(self, link: Link, peer: PeerInfo, msg: FileDone) -> None:
        out = self.outs.get((peer.fingerprint, msg.transfer_id))
        if out is None or out.link != link or out.machine.final:
            return
        try:
            out.machine.on_done()
        except TransferError as exc:
            self._violation(out, exc)
            return
        now = time.monotonic()
        m = out.machine
        meter = out.meter or Meter(now, m.size)
        del self.outs[(peer.fingerprint, m.transfer_id)]
        self._forget(out)
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

    def on_refuse(self, link: Link, peer: PeerInfo, msg: FileRefuse) -> None:
        out = self.outs.get((peer.fingerprint, msg.transfer_id))
        if out is not None and out.link == link and not out.machine.final:
            self._fail(out, msg.reason[:REASON_CHARS], by_peer=True)

    def _violation(self, out: OutgoingFile, exc: TransferError) -> None:
        reason = f"protocol violation: {exc}"
        self._fail(out, reason, by_peer=False, tell=reason)

    def _fail(
        self, out: OutgoingFile, reason: str, *, by_peer: bool, tell: str | None = None
    ) -> None:
        """End an outgoing transfer; ``tell`` is the reason the receiver gets, if any."""
        m = out.machine
        if m.final:
            return
        if tell is not None and out.link is not None:
            participant, peer_id = out.link
            participant.send_app(peer_id, FileCancel(m.transfer_id, tell[:REASON_CHARS]))
        m.fail()
        out.gen += 1
        self.outs.pop((out.peer.fingerprint, m.transfer_id), None)
        self._forget(out)
        out.source.close()
        self._emit(FileFailed(out.peer, m.transfer_id, m.name, False, reason, by_peer))
        self._touch()

    def _forget(self, out: OutgoingFile) -> None:
        """It is over (sent, refused, cancelled, failed): not to be offered again."""
        if self.book is not None:
            self.book.remove(out.peer.fingerprint, out.machine.transfer_id)

    def _progress(
        self,
        out: OutgoingFile,
        now: float,
        *,
        force: bool = False,
        paused: bool = False,
        why: PauseReason | None = None,
    ) -> None:
        m = out.machine
        book = self.book
        kept = paused and book is not None and book.holds(out.peer.fingerprint, m.transfer_id)
        emit_progress(
            self._emit,
            out.peer,
            out.meter,
            m,
            False,
            m.acked,
            now,
            force or paused,
            paused,
            why,
            kept,
        )

    # ------------------------------------------------------------ the pump

    def _ensure_pump(self) -> None:
        if self._pump_task is None and not self._closed:
            self._pump_task = asyncio.get_running_loop().create_task(
                self._pump(), name="p2pchat-file-pump"
            )

    def _in_flight(self, participant: Participant) -> int:
        return sum(
            o.machine.in_flight
            for o in self.outs.values()
            if o.link is not None and o.link[0] is participant
        )

    async def _pump(self) -> None:
        """Send chunks while windows, the connection's budget and its write buffer allow."""
        loop = asyncio.get_running_loop()
        while True:
            self._kick.clear()
            sent = False
            for out in list(self.outs.values()):
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
                        self._fail(out, str(exc), by_peer=False, tell=CANNOT_READ)
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
