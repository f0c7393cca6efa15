"""Shared fixtures: identity keys generated once per session, deterministic randomness."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from p2pchat.config import RSA_BITS, RSA_EXPONENT


class DetRng:
    """A deterministic byte stream: SHA-256(label || counter) blocks, concatenated.

    ``rng(n)`` returns the next ``n`` bytes of the stream, so two instances
    made with the same label give the same bytes for the same calls (use it
    wherever the code under test takes an ``rng``).
    """

    def __init__(self, label: str | bytes) -> None:
        self.label = label.encode() if isinstance(label, str) else label
        self._counter = 0
        self._buf = b""
        self.calls: list[bytes] = []  #: every output, in order

    def __call__(self, n: int) -> bytes:
        while len(self._buf) < n:
            block = self.label + b"\x00" + self._counter.to_bytes(8, "big")
            self._buf += hashlib.sha256(block).digest()
            self._counter += 1
        out, self._buf = self._buf[:n], self._buf[n:]
        self.calls.append(out)
        return out


@pytest.fixture
def det_rng() -> type[DetRng]:
    """The :class:`DetRng` factory: ``det_rng("label")`` is an ``rng`` callable."""
    return DetRng


@pytest.fixture(scope="session")
def rsa_keys() -> tuple[rsa.RSAPrivateKey, ...]:
    """Three distinct RSA-3072 identity keys (e = 65537), generated once per session."""
    return tuple(
        rsa.generate_private_key(public_exponent=RSA_EXPONENT, key_size=RSA_BITS) for _ in range(3)
    )


@pytest.fixture(scope="session")
def rsa2048() -> rsa.RSAPrivateKey:
    """An RSA key below the accepted minimum size."""
    return rsa.generate_private_key(public_exponent=RSA_EXPONENT, key_size=2048)
