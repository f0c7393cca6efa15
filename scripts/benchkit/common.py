"""Constants, targets, run plans and small helpers shared by every module."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from typing import Any

LOOPBACK = "127.0.0.1"

#: The issue's targets (see Bench.row for how each is checked).
TARGET_HANDSHAKE = 2.0  # p50 <= 2x (bare crypto + one loopback RTT)
TARGET_LATENCY = 2.0  # p50 <= 2x the unbatched raw chain
TARGET_SMALL = 0.30  # msgs/s >= 0.30 of the unbatched raw chain
TARGET_LARGE = 0.50  # MB/s >= 0.50 of the unbatched raw chain
TARGET_IDLE_KIB = 64.0  # KiB per idle registered connection, strictly below
TARGET_DISCOVERY = 0.3  # s, browse start -> host resolved, p50 strictly below
TARGET_JOIN = 1.0  # s, join process start -> session ready, p50 strictly below

SMALL = 100  # bytes of text per small message
LARGE = 64 * 1024  # bytes of text per large message (the protocol's maximum)
#: messages in flight (sent, not yet acknowledged), the same on both paths:
#: enough that neither the raw chain nor the product's acks, which a durable
#: outbox sends after its debounced 50 ms save, are held back by the window
WINDOW_SMALL = 5000
WINDOW_LARGE = 128

U32 = struct.Struct(">I")

MIB = 1024 * 1024

STEPS = (
    "handshake",
    "discovery",
    "latency",
    "small",
    "large",
    "file",
    "fanout",
    "memory",
    "attack",
)

#: Sample counts and durations (seconds) of the quick and the full run, and
#: the hard time budget of each (a safety net: past it, the run stops with an
#: error). Throughput runs are (warm-up, measured) seconds.
PLANS: dict[str, dict[str, Any]] = {
    "quick": {
        "budget": 110.0,
        "handshakes": 30,
        "rtt_pings": 200,
        "crypto_reps": 30,
        "browses": 5,
        "joins": 3,
        "latency_msgs": 200,
        "throughput": (0.3, 0.8),
        "fanout": (2, 10),
        "fanout_time": (0.3, 0.8),
        "file": (32, 2),  # MiB per file, files sent (one ``p2pchat send`` each)
        "attack_rtts": 200,  # honest round trips per attack
        "attack_hostile": 12,
    },
    "full": {
        "budget": 590.0,
        "handshakes": 100,
        "rtt_pings": 1000,
        "crypto_reps": 100,
        "browses": 20,
        "joins": 10,
        "latency_msgs": 1000,
        "throughput": (0.5, 5.0),
        "fanout": (2, 10, 50),
        "fanout_time": (0.5, 4.0),
        "file": (64, 3),
        "attack_rtts": 1000,
        "attack_hostile": 12,
    },
}


class BenchError(Exception):
    """A measurement could not run."""


# ====================================================================== helpers


def pct(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    data = sorted(values)
    if not data:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(data)))
    return data[rank - 1]


def raw_frame(payload: bytes) -> bytes:
    return U32.pack(len(payload)) + payload


def split_frames(buf: bytearray) -> tuple[list[bytes], int]:
    """Complete frame payloads at the start of ``buf``, and the bytes they span."""
    out: list[bytes] = []
    pos, end = 0, len(buf)
    while end - pos >= 4:
        (size,) = U32.unpack_from(buf, pos)
        nxt = pos + 4 + size
        if nxt > end:
            break
        out.append(bytes(buf[pos + 4 : nxt]))
        pos = nxt
    return out, pos
