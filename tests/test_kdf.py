"""HKDF against RFC 5869's vectors, and our OAEP against pyca/cryptography's."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from p2pchat.errors import LocalProtocolError
from p2pchat.proto.kdf import LABEL_PREFIX, expand_label, hkdf_expand, hkdf_extract, sha256
from p2pchat.proto.oaep import oaep_decrypt, oaep_encrypt

# RFC 5869 appendix A, test cases 1 to 3 (SHA-256)
RFC5869 = [
    pytest.param(
        bytes.fromhex("0b" * 22),
        bytes.fromhex("000102030405060708090a0b0c"),
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        42,
        "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
        id="A.1-basic",
    ),
    pytest.param(
        bytes(range(0x00, 0x50)),
        bytes(range(0x60, 0xB0)),
        bytes(range(0xB0, 0x100)),
        82,
        "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
        "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
        "cc30c58179ec3e87c14c01d5c1f3434f1d87",
        id="A.2-long",
    ),
    pytest.param(
        bytes.fromhex("0b" * 22),
        b"",
        b"",
        42,
        "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
        id="A.3-empty-salt-and-info",
    ),
]


@pytest.mark.parametrize(("ikm", "salt", "info", "length", "prk", "okm"), RFC5869)
def test_hkdf_rfc5869(
    ikm: bytes, salt: bytes, info: bytes, length: int, prk: str, okm: str
) -> None:
    got_prk = hkdf_extract(salt, ikm)
    assert got_prk.hex() == prk
    assert hkdf_expand(got_prk, info, length).hex() == okm


def test_empty_salt_means_hash_length_zeros() -> None:
    ikm = b"input keying material"
    assert hkdf_extract(b"", ikm) == hkdf_extract(bytes(32), ikm)


def test_expand_label_prefixes_the_label() -> None:
    secret = bytes(range(32))
    assert LABEL_PREFIX == b"p2pchat/1 "
    assert expand_label(secret, b"key", b"ctx", 32) == hkdf_expand(secret, b"p2pchat/1 keyctx", 32)
    assert expand_label(secret, b"i traffic", b"", 32) != expand_label(
        secret, b"r traffic", b"", 32
    )


def test_sha256_concatenates_its_parts() -> None:
    assert sha256(b"ab", b"c") == sha256(b"abc") == sha256(b"a", b"", b"bc")
    assert sha256().hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert (
        sha256(b"abc").hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


# ------------------------------------------------------------------ OAEP

PYCA_OAEP = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)
SEED = bytes(range(32))


@pytest.fixture(scope="module")
def key(rsa_keys: tuple[rsa.RSAPrivateKey, ...]) -> rsa.RSAPrivateKey:
    return rsa_keys[0]


@pytest.mark.parametrize("message", [b"", b"\x00", bytes(range(32)), b"m" * 318])
def test_oaep_encrypt_is_standard_oaep(key: rsa.RSAPrivateKey, message: bytes) -> None:
    ct = oaep_encrypt(key.public_key(), message, SEED)
    assert len(ct) == 384
    assert key.decrypt(ct, PYCA_OAEP) == message
    assert oaep_decrypt(key, ct) == message


def test_oaep_decrypt_reads_pyca_ciphertexts(key: rsa.RSAPrivateKey) -> None:
    ct = key.public_key().encrypt(b"secret" * 5, PYCA_OAEP)
    assert oaep_decrypt(key, ct) == b"secret" * 5


def test_same_seed_same_ciphertext_other_seed_other_ciphertext(key: rsa.RSAPrivateKey) -> None:
    pub = key.public_key()
    first = oaep_encrypt(pub, b"ms", SEED)
    assert oaep_encrypt(pub, b"ms", SEED) == first
    assert oaep_encrypt(pub, b"ms", SEED[::-1]) != first
    assert oaep_encrypt(pub, b"mt", SEED) != first


def test_oaep_ciphertext_is_bound_to_the_key(rsa_keys: tuple[rsa.RSAPrivateKey, ...]) -> None:
    ct = oaep_encrypt(rsa_keys[0].public_key(), b"for key 0", SEED)
    assert oaep_decrypt(rsa_keys[1], ct) is None


def test_oaep_message_length_limit(key: rsa.RSAPrivateKey) -> None:
    # k - 2*hLen - 2 = 384 - 66 = 318 bytes at most
    with pytest.raises(LocalProtocolError):
        oaep_encrypt(key.public_key(), b"m" * 319, SEED)


@pytest.mark.parametrize("seed", [b"", bytes(31), bytes(33)])
def test_oaep_seed_must_be_32_bytes(key: rsa.RSAPrivateKey, seed: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        oaep_encrypt(key.public_key(), b"m", seed)


@pytest.mark.parametrize(
    "ciphertext",
    [
        pytest.param(b"", id="empty"),
        pytest.param(bytes(383), id="one-byte-short"),
        pytest.param(bytes(385), id="one-byte-long"),
        pytest.param(bytes(384), id="zeros"),
        pytest.param(b"\xff" * 384, id="above-modulus"),
        pytest.param(bytes(range(256)) + bytes(range(128)), id="garbage"),
    ],
)
def test_oaep_decrypt_of_garbage_is_none(key: rsa.RSAPrivateKey, ciphertext: bytes) -> None:
    assert oaep_decrypt(key, ciphertext) is None


def test_oaep_decrypt_of_a_tampered_ciphertext_is_none(key: rsa.RSAPrivateKey) -> None:
    ct = bytearray(oaep_encrypt(key.public_key(), b"ms", SEED))
    for position in (0, 1, 100, 383):
        tampered = bytearray(ct)
        tampered[position] ^= 0x01
        assert oaep_decrypt(key, bytes(tampered)) is None
