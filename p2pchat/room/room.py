"""``p2pchat.Room``: the library every face uses (docs/LIBRARY.md).

One async object hosts or joins a room, sends text and files, verifies
peers, lists who is here and leaves; what happens comes out of
:meth:`Room.events` as the typed, frozen events of :mod:`p2pchat.room.events`.
A room is used once::

    async with Room.join(name="alice") as room:
        await room.send("hi")
        async for event in room.events():
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Self

from p2pchat.errors import ConfigError, LocalProtocolError, P2PChatError
from p2pchat.net.relay import RelayLimits
from p2pchat.proto.messages import check_name
from p2pchat.room.bus import EventBus, Subscription
from p2pchat.room.delivery import Missing
from p2pchat.room.events import Event, MessageSent, PeerInfo, PeerRefused, RoomEnded
from p2pchat.room.hostpick import HostQuery, selector
from p2pchat.room.link import Chooser, Link, async_find_host
from p2pchat.room.participant import Participant
from p2pchat.room.transfers import DiskLimits, FileTransfers, Prepared
from p2pchat.store.hosts import HostBook
from p2pchat.store.identity import (
    Identity,
    Pin,
    TrustStore,
    load_identity,
    load_storage_key,
    resolve_home,
)
from p2pchat.store.lock import HomeLock
from p2pchat.store.outbox import Outbox
from p2pchat.store.outgoing import OutgoingBook

if TYPE_CHECKING:
    from p2pchat.net.discovery import HostInfo
    from p2pchat.room.host import Hosting, HostSeat

__all__ = ["FilePolicy", "KeyHint", "Member", "Room", "Verification", "forget_peer"]

#: What to do with files offered to us: accept into ``file_dir``, ask (the
#: face calls :meth:`Room.accept` or :meth:`Room.reject`), or refuse.
FilePolicy = Literal["auto", "ask", "refuse"]


@dataclass(frozen=True, slots=True)
class Member:
    """Someone in the room, as :attr:`Room.members` lists them."""

    peer: PeerInfo
    secure: bool  #: the end-to-end session is up
    verified: bool  #: their key was compared and marked verified


@dataclass(frozen=True, slots=True)
class Verification:
    """What two people compare to verify each other (:meth:`Room.verification`)."""

    peer: PeerInfo
    own_fingerprint: str
    sas: str  #: the short authentication string of the current session


@dataclass(frozen=True, slots=True)
class KeyHint:
    """What a face needs to advise on a refused key (:meth:`Room.key_hint`)."""

    #: the key the host was expected to have, when no pin of its name was in the way
    expected: bytes | None = None
    #: where that expectation came from: "given" (--expect-fingerprint), "pinned"
    #: or "advertised" (the host's mDNS advertisement)
    expected_by: str = ""
    #: a host seen advertising the pinned key of that name: the pinned peer is
    #: on the network too, so the one refused is someone else
    pinned_at: HostInfo | None = None
    #: ``NAME@FP`` that joins ``pinned_at``
    pinned_selector: str | None = None
    #: discovery ran, so a pinned key it did not see was not advertised
    looked: bool = False


def forget_peer(store: TrustStore, home: Path, text: str) -> list[tuple[Pin, int]]:
    """``p2pchat trust forget TEXT``: drop the pins ``text`` names, and with
    each, the unfinished transfers remembered for its key (nothing is offered
    by itself to a key no longer trusted). Returns each pin forgotten and how
    many transfers went with it."""
    book = OutgoingBook.open(home)
    return [(pin, book.forget(pin.fingerprint)) for pin in store.forget(text)]


def _file_service(
    bus: EventBus[Event],
    policy: FilePolicy,
    file_dir: str | os.PathLike[str] | None,
    limit_rate: float | None,
    file_quota: int | None,
    book: OutgoingBook | None,
    *,
    remember: bool,
) -> FileTransfers:
    directory = Path(file_dir).expanduser() if file_dir is not None else None
    if policy == "auto":
        if directory is None:
            raise ConfigError("accepting files needs a directory")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot use {directory} for files: {exc.strerror or exc}") from exc
    disk = DiskLimits() if file_quota is None else DiskLimits(quota=file_quota)
    return FileTransfers(
        bus,
        policy=policy,
        directory=directory,
        limit_rate=limit_rate,
        disk=disk,
        book=book,
        remember=remember,
    )


@dataclass
class _Setup:
    """What :meth:`Room.host` or :meth:`Room.join` was asked (their docs say what
    each field means)."""

    role: Literal["host", "join"]
    name: str
    home: str | os.PathLike[str] | None = None
    interfaces: Sequence[str] = ()
    require_known: bool = False
    file_policy: FilePolicy = "refuse"
    file_dir: str | os.PathLike[str] | None = None
    limit_rate: float | None = None
    durable: bool = True
    port: int | None = None
    limits: RelayLimits | None = None
    connect: str | None = None
    host_name: str | None = None
    expect: bytes | None = None
    timeout: float = 10.0
    choose: Chooser | None = None
    file_quota: int | None = None


class Room:
    """A chat room, hosted or joined (module doc). Build it with :meth:`host` or
    :meth:`join`; every method is for the event loop's thread."""

    def __init__(self, setup: _Setup) -> None:
        self.name = check_name(setup.name, ConfigError)
        self._setup = setup
        self.home = resolve_home(setup.home)
        self._lock = HomeLock(self.home)  #: taken by start(), let go by leave()
        self.identity: Identity = load_identity(self.home)
        self.trust = TrustStore.open(self.home)
        self.bus: EventBus[Event] = EventBus()
        #: nothing published before the first events() call is lost
        self._first: Subscription[Event] | None = self.bus.subscribe()
        self._interfaces = tuple(setup.interfaces)
        self._require_known = setup.require_known
        if setup.durable:
            path = self.home / f"outbox-{setup.role}.bin"
            self.outbox = Outbox(path, load_storage_key(self.home))
        else:
            self.outbox = Outbox()
        # unfinished outgoing transfers, offered again by the next run: only
        # remembered by a chat (a one-shot ``p2pchat send`` resumes when run
        # again), but what a send finishes is crossed off for the chats too
        book = OutgoingBook.open(self.home)
        self.files = _file_service(
            self.bus,
            setup.file_policy,
            setup.file_dir,
            setup.limit_rate,
            setup.file_quota,
            book,
            remember=setup.durable,
        )
        self._seat: HostSeat | Link | None = None
        #: start() has completed: hosting, or in a secure session with the host
        self.started = False
        self._stop = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None
        self.hosting: Hosting | None = None  #: where we serve, once a host has started
        self._left = False
        self._seen: tuple[HostInfo, ...] | None = None  #: the hosts discovery saw

    # ------------------------------------------------------------ building

    @classmethod
    def host(
        cls,
        *,
        name: str,
        home: str | os.PathLike[str] | None = None,
        port: int | None = None,
        interfaces: Sequence[str] = (),
        limits: RelayLimits | None = None,
        require_known: bool = False,
        file_policy: FilePolicy = "refuse",
        file_dir: str | os.PathLike[str] | None = None,
        file_quota: int | None = None,
    ) -> Room:
        """A room we host: relay + advertisement + our own participant. ``port``
        None: the default port (47474), or a free one if that is taken; 0: any.
        ``file_quota`` bounds unfinished incoming files, in bytes (10 GiB)."""
        return cls(
            _Setup(
                "host",
                name,
                home,
                interfaces,
                require_known,
                file_policy,
                file_dir,
                port=port,
                limits=limits,
                file_quota=file_quota,
            )
        )

    @classmethod
    def join(
        cls,
        *,
        name: str,
        home: str | os.PathLike[str] | None = None,
        host: str | None = None,
        connect: str | None = None,
        expect_fingerprint: bytes | None = None,
        timeout: float = 10.0,
        interfaces: Sequence[str] = (),
        require_known: bool = False,
        choose: Chooser | None = None,
        file_policy: FilePolicy = "refuse",
        file_dir: str | os.PathLike[str] | None = None,
        limit_rate: float | None = None,
        durable: bool = True,
        file_quota: int | None = None,
    ) -> Room:
        """A room someone else hosts: found by ``host`` name (or the only one
        seen, or ``choose`` among several), or at ``connect`` ("ADDR[:PORT]").
        ``durable=False`` keeps the outbox in memory only (one-shot commands)."""
        return cls(
            _Setup(
                "join",
                name,
                home,
                interfaces,
                require_known,
                file_policy,
                file_dir,
                limit_rate,
                durable,
                connect=connect,
                host_name=host,
                expect=expect_fingerprint,
                timeout=timeout,
                choose=choose,
                file_quota=file_quota,
            )
        )

    async def start(self) -> None:
        """Host, or find the host and connect with a secure session to it.
        Raises a P2PChatError (each with its exit code) when that fails; first
        of all HomeInUseError while another process runs on the same home."""
        self._lock.acquire()
        args = (self.identity, self.name, self.trust, self.bus, self.outbox)
        s = self._setup
        if s.role == "host":
            from p2pchat.room.host import HostSeat  # relay and mDNS: only for a host

            seat = HostSeat(
                *args,
                port=s.port,
                interfaces=self._interfaces,
                limits=s.limits,
                require_known=self._require_known,
                files=self.files,
            )
            self._seat = seat
            self.hosting = await seat.async_start()
            self.started = True
            return
        deadline = time.monotonic() + s.timeout
        book = HostBook.open(self.home)
        remembered, remembered_name = None, None
        if s.host_name and not s.connect:
            known = [
                (k, pin.name)
                for pin in self._pins_for(s.host_name)
                if (k := book.get(pin.fingerprint)) is not None
            ]
            if known:
                remembered, remembered_name = max(known, key=lambda k: k[0].reached)
        target = await async_find_host(
            connect=s.connect,
            host_name=s.host_name,
            expect=s.expect,
            timeout=s.timeout,
            interfaces=self._interfaces,
            choose=s.choose,
            remembered=remembered,
            remembered_name=remembered_name,
            pinned=self.trust.get,
            bus=self.bus,
        )
        self._seen = target.seen
        link = Link(
            *args,
            require_known=self._require_known,
            files=self.files,
            connect=s.connect,
            interfaces=self._interfaces,
            hosts=book,
        )
        self._seat = link
        await link.async_connect(target, s.timeout, deadline)
        self._keeper = asyncio.ensure_future(link.async_keep_up(self._stop))
        self.started = True

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.leave()
            raise
        return self

    async def __aexit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.leave()

    # ------------------------------------------------------------ state

    @property
    def participant(self) -> Participant | None:
        return self._seat.participant if self._seat is not None else None

    @property
    def ended(self) -> RoomEnded | None:
        """Why the room cannot go on, once that is so (else None)."""
        return self._seat.ended if self._seat is not None else None

    @property
    def members(self) -> list[Member]:
        """Everyone else here now (empty while reconnecting)."""
        p = self.participant
        if p is None:
            return []
        out = []
        for info in p.peers:
            pin = self.trust.get(info.fingerprint)
            out.append(Member(info, p.is_ready(info.peer_id), bool(pin and pin.verified)))
        return out

    def events(self) -> Subscription[Event]:
        """An async iterator of events; the first call also gets those that
        happened since the room was built. It ends once the room is left."""
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return self.bus.subscribe()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait until ``predicate()`` holds (re-checked after every event); False on timeout."""
        return await self.bus.wait_for(predicate, timeout)

    # ------------------------------------------------------------ messages

    def find(self, who: str | bytes, *, secure: bool = False) -> list[PeerInfo]:
        """Members called ``who`` (a name) or with that fingerprint (bytes)."""
        return [
            m.peer
            for m in self.members
            if (m.peer.fingerprint == who if isinstance(who, bytes) else m.peer.name == who)
            and (m.secure or not secure)
        ]

    async def send(self, text: str, *, to: str | bytes | None = None) -> bytes:
        """Send ``text`` to everyone here, or to one member (name or fingerprint);
        returns the message id. Delivery is reported by Delivered events.
        Raises LocalProtocolError (text too long, nobody by that name)."""
        p = self._require()
        fp = None
        if to is not None:
            found = self.find(to)
            if len(found) != 1:
                raise LocalProtocolError(
                    f"no one here is called {to!r}"
                    if not found
                    else f"several participants are called {to!r}"
                )
            fp = found[0].fingerprint
        msg_id = p.send_text(text, to=fp)
        sent = self.outbox.get(msg_id)
        fps = sent.recipients | sent.failed.keys() if sent is not None else set()
        names = tuple(sorted(p.name_of(f) for f in fps))
        self.bus.publish(MessageSent(msg_id, text, names, fp is not None, bool(fps)))
        return msg_id

    @property
    def all_delivered(self) -> bool:
        """Every message we sent has been acknowledged by each of its recipients
        (or that recipient left on purpose); one refused counts as not."""
        return self.outbox.all_delivered

    def undelivered(self) -> dict[bytes, list[str]]:
        """Message ids not acknowledged yet, with who has not acknowledged them."""
        p = self.participant
        return p.undelivered() if p is not None else {}

    def missing(self) -> list[Missing]:
        """Per recipient: how many of our messages it has not acknowledged, and why."""
        p = self.participant
        return p.missing() if p is not None else []

    # ------------------------------------------------------------ trust

    def verification(self, who: str | bytes) -> Verification:
        """What to compare with ``who`` (one member with a secure session)."""
        found = self.find(who, secure=True)
        if len(found) != 1:
            raise LocalProtocolError(
                f"no secure session with {who!r}" if not found else f"several are called {who!r}"
            )
        p = self._require()
        sas = p.peer_sas(found[0].peer_id) or ""
        return Verification(found[0], self.identity.fingerprint_text, sas)

    def key_hint(self, event: PeerRefused) -> KeyHint:
        """What is known about a refused key beyond the event: the key the host
        was expected to have, and whether the pinned key of that name is
        advertised on the network too (then forgetting the pin would be wrong)."""
        seen = self._seen
        at = next((h for h in seen or () if h.fingerprint in event.pinned), None)
        expected, by = None, ""
        p = self.participant
        want = p.expected_host if p is not None else None
        if (
            p is not None
            and event.peer.peer_id == p.host_id
            and not event.pinned
            and want not in (None, event.peer.fingerprint)
        ):
            expected = want
            if want == self._setup.expect:
                by = "given"
            else:
                by = "pinned" if want is not None and self.trust.get(want) else "advertised"
        sel = selector(at, seen or ()) if at is not None else None
        return KeyHint(expected, by, at, sel, seen is not None)

    def _pins_for(self, host_name: str) -> list[Pin]:
        """The pins a join by ``host_name`` (NAME or NAME@FP) may be looking for."""
        query = HostQuery.parse(host_name)
        pins = [p for p in self.trust.by_name(query.name) if query.fits(p.fingerprint)]
        if query.prefix is not None:  # a name with an "@" of its own
            pins += [p for p in self.trust.by_name(query.text) if p not in pins]
        return pins

    def mark_verified(self, fingerprint: bytes, verified: bool = True) -> None:
        """Record that this key was compared (or undo it)."""
        self.trust.set_verified(fingerprint, verified)

    # ------------------------------------------------------------ files

    async def send_file(
        self, path: str | os.PathLike[str] | Prepared, *, to: str | bytes | None = None
    ) -> list[bytes]:
        """Offer a file to everyone with a secure session (or to one); returns the
        transfer ids. Progress comes as File* events; ``room.files`` has the rest
        (``async_prepare``, ``find``, ``async_accept``, ``reject``). In a durable
        room (the default) each offer is remembered under ``home`` until it is
        over: if this run ends first, the next one offers it again by itself on
        the next session with that peer (unless the file changed)."""
        if isinstance(path, Prepared):
            prepared = path
        else:
            prepared = await self.files.async_prepare(Path(path))
        peers = self.find(to, secure=True) if to is not None else self.find_secure()
        return [await self.files.async_offer(prepared, peer) for peer in peers]

    def find_secure(self) -> list[PeerInfo]:
        """Members with a secure session."""
        return [m.peer for m in self.members if m.secure]

    # ------------------------------------------------------------ leaving

    async def leave(self) -> None:
        """Say goodbye to everyone and close (idempotent)."""
        if self._left:
            return
        self._left = True
        self._stop.set()
        self.bus.notify()
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        self.files.leaving()  # what pauses now pauses because of us
        p = self.participant
        if p is not None:
            await p.async_close()
        await self.files.async_close()
        if self._seat is not None:
            await self._seat.async_close()
        if self._lock.held:  # else another process may own the outbox file
            self.outbox.save()
        self._lock.release()
        self.bus.close()

    def _require(self) -> Participant:
        p = self.participant
        if p is None:
            raise P2PChatError("the room has not started")
        return p
