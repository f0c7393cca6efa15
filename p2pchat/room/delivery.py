"""Delivery accounting: the acks we owe, and the acks our messages received.

Pure bookkeeping over the :class:`~p2pchat.store.outbox.Outbox` (no I/O of its
own). A message from a peer is acknowledged only once its id is on disk (the
outbox calls back after each save), so that a receiver that crashes and
restarts never shows it twice; without a durable outbox the ack goes at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from p2pchat.proto.app import MAX_ACK_IDS, Ack
from p2pchat.room.events import Delivered, PeerInfo
from p2pchat.room.peer import Peer, PeerState
from p2pchat.store.outbox import Outbox

__all__ = ["Delivery", "Missing", "missing", "owed_to", "refusal_words"]


@dataclass(frozen=True, slots=True)
class Missing:
    """One recipient that has not acknowledged ``count`` of our messages, and why."""

    name: str
    fingerprint: bytes
    count: int
    why: str


def refusal_words(peer: Peer) -> str:
    """Why a refused peer does not get our messages, in a few words."""
    r = peer.refusal
    if r is None:
        return "refused"
    return f"it refused us: {r.reason}" if r.by_peer else f"refused: {r.reason}"


def status(peers: list[Peer], fp: bytes) -> str:
    """Where our session with the peer of ``fp`` stands, in a few words."""
    found = [p for p in peers if p.info.fingerprint == fp]
    if not found:
        return "not here now"
    peer = found[-1]  # the newest (a peer that came back has a new id)
    if peer.state is PeerState.READY:
        return "no acknowledgement yet"
    if peer.state is PeerState.REFUSED:
        return refusal_words(peer)
    if peer.state is PeerState.GONE:
        return "disconnected"
    if peer.state is PeerState.HEALING:
        return "its session failed, renewing"
    return "no secure session yet"


def owed_to(
    peers: list[Peer], outbox: Outbox, mine: bytes, *, connected: bool, to: bytes | None
) -> tuple[set[bytes], dict[bytes, str]]:
    """Who a message typed now is owed to, and who of them cannot get it (with
    why): everyone here now (while disconnected: those here at the last
    connection), or only ``to``; never ourselves."""
    failed: dict[bytes, str] = {}
    if connected:
        # everyone here now, whatever our session with them: one we refused
        # (or that refused us) is a recipient that does not get it
        # (but one that never proved its key was never a participant)
        owed = {
            p.info.fingerprint
            for p in peers
            if p.state is not PeerState.GONE and (p.was_ready or not p.ended)
        }
        for p in peers:
            r = p.refusal
            if p.state is PeerState.REFUSED and r is not None and r.kind.trust:
                failed[p.info.fingerprint] = refusal_words(p)
        failed.pop(mine, None)  # a twin of ours is nobody to deliver to
    else:
        owed = set(outbox.last_known)
    owed.discard(mine)
    if to is not None:
        owed &= {to}
        failed = {fp: why for fp, why in failed.items() if fp == to}
    return owed, failed


def missing(outbox: Outbox, peers: list[Peer], name_of: Callable[[bytes], str]) -> list[Missing]:
    """Per recipient, the messages it has not acknowledged (pending, or failed
    for it) and why, in the order the recipients first appear."""
    counts: dict[bytes, int] = {}
    whys: dict[bytes, str] = {}
    for msg in outbox.undelivered():
        for fp in (*msg.recipients, *msg.failed):
            counts[fp] = counts.get(fp, 0) + 1
        whys.update(msg.failed)
    return [
        Missing(name_of(fp), fp, n, whys.get(fp) or status(peers, fp)) for fp, n in counts.items()
    ]


class Delivery:
    """Acks owed to peers (by peer id) and Delivered events for acks received."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._owed: dict[int, list[bytes]] = {}

    def received(self, peer: PeerInfo, msg_id: bytes) -> tuple[bool, Ack | None]:
        """A chat message arrived: (shown for the first time?, the ack to send now
        or None if it waits for the next save)."""
        if self.outbox.durable:
            self._owed.setdefault(peer.peer_id, []).append(msg_id)
            self.outbox.request_save()
            ack = None
        else:
            ack = Ack((msg_id,))
        return self.outbox.first_sighting(peer.fingerprint, msg_id), ack

    def take_owed(self) -> dict[int, list[Ack]]:
        """The acks whose ids are now on disk, by peer id, in chunks a message can hold."""
        owed, self._owed = self._owed, {}
        return {
            peer_id: [Ack(tuple(ids[i : i + MAX_ACK_IDS])) for i in range(0, len(ids), MAX_ACK_IDS)]
            for peer_id, ids in owed.items()
        }

    def acknowledged(self, peer: PeerInfo, msg_ids: tuple[bytes, ...]) -> list[Delivered]:
        """``peer`` acknowledged these ids: what that means for each of our messages."""
        out = []
        for mid in msg_ids:
            done = self.outbox.acked(peer.fingerprint, mid)
            if done is not None:
                out.append(
                    Delivered(
                        mid,
                        peer,
                        complete=not done.recipients and not done.failed,
                        delivered=done.total - len(done.recipients) - len(done.failed),
                        total=done.total,
                    )
                )
        return out
