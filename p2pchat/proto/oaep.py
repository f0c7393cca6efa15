"""RSA-OAEP (SHA-256, MGF1-SHA-256) with the seed passed in.

The handshake's wrapped secrets use the empty label; the relay's registration
challenge uses ``REGISTER_LABEL``. A ciphertext made for one never decrypts
as the other (the label's hash is checked inside OAEP), so a relay cannot use
the challenge to have a participant decrypt a handshake secret for it, nor a
peer the reverse.

Encryption is written here (RFC 8017 section 7.1.1) so that the randomness is
injectable and the handshake's test vectors are exact bytes; its output is
ordinary OAEP, checked in the tests by decrypting with pyca/cryptography.
Decryption, the private-key side, is pyca/cryptography's (constant time).
"""

from __future__ import annotations

import hashlib
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from p2pchat.errors import LocalProtocolError

__all__ = [
    "OAEP_PADDING",
    "REGISTER_LABEL",
    "REGISTER_PADDING",
    "oaep_decrypt",
    "oaep_encrypt",
]

HASH_LEN: Final = 32
#: The OAEP label of the relay's registration challenge (PROTOCOL.md 3.3).
REGISTER_LABEL: Final = b"p2pchat/1 register"
OAEP_PADDING: Final = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)
REGISTER_PADDING: Final = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=REGISTER_LABEL
)


def _mgf1(seed: bytes, length: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(out[:length])


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def oaep_encrypt(key: rsa.RSAPublicKey, message: bytes, seed: bytes, label: bytes = b"") -> bytes:
    """RSAES-OAEP-ENCRYPT of ``message`` under ``key`` with the given 32-byte
    ``seed`` and ``label``."""
    numbers = key.public_numbers()
    k = (numbers.n.bit_length() + 7) // 8
    if len(seed) != HASH_LEN:
        raise LocalProtocolError("OAEP seed must be 32 bytes")
    if len(message) > k - 2 * HASH_LEN - 2:
        raise LocalProtocolError("message too long for OAEP")
    padding_string = bytes(k - len(message) - 2 * HASH_LEN - 2)
    db = hashlib.sha256(label).digest() + padding_string + b"\x01" + message
    masked_db = _xor(db, _mgf1(seed, k - HASH_LEN - 1))
    masked_seed = _xor(seed, _mgf1(masked_db, HASH_LEN))
    em = int.from_bytes(b"\x00" + masked_seed + masked_db, "big")
    return pow(em, numbers.e, numbers.n).to_bytes(k, "big")


def oaep_decrypt(
    key: rsa.RSAPrivateKey, ciphertext: bytes, pad: padding.OAEP = OAEP_PADDING
) -> bytes | None:
    """The plaintext, or None when the ciphertext does not decrypt (no detail
    on why); ``pad`` is ``OAEP_PADDING`` (empty label) or ``REGISTER_PADDING``."""
    if len(ciphertext) != (key.key_size + 7) // 8:
        return None
    try:
        return key.decrypt(ciphertext, pad)
    except ValueError:
        return None
