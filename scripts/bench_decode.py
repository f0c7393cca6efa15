"""What one frame costs the relay to decode: a normal 1 MiB send beside a
hostile one (an ignored key holding a million empty arrays, issue 13).

    python scripts/bench_decode.py

Before the relay's own parse hook (parse_body, generic msgpack for anything
not in the canonical layout) the hostile frame cost ~0.45 s; the relay now
uses parse_body_to_relay, which refuses it without decoding. The same for a
4 KiB relay-bound frame of nested arrays (decoded field by field, the junk
skipped unbuilt) and for application messages inside a session.
"""

from __future__ import annotations

import contextlib
import time

import msgpack

from p2pchat.errors import MalformedFrameError
from p2pchat.proto.app import Chat, FileData, encode_app, parse_app
from p2pchat.proto.framing import unpack
from p2pchat.proto.messages import Ping, Send, encode, parse_body, parse_body_to_relay


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
    # under the 4 KiB a relay decodes generically: ~3,700 arrays in 15s
    small = msgpack.packb(
        {"t": "ping", "token": 1, "x": [[[] for _ in range(15)] for _ in range(245)]}
    )
    ping = encode(Ping(1))[4:]
    print(f"\n4 KiB relay-bound frame: {len(small):,} bytes")
    for name, parse in (("generic (before)", parse_body), ("relay (now)", parse_body_to_relay)):
        print(
            f"{name:18} ping {_time(parse, ping, 5000) * 1000:7.1f} us   "
            f"hostile {_time(parse, small, 2000) * 1000:7.1f} us"
        )
    # inside a session: what any TOFU peer can put in a record
    chat = encode_app(Chat(b"i" * 16, "a normal line of chat"))
    data = encode_app(FileData(b"f" * 16, 0, b"d" * 65536))
    # ~256,000 empty arrays, no container over the 1,024 entries any decoder allows
    junk = [[[[] for _ in range(15)] for _ in range(16)] for _ in range(1000)]
    record = msgpack.packb({"t": "msg", "id": b"i" * 16, "text": "x", "pad": junk})
    print(f"\napplication message in a record: hostile {len(record):,} bytes")
    for name, parse in (("generic (before)", _generic_app), ("parse_app (now)", parse_app)):
        print(
            f"{name:18} chat {_time(parse, chat, 5000) * 1000:7.1f} us   "
            f"64 KiB data {_time(parse, data, 2000) * 1000:7.1f} us   "
            f"hostile {_time(parse, record, 5) * 1000:9.1f} us"
        )


def _generic_app(body: bytes) -> object:
    return unpack(body)  # what parse_app did before: decode all of it, then validate


if __name__ == "__main__":
    main()
