"""HKDF-SHA256 (RFC 5869) and the labelled expansion used by the key schedule."""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

__all__ = ["LABEL_PREFIX", "expand_label", "hkdf_expand", "hkdf_extract", "sha256"]

#: Every label of the key schedule starts with this, so no key of ours can
#: collide with one derived by another protocol from the same secret.
LABEL_PREFIX: Final = b"p2pchat/1 "
HASH_LEN: Final = 32


def sha256(*parts: bytes) -> bytes:
    """SHA-256 of the concatenation of ``parts``."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.digest()


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract(salt, IKM) = HMAC-SHA256(salt, IKM) (RFC 5869 section 2.2)."""
    return hmac.digest(salt or bytes(HASH_LEN), ikm, "sha256")


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand(PRK, info, L) (RFC 5869 section 2.3)."""
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=info).derive(prk)


def expand_label(secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    """HKDF-Expand(secret, "p2pchat/1 " || label || context, length)."""
    return hkdf_expand(secret, LABEL_PREFIX + label + context, length)
