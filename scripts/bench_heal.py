"""How long a session takes to heal after a record fails, and that nothing is lost.

A relay and two participants in this process, on 127.0.0.1. Each round
alice sends a burst of messages to bob and, in the middle of it, a record that
fails authentication (a flipped bit, as a tampering relay would make). Bob
drops the session and starts a fresh handshake; the outbox resends what bob
had not acknowledged. Measured per round: from the bad record to a renewed
session on both sides, and to every message of the burst acknowledged. Then:
each message shown exactly once.

The backoff for quick failures (docs/PROTOCOL.md §6.5) is set to 0 here, so
that every round measures one heal and not the wait before it.

    python scripts/bench_heal.py [--rounds 20] [--burst 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from p2pchat.net.relay import Relay
from p2pchat.proto.app import KeepAlive, encode_app
from p2pchat.proto.messages import encode_send
from p2pchat.proto.record import record_size
from p2pchat.room import sessions as sessions_module
from p2pchat.room.bus import EventBus
from p2pchat.room.events import Event, MessageReceived, SessionReady
from p2pchat.room.participant import Participant
from p2pchat.store.identity import Identity, TrustStore

TIMEOUT = 20.0


async def run(rounds: int, burst: int) -> int:
    sessions_module.HEAL_STABLE = 0.0  # type: ignore[misc]  # every heal is a first one
    keys = [rsa.generate_private_key(65537, 3072) for _ in range(2)]
    with tempfile.TemporaryDirectory() as tmp:
        relay = Relay(owner_key=Identity.from_key(keys[0]).public_der)
        (_, port), *_ = await relay.async_start(["127.0.0.1"], 0)
        events: dict[str, list[Event]] = {"bob": [], "alice": []}
        parts: dict[str, Participant] = {}
        for i, name in enumerate(("bob", "alice")):
            home = Path(tmp) / name
            home.mkdir()
            bus: EventBus[Event] = EventBus()
            bus.add_sink(events[name].append)
            p = Participant(Identity.from_key(keys[i]), name, TrustStore.open(home), bus)
            await p.async_connect("127.0.0.1", port, TIMEOUT)
            parts[name] = p
        bob, alice = parts["bob"], parts["alice"]
        assert await alice.bus.wait_for(lambda: alice.is_ready(bob.my_id or 0), TIMEOUT)

        def renewed(name: str) -> int:
            return sum(1 for e in events[name] if isinstance(e, SessionReady) and e.renewed)

        heal_ms: list[float] = []
        done_ms: list[float] = []
        sent: list[str] = []
        for r in range(rounds):
            before = (renewed("bob"), renewed("alice"))
            for i in range(burst // 2):
                text = f"round {r} message {i}"
                alice.send_text(text)
                sent.append(text)
            peer = alice.sessions.peers[bob.my_id or 0]
            assert peer.result is not None
            body = encode_app(KeepAlive(reply=False))
            record = bytearray(peer.result.sender.seal(body))
            assert len(record) == record_size(len(body))
            record[-1] ^= 1
            t0 = time.perf_counter()
            alice.write(encode_send(bob.my_id or 0, bytes(record)))
            for i in range(burst // 2, burst):  # sent on the failed session: resent later
                text = f"round {r} message {i}"
                alice.send_text(text)
                sent.append(text)
            ok = await bob.bus.wait_for(
                lambda b=before: renewed("bob") > b[0] and renewed("alice") > b[1], TIMEOUT
            )
            if not ok:
                print(f"round {r}: no renewed session within {TIMEOUT:g} s", file=sys.stderr)
                return 1
            heal_ms.append((time.perf_counter() - t0) * 1000)
            ok = await alice.bus.wait_for(lambda: not alice.undelivered(), TIMEOUT)
            if not ok:
                print(f"round {r}: messages not acknowledged", file=sys.stderr)
                return 1
            done_ms.append((time.perf_counter() - t0) * 1000)
        shown = [e.text for e in events["bob"] if isinstance(e, MessageReceived)]
        for p in parts.values():
            await p.async_close()
        await relay.async_close()
    lost = len(set(sent) - set(shown))
    twice = len(shown) - len(set(shown))

    def pct(xs: list[float], q: float) -> float:
        return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]

    print(f"rounds {rounds}, {burst} messages each ({len(sent)} in all)")
    print(
        f"bad record -> renewed on both sides: p50 {statistics.median(heal_ms):.1f} ms, "
        f"p95 {pct(heal_ms, 0.95):.1f} ms"
    )
    print(
        f"bad record -> whole burst acknowledged: p50 {statistics.median(done_ms):.1f} ms, "
        f"p95 {pct(done_ms, 0.95):.1f} ms"
    )
    in_order = shown == sorted(shown, key=sent.index)
    print(f"lost {lost}, shown twice {twice}, in order: {in_order}")
    return 0 if lost == 0 and twice == 0 and in_order else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--burst", type=int, default=50)
    args = parser.parse_args()
    return asyncio.run(run(args.rounds, args.burst))


if __name__ == "__main__":
    sys.exit(main())
