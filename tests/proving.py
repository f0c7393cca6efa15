"""The raw test clients' side of the relay's registration challenge: they
hold the private keys of the identities they register."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import rsa

from p2pchat.proto.keys import public_der
from p2pchat.proto.messages import Challenge, Proof, encode
from p2pchat.proto.register import answer_challenge

_KEYS: dict[bytes, rsa.RSAPrivateKey] = {}


def remember(key: rsa.RSAPrivateKey) -> bytes:
    """``key``'s SPKI DER; raw clients registering it can then answer challenges."""
    der = public_der(key.public_key())
    _KEYS[der] = key
    return der


def proof_for(der: bytes, challenge: Challenge) -> bytes:
    """The encoded ``proof`` frame answering ``challenge`` for the key ``der``."""
    secret = answer_challenge(_KEYS[der], challenge.c)
    assert secret is not None, "the challenge is not for this key"
    return encode(Proof(secret))
