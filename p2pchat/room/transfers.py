"""File transfers over the chat's sessions: the asyncio service.

:class:`FileTransfers` sits between the participant (which hands it every
file message and tells it when sessions come and go), the pure transfer logic
(:mod:`p2pchat.proto.transfer`) and the disk (:mod:`p2pchat.store.filestore`, always in a
worker thread). It outlives the participants of a joiner, which are replaced
on every reconnect: transfers are keyed by the peer's fingerprint and the
transfer id, so one interrupted by a drop continues on the next session with
that peer, from the offset the receiver reports.

It is a facade: it owns what both ways share (the sessions per peer link, the
bus, the ``activity`` counter) and hands each message to the side it is for,
:class:`~p2pchat.room.sending.Sending` (offers, acks, the pump, outgoing
failures) or :class:`~p2pchat.room.receiving.Receiving` (offers received,
decisions, writing, checkpoints, verification).

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
from dataclasses import dataclass
from pathlib import Path

from p2pchat.errors import TransferError
from p2pchat.proto.app import (
    FileAccept,
    FileAck,
    FileData,
    FileDone,
    FileMessage,
    FileOffer,
    FileRefuse,
)
from p2pchat.proto.transfer import Outgoing, Phase, offer_name
from p2pchat.room.bus import EventBus
from p2pchat.room.events import Event, FileFailed, PauseReason, PeerInfo
from p2pchat.room.participant import Participant
from p2pchat.room.receiving import DiskLimits, Policy, Receiving
from p2pchat.room.sending import Link, Prepared, Sending
from p2pchat.store.filestore import Source
from p2pchat.store.outgoing import OutgoingBook, Remembered

__all__ = [
    "CHANGED",
    "FORGOTTEN",
    "GONE",
    "DiskLimits",
    "FileTransfers",
    "Policy",
    "Prepared",
    "Transfer",
]

log = logging.getLogger("p2pchat.room.transfers")

#: Why a remembered transfer is not offered again.
CHANGED = "the file changed since"
#: Why a remembered transfer is not offered again: the file cannot be read.
GONE = "the file is gone (or cannot be read)"
#: Why a remembered transfer is not offered again: the key it was for is no
#: longer pinned (``trust forget``): this peer is not the one it was sent to.
FORGOTTEN = "its key was forgotten since ('p2pchat trust forget')"


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
        disk: DiskLimits | None = None,
        book: OutgoingBook | None = None,
        remember: bool = True,
    ) -> None:
        """``policy`` decides offers; ``directory`` is where accepted files go
        (for "auto", and the default for :meth:`async_accept`). ``limit_rate``
        caps what we send, in bytes per second; ``disk`` bounds what incoming
        files take (defaults: :class:`DiskLimits`). Events go to ``bus``, and every
        change notifies it (``activity`` counts them). ``book`` remembers our
        unfinished outgoing transfers: those an earlier run left are offered
        again, by themselves, on the next session with their peer (with
        ``remember=False``, a one-shot send, it is only crossed off in)."""
        if policy == "auto" and directory is None:
            raise ValueError("auto-accepting files needs a directory")
        self.bus = bus
        self.activity = 0  #: goes up whenever a transfer moves
        self._sessions: dict[Link, PeerInfo] = {}
        self._out = Sending(
            bus.publish, self._touch, self._link_for, limit_rate, book, remember=remember
        )
        self._leaving = False
        self._resuming: dict[bytes, asyncio.Task[None]] = {}  #: per peer fingerprint
        self._in = Receiving(
            bus.publish,
            self._touch,
            policy=policy,
            directory=directory,
            refuse_reason=refuse_reason,
            disk=disk,
        )

    # the settings live with the side that reads them

    @property
    def policy(self) -> Policy:
        return self._in.policy

    @policy.setter
    def policy(self, value: Policy) -> None:
        self._in.policy = value

    @property
    def directory(self) -> Path | None:
        return self._in.directory

    @directory.setter
    def directory(self, value: Path | None) -> None:
        self._in.directory = value

    @property
    def refuse_reason(self) -> str:
        return self._in.refuse_reason

    @refuse_reason.setter
    def refuse_reason(self, value: str) -> None:
        self._in.refuse_reason = value

    @property
    def limit_rate(self) -> float | None:
        return self._out.limit_rate

    @limit_rate.setter
    def limit_rate(self, value: float | None) -> None:
        self._out.limit_rate = value

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
            for t in self._out.outs.values()
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
            for t in self._in.ins.values()
        ]
        return out

    def remembered(self, transfer: Transfer) -> bool:
        """This unfinished transfer of ours is remembered on disk: the next
        chat on this home offers it again by itself."""
        book = self._out.book
        fp = transfer.peer.fingerprint
        return book is not None and book.holds(fp, transfer.transfer_id)

    def pending(self) -> list[Transfer]:
        """Offers waiting for :meth:`async_accept` or :meth:`reject`."""
        return [t for t in self.transfers() if t.incoming and t.phase is Phase.OFFERED]

    def phase(self, peer_fp: bytes, transfer_id: bytes, *, incoming: bool) -> Phase | None:
        """Where that transfer is (DONE for one received in this run; None if unknown)."""
        key = (peer_fp, transfer_id)
        if incoming:
            if key in self._in.finished:
                return Phase.DONE
            inc = self._in.ins.get(key)
            return inc.machine.phase if inc else None
        out = self._out.outs.get(key)
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
        return await self._out.async_offer(prepared, peer)

    async def async_send(self, path: Path, peer: PeerInfo) -> bytes:
        """:meth:`async_prepare` then :meth:`async_offer`."""
        return await self.async_offer(await self.async_prepare(path), peer)

    def find(self, prefix: str = "", *, pending: bool = False) -> list[Transfer]:
        """Transfers whose id starts with the hex ``prefix`` (offers only if ``pending``)."""
        pool = self.pending() if pending else self.transfers()
        return [t for t in pool if t.transfer_id.hex().startswith(prefix.lower())]

    async def async_accept(self, transfer: Transfer, directory: Path | None = None) -> None:
        """Accept an offer into ``directory`` (default: the configured one)."""
        key = (transfer.peer.fingerprint, transfer.transfer_id)
        await self._in.async_accept(key, directory or self.directory)

    def reject(self, transfer: Transfer, reason: str = "declined") -> None:
        """Refuse an offer (or stop receiving): the sender is told."""
        self._in.reject((transfer.peer.fingerprint, transfer.transfer_id), reason)

    def leaving(self) -> None:
        """We are about to leave: the sessions that end now pause their
        transfers because of us (:attr:`PauseReason.WE_LEFT`), not the peer."""
        self._leaving = True

    async def async_close(self) -> None:
        """Stop sending; record every incoming transfer's resume point."""
        self._leaving = True
        for task in list(self._resuming.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._out.async_stop()
        await self._in.async_close()
        self._out.close_sources()

    # ------------------------------------------------------------ hooks (FileHandler)

    def session_ready(self, participant: Participant, peer: PeerInfo) -> None:
        link = (participant, peer.peer_id)
        self._sessions[link] = peer
        self._out.session_ready(link, peer)
        self._resume_remembered(peer, known=peer.fingerprint in participant.known_peers)

    def session_lost(self, participant: Participant, peer_id: int) -> None:
        link = (participant, peer_id)
        if self._sessions.pop(link, None) is None:
            return
        now = time.monotonic()
        if self._leaving or participant.closing:
            why = PauseReason.WE_LEFT
        elif participant.disconnected is not None:
            why = PauseReason.DISCONNECTED
        else:
            why = PauseReason.PEER_LEFT
        self._out.session_lost(link, now, why)
        self._in.session_lost(link, now, why)
        self._touch()

    async def async_on_message(
        self, participant: Participant, peer: PeerInfo, msg: FileMessage
    ) -> None:
        link = (participant, peer.peer_id)
        if isinstance(msg, FileData):
            await self._in.async_on_data(link, peer, msg)
        elif isinstance(msg, FileAck):
            self._out.on_ack(link, peer, msg)
        elif isinstance(msg, FileOffer):
            self._in.on_offer(link, peer, msg)
        elif isinstance(msg, FileAccept):
            self._out.on_accept(link, peer, msg)
        elif isinstance(msg, FileDone):
            self._out.on_done(link, peer, msg)
        elif isinstance(msg, FileRefuse):
            self._out.on_refuse(link, peer, msg)
        else:  # FileCancel
            await self._in.async_on_cancel(link, peer, msg)
        self._touch()

    # ------------------------------------------------------------ remembered transfers

    def _resume_remembered(self, peer: PeerInfo, *, known: bool) -> None:
        """Offer again what an earlier run left unfinished for ``peer`` (once
        each file is checked: hashing runs in a worker thread). Only to a key
        pinned before this session (``known``): one that is new again was
        forgotten since, and gets nothing by itself."""
        book = self._out.book
        if book is None or not self._out.remember:
            return
        if self._leaving or peer.fingerprint in self._resuming:
            return
        todo = [
            e
            for e in book.entries(peer.fingerprint)
            if (peer.fingerprint, e.transfer_id) not in self._out.outs
        ]
        if not known:
            for entry in todo:
                self._not_resumed(peer, entry, FORGOTTEN)
            return
        if not todo:
            return
        task = asyncio.get_running_loop().create_task(
            self._async_resume(peer, todo), name="p2pchat-file-resume"
        )
        self._resuming[peer.fingerprint] = task

        def done(task: asyncio.Task[None]) -> None:
            self._resuming.pop(peer.fingerprint, None)
            if not task.cancelled() and task.exception() is not None:
                log.error("files: resuming a transfer failed", exc_info=task.exception())

        task.add_done_callback(done)

    async def _async_resume(self, peer: PeerInfo, todo: list[Remembered]) -> None:
        for entry in todo:
            if (peer.fingerprint, entry.transfer_id) in self._out.outs:
                continue  # offered again by hand meanwhile
            try:
                prepared = await self.async_prepare(Path(entry.path))
            except TransferError as exc:
                log.info("files: not resuming %s: %s", entry.path, exc)
                self._not_resumed(peer, entry, GONE)
                continue
            if self._leaving:
                return
            now = (
                prepared.size,
                prepared.sha256,
                Outgoing(entry.name, prepared.size, prepared.sha256).transfer_id,
            )
            if now != (entry.size, entry.sha256, entry.transfer_id):
                self._not_resumed(peer, entry, CHANGED)
                continue
            offered = Prepared(prepared.path, entry.name, prepared.size, prepared.sha256)
            try:
                await self._out.async_offer(offered, peer, remembered=True)
            except TransferError as exc:  # it changed between the hash and the offer
                log.info("files: not resuming %s: %s", entry.path, exc)
                self._not_resumed(peer, entry, CHANGED)
            self._touch()

    def _not_resumed(self, peer: PeerInfo, entry: Remembered, reason: str) -> None:
        if self._out.book is not None:
            self._out.book.remove(peer.fingerprint, entry.transfer_id)
        event = FileFailed(peer, entry.transfer_id, entry.name, False, reason, False, True)
        self.bus.publish(event)
        self._touch()

    # ------------------------------------------------------------ shared state

    def _link_for(self, fp: bytes) -> Link | None:
        return next((link for link, p in self._sessions.items() if p.fingerprint == fp), None)

    def _touch(self) -> None:
        self.activity += 1
        self.bus.notify()
