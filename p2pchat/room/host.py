"""A host's way into the room: the relay, its advertisement, and our own participant.

The host runs the relay in its own process, advertises it over mDNS/DNS-SD and
joins it like anyone else, with a participant that never reconnects: if that
participant loses the relay, there is nothing left to host, and the room ends.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from p2pchat.config import DEFAULT_PORT
from p2pchat.errors import ExitCode, P2PChatError
from p2pchat.net.discovery import Advertiser, resolve_interfaces
from p2pchat.net.relay import Relay, RelayLimits
from p2pchat.proto.keys import fingerprint
from p2pchat.room.bus import EventBus
from p2pchat.room.events import Disconnected, Event, RoomEnded
from p2pchat.room.participant import FileHandler, Participant
from p2pchat.store.identity import Identity, TrustStore
from p2pchat.store.outbox import Outbox

__all__ = ["HostSeat", "Hosting"]

log = logging.getLogger("p2pchat.room.host")


@dataclass(frozen=True, slots=True)
class Hosting:
    """Where a host serves: what ``p2pchat host`` prints and JSON mode reports."""

    port: int
    addresses: tuple[str, ...]  #: advertised addresses
    instance: str  #: the DNS-SD instance name


class HostSeat:
    """Relay, advertisement and the host's own participant (module doc)."""

    def __init__(
        self,
        identity: Identity,
        name: str,
        trust: TrustStore,
        bus: EventBus[Event],
        outbox: Outbox,
        *,
        port: int | None = None,
        interfaces: Sequence[str] = (),
        limits: RelayLimits | None = None,
        require_known: bool = False,
        files: FileHandler | None = None,
    ) -> None:
        self.identity, self.name, self.bus = identity, name, bus
        self._port, self._interfaces = port, interfaces
        self.relay = Relay(
            limits,
            owner_key=identity.public_der,
            pinned=lambda key: trust.get(fingerprint(key)) is not None,
        )
        self.participant: Participant | None = Participant(
            identity, name, trust, bus, require_known=require_known, outbox=outbox, files=files
        )
        self.advertiser: Advertiser | None = None
        self.hosting: Hosting | None = None
        self.ended: RoomEnded | None = None
        self._remove_sink = bus.add_sink(self._watch)

    def _watch(self, event: Event) -> None:
        # the host's own participant lost its relay: nothing left to host for
        if isinstance(event, Disconnected) and self.ended is None:
            reason = f"the host's own participant lost its relay: {event.reason}"
            self.ended = RoomEnded(reason, ExitCode.FAILURE)
            self.bus.publish(self.ended)

    async def async_start(self) -> Hosting:
        """Listen, join our own relay, advertise. Raises P2PChatError."""
        interfaces = resolve_interfaces(self._interfaces)
        bind = interfaces or ["0.0.0.0"]  # noqa: S104 -- serving the LAN is the point
        served = await self._listen(bind)
        port = served[0][1]
        if not interfaces:
            # IPv6 too where the machine has it (discovery advertises its addresses)
            with contextlib.suppress(OSError):
                await self.relay.async_start(["::"], port)
        own = "127.0.0.1" if bind == ["0.0.0.0"] else served[0][0]  # noqa: S104
        assert self.participant is not None
        await self.participant.async_connect(own, port, 5.0)
        self.advertiser = Advertiser(
            name=self.name,
            port=port,
            fingerprint=self.identity.fingerprint,
            addresses=interfaces,
            interfaces=interfaces,
        )
        await self.advertiser.async_start()
        self.hosting = Hosting(port, tuple(self.advertiser.addresses), self.advertiser.instance)
        return self.hosting

    async def _listen(self, bind: list[str]) -> list[tuple[str, int]]:
        """Listen on ``bind``: on the port asked for, or (none asked) on the
        default port, falling back to a free one when it is taken. An address
        that cannot be bound (an IPv6 address still being checked for
        duplicates, say) is left out with a warning, unless none can be."""
        wanted = DEFAULT_PORT if self._port is None else self._port
        in_use = (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", errno.EADDRINUSE))
        served: list[tuple[str, int]] = []
        failures: list[str] = []
        for address in bind:
            port = served[0][1] if served else wanted
            try:
                served = await self.relay.async_start([address], port)
            except OSError as exc:
                if not served and self._port is None and exc.errno in in_use and port:
                    wanted = 0  # the default port is taken: any free one
                    try:
                        served = await self.relay.async_start([address], 0)
                        continue
                    except OSError as again:
                        exc = again
                why = os.strerror(exc.errno) if exc.errno else str(exc)
                failures.append(why if len(bind) == 1 else f"{address}: {why}")
        if not served:
            where = ", ".join(bind)
            raise P2PChatError(f"cannot listen on {where} port {wanted}: {'; '.join(failures)}")
        for failure in failures:
            log.warning("host: not listening on %s", failure)
        return served

    async def async_close(self) -> None:
        """Say goodbye to everyone, withdraw the advertisement, stop the relay."""
        self._remove_sink()
        if self.participant is not None:
            await self.participant.async_close()
        if self.advertiser is not None:
            await self.advertiser.async_close()
        await self.relay.async_close()
