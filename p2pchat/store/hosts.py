"""Where each pinned host was last reached: ``known_hosts.json`` under --home.

A joiner remembers, per host fingerprint, the address and port that worked
and the addresses the host advertised then. On the next join by name (or on a
reconnect) they are tried alongside mDNS, so ``p2pchat join bob`` still works
on a network that blocks multicast once bob has been met. They are hints
only: the handshake proves the key, and a remembered address that now leads
to someone else is refused like any other impostor. The file is bounded
(hosts and addresses per host) and written 0600; a broken file is ignored
(and rewritten), never fatal: it only costs a slower join.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from p2pchat.errors import P2PChatError
from p2pchat.store.identity import write_private

__all__ = ["HostBook", "KnownHost"]

log = logging.getLogger("p2pchat.store.hosts")

FILE_NAME: Final = "known_hosts.json"
#: Hosts remembered, at most (the least recently reached are forgotten first).
MAX_HOSTS: Final = 64
#: Addresses kept per host, at most.
MAX_ADDRESSES: Final = 8
_MAX_FILE: Final = 256 * 1024


@dataclass(frozen=True, slots=True)
class KnownHost:
    fingerprint: bytes
    addresses: tuple[str, ...]  #: the one that worked first, then the others advertised
    port: int
    reached: float  #: Unix time of the last successful connection


def _b32(fp: bytes) -> str:
    return base64.b32encode(fp).decode("ascii").rstrip("=")


def _unb32(text: str) -> bytes:
    return base64.b32decode(text + "=" * (-len(text) % 8))


class HostBook:
    """The remembered hosts of one home (module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def open(cls, home: Path) -> HostBook:
        return cls(home / FILE_NAME)

    def get(self, fp: bytes) -> KnownHost | None:
        return self._read().get(fp)

    def remember(self, fp: bytes, used: str, port: int, advertised: tuple[str, ...] = ()) -> None:
        """``fp`` was reached at ``used``:``port`` (and advertised ``advertised``)."""
        hosts = self._read()
        addresses = tuple(dict.fromkeys((used, *advertised)))[:MAX_ADDRESSES]
        hosts[fp] = KnownHost(fp, addresses, port, time.time())
        keep = sorted(hosts.values(), key=lambda h: h.reached, reverse=True)[:MAX_HOSTS]
        doc = {
            "hosts": {
                _b32(h.fingerprint): {
                    "addresses": list(h.addresses),
                    "port": h.port,
                    "reached": h.reached,
                }
                for h in keep
            }
        }
        try:
            write_private(self.path, json.dumps(doc, indent=1).encode("utf-8"))
        except (OSError, P2PChatError) as exc:  # a read-only home: only a slower next join
            log.info("cannot remember the host's address: %s", exc)

    def _read(self) -> dict[bytes, KnownHost]:
        try:
            raw = self.path.read_bytes()[:_MAX_FILE]
        except OSError:
            return {}
        out: dict[bytes, KnownHost] = {}
        with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
            doc: Any = json.loads(raw)
            for key, entry in dict(doc["hosts"]).items():
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    fp = _unb32(str(key))
                    addrs = tuple(str(a) for a in entry["addresses"])[:MAX_ADDRESSES]
                    port = int(entry["port"])
                    if len(fp) == 32 and addrs and 0 < port < 65536:
                        out[fp] = KnownHost(fp, addrs, port, float(entry["reached"]))
        return out
