"""Proof of key possession at registration (PROTOCOL.md 3.3), sans-I/O.

The relay encrypts a fresh 32-byte secret under the key a ``hello`` names,
with RSA-OAEP and the label ``REGISTER_LABEL``; only the holder of the
private key can return it in a ``proof``. The relay spends one public-key
operation per registration, the registrant one private-key operation. The
label keeps this apart from the handshake's wrapped secrets (empty label):
neither can be made to decrypt the other's ciphertexts.
"""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives.asymmetric import rsa

from p2pchat.proto.messages import PROOF_LEN
from p2pchat.proto.oaep import REGISTER_PADDING, oaep_decrypt

__all__ = ["answer_challenge", "check_proof", "make_challenge"]


def make_challenge(key: rsa.RSAPublicKey, secret: bytes) -> bytes:
    """The relay's ``challenge.c``: ``secret`` (``PROOF_LEN`` fresh random bytes)
    encrypted under ``key``."""
    if len(secret) != PROOF_LEN:
        raise ValueError(f"a challenge secret is {PROOF_LEN} bytes")
    return key.encrypt(secret, REGISTER_PADDING)


def answer_challenge(key: rsa.RSAPrivateKey, c: bytes) -> bytes | None:
    """The participant's ``proof.n`` for challenge ``c``, or None if ``c`` is
    not a registration challenge for this key."""
    secret = oaep_decrypt(key, c, REGISTER_PADDING)
    if secret is None or len(secret) != PROOF_LEN:
        return None
    return secret


def check_proof(secret: bytes, n: bytes) -> bool:
    """Does ``n`` return the challenge's ``secret`` (constant time)."""
    return hmac.compare_digest(secret, n)
