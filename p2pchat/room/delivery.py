"""Delivery accounting: the acks we owe, and the acks our messages received.

Pure bookkeeping over the :class:`~p2pchat.store.outbox.Outbox` (no I/O of its
own). A message from a peer is acknowledged only once its id is on disk (the
outbox calls back after each save), so that a receiver that crashes and
restarts never shows it twice; without a durable outbox the ack goes at once.
"""

from __future__ import annotations

from p2pchat.proto.app import MAX_ACK_IDS, Ack
from p2pchat.room.events import Delivered, PeerInfo
from p2pchat.store.outbox import Outbox

__all__ = ["Delivery"]


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
                        complete=not done.recipients,
                        delivered=done.total - len(done.recipients),
                        total=done.total,
                    )
                )
        return out
