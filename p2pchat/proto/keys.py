"""Identity key checks and fingerprints (pure: bytes in, values out).

A peer's identity is the SHA-256 of its RSA SubjectPublicKeyInfo DER. People
compare it in the form :func:`format_fingerprint` gives: 52 base32 letters and
digits in groups of four, which read aloud without ambiguity (no 0/O or 1/l).
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from p2pchat.config import RSA_EXPONENT, RSA_MAX_BITS, RSA_MIN_BITS
from p2pchat.errors import ConfigError, PeerKeyError

__all__ = [
    "fingerprint",
    "format_fingerprint",
    "load_peer_key",
    "parse_fingerprint",
    "public_der",
    "short_fingerprint",
]

FINGERPRINT_LEN = 32


def public_der(key: rsa.RSAPublicKey) -> bytes:
    """The SubjectPublicKeyInfo DER encoding of ``key``."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fingerprint(spki_der: bytes) -> bytes:
    """SHA-256 of a SubjectPublicKeyInfo DER: the identity of a peer."""
    return hashlib.sha256(spki_der).digest()


def format_fingerprint(fp: bytes) -> str:
    """``ABCD-EFGH-...``: the 32-byte fingerprint in base32, in 13 groups of four."""
    text = base64.b32encode(fp).decode("ascii").rstrip("=")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def short_fingerprint(fp: bytes) -> str:
    """The first three groups of :func:`format_fingerprint`, for lists and prompts."""
    return "-".join(format_fingerprint(fp).split("-")[:3])


def parse_fingerprint(text: str) -> bytes:
    """Parse a fingerprint given by a user: base32 (any case, with or without
    dashes and spaces) or 64 hex digits (colons allowed). Raises ConfigError."""
    cleaned = "".join(ch for ch in text if ch not in " -:").upper()
    if len(cleaned) == 64:
        try:
            return bytes.fromhex(cleaned)
        except ValueError:
            pass
    if len(cleaned) == 52:
        try:
            fp = base64.b32decode(cleaned + "====")
        except (binascii.Error, ValueError):
            fp = b""
        if len(fp) == FINGERPRINT_LEN:
            return fp
    raise ConfigError(
        f"not a fingerprint: {text!r} (expected 52 base32 characters as "
        "'p2pchat id' prints them, or 64 hex digits)"
    )


def load_peer_key(spki_der: bytes) -> rsa.RSAPublicKey:
    """Load a peer's SubjectPublicKeyInfo DER and check it is an acceptable
    identity: RSA, 3072 to 8192 bits, public exponent 65537."""
    try:
        key = serialization.load_der_public_key(spki_der)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # unknown algorithm OID
        raise PeerKeyError("peer sent a public key that does not parse") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise PeerKeyError("peer's identity key is not an RSA key")
    if public_der(key) != spki_der:
        # one key, one encoding: otherwise one key could have two fingerprints
        raise PeerKeyError("peer's key is not a canonical SubjectPublicKeyInfo DER")
    bits = key.key_size
    if not RSA_MIN_BITS <= bits <= RSA_MAX_BITS:
        raise PeerKeyError(
            f"peer's RSA key has {bits} bits (accepted: {RSA_MIN_BITS} to {RSA_MAX_BITS})"
        )
    if key.public_numbers().e != RSA_EXPONENT:
        raise PeerKeyError(f"peer's RSA key has public exponent other than {RSA_EXPONENT}")
    return key
