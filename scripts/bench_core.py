#!/usr/bin/env python3
"""Benchmark the protocol core beside raw primitives measured in the same run.

    python scripts/bench_core.py [--quick] [--json PATH]

Every figure is printed beside its baseline and the ratio (ours / raw as a
throughput ratio, or raw / ours for costs), with OK or MISS against the
targets of issue 2. Identity keys are generated before any timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import msgpack
from cryptography.hazmat.primitives.asymmetric import rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p2pchat.proto.framing import FrameDecoder
from p2pchat.proto.handshake import Handshake, Role
from p2pchat.proto.messages import deliver_head, encode_deliver, parse_body, send_head
from p2pchat.proto.oaep import OAEP_PADDING
from p2pchat.proto.record import RecordReceiver, RecordSender, record_size

SIZES = (64, 1024, 65536)
TARGETS = {64: 0.30, 65536: 0.60}  # record seal+open vs raw AES-GCM, by payload size
HANDSHAKE_TARGET = 1.5  # handshake CPU <= 1.5x the RSA + X25519 work it must do


def best_rate(fn: Callable[[int], None], n: int, repeats: int) -> float:
    """Operations per second of ``fn(n)`` (n operations), best of ``repeats``."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - t0)
    return n / best


def bench_records(size: int, n: int, repeats: int) -> dict[str, float]:
    payload = os.urandom(size)
    key, nonce = os.urandom(32), os.urandom(12)
    aead = AESGCM(key)
    header = b"\x02\x00"

    def raw(count: int) -> None:
        for _ in range(count):
            aead.decrypt(nonce, aead.encrypt(nonce, payload, header), header)

    secret = os.urandom(32)

    def ours(count: int) -> None:
        sender, receiver = RecordSender(secret), RecordReceiver(secret)
        decoder = FrameDecoder(parse=parse_body)
        for _ in range(count):
            wire = sender.seal_after(send_head(2, record_size(size)), payload)
            # the relay turns send into deliver; the receiver gets deliver frames
            (sent,) = decoder.feed(wire)
            (frame,) = decoder.feed(encode_deliver(1, sent.payload))
            receiver.open(frame.payload)

    def ours_endpoints(count: int) -> None:
        sender, receiver = RecordSender(secret), RecordReceiver(secret)
        decoder = FrameDecoder(parse=parse_body)
        for _ in range(count):
            wire = sender.seal_after(deliver_head(1, record_size(size)), payload)
            (frame,) = decoder.feed(wire)
            receiver.open(frame.payload)

    raw_rate = best_rate(raw, n, repeats)
    ours_rate = best_rate(ours_endpoints, n, repeats)
    relay_rate = best_rate(ours, n, repeats)
    return {"raw": raw_rate, "ours": ours_rate, "with_relay_hop": relay_rate}


def bench_decode(n: int, repeats: int) -> dict[str, float]:
    bodies = [msgpack.packb({"t": "deliver", "from": 3, "p": os.urandom(100)}) for _ in range(64)]
    stream = b"".join(len(b).to_bytes(4, "big") + b for b in bodies)

    def raw(count: int) -> None:
        for _ in range(count // len(bodies)):
            for b in bodies:
                msgpack.unpackb(b)

    def ours(count: int) -> None:
        decoder = FrameDecoder(parse=parse_body)
        for _ in range(count // len(bodies)):
            decoder.feed(stream)

    return {"raw": best_rate(raw, n, repeats), "ours": best_rate(ours, n, repeats)}


def bench_handshake(keys: list[rsa.RSAPrivateKey], n: int) -> dict[str, float]:
    ka, kb = keys
    pa, pb = ka.public_key(), kb.public_key()
    raw_times, ours_times = [], []
    for _ in range(n):
        t0 = time.process_time()
        ea, eb = x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
        ea.exchange(eb.public_key())
        eb.exchange(ea.public_key())
        ca, cb = pb.encrypt(os.urandom(32), OAEP_PADDING), pa.encrypt(os.urandom(32), OAEP_PADDING)
        kb.decrypt(ca, OAEP_PADDING)
        ka.decrypt(cb, OAEP_PADDING)
        raw_times.append(time.process_time() - t0)

        t0 = time.process_time()
        i = Handshake(Role.INITIATOR, ka, name="bench", rng=os.urandom, now=0.0)
        r = Handshake(Role.RESPONDER, kb, name="bench", rng=os.urandom, now=0.0)
        m2 = r.receive(i.initiate())
        assert m2 is not None
        m3 = i.receive(m2)
        assert m3 is not None
        m4 = r.receive(m3)
        assert m4 is not None
        i.receive(m4)
        ours_times.append(time.process_time() - t0)
        assert i.complete and r.complete
    return {
        "raw_ms": statistics.median(raw_times) * 1e3,
        "ours_ms": statistics.median(ours_times) * 1e3,
    }


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISS"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (~10 s)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    n, repeats, hs_n = (5_000, 3, 20) if args.quick else (20_000, 5, 50)

    keys = [rsa.generate_private_key(65537, 3072) for _ in range(2)]  # before any timing
    results: dict[str, object] = {"python": sys.version.split()[0], "quick": args.quick}

    print(f"{'measurement':34} {'ours':>14} {'raw':>14} {'ratio':>7}  target")
    hs = bench_handshake(keys, hs_n)
    ratio = hs["ours_ms"] / hs["raw_ms"]
    results["handshake"] = {**hs, "ratio": ratio, "target": HANDSHAKE_TARGET}
    print(
        f"{'handshake CPU, both sides (ms)':34} {hs['ours_ms']:14.2f} {hs['raw_ms']:14.2f} "
        f"{ratio:7.2f}  <= {HANDSHAKE_TARGET} {verdict(ratio <= HANDSHAKE_TARGET)}"
    )
    for size in SIZES:
        count = n if size < 65536 else max(500, n // 10)
        rec = bench_records(size, count, repeats)
        ratio = rec["ours"] / rec["raw"]
        target = TARGETS.get(size)
        mark = f">= {target} {verdict(ratio >= target)}" if target else "-"
        results[f"record_{size}"] = {**rec, "ratio": ratio, "target": target}
        print(
            f"{f'record seal+open {size} B (ops/s)':34} {rec['ours']:14,.0f} {rec['raw']:14,.0f} "
            f"{ratio:7.2f}  {mark}"
        )
        print(
            f"{'  + relay decode/re-encode hop':34} {rec['with_relay_hop']:14,.0f} "
            f"{'':14} {rec['with_relay_hop'] / rec['raw']:7.2f}  -"
        )
    dec = bench_decode(n * 4, repeats)
    ratio = dec["ours"] / dec["raw"]
    results["frame_decode"] = {**dec, "ratio": ratio}
    print(
        f"{'frame decode+validate (frames/s)':34} {dec['ours']:14,.0f} {dec['raw']:14,.0f} "
        f"{ratio:7.2f}  -"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
