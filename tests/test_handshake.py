"""The end-to-end handshake: two in-memory peers, and every way a peer or a relay can cheat."""

from __future__ import annotations

import dataclasses
import hmac
import re
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p2pchat.config import HANDSHAKE_TIMEOUT, PROTOCOL_NAME
from p2pchat.errors import (
    DecryptError,
    HandshakeError,
    IncompatibleVersionError,
    KeyMismatchError,
    LocalProtocolError,
    PeerKeyError,
)
from p2pchat.proto.framing import pack, unpack
from p2pchat.proto.handshake import Handshake, Role, State, format_sas
from p2pchat.proto.kdf import expand_label, hkdf_extract, sha256
from p2pchat.proto.keys import fingerprint, public_der
from p2pchat.proto.messages import HS_TAG, M1, M2, M3, M4, parse_handshake
from p2pchat.proto.oaep import oaep_decrypt, oaep_encrypt
from p2pchat.proto.record import CT_DATA, RECORD_TAG, next_secret, traffic_keys

NOW = 1000.0
NAMES = {Role.INITIATOR: "alice", Role.RESPONDER: "Bob 日本"}
Keys = tuple[rsa.RSAPrivateKey, ...]


@pytest.fixture
def make(det_rng: Callable[[str], Callable[[int], bytes]], rsa_keys: Keys) -> Callable[..., Any]:
    """``make(role, key_index=..., label=..., **kwargs)``: a Handshake with a deterministic rng."""

    def factory(role: Role, key_index: int | None = None, label: str = "", **kwargs: Any) -> Any:
        index = key_index if key_index is not None else (0 if role is Role.INITIATOR else 1)
        rng = det_rng(label or f"{role.value}-{index}")
        kwargs.setdefault("now", NOW)
        kwargs.setdefault("name", NAMES[role])
        return Handshake(role, rsa_keys[index], rng=rng, **kwargs)

    return factory


def run(i: Handshake, r: Handshake) -> tuple[bytes, bytes, bytes, bytes]:
    """Drive a whole handshake; return the four payloads."""
    m1 = i.initiate()
    m2 = r.receive(m1)
    assert m2 is not None
    m3 = i.receive(m2)
    assert m3 is not None
    m4 = r.receive(m3)
    assert m4 is not None
    assert i.receive(m4) is None
    return m1, m2, m3, m4


def parse(payload: bytes) -> Any:
    assert payload[0] == HS_TAG
    return parse_handshake(payload[1:])


def rewrite(payload: bytes, **changes: Any) -> bytes:
    """What a man in the middle sends: the message with some fields replaced."""
    msg = dataclasses.replace(parse(payload), **changes)
    return bytes((HS_TAG,)) + pack(msg.to_wire())


def flip(data: bytes, index: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def der(key: rsa.RSAPrivateKey) -> bytes:
    return public_der(key.public_key())


# ------------------------------------------------------------------ the good path


def test_handshake_completes_and_records_flow_both_ways(make: Callable[..., Any]) -> None:
    i, r = make(Role.INITIATOR), make(Role.RESPONDER)
    assert i.state is State.S0_NOTHING
    m1 = i.initiate()
    assert i.state is State.I1_SENT_M1
    m2 = r.receive(m1)
    assert r.state is State.R1_SENT_M2
    assert m2 is not None
    m3 = i.receive(m2)
    assert i.state is State.I2_KNOW_KEYS
    assert not i.complete
    assert i.result is None  # nothing usable before the responder's Finished
    assert m3 is not None
    m4 = r.receive(m3)
    assert r.complete
    assert m4 is not None
    assert i.receive(m4) is None
    assert i.complete

    a, b = i.result, r.result
    assert a is not None
    assert b is not None
    for n in range(5):
        assert b.receiver.open(a.sender.seal(b"to responder %d" % n)) == (
            CT_DATA,
            b"to responder %d" % n,
        )
        assert a.receiver.open(b.sender.seal(b"to initiator %d" % n)) == (
            CT_DATA,
            b"to initiator %d" % n,
        )
    # a record reflected back to its sender does not open
    with pytest.raises(DecryptError):
        a.receiver.open(a.sender.seal(b"reflected"))


def test_results_agree_and_name_the_other_side(make: Callable[..., Any], rsa_keys: Keys) -> None:
    i, r = make(Role.INITIATOR), make(Role.RESPONDER)
    run(i, r)
    a, b = i.result, r.result
    assert a.version == b.version == 1
    assert a.peer_name == "Bob 日本"
    assert b.peer_name == "alice"
    assert a.transcript_hash == b.transcript_hash
    assert a.peer_key == der(rsa_keys[1])
    assert b.peer_key == der(rsa_keys[0])
    assert a.peer_fingerprint == fingerprint(der(rsa_keys[1])) == i.peer_fingerprint
    assert b.peer_fingerprint == fingerprint(der(rsa_keys[0])) == r.peer_fingerprint


def test_sas_is_equal_on_both_sides_and_six_digits(make: Callable[..., Any]) -> None:
    i, r = make(Role.INITIATOR), make(Role.RESPONDER)
    run(i, r)
    assert i.result.sas == r.result.sas
    assert re.fullmatch(r"\d{3} \d{3}", i.result.sas)

    # another session (other randomness) gives another string
    i2, r2 = make(Role.INITIATOR, label="other-i"), make(Role.RESPONDER, label="other-r")
    run(i2, r2)
    assert i2.result.sas == r2.result.sas != i.result.sas


def test_format_sas_keeps_leading_zeros() -> None:
    th2 = sha256(b"th2")
    for n in range(256):
        prk = bytes([n]) * 32
        value = int.from_bytes(expand_label(prk, b"sas", th2, 8), "big") % 1_000_000
        if value < 100_000:
            break
    else:  # pragma: no cover - 256 tries at a 1-in-10 chance
        pytest.fail("no PRK with a small SAS found")
    sas = format_sas(prk, th2)
    assert sas == f"{value // 1000:03d} {value % 1000:03d}"
    assert sas.startswith("0")
    assert len(sas) == 7


def test_expected_peer_right_completes(make: Callable[..., Any], rsa_keys: Keys) -> None:
    i = make(Role.INITIATOR, expected_peer=fingerprint(der(rsa_keys[1])))
    r = make(Role.RESPONDER, expected_peer=fingerprint(der(rsa_keys[0])))
    run(i, r)
    assert i.complete
    assert r.complete


def test_expected_peer_wrong_fails_at_m2_without_m3(
    make: Callable[..., Any], rsa_keys: Keys
) -> None:
    i = make(Role.INITIATOR, expected_peer=fingerprint(der(rsa_keys[2])))
    r = make(Role.RESPONDER)
    m2 = r.receive(i.initiate())
    with pytest.raises(KeyMismatchError):
        i.receive(m2)  # raises instead of returning an M3
    assert i.state is State.FAILED
    assert i.result is None


def test_responder_expected_peer_wrong_fails_at_m1(
    make: Callable[..., Any], rsa_keys: Keys
) -> None:
    i = make(Role.INITIATOR)
    r = make(Role.RESPONDER, expected_peer=fingerprint(der(rsa_keys[2])))
    with pytest.raises(KeyMismatchError):
        r.receive(i.initiate())
    assert r.state is State.FAILED


def test_keylog_gets_the_secrets_in_use(make: Callable[..., Any]) -> None:
    logs: dict[str, dict[str, bytes]] = {"i": {}, "r": {}}
    i = make(Role.INITIATOR, keylog=lambda label, s: logs["i"].__setitem__(label, s))
    r = make(Role.RESPONDER, keylog=lambda label, s: logs["r"].__setitem__(label, s))
    run(i, r)
    assert set(logs["i"]) == {"i traffic", "r traffic", "exporter"}
    assert logs["i"] == logs["r"]
    assert len(set(logs["i"].values())) == 3

    # the initiator seals with "i traffic", the responder with "r traffic"
    for sender, label in ((i.result.sender, "i traffic"), (r.result.sender, "r traffic")):
        record = sender.seal(b"keylogged")
        key, iv = traffic_keys(logs["i"][label])
        assert AESGCM(key).decrypt(iv, record[2:], record[:2]) == b"keylogged"


def test_rekey_through_several_epochs(make: Callable[..., Any]) -> None:
    log: dict[str, bytes] = {}
    i = make(Role.INITIATOR, rekey_interval=3, keylog=log.__setitem__)
    r = make(Role.RESPONDER, rekey_interval=3)
    run(i, r)
    a, b = i.result, r.result
    sent = []
    for n in range(10):
        record = a.sender.seal(b"same")
        sent.append(record)
        assert b.receiver.open(record) == (CT_DATA, b"same")
        assert a.receiver.open(b.sender.seal(b"back %d" % n)) == (CT_DATA, b"back %d" % n)
    assert a.sender.epoch == b.receiver.epoch == 3
    # seq 0 of epoch 0 and seq 0 of epoch 1: same plaintext, different key
    assert sent[0] != sent[3]
    key1, iv1 = traffic_keys(next_secret(log["i traffic"]))
    header = bytes((RECORD_TAG, CT_DATA))
    assert sent[3] == header + AESGCM(key1).encrypt(iv1, b"same", header)


def test_fixed_randomness_gives_byte_identical_handshakes(make: Callable[..., Any]) -> None:
    def seeded(role: Role, **kwargs: Any) -> Any:
        return make(role, seeded_oaep=True, **kwargs)

    first_i, first_r = seeded(Role.INITIATOR), seeded(Role.RESPONDER)
    again_i, again_r = seeded(Role.INITIATOR), seeded(Role.RESPONDER)
    first, again = run(first_i, first_r), run(again_i, again_r)
    assert first == again
    assert first_i.result.transcript_hash == again_i.result.transcript_hash
    assert first_i.result.sas == again_i.result.sas
    other = seeded(Role.INITIATOR, label="someone else").initiate()
    assert other != first[0]


def test_unseeded_oaep_still_interoperates(make: Callable[..., Any]) -> None:
    # the default draws OAEP seeds from OpenSSL: same rng, different ciphertexts, same protocol
    first = run(make(Role.INITIATOR), make(Role.RESPONDER))
    i, r = make(Role.INITIATOR), make(Role.RESPONDER, seeded_oaep=True)
    again = run(i, r)
    assert first[0] == again[0]  # M1 has no OAEP
    assert parse(first[1]).ct != parse(again[1]).ct
    assert i.result.sas == r.result.sas


def test_ephemeral_and_master_secrets_are_dropped(make: Callable[..., Any]) -> None:
    # forward secrecy: nothing that would recompute the keys outlives the handshake
    i, r = make(Role.INITIATOR), make(Role.RESPONDER)
    run(i, r)
    for side in (i, r):
        assert side._eph is None
        assert side._ms_i == side._ms_r == side._prk_value == b""


# ------------------------------------------------------------------ order and state


@pytest.fixture
def messages(make: Callable[..., Any]) -> tuple[bytes, bytes, bytes, bytes]:
    """M1..M4 of one complete run, to replay at the wrong moment."""
    return run(make(Role.INITIATOR, label="ref-i"), make(Role.RESPONDER, label="ref-r"))


def test_m3_first_to_responder(make: Callable[..., Any], messages: tuple[bytes, ...]) -> None:
    r = make(Role.RESPONDER)
    with pytest.raises(HandshakeError):
        r.receive(messages[2])
    assert r.state is State.FAILED


@pytest.mark.parametrize("index", [0, 1, 3], ids=["M1", "M2", "M4"])
def test_fresh_responder_accepts_only_m1(
    make: Callable[..., Any], messages: tuple[bytes, ...], index: int
) -> None:
    r = make(Role.RESPONDER)
    if index == 0:
        assert r.receive(messages[0]) is not None
        return
    with pytest.raises(HandshakeError):
        r.receive(messages[index])
    assert r.state is State.FAILED


@pytest.mark.parametrize("index", [0, 2, 3], ids=["M1", "M3", "M4"])
def test_initiator_waiting_for_m2_rejects_others(
    make: Callable[..., Any], messages: tuple[bytes, ...], index: int
) -> None:
    i = make(Role.INITIATOR)
    i.initiate()
    with pytest.raises(HandshakeError):
        i.receive(messages[index])
    assert i.state is State.FAILED


def test_initiator_receiving_before_initiate(
    make: Callable[..., Any], messages: tuple[bytes, ...]
) -> None:
    i = make(Role.INITIATOR)
    with pytest.raises(HandshakeError):
        i.receive(messages[1])
    assert i.state is State.FAILED


def test_m2_twice(make: Callable[..., Any]) -> None:
    i, r = make(Role.INITIATOR), make(Role.RESPONDER)
    m2 = r.receive(i.initiate())
    i.receive(m2)
    with pytest.raises(HandshakeError):
        i.receive(m2)
    assert i.state is State.FAILED


def test_m1_twice(make: Callable[..., Any]) -> None:
    i, r = make(Role.INITIATOR), make(Role.RESPONDER)
    m1 = i.initiate()
    r.receive(m1)
    with pytest.raises(HandshakeError):
        r.receive(m1)
    assert r.state is State.FAILED


@pytest.mark.parametrize("index", range(4), ids=["M1", "M2", "M3", "M4"])
def test_anything_after_done_fails(make: Callable[..., Any], index: int) -> None:
    i, r = make(Role.INITIATOR), make(Role.RESPONDER)
    sent = run(i, r)
    for side in (i, r):
        with pytest.raises(HandshakeError):
            side.receive(sent[index])
        assert side.state is State.FAILED


def test_nothing_is_accepted_after_failure(
    make: Callable[..., Any], messages: tuple[bytes, ...]
) -> None:
    r = make(Role.RESPONDER)
    with pytest.raises(HandshakeError):
        r.receive(messages[3])
    with pytest.raises(HandshakeError):
        r.receive(messages[0])  # a good M1 no longer helps
    assert r.state is State.FAILED


def test_initiate_on_a_responder_is_a_local_error(make: Callable[..., Any]) -> None:
    r = make(Role.RESPONDER)
    with pytest.raises(LocalProtocolError):
        r.initiate()
    assert r.state is State.FAILED


def test_initiate_twice_is_a_local_error(make: Callable[..., Any]) -> None:
    i = make(Role.INITIATOR)
    i.initiate()
    with pytest.raises(LocalProtocolError):
        i.initiate()


@pytest.mark.parametrize(
    "payload",
    [b"", bytes((RECORD_TAG,)) + b"\x00" * 20, bytes((HS_TAG,)) + b"\xc1", bytes((HS_TAG,))],
    ids=["empty", "record", "not-msgpack", "tag-only"],
)
def test_non_handshake_payloads_fail(make: Callable[..., Any], payload: bytes) -> None:
    r = make(Role.RESPONDER)
    with pytest.raises(HandshakeError):
        r.receive(payload)
    assert r.state is State.FAILED


def test_refusal_mentioning_version_is_incompatible_version(make: Callable[..., Any]) -> None:
    i, r = make(Role.INITIATOR), make(Role.RESPONDER)
    i.initiate()
    with pytest.raises(IncompatibleVersionError):
        i.receive(r.refusal("no common protocol version"))
    assert i.state is State.FAILED


def test_other_refusal_is_a_handshake_error(make: Callable[..., Any]) -> None:
    i, r = make(Role.INITIATOR), make(Role.RESPONDER)
    i.initiate()
    with pytest.raises(HandshakeError) as info:
        i.receive(r.refusal("too busy"))
    assert not isinstance(info.value, IncompatibleVersionError)
    assert "too busy" in str(info.value)


# ------------------------------------------------------------------ deadline


def test_check_deadline(make: Callable[..., Any]) -> None:
    i = make(Role.INITIATOR, now=100.0, timeout=5.0)
    i.initiate()
    i.check_deadline(104.99)
    assert i.state is State.I1_SENT_M1
    with pytest.raises(HandshakeError):
        i.check_deadline(105.0)
    assert i.state is State.FAILED


def test_default_deadline_is_handshake_timeout(make: Callable[..., Any]) -> None:
    r = make(Role.RESPONDER, now=0.0)
    r.check_deadline(HANDSHAKE_TIMEOUT - 0.01)
    with pytest.raises(HandshakeError):
        r.check_deadline(HANDSHAKE_TIMEOUT)


def test_deadline_does_not_apply_once_done(make: Callable[..., Any]) -> None:
    i, r = make(Role.INITIATOR, timeout=1.0), make(Role.RESPONDER, timeout=1.0)
    run(i, r)
    i.check_deadline(NOW + 1e6)
    r.check_deadline(NOW + 1e6)
    assert i.complete
    assert r.complete


# ------------------------------------------------------------------ tampering


def test_tampered_m2_ct_fails_at_the_responders_finished_check(make: Callable[..., Any]) -> None:
    i, r = make(Role.INITIATOR), make(Role.RESPONDER)
    m2 = r.receive(i.initiate())
    good_ct = parse(m2).ct
    m3 = i.receive(rewrite(m2, ct=flip(good_ct, 200)))
    # implicit rejection: the initiator goes on and sends a normal-looking M3
    assert m3 is not None
    assert i.state is State.I2_KNOW_KEYS
    assert len(parse(m3).ct) == len(good_ct)
    with pytest.raises(HandshakeError):
        r.receive(m3)
    assert r.state is State.FAILED
    assert r.result is None


@pytest.mark.parametrize("field", ["fin", "ct"])
def test_tampered_m3_fails(make: Callable[..., Any], field: str) -> None:
    i, r = make(Role.INITIATOR), make(Role.RESPONDER)
    m3 = i.receive(r.receive(i.initiate()))
    value = getattr(parse(m3), field)
    with pytest.raises(HandshakeError):
        r.receive(rewrite(m3, **{field: flip(value, len(value) // 2)}))
    assert r.state is State.FAILED
    assert r.result is None


def test_tampered_m4_fails(make: Callable[..., Any]) -> None:
    i, r = make(Role.INITIATOR), make(Role.RESPONDER)
    m4 = r.receive(i.receive(r.receive(i.initiate())))
    with pytest.raises(HandshakeError):
        i.receive(rewrite(m4, fin=flip(parse(m4).fin, 31)))
    assert i.state is State.FAILED
    assert i.result is None


@pytest.mark.parametrize("field", ["nonce", "eph", "commit"])
def test_tampered_m1_fails_at_finished(make: Callable[..., Any], field: str) -> None:
    i, r = make(Role.INITIATOR), make(Role.RESPONDER)
    m1 = i.initiate()
    m2 = r.receive(rewrite(m1, **{field: flip(getattr(parse(m1), field), 5)}))
    m3 = i.receive(m2)
    with pytest.raises(HandshakeError):
        r.receive(m3)


def _m3_body_with(m3: bytes, old: bytes, new: bytes) -> bytes:
    """M3 as a relay rewrites it: one byte string of its body replaced."""
    assert m3[0] == HS_TAG and m3.count(old) == 1
    return m3.replace(old, new)


def _with_extra_key(payload: bytes) -> bytes:
    """The message with one more key, the rest byte for byte as sent."""
    assert payload[0] == HS_TAG and 0x81 <= payload[1] <= 0x8E  # a fixmap
    return bytes((HS_TAG, payload[1] + 1)) + payload[2:] + pack("x") + pack(0)


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(_with_extra_key, id="extra-key"),
        pytest.param(lambda m3: _m3_body_with(m3, b"\xa1t\x03", b"\xa1t\xcc\x03"), id="t-uint8"),
        pytest.param(lambda m3: _m3_body_with(m3, b"\xa3fin", b"\xd9\x03fin"), id="key-str8"),
        pytest.param(
            lambda m3: _m3_body_with(m3, b"\xa3fin\xc4\x20", b"\xa3fin\xc5\x00\x20"),
            id="fin-bin16",
        ),
    ],
)
def test_the_responder_refuses_an_m3_not_in_its_one_form(
    make: Callable[..., Any], forge: Callable[[bytes], bytes]
) -> None:
    # the values are untouched (ct and fin as the initiator made them), so only
    # strict parsing can tell: TH4 would differ, but the responder checks fin_i
    # over TH2 and would complete
    i, r = make(Role.INITIATOR), make(Role.RESPONDER)
    m3 = i.receive(r.receive(i.initiate()))
    assert m3 is not None
    forged = forge(m3)
    fields = unpack(forged[1:])  # what a lenient receiver would read: the same values
    assert forged != m3 and M3(fields["ct"], fields["fin"]) == parse(m3)
    with pytest.raises(HandshakeError, match=r"exactly the keys|canonical msgpack"):
        r.receive(forged)
    assert r.state is State.FAILED and r.result is None


def test_a_relay_adding_a_key_to_m3_makes_both_sides_fail(make: Callable[..., Any]) -> None:
    # the responder no longer completes a session the initiator will never
    # confirm (it used to: the key changed only TH4, so the initiator failed at
    # M4 with "the peer did not prove its key" while the responder went ahead)
    i, r = make(Role.INITIATOR), make(Role.RESPONDER)
    m3 = i.receive(r.receive(i.initiate()))
    assert m3 is not None
    with pytest.raises(HandshakeError, match="exactly the keys"):
        r.receive(_with_extra_key(m3))
    assert r.state is State.FAILED and r.result is None
    # no M4 will come: the initiator fails at its deadline, never completes
    assert i.state is State.I2_KNOW_KEYS and i.result is None
    with pytest.raises(HandshakeError, match="timed out"):
        i.check_deadline(NOW + HANDSHAKE_TIMEOUT)
    assert i.state is State.FAILED and i.result is None
    # and nothing the relay can make of M4 helps: the responder made none
    with pytest.raises(HandshakeError):
        i.receive(bytes((HS_TAG,)) + pack(M4(b"\x00" * 32).to_wire()))


@pytest.mark.parametrize("index", [0, 1, 3])
def test_an_extra_key_in_any_other_message_is_refused_on_arrival(
    make: Callable[..., Any], index: int
) -> None:
    i, r = make(Role.INITIATOR), make(Role.RESPONDER)
    m1 = i.initiate()
    if index == 0:
        with pytest.raises(HandshakeError, match="exactly the keys"):
            r.receive(_with_extra_key(m1))
        assert r.state is State.FAILED
        return
    m2 = r.receive(m1)
    assert m2 is not None
    if index == 1:
        with pytest.raises(HandshakeError, match="exactly the keys"):
            i.receive(_with_extra_key(m2))
        assert i.state is State.FAILED
        return
    m3 = i.receive(m2)
    assert m3 is not None
    m4 = r.receive(m3)
    assert m4 is not None
    with pytest.raises(HandshakeError, match="exactly the keys"):
        i.receive(_with_extra_key(m4))
    assert i.state is State.FAILED and i.result is None


def test_m3_ct_from_another_run_fails(make: Callable[..., Any]) -> None:
    # same responder key both times; the ct decrypts fine but to the other run's secret
    i1, r1 = make(Role.INITIATOR, label="run1-i"), make(Role.RESPONDER, label="run1-r")
    old_m3 = run(i1, r1)[2]
    i2, r2 = make(Role.INITIATOR, label="run2-i"), make(Role.RESPONDER, label="run2-r")
    m3 = i2.receive(r2.receive(i2.initiate()))
    with pytest.raises(HandshakeError):
        r2.receive(rewrite(m3, ct=parse(old_m3).ct))


class ForgingInitiator:
    """An initiator written from the spec, free to commit to one secret and reveal another."""

    def __init__(
        self, key: rsa.RSAPrivateKey, committed: bytes, revealed: bytes, seed: bytes = b"\x33" * 32
    ) -> None:
        self.key = key
        self.committed = committed
        self.revealed = revealed
        self.seed = seed
        self.eph = x25519.X25519PrivateKey.from_private_bytes(b"\x42" * 32)

    def m1(self) -> bytes:
        msg = M1(
            (1,),
            b"\x11" * 32,
            self.eph.public_key().public_bytes_raw(),
            der(self.key),
            "mallory",
            sha256(b"p2pchat/1 commit", self.committed),
        )
        self.m1_body = pack(msg.to_wire())
        return bytes((HS_TAG,)) + self.m1_body

    def m3(self, m2_payload: bytes, responder_key: rsa.RSAPublicKey) -> bytes:
        m2_body = m2_payload[1:]
        m2 = parse_handshake(m2_body)
        assert isinstance(m2, M2)
        ms_r = oaep_decrypt(self.key, m2.ct)
        assert ms_r is not None
        dh = self.eph.exchange(x25519.X25519PublicKey.from_public_bytes(m2.eph))
        self.prk = hkdf_extract(sha256(PROTOCOL_NAME), dh + self.revealed + ms_r)
        self.th2 = th2 = sha256(PROTOCOL_NAME, self.m1_body, m2_body)
        fin = hmac.digest(expand_label(self.prk, b"i finished", th2, 32), th2, "sha256")
        ct = oaep_encrypt(responder_key, self.revealed, self.seed)
        m3_body = pack(M3(ct, fin).to_wire())
        self.th4 = sha256(PROTOCOL_NAME, self.m1_body, m2_body, m3_body)
        return bytes((HS_TAG,)) + m3_body


def test_independent_initiator_interoperates(make: Callable[..., Any], rsa_keys: Keys) -> None:
    """Positive control for the next test: the spec-built initiator is accepted when honest."""
    secret = b"\x5a" * 32
    forger = ForgingInitiator(rsa_keys[0], committed=secret, revealed=secret)
    r = make(Role.RESPONDER)
    m4 = r.receive(forger.m3(r.receive(forger.m1()), rsa_keys[1].public_key()))
    assert r.complete
    assert m4 is not None
    fin_r = hmac.digest(
        expand_label(forger.prk, b"r finished", forger.th4, 32), forger.th4, "sha256"
    )
    assert parse(m4) == M4(fin_r)
    assert r.result.transcript_hash == forger.th4
    assert r.result.sas == format_sas(forger.prk, forger.th2)
    assert r.result.peer_name == "mallory"
    key, iv = traffic_keys(expand_label(forger.prk, b"i traffic", forger.th4, 32))
    header = bytes((RECORD_TAG, CT_DATA))
    record = header + AESGCM(key).encrypt(iv, b"from the spec", header)
    assert r.result.receiver.open(record) == (CT_DATA, b"from the spec")


def test_sas_does_not_depend_on_m3(make: Callable[..., Any], rsa_keys: Keys) -> None:
    # the initiator picks M3's bytes after seeing M2: if the SAS covered them, a man in
    # the middle could re-encrypt ms_i with fresh seeds until the two strings matched
    results = []
    for seed in (b"\x01" * 32, b"\x02" * 32):
        secret = b"\x5a" * 32
        forger = ForgingInitiator(rsa_keys[0], committed=secret, revealed=secret, seed=seed)
        r = make(Role.RESPONDER, seeded_oaep=True)  # the same M2 both times
        r.receive(forger.m3(r.receive(forger.m1()), rsa_keys[1].public_key()))
        results.append(r.result)
    assert results[0].transcript_hash != results[1].transcript_hash  # M3 differed
    assert results[0].sas == results[1].sas


def test_m3_revealing_a_secret_other_than_the_committed_one_fails(
    make: Callable[..., Any], rsa_keys: Keys
) -> None:
    # a valid Finished for the revealed secret: only the commitment check can catch it
    forger = ForgingInitiator(rsa_keys[0], committed=b"\x5a" * 32, revealed=b"\xa5" * 32)
    r = make(Role.RESPONDER)
    m3 = forger.m3(r.receive(forger.m1()), rsa_keys[1].public_key())
    with pytest.raises(HandshakeError):
        r.receive(m3)
    assert r.state is State.FAILED
    assert r.result is None


# ------------------------------------------------------------------ versions


def test_no_common_version(make: Callable[..., Any]) -> None:
    i, r = make(Role.INITIATOR, versions=(1,)), make(Role.RESPONDER, versions=(2,))
    with pytest.raises(IncompatibleVersionError):
        r.receive(i.initiate())
    assert r.state is State.FAILED


def test_highest_common_version_is_chosen(make: Callable[..., Any]) -> None:
    i, r = make(Role.INITIATOR, versions=(1, 2, 3)), make(Role.RESPONDER, versions=(4, 2, 3))
    run(i, r)
    assert i.result.version == r.result.version == 3


def test_initiator_rejects_a_version_it_did_not_offer(make: Callable[..., Any]) -> None:
    i, r = make(Role.INITIATOR, versions=(1,)), make(Role.RESPONDER, versions=(1,))
    m2 = r.receive(i.initiate())
    with pytest.raises(IncompatibleVersionError):
        i.receive(rewrite(m2, version=2))
    assert i.state is State.FAILED


def test_downgrade_by_stripping_m1_versions_fails_at_finished(make: Callable[..., Any]) -> None:
    i, r = make(Role.INITIATOR, versions=(1, 2)), make(Role.RESPONDER, versions=(1, 2))
    m1 = i.initiate()
    m2 = r.receive(rewrite(m1, versions=(1,)))
    assert parse(m2).version == 1  # the responder was fooled...
    m3 = i.receive(m2)  # ...and so was the initiator, so far
    with pytest.raises(HandshakeError):
        r.receive(m3)  # but the transcripts differ
    assert not r.complete


def test_downgrade_by_rewriting_m2_version_fails_at_finished(make: Callable[..., Any]) -> None:
    i, r = make(Role.INITIATOR, versions=(1, 2)), make(Role.RESPONDER, versions=(1, 2))
    m2 = r.receive(i.initiate())
    assert parse(m2).version == 2
    m3 = i.receive(rewrite(m2, version=1))
    with pytest.raises(HandshakeError):
        r.receive(m3)


# ------------------------------------------------------------------ peer keys


def _ed25519_spki() -> bytes:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key()
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _p256_spki() -> bytes:
    key = ec.derive_private_key(12345, ec.SECP256R1()).public_key()
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def bad_key(kind: str, rsa_keys: Keys, rsa2048: rsa.RSAPrivateKey) -> bytes:
    n3072 = rsa_keys[2].public_key().public_numbers().n
    if kind == "ed25519":
        return _ed25519_spki()
    if kind == "p256":
        return _p256_spki()
    if kind == "unknown-algorithm":  # Ed25519's OID 1.3.101.112 changed to 1.3.101.114
        return _ed25519_spki().replace(bytes.fromhex("06032b6570"), bytes.fromhex("06032b6572"))
    if kind == "rsa2048":
        return der(rsa2048)
    if kind == "rsa8200":
        return public_der(rsa.RSAPublicNumbers(65537, (1 << 8199) | n3072).public_key())
    if kind == "e3":
        return public_der(rsa.RSAPublicNumbers(3, n3072).public_key())
    if kind == "e65539":
        return public_der(rsa.RSAPublicNumbers(65539, n3072).public_key())
    if kind == "pkcs1":  # parses as RSA, but is not the SubjectPublicKeyInfo form
        return (
            rsa_keys[2]
            .public_key()
            .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
        )
    if kind == "no-null-params":  # a second encoding of the same key: another fingerprint
        spki = der(rsa_keys[2])
        inner = spki[4:].replace(
            bytes.fromhex("300d06092a864886f70d0101010500"),
            bytes.fromhex("300b06092a864886f70d010101"),
        )
        return b"\x30\x82" + len(inner).to_bytes(2, "big") + inner
    if kind == "garbage":
        return b"\x30\x03\x02\x01\x00"
    raise AssertionError(kind)


BAD_KEYS = ["ed25519", "p256", "unknown-algorithm", "rsa2048", "rsa8200", "e3", "e65539"]
BAD_KEYS += ["pkcs1", "no-null-params", "garbage"]


@pytest.mark.parametrize("kind", BAD_KEYS)
def test_bad_initiator_key_in_m1(
    make: Callable[..., Any], rsa_keys: Keys, rsa2048: rsa.RSAPrivateKey, kind: str
) -> None:
    i, r = make(Role.INITIATOR), make(Role.RESPONDER)
    m1 = rewrite(i.initiate(), key=bad_key(kind, rsa_keys, rsa2048))
    with pytest.raises(PeerKeyError):
        r.receive(m1)
    assert r.state is State.FAILED


@pytest.mark.parametrize("kind", BAD_KEYS)
def test_bad_responder_key_in_m2(
    make: Callable[..., Any], rsa_keys: Keys, rsa2048: rsa.RSAPrivateKey, kind: str
) -> None:
    i, r = make(Role.INITIATOR), make(Role.RESPONDER)
    m2 = rewrite(r.receive(i.initiate()), key=bad_key(kind, rsa_keys, rsa2048))
    with pytest.raises(PeerKeyError):
        i.receive(m2)
    assert i.state is State.FAILED


def test_a_2048_bit_identity_cannot_complete_a_handshake(
    make: Callable[..., Any], det_rng: Callable[[str], Any], rsa2048: rsa.RSAPrivateKey
) -> None:
    weak = Handshake(Role.INITIATOR, rsa2048, name="weak", rng=det_rng("weak"), now=NOW)
    r = make(Role.RESPONDER)
    with pytest.raises(PeerKeyError):
        r.receive(weak.initiate())


def test_substituted_responder_key_fails(make: Callable[..., Any], rsa_keys: Keys) -> None:
    # a relay claims the responder is someone else: valid key, but not the one that answers
    i, r = make(Role.INITIATOR), make(Role.RESPONDER)
    m2 = rewrite(r.receive(i.initiate()), key=der(rsa_keys[2]))
    m3 = i.receive(m2)
    with pytest.raises(HandshakeError):
        r.receive(m3)


# ------------------------------------------------------------------ low-order ephemerals

LOW_ORDER = [
    bytes(32),
    b"\x01" + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


@pytest.mark.parametrize("point", LOW_ORDER, ids=["zero", "one", "order-8", "p-1"])
def test_low_order_ephemeral_in_m1(make: Callable[..., Any], point: bytes) -> None:
    i, r = make(Role.INITIATOR), make(Role.RESPONDER)
    m2 = r.receive(rewrite(i.initiate(), eph=point))
    m3 = i.receive(m2)
    with pytest.raises(HandshakeError):
        r.receive(m3)
    assert r.state is State.FAILED


@pytest.mark.parametrize("point", LOW_ORDER, ids=["zero", "one", "order-8", "p-1"])
def test_low_order_ephemeral_in_m2(make: Callable[..., Any], point: bytes) -> None:
    i, r = make(Role.INITIATOR), make(Role.RESPONDER)
    m2 = rewrite(r.receive(i.initiate()), eph=point)
    with pytest.raises(HandshakeError):
        i.receive(m2)  # no M3
    assert i.state is State.FAILED


# ------------------------------------------------------------------ display names


def test_an_invalid_local_name_is_a_local_error(make: Callable[..., Any]) -> None:
    with pytest.raises(LocalProtocolError):
        make(Role.INITIATOR, name="\u202eevil")


@pytest.mark.parametrize("index", [0, 1], ids=["M1", "M2"])
def test_a_rewritten_name_fails_at_finished(make: Callable[..., Any], index: int) -> None:
    # names are in the transcript: a relay cannot relabel who is talking
    i, r = make(Role.INITIATOR), make(Role.RESPONDER)
    m1 = i.initiate()
    if index == 0:
        m1 = rewrite(m1, name="carol")
    m2 = r.receive(m1)
    if index == 1:
        m2 = rewrite(m2, name="carol")
    m3 = i.receive(m2)
    with pytest.raises(HandshakeError):
        r.receive(m3)


@pytest.mark.parametrize("name", ["", " alice", "al\x00ice", "\u202eecila", "a" * 65])
def test_a_bad_peer_name_in_m1_fails(make: Callable[..., Any], name: str) -> None:
    i, r = make(Role.INITIATOR), make(Role.RESPONDER)
    m1 = i.initiate()
    body = parse(m1).to_wire() | {"name": name}
    with pytest.raises(HandshakeError):
        r.receive(bytes((HS_TAG,)) + pack(body))
    assert r.state is State.FAILED
