"""The known-answer vectors published in docs/PROTOCOL.md.

Everything here is read from the document itself (the two test keys and the
``name: value`` block) and checked three ways: the code reproduces every value
from the documented inputs; each side accepts the other side's messages exactly
as printed; and the spec's own definitions (re-implemented here from the text,
with hashlib/hmac and pyca primitives only) give the same bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import re
from pathlib import Path
from typing import Any

import msgpack
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p2pchat.config import PROTOCOL_NAME
from p2pchat.errors import DecryptError, HandshakeError
from p2pchat.proto.app import (
    Ack,
    Chat,
    FileOffer,
    KeepAlive,
    Refuse,
    RefuseCode,
    encode_app,
    file_id,
    parse_app,
)
from p2pchat.proto.handshake import Handshake, Role, State
from p2pchat.proto.keys import fingerprint, format_fingerprint, public_der
from p2pchat.proto.messages import (
    Hello,
    PeerEntry,
    Welcome,
    encode,
    encode_send,
    parse_body,
    parse_handshake,
)
from p2pchat.proto.oaep import OAEP_PADDING, REGISTER_PADDING
from p2pchat.proto.record import (
    CT_CLOSE,
    CT_DATA,
    RecordReceiver,
    RecordSender,
    next_secret,
    traffic_keys,
)

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "PROTOCOL.md"
SCRIPT = ROOT / "scripts" / "gen_vectors.py"
BEGIN = "<!-- BEGIN TEST VECTORS"
END = "<!-- END TEST VECTORS -->"

#: every value the section must carry, in this order
NAMES = [
    "initiator_fp",
    "initiator_fp_text",
    "initiator_name",
    "responder_fp",
    "responder_fp_text",
    "responder_name",
    "nonce_i",
    "eph_priv_i",
    "ms_i",
    "oaep_seed_i",
    "nonce_r",
    "eph_priv_r",
    "ms_r",
    "oaep_seed_r",
    "eph_pub_i",
    "eph_pub_r",
    "commit_i",
    "m1",
    "m2",
    "m3",
    "m4",
    "dh",
    "th2",
    "prk",
    "fk_i",
    "fin_i",
    "th4",
    "fk_r",
    "fin_r",
    "i_traffic",
    "r_traffic",
    "exporter",
    "sas_bytes",
    "sas",
    "i_key",
    "i_iv",
    "r_key",
    "r_iv",
    "i_traffic_1",
    "i_key_1",
    "i_iv_1",
    "record_plaintext",
    "record_i_0",
    "send_frame",
    "hello_frame",
    "register_secret",
    "register_oaep_seed",
    "challenge_frame",
    "proof_frame",
    "welcome_frame",
    "msg_id_1",
    "msg_id_2",
    "msg_text",
    "app_msg",
    "app_msg_direct",
    "app_ack",
    "app_ka_probe",
    "app_ka_answer",
    "app_refuse",
    "file_data",
    "file_sha256",
    "file_name",
    "file_size",
    "file_id",
    "app_fo",
    "record_i_1",
    "record_i_2",
    "record_i_3",
    "record_i_4",
    "record_i_5",
    "record_r_0",
    "record_r_1",
    "record_r_2",
    "record_r_3",
    "record_i_epoch1_0",
]
TEXT_NAMES = frozenset(
    {
        "initiator_fp_text",
        "initiator_name",
        "responder_fp_text",
        "responder_name",
        "sas",
        "msg_text",
        "file_name",
        "file_size",
    }
)
#: what the records after the handshake carry, by sequence number (11, Value names)
INITIATOR_RECORDS = {
    1: "app_msg",
    2: "app_msg_direct",
    3: "app_ka_probe",
    4: "app_fo",
    5: None,  # the close
}
RESPONDER_RECORDS = {0: "app_ack", 1: "app_ka_answer", 2: "app_refuse", 3: None}
#: the relay's ids in the vectors: bob (the host) 2, alice 3
ALICE_ID, BOB_ID = 3, 2


# ---------------------------------------------------------------- the document


def _section() -> str:
    doc = DOC.read_text(encoding="utf-8")
    start, end = doc.find(BEGIN), doc.find(END)
    assert 0 <= start < end, "docs/PROTOCOL.md has no test vector section"
    return doc[start : end + len(END)]


def _fenced_blocks(text: str) -> list[str]:
    return re.findall(r"^```text\n(.*?)^```$", text, flags=re.S | re.M)


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    blocks = _fenced_blocks(_section())
    assert len(blocks) == 3, "expected two key blocks and one value block"
    pem_i, pem_r, values = blocks
    vec: dict[str, Any] = {}
    for line in values.splitlines():
        name, sep, value = line.partition(":")
        assert sep, f"not a 'name: value' line: {line!r}"
        name, value = name.strip(), value.strip()
        assert name not in vec, f"{name} given twice"
        vec[name] = value if name in TEXT_NAMES else bytes.fromhex(value)
    assert list(vec) == NAMES
    for pem in (pem_i, pem_r):
        assert pem.startswith("-----BEGIN PRIVATE KEY-----\n")
    key_i = serialization.load_pem_private_key(pem_i.encode("ascii"), password=None)
    key_r = serialization.load_pem_private_key(pem_r.encode("ascii"), password=None)
    assert isinstance(key_i, rsa.RSAPrivateKey) and isinstance(key_r, rsa.RSAPrivateKey)
    return {"key_i": key_i, "key_r": key_r, **vec}


class SpecRng:
    """Draw i (from 0) of a side: SHA-256("p2pchat/1 vector " || side || BE32(i))[:n]."""

    def __init__(self, side: bytes) -> None:
        self.side = side
        self.draws: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        if not 1 <= n <= 32:
            raise ValueError(n)
        digest = hashlib.sha256(
            b"p2pchat/1 vector " + self.side + len(self.draws).to_bytes(4, "big")
        )
        self.draws.append(digest.digest()[:n])
        return self.draws[-1]


def _initiator(
    doc: dict[str, Any], log: dict[str, bytes] | None = None, rng: SpecRng | None = None
) -> Handshake:
    return Handshake(
        Role.INITIATOR,
        doc["key_i"],
        name=doc["initiator_name"],
        rng=rng or SpecRng(b"initiator"),
        now=0.0,
        seeded_oaep=True,  # the OAEP seeds come from rng too
        keylog=None if log is None else log.__setitem__,
    )


def _responder(
    doc: dict[str, Any], log: dict[str, bytes] | None = None, rng: SpecRng | None = None
) -> Handshake:
    return Handshake(
        Role.RESPONDER,
        doc["key_r"],
        name=doc["responder_name"],
        rng=rng or SpecRng(b"responder"),
        now=0.0,
        seeded_oaep=True,  # the OAEP seeds come from rng too
        keylog=None if log is None else log.__setitem__,
    )


# ---------------------------------------------------------------- the generator


def test_document_is_what_the_generator_prints() -> None:
    spec = importlib.util.spec_from_file_location("gen_vectors", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == _section(), (
        "run: python scripts/gen_vectors.py --write docs/PROTOCOL.md"
    )
    assert module.main(["--check", str(DOC)]) == 0


def test_rng_definition() -> None:
    rng = SpecRng(b"initiator")
    first = rng(32)
    assert first == hashlib.sha256(b"p2pchat/1 vector initiator\x00\x00\x00\x00").digest()
    assert rng(12) == hashlib.sha256(b"p2pchat/1 vector initiator\x00\x00\x00\x01").digest()[:12]
    with pytest.raises(ValueError):
        rng(33)


# ---------------------------------------------------------------- the code reproduces the doc


def test_both_sides_reproduce_every_value(doc: dict[str, Any]) -> None:
    log_i: dict[str, bytes] = {}
    log_r: dict[str, bytes] = {}
    rng_i, rng_r = SpecRng(b"initiator"), SpecRng(b"responder")
    ini, res = _initiator(doc, log_i, rng_i), _responder(doc, log_r, rng_r)
    m1 = ini.initiate()
    assert m1 == doc["m1"]
    m2 = res.receive(m1)
    assert m2 == doc["m2"]
    m3 = ini.receive(m2)
    assert m3 == doc["m3"]
    m4 = res.receive(m3)
    assert m4 == doc["m4"]
    assert ini.receive(m4) is None
    assert ini.state is State.DONE and res.state is State.DONE
    assert ini.result is not None and res.result is not None

    # the documented order of draws: nonce, ephemeral, secret, OAEP seed (nothing else)
    assert rng_i.draws == [doc[n] for n in ("nonce_i", "eph_priv_i", "ms_i", "oaep_seed_i")]
    assert rng_r.draws == [doc[n] for n in ("nonce_r", "eph_priv_r", "ms_r", "oaep_seed_r")]
    for log in (log_i, log_r):
        assert log == {
            "i traffic": doc["i_traffic"],
            "r traffic": doc["r_traffic"],
            "exporter": doc["exporter"],
        }
    for result in (ini.result, res.result):
        assert result.transcript_hash == doc["th4"]
        assert result.sas == doc["sas"]
        assert result.version == 1
    assert ini.result.peer_fingerprint == doc["responder_fp"]
    assert res.result.peer_fingerprint == doc["initiator_fp"]
    # each side learns the other's name from the transcript, not from the relay
    assert ini.result.peer_name == doc["responder_name"] == "bob"
    assert res.result.peer_name == doc["initiator_name"] == "alice"
    assert traffic_keys(doc["i_traffic"]) == (doc["i_key"], doc["i_iv"])
    assert traffic_keys(doc["r_traffic"]) == (doc["r_key"], doc["r_iv"])
    assert next_secret(doc["i_traffic"]) == doc["i_traffic_1"]

    assert doc["record_plaintext"] == b"hello, bob"
    record = ini.result.sender.seal(b"hello, bob")
    assert record == doc["record_i_0"]
    assert encode_send(2, record) == doc["send_frame"]
    assert res.result.receiver.open(record) == (CT_DATA, b"hello, bob")


def test_responder_accepts_the_doc_messages(doc: dict[str, Any]) -> None:
    res = _responder(doc)
    assert res.receive(doc["m1"]) == doc["m2"]
    assert res.receive(doc["m3"]) == doc["m4"]
    assert res.complete and res.result is not None
    assert res.result.peer_name == doc["initiator_name"]
    assert res.result.sas == doc["sas"]
    assert res.result.receiver.open(doc["record_i_0"]) == (CT_DATA, b"hello, bob")
    # the same record a second time is a replay
    with pytest.raises(DecryptError):
        res.result.receiver.open(doc["record_i_0"])


def test_initiator_accepts_the_doc_messages(doc: dict[str, Any]) -> None:
    ini = _initiator(doc)
    assert ini.initiate() == doc["m1"]
    assert ini.receive(doc["m2"]) == doc["m3"]
    assert ini.receive(doc["m4"]) is None
    assert ini.complete and ini.result is not None
    assert ini.result.peer_name == doc["responder_name"]
    assert ini.result.sas == doc["sas"]
    assert ini.result.sender.seal(doc["record_plaintext"]) == doc["record_i_0"]


def test_default_mode_draws_no_oaep_seed_and_interoperates(doc: dict[str, Any]) -> None:
    # without seeded_oaep OpenSSL picks the OAEP seed: only `ct` differs from the doc
    rng = SpecRng(b"responder")
    res = Handshake(Role.RESPONDER, doc["key_r"], name=doc["responder_name"], rng=rng, now=0.0)
    m2 = res.receive(doc["m1"])
    assert m2 is not None
    assert rng.draws == [doc["nonce_r"], doc["eph_priv_r"], doc["ms_r"]]
    ours, theirs = _body(m2), _body(doc["m2"])
    assert ours["ct"] != theirs["ct"]
    assert {k: v for k, v in ours.items() if k != "ct"} == {
        k: v for k, v in theirs.items() if k != "ct"
    }
    ini = _initiator(doc)
    ini.initiate()
    m3 = ini.receive(m2)
    assert m3 is not None
    m4 = res.receive(m3)
    assert m4 is not None
    assert ini.receive(m4) is None
    assert ini.result is not None and res.result is not None
    assert ini.result.sas == res.result.sas


def test_the_sas_does_not_depend_on_m3(doc: dict[str, Any]) -> None:
    # an initiator in default mode sends another M3 (OpenSSL picks the OAEP
    # seed): TH4 and the traffic keys change, the SAS (PRK and TH2) does not
    rng = SpecRng(b"initiator")
    ini = Handshake(Role.INITIATOR, doc["key_i"], name=doc["initiator_name"], rng=rng, now=0.0)
    assert ini.initiate() == doc["m1"]
    m3 = ini.receive(doc["m2"])
    assert m3 is not None and m3 != doc["m3"]
    assert rng.draws == [doc["nonce_i"], doc["eph_priv_i"], doc["ms_i"]]
    res = _responder(doc)
    assert res.receive(doc["m1"]) == doc["m2"]
    m4 = res.receive(m3)
    assert m4 is not None
    assert ini.receive(m4) is None
    assert ini.result is not None and res.result is not None
    assert ini.result.transcript_hash == res.result.transcript_hash != doc["th4"]
    assert ini.result.sender.seal(doc["record_plaintext"]) != doc["record_i_0"]
    assert ini.result.sas == res.result.sas == doc["sas"]


def test_a_name_rewritten_on_the_way_fails_the_handshake(doc: dict[str, Any]) -> None:
    # the relay re-encodes M1 with another name: the responder's TH2 differs
    # from the initiator's, so the initiator's Finished does not verify
    body = _body(doc["m1"])
    body["name"] = "mallory"
    forged = b"\x01" + msgpack.packb(body, use_bin_type=True)
    ini, res = _initiator(doc), _responder(doc)
    assert ini.initiate() == doc["m1"]
    m2 = res.receive(forged)
    assert m2 is not None
    m3 = ini.receive(m2)
    assert m3 is not None
    with pytest.raises(HandshakeError, match="did not prove"):
        res.receive(m3)
    assert res.state is State.FAILED and res.result is None


def test_a_receiver_built_from_the_doc_secret_opens_the_record(doc: dict[str, Any]) -> None:
    receiver = RecordReceiver(doc["i_traffic"])
    assert receiver.open(doc["record_i_0"]) == (CT_DATA, b"hello, bob")


def _sessions(doc: dict[str, Any]) -> tuple[Any, Any]:
    """Both results of the documented handshake, and record_i_0 already sent."""
    ini, res = _initiator(doc), _responder(doc)
    res.receive(ini.initiate())
    assert ini.receive(doc["m2"]) == doc["m3"]
    assert res.receive(doc["m3"]) == doc["m4"]
    ini.receive(doc["m4"])
    assert ini.result is not None and res.result is not None
    assert ini.result.sender.seal(doc["record_plaintext"]) == doc["record_i_0"]
    assert res.result.receiver.open(doc["record_i_0"]) == (CT_DATA, doc["record_plaintext"])
    return ini.result, res.result


def _doc_messages(doc: dict[str, Any]) -> dict[str, Any]:
    """The typed application messages the vectors encode."""
    size = int(doc["file_size"])
    return {
        "app_msg": Chat(doc["msg_id_1"], doc["msg_text"]),
        "app_msg_direct": Chat(doc["msg_id_2"], doc["msg_text"], direct=True),
        "app_ack": Ack((doc["msg_id_1"], doc["msg_id_2"])),
        "app_ka_probe": KeepAlive(reply=True),
        "app_ka_answer": KeepAlive(reply=False),
        "app_fo": FileOffer(doc["file_id"], doc["file_name"], size, doc["file_sha256"]),
        "app_refuse": Refuse(
            RefuseCode.PINNED_OTHER_KEY, "a pinned name presented a different key"
        ),
    }


def test_the_code_encodes_and_parses_the_app_messages(doc: dict[str, Any]) -> None:
    for name, msg in _doc_messages(doc).items():
        assert encode_app(msg) == doc[name], name
        assert parse_app(doc[name]) == msg, name
    size = int(doc["file_size"])
    assert size == len(doc["file_data"])
    assert file_id(doc["file_sha256"], doc["file_name"], size) == doc["file_id"]


def test_the_code_seals_and_opens_the_record_streams(doc: dict[str, Any]) -> None:
    ini, res = _sessions(doc)
    for records, sender, receiver, side in (
        (INITIATOR_RECORDS, ini.sender, res.receiver, "i"),
        (RESPONDER_RECORDS, res.sender, ini.receiver, "r"),
    ):
        for seq, name in records.items():
            assert sender.seq == seq
            record = sender.seal_close() if name is None else sender.seal(doc[name])
            assert record == doc[f"record_{side}_{seq}"], f"record_{side}_{seq}"
            expected = (CT_CLOSE, b"") if name is None else (CT_DATA, doc[name])
            assert receiver.open(record) == expected
        assert receiver.closed
        with pytest.raises(DecryptError):  # nothing after the close
            receiver.open(doc[f"record_{side}_0"])


def test_the_first_record_after_a_key_update(doc: dict[str, Any]) -> None:
    assert traffic_keys(doc["i_traffic_1"]) == (doc["i_key_1"], doc["i_iv_1"])
    assert RecordSender(doc["i_traffic_1"]).seal(doc["app_msg"]) == doc["record_i_epoch1_0"]
    # with one record per key, the second record of the session is that one
    sender = RecordSender(doc["i_traffic"], rekey_interval=1)
    assert sender.seal(doc["record_plaintext"]) == doc["record_i_0"]
    assert sender.seal(doc["app_msg"]) == doc["record_i_epoch1_0"]
    receiver = RecordReceiver(doc["i_traffic"], rekey_interval=1)
    receiver.open(doc["record_i_0"])
    assert receiver.open(doc["record_i_epoch1_0"]) == (CT_DATA, doc["app_msg"])
    # under the first secret it is not a record at all
    with pytest.raises(DecryptError):
        RecordReceiver(doc["i_traffic"]).open(doc["record_i_epoch1_0"])


def test_the_code_writes_and_reads_hello_and_welcome(doc: dict[str, Any]) -> None:
    der_i = public_der(doc["key_i"].public_key())
    der_r = public_der(doc["key_r"].public_key())
    hello = Hello((1,), doc["initiator_name"], der_i)
    welcome = Welcome(1, ALICE_ID, (PeerEntry(BOB_ID, doc["responder_name"], der_r),), BOB_ID)
    assert encode(hello) == doc["hello_frame"]
    assert encode(welcome) == doc["welcome_frame"]
    assert parse_body(doc["hello_frame"][4:]) == hello
    assert parse_body(doc["welcome_frame"][4:]) == welcome


def test_the_doc_handshake_messages_are_strictly_canonical(doc: dict[str, Any]) -> None:
    # 5.1: each body is msgpack's shortest encoding of its map, keys in table order
    for name in ("m1", "m2", "m3", "m4"):
        body = doc[name][1:]
        assert msgpack.packb(msgpack.unpackb(body, raw=False), use_bin_type=True) == body
        parse_handshake(body)


# ---------------------------------------------------------------- the spec text gives the doc


def _expand_label(secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    info = b"p2pchat/1 " + label + context
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.digest(secret, block + info + bytes((counter,)), "sha256")
        out += block
        counter += 1
    return out[:length]


def _sha(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def _mgf1(seed: bytes, length: int) -> bytes:
    out = b"".join(_sha(seed, i.to_bytes(4, "big")) for i in range(-(-length // 32)))
    return out[:length]


def _oaep(key: rsa.RSAPublicKey, message: bytes, seed: bytes) -> bytes:
    """RFC 8017 section 7.1.1, SHA-256 and MGF1-SHA-256, empty label."""
    n, e = key.public_numbers().n, key.public_numbers().e
    k = (n.bit_length() + 7) // 8
    db = _sha(b"") + bytes(k - len(message) - 66) + b"\x01" + message
    masked_db = bytes(a ^ b for a, b in zip(db, _mgf1(seed, len(db)), strict=True))
    masked_seed = bytes(a ^ b for a, b in zip(seed, _mgf1(masked_db, 32), strict=True))
    em = int.from_bytes(b"\x00" + masked_seed + masked_db, "big")
    return pow(em, e, n).to_bytes(k, "big")


def _body(payload: bytes) -> dict[str, Any]:
    assert payload[0] == 0x01
    obj = msgpack.unpackb(payload[1:], raw=False)
    assert isinstance(obj, dict)
    return obj


def test_identities(doc: dict[str, Any]) -> None:
    for side, key in (("initiator", doc["key_i"]), ("responder", doc["key_r"])):
        assert key.key_size == 3072 and key.public_key().public_numbers().e == 65537
        der = public_der(key.public_key())
        assert doc[f"{side}_fp"] == hashlib.sha256(der).digest() == fingerprint(der)
        assert doc[f"{side}_fp_text"] == format_fingerprint(doc[f"{side}_fp"])
        assert len(doc[f"{side}_fp_text"].split("-")) == 13


def test_rng_draws(doc: dict[str, Any]) -> None:
    for side, names in (
        (b"initiator", ("nonce_i", "eph_priv_i", "ms_i", "oaep_seed_i")),
        (b"responder", ("nonce_r", "eph_priv_r", "ms_r", "oaep_seed_r")),
    ):
        rng = SpecRng(side)
        assert [rng(32) for _ in names] == [doc[n] for n in names]


def test_handshake_messages_carry_the_documented_fields(doc: dict[str, Any]) -> None:
    der_i = public_der(doc["key_i"].public_key())
    der_r = public_der(doc["key_r"].public_key())
    m1, m2, m3, m4 = (_body(doc[n]) for n in ("m1", "m2", "m3", "m4"))
    assert list(m1) == ["t", "versions", "nonce", "eph", "key", "name", "commit"]
    assert m1 == {
        "t": 1,
        "versions": [1],
        "nonce": doc["nonce_i"],
        "eph": doc["eph_pub_i"],
        "key": der_i,
        "name": doc["initiator_name"],
        "commit": doc["commit_i"],
    }
    assert list(m2) == ["t", "version", "nonce", "eph", "key", "name", "ct"]
    assert m2 == {
        "t": 2,
        "version": 1,
        "nonce": doc["nonce_r"],
        "eph": doc["eph_pub_r"],
        "key": der_r,
        "name": doc["responder_name"],
        "ct": _oaep(doc["key_i"].public_key(), doc["ms_r"], doc["oaep_seed_r"]),
    }
    assert m3 == {
        "t": 3,
        "ct": _oaep(doc["key_r"].public_key(), doc["ms_i"], doc["oaep_seed_i"]),
        "fin": doc["fin_i"],
    }
    assert m4 == {"t": 4, "fin": doc["fin_r"]}
    # each secret is ordinary OAEP: pyca decrypts it with the recipient's private key
    oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    assert doc["key_i"].decrypt(m2["ct"], oaep) == doc["ms_r"]
    assert doc["key_r"].decrypt(m3["ct"], oaep) == doc["ms_i"]


def test_key_schedule_from_the_spec(doc: dict[str, Any]) -> None:
    def pub(private: bytes) -> bytes:
        return x25519.X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()

    assert pub(doc["eph_priv_i"]) == doc["eph_pub_i"]
    assert pub(doc["eph_priv_r"]) == doc["eph_pub_r"]
    dh_i = x25519.X25519PrivateKey.from_private_bytes(doc["eph_priv_i"]).exchange(
        x25519.X25519PublicKey.from_public_bytes(doc["eph_pub_r"])
    )
    dh_r = x25519.X25519PrivateKey.from_private_bytes(doc["eph_priv_r"]).exchange(
        x25519.X25519PublicKey.from_public_bytes(doc["eph_pub_i"])
    )
    assert dh_i == dh_r == doc["dh"]
    assert _sha(b"p2pchat/1 commit", doc["ms_i"]) == doc["commit_i"]

    assert PROTOCOL_NAME == b"p2pchat/1 RSA3072-OAEP-SHA256 X25519 HKDF-SHA256 AES256GCM"
    m1, m2, m3 = (doc[n][1:] for n in ("m1", "m2", "m3"))
    th2 = _sha(PROTOCOL_NAME, m1, m2)
    th4 = _sha(PROTOCOL_NAME, m1, m2, m3)
    assert th2 == doc["th2"] and th4 == doc["th4"]
    prk = hmac.digest(_sha(PROTOCOL_NAME), doc["dh"] + doc["ms_i"] + doc["ms_r"], "sha256")
    assert prk == doc["prk"]
    assert _expand_label(prk, b"i finished", th2, 32) == doc["fk_i"]
    assert hmac.digest(doc["fk_i"], th2, "sha256") == doc["fin_i"]
    assert _expand_label(prk, b"r finished", th4, 32) == doc["fk_r"]
    assert hmac.digest(doc["fk_r"], th4, "sha256") == doc["fin_r"]
    assert _expand_label(prk, b"i traffic", th4, 32) == doc["i_traffic"]
    assert _expand_label(prk, b"r traffic", th4, 32) == doc["r_traffic"]
    assert _expand_label(prk, b"exporter", th4, 32) == doc["exporter"]

    # SAS = int(expand_label(PRK, "sas", TH2, 8)) mod 10^6: over PRK and TH2, not TH4
    sas_bytes = _expand_label(prk, b"sas", th2, 8)
    assert sas_bytes == doc["sas_bytes"]
    value = int.from_bytes(sas_bytes, "big") % 10**6
    assert doc["sas"] == f"{value // 1000:03d} {value % 1000:03d}"

    for side in ("i", "r"):
        secret = doc[f"{side}_traffic"]
        assert _expand_label(secret, b"key", b"", 32) == doc[f"{side}_key"]
        assert _expand_label(secret, b"iv", b"", 12) == doc[f"{side}_iv"]
    assert _expand_label(doc["i_traffic"], b"key update", b"", 32) == doc["i_traffic_1"]


def test_record_and_frame_from_the_spec(doc: dict[str, Any]) -> None:
    record = doc["record_i_0"]
    header = bytes((0x02, 0x00))  # record tag, content type "data"
    assert record[:2] == header
    nonce = (int.from_bytes(doc["i_iv"], "big") ^ 0).to_bytes(12, "big")  # sequence number 0
    assert AESGCM(doc["i_key"]).decrypt(nonce, record[2:], header) == b"hello, bob"
    assert len(record) == 2 + len(b"hello, bob") + 16
    body = msgpack.packb({"t": "send", "to": 2, "p": record}, use_bin_type=True)
    assert doc["send_frame"] == len(body).to_bytes(4, "big") + body


def test_registration_challenge_from_the_spec(doc: dict[str, Any]) -> None:
    """3.3 from the text alone: OAEP (SHA-256, MGF1-SHA-256) with the label
    "p2pchat/1 register", built by hand, and the two frames."""
    rng = SpecRng(b"relay")
    secret, seed = rng(32), rng(32)
    assert (secret, seed) == (doc["register_secret"], doc["register_oaep_seed"])
    numbers = doc["key_i"].public_key().public_numbers()
    k = (numbers.n.bit_length() + 7) // 8

    def mgf1(data: bytes, length: int) -> bytes:
        out = b"".join(
            hashlib.sha256(data + i.to_bytes(4, "big")).digest() for i in range(length // 32 + 1)
        )
        return out[:length]

    label_hash = hashlib.sha256(b"p2pchat/1 register").digest()
    db = label_hash + bytes(k - len(secret) - 66) + b"\x01" + secret
    masked_db = bytes(a ^ b for a, b in zip(db, mgf1(seed, k - 33), strict=True))
    masked_seed = bytes(a ^ b for a, b in zip(seed, mgf1(masked_db, 32), strict=True))
    em = int.from_bytes(b"\x00" + masked_seed + masked_db, "big")
    c = pow(em, numbers.e, numbers.n).to_bytes(k, "big")
    body = msgpack.packb({"t": "challenge", "c": c}, use_bin_type=True)
    assert doc["challenge_frame"] == len(body).to_bytes(4, "big") + body
    body = msgpack.packb({"t": "proof", "n": secret}, use_bin_type=True)
    assert doc["proof_frame"] == len(body).to_bytes(4, "big") + body
    # the initiator's private key opens it with that label, and only with it
    assert doc["key_i"].decrypt(c, REGISTER_PADDING) == secret
    with pytest.raises(ValueError):
        doc["key_i"].decrypt(c, OAEP_PADDING)


def _packb(obj: Any) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def test_relay_frames_from_the_spec(doc: dict[str, Any]) -> None:
    """3.1: hello and welcome, fields in the table's order, with a length prefix."""
    der_i = public_der(doc["key_i"].public_key())
    der_r = public_der(doc["key_r"].public_key())
    hello = _packb({"t": "hello", "versions": [1], "name": "alice", "key": der_i})
    assert doc["hello_frame"] == len(hello).to_bytes(4, "big") + hello
    bob = {"id": BOB_ID, "name": "bob", "key": der_r}
    welcome = {"t": "welcome", "version": 1, "id": ALICE_ID, "peers": [bob], "host": BOB_ID}
    body = _packb(welcome)
    assert doc["welcome_frame"] == len(body).to_bytes(4, "big") + body
    # the layout by hand: fixmap 5, "t": "welcome", ..., "host": 2 last
    assert body.startswith(b"\x85\xa1t\xa7welcome") and body.endswith(b"\xa4host\x02")


def test_app_messages_from_the_spec(doc: dict[str, Any]) -> None:
    """6.6 and 6.8: the maps of the tables, keys in their order, shortest encodings."""
    rng = SpecRng(b"app")
    assert (rng(16), rng(16)) == (doc["msg_id_1"], doc["msg_id_2"])
    id1, id2, text = doc["msg_id_1"], doc["msg_id_2"], doc["msg_text"]
    assert doc["app_msg"] == _packb({"t": "msg", "id": id1, "text": text})
    assert doc["app_msg_direct"] == _packb({"t": "msg", "id": id2, "text": text, "direct": True})
    assert doc["app_ack"] == _packb({"t": "ack", "ids": [id1, id2]})
    # keepalives by hand: fixmap 2, "t": "ka", "reply": true (c3) / false (c2)
    assert doc["app_ka_probe"] == b"\x82\xa1t\xa2ka\xa5reply\xc3"
    assert doc["app_ka_answer"] == b"\x82\xa1t\xa2ka\xa5reply\xc2"
    refuse = {"t": "refuse", "code": "pinned-other-key"}
    refuse["reason"] = "a pinned name presented a different key"
    assert doc["app_refuse"] == _packb(refuse)
    # text is UTF-8: "ç" takes two bytes
    assert text.encode("utf-8") in doc["app_msg"] and len(text.encode("utf-8")) == len(text) + 1


def test_file_id_and_offer_from_the_spec(doc: dict[str, Any]) -> None:
    """6.8: id = SHA-256("p2pchat/1 file" || hash || BE64(size) || UTF-8(name))[0..16]."""
    data, name, size = doc["file_data"], doc["file_name"], int(doc["file_size"])
    assert size == len(data) and doc["file_sha256"] == _sha(data)
    label = b"p2pchat/1 file"
    assert len(label) == 14
    fid = _sha(label, doc["file_sha256"], size.to_bytes(8, "big"), name.encode("utf-8"))[:16]
    assert doc["file_id"] == fid
    offer = {"t": "fo", "id": fid, "name": name, "size": size, "hash": doc["file_sha256"]}
    assert doc["app_fo"] == _packb(offer)


def _open(key: bytes, iv: bytes, seq: int, record: bytes) -> tuple[int, bytes]:
    """6.1/6.2 by hand: AAD = the two header bytes, nonce = IV XOR BE96(seq)."""
    assert record[0] == 0x02 and record[1] in (0x00, 0x01)
    nonce = (int.from_bytes(iv, "big") ^ seq).to_bytes(12, "big")
    return record[1], AESGCM(key).decrypt(nonce, record[2:], record[:2])


def test_records_from_the_spec(doc: dict[str, Any]) -> None:
    for records, side in ((INITIATOR_RECORDS, "i"), (RESPONDER_RECORDS, "r")):
        key, iv = doc[f"{side}_key"], doc[f"{side}_iv"]
        for seq, name in records.items():
            record = doc[f"record_{side}_{seq}"]
            content_type, plaintext = _open(key, iv, seq, record)
            if name is None:  # the close: content type 1, empty, 18 bytes
                assert (content_type, plaintext, len(record)) == (0x01, b"", 18)
            else:
                assert (content_type, plaintext) == (0x00, doc[name])
                assert len(record) == 18 + len(plaintext)
            # at any other sequence number it does not open
            with pytest.raises(InvalidTag):
                _open(key, iv, seq + 1, record)


def test_record_after_a_key_update_from_the_spec(doc: dict[str, Any]) -> None:
    """6.3: the next secret, its key and IV, and seq back to 0."""
    secret = _expand_label(doc["i_traffic"], b"key update", b"", 32)
    assert secret == doc["i_traffic_1"]
    key, iv = _expand_label(secret, b"key", b"", 32), _expand_label(secret, b"iv", b"", 12)
    assert (key, iv) == (doc["i_key_1"], doc["i_iv_1"])
    assert _open(key, iv, 0, doc["record_i_epoch1_0"]) == (0x00, doc["app_msg"])
    # the same plaintext at seq 1 under the first key is another record
    assert doc["record_i_1"] != doc["record_i_epoch1_0"]
    assert _open(doc["i_key"], doc["i_iv"], 1, doc["record_i_1"]) == (0x00, doc["app_msg"])
