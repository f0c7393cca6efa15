"""What one frame costs the relay to decode: a normal 1 MiB send beside a
hostile one (an ignored key holding a million empty arrays, issue 13).

    python scripts/bench_decode.py

Before the relay's own parse hook (parse_body, generic msgpack for anything
not in the canonical layout) the hostile frame cost ~0.45 s; the relay now
uses parse_body_to_relay, which refuses it without decoding.
"""

from __future__ import annotations

import contextlib
import time

import msgpack

from p2pchat.errors import MalformedFrameError
from p2pchat.proto.messages import Send, encode, parse_body, parse_body_to_relay


def _time(parse, body: bytes, rounds: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(rounds):
        with contextlib.suppress(MalformedFrameError):
            parse(body)
    return (time.perf_counter() - start) / rounds * 1000


def main() -> None:
    normal = encode(Send(2, b"x" * (1 << 19)))[4:]
    nested = [[[] for _ in range(1000)] for _ in range(1000)]  # 10^6 empty arrays
    hostile = msgpack.packb({"t": "send", "to": 2, "p": b"x", "pad": nested})
    print(f"hostile body: {len(hostile):,} bytes")
    for name, parse in (("generic (before)", parse_body), ("relay (now)", parse_body_to_relay)):
        rounds = 3 if parse is parse_body else 1000
        print(
            f"{name:18} normal 512 KiB send {_time(parse, normal, 1000):8.4f} ms   "
            f"hostile {_time(parse, hostile, rounds):9.4f} ms"
        )


if __name__ == "__main__":
    main()
