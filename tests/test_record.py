"""The record layer: AES-256-GCM, implicit sequence numbers, rekeying, authenticated close."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.errors import DecryptError, LocalProtocolError
from p2pchat.proto.record import (
    CT_CLOSE,
    CT_DATA,
    RECORD_TAG,
    RecordReceiver,
    RecordSender,
    next_secret,
    traffic_keys,
)

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
TAG_LEN = 16


def pair(
    secret: bytes = SECRET, rekey_interval: int = 1 << 20
) -> tuple[RecordSender, RecordReceiver]:
    return RecordSender(secret, rekey_interval), RecordReceiver(secret, rekey_interval)


def expected_record(secret: bytes, seq: int, payload: bytes, content_type: int = CT_DATA) -> bytes:
    """A record built straight from AES-GCM: nonce = IV xor seq, header as associated data."""
    key, iv = traffic_keys(secret)
    nonce = (int.from_bytes(iv, "big") ^ seq).to_bytes(12, "big")
    header = bytes((RECORD_TAG, content_type))
    return header + AESGCM(key).encrypt(nonce, payload, header)


# ------------------------------------------------------------------ the good path


def test_seal_then_open_in_order() -> None:
    sender, receiver = pair()
    payloads = [b"hello", b"", b"\x00" * 1000, bytes(range(256)) * 256]
    records = [sender.seal(p) for p in payloads]
    assert [receiver.open(r) for r in records] == [(CT_DATA, p) for p in payloads]


def test_record_layout() -> None:
    sender, _ = pair()
    record = sender.seal(b"abcde")
    assert record[0] == RECORD_TAG
    assert record[1] == CT_DATA
    assert len(record) == 2 + 5 + TAG_LEN
    assert b"abcde" not in record


def test_nonce_is_iv_xor_sequence_number() -> None:
    sender, _ = pair()
    for seq in range(5):
        assert sender.seal(b"same text") == expected_record(SECRET, seq, b"same text")
    assert sender.seal_close() == expected_record(SECRET, 5, b"", CT_CLOSE)


@pytest.mark.parametrize("size", [4095, 4096, 70_000])
def test_large_records_follow_the_same_format(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + b"\x01" * (size % 256)
    sender, receiver = pair()
    sender.seal(b"first")
    receiver.open(expected_record(SECRET, 0, b"first"))
    record = sender.seal(payload)
    assert record == expected_record(SECRET, 1, payload)
    for position in (0, 1, 2, size // 2, size + 1, size + 17):
        tampered = bytearray(record)
        tampered[position] ^= 0x80
        _, fresh = pair()
        fresh.open(expected_record(SECRET, 0, b"first"))
        with pytest.raises(DecryptError):
            fresh.open(bytes(tampered))
    assert receiver.open(record) == (CT_DATA, payload)


def test_header_is_associated_data() -> None:
    sender, _ = pair()
    record = sender.seal(b"data")
    key, iv = traffic_keys(SECRET)
    AESGCM(key).decrypt(iv, record[2:], record[:2])  # seq 0: nonce is the IV itself
    with pytest.raises(InvalidTag):
        AESGCM(key).decrypt(iv, record[2:], bytes((RECORD_TAG, CT_CLOSE)))
    with pytest.raises(InvalidTag):
        AESGCM(key).decrypt(iv, record[2:], b"")


def test_traffic_keys_are_sized_and_distinct() -> None:
    key, iv = traffic_keys(SECRET)
    assert (len(key), len(iv)) == (32, 12)
    assert key[:12] != iv
    assert traffic_keys(OTHER_SECRET) != (key, iv)
    assert next_secret(SECRET) not in (SECRET, key)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(1, 5))
def test_any_sequence_of_payloads_round_trips(payloads: list[bytes], interval: int) -> None:
    sender, receiver = pair(rekey_interval=interval)
    for p in payloads:
        assert receiver.open(sender.seal(p)) == (CT_DATA, p)


# ------------------------------------------------------------------ attacks


def test_replay_fails() -> None:
    sender, receiver = pair()
    record = sender.seal(b"pay me")
    assert receiver.open(record) == (CT_DATA, b"pay me")
    with pytest.raises(DecryptError):
        receiver.open(record)


def test_reorder_fails() -> None:
    sender, receiver = pair()
    first, second = sender.seal(b"one"), sender.seal(b"two")
    with pytest.raises(DecryptError):
        receiver.open(second)
    _, fresh = pair()
    assert fresh.open(first) == (CT_DATA, b"one")
    assert fresh.open(second) == (CT_DATA, b"two")


def test_drop_fails() -> None:
    sender, receiver = pair()
    records = [sender.seal(b"%d" % i) for i in range(3)]
    assert receiver.open(records[0]) == (CT_DATA, b"0")
    with pytest.raises(DecryptError):
        receiver.open(records[2])  # records[1] was dropped


def test_splice_from_another_session_fails() -> None:
    ours, receiver = pair(SECRET)
    theirs, _ = pair(OTHER_SECRET)
    assert receiver.open(ours.seal(b"a")) == (CT_DATA, b"a")
    theirs.seal(b"x")  # the foreign record sits at the same sequence number
    with pytest.raises(DecryptError):
        receiver.open(theirs.seal(b"b"))


def test_every_truncation_fails() -> None:
    sender, _ = pair()
    record = sender.seal(b"truncate me")
    for length in range(len(record)):
        _, receiver = pair()
        with pytest.raises(DecryptError):
            receiver.open(record[:length])


def test_extension_fails() -> None:
    sender, _ = pair()
    record = sender.seal(b"x")
    _, receiver = pair()
    with pytest.raises(DecryptError):
        receiver.open(record + b"\x00")


@pytest.mark.parametrize("content_type", [CT_DATA, CT_CLOSE])
def test_every_single_bit_flip_fails(content_type: int) -> None:
    sender, _ = pair()
    payload = b"" if content_type == CT_CLOSE else b"flip"
    record = sender.seal(payload, content_type)
    for bit in range(len(record) * 8):
        tampered = bytearray(record)
        tampered[bit // 8] ^= 1 << (bit % 8)
        _, receiver = pair()
        with pytest.raises(DecryptError):
            receiver.open(bytes(tampered))
    _, receiver = pair()
    assert receiver.open(record) == (content_type, payload)  # the original still opens


def test_unknown_content_type_is_rejected_even_when_authentic() -> None:
    _, receiver = pair()
    with pytest.raises(DecryptError):
        receiver.open(expected_record(SECRET, 0, b"data", content_type=0x05))
    assert receiver.open(expected_record(SECRET, 0, b"data")) == (CT_DATA, b"data")


def test_sealing_an_unknown_content_type_is_a_local_error() -> None:
    sender, receiver = pair()
    with pytest.raises(LocalProtocolError):
        sender.seal(b"x", 0x05)
    assert receiver.open(sender.seal(b"y")) == (CT_DATA, b"y")  # nothing was consumed


def test_not_a_record_tag_is_rejected() -> None:
    record = bytearray(expected_record(SECRET, 0, b"data"))
    record[0] = 0x01
    with pytest.raises(DecryptError):
        pair()[1].open(bytes(record))


def test_a_direction_cannot_open_its_own_records_with_the_other_key() -> None:
    # each direction has its own secret: a reflected record fails
    a_to_b, _ = pair(SECRET)
    _, b_to_a_receiver = pair(OTHER_SECRET)
    with pytest.raises(DecryptError):
        b_to_a_receiver.open(a_to_b.seal(b"reflected"))


# ------------------------------------------------------------------ close


def test_authenticated_close() -> None:
    sender, receiver = pair()
    assert receiver.open(sender.seal(b"last words")) == (CT_DATA, b"last words")
    close = sender.seal_close()
    assert close[1] == CT_CLOSE
    assert sender.closed
    assert receiver.open(close) == (CT_CLOSE, b"")
    assert receiver.closed
    with pytest.raises(LocalProtocolError):
        sender.seal(b"more")
    with pytest.raises(LocalProtocolError):
        sender.seal_close()


def test_sealing_a_close_with_a_payload_is_a_local_error() -> None:
    sender, receiver = pair()
    with pytest.raises(LocalProtocolError):
        sender.seal(b"last words", CT_CLOSE)
    assert not sender.closed
    assert receiver.open(sender.seal_close()) == (CT_CLOSE, b"")  # nothing was consumed


def test_nothing_opens_after_close() -> None:
    sender, receiver = pair()
    receiver.open(sender.seal_close())
    # even a record that would authenticate at the next sequence number
    with pytest.raises(DecryptError):
        receiver.open(expected_record(SECRET, 1, b"after close"))


def test_close_record_with_a_payload_is_rejected() -> None:
    _, receiver = pair()
    with pytest.raises(DecryptError):
        receiver.open(expected_record(SECRET, 0, b"smuggled", CT_CLOSE))
    assert not receiver.closed


def test_data_record_relabelled_as_close_fails() -> None:
    sender, receiver = pair()
    record = bytearray(sender.seal(b""))
    record[1] = CT_CLOSE
    with pytest.raises(DecryptError):
        receiver.open(bytes(record))
    assert not receiver.closed


# ------------------------------------------------------------------ rekeying


def test_rekey_schedule() -> None:
    interval = 3
    sender, receiver = pair(rekey_interval=interval)
    secret = SECRET
    for epoch in range(4):
        assert sender.epoch == epoch
        for seq in range(interval):
            assert sender.seq == seq
            record = sender.seal(b"same")
            assert record == expected_record(secret, seq, b"same")
            assert receiver.open(record) == (CT_DATA, b"same")
        secret = next_secret(secret)
    assert receiver.epoch == 4


def test_rekey_changes_the_key_not_just_the_sequence() -> None:
    sender, _ = pair(rekey_interval=3)
    records = [sender.seal(b"same") for _ in range(4)]
    assert records[3] != records[0]  # seq 0 of epoch 1 vs seq 0 of epoch 0
    # without a rekey, the 4th record would be seq 3 under the first key: it is not
    assert records[3] != expected_record(SECRET, 3, b"same")
    assert records[3] == expected_record(next_secret(SECRET), 0, b"same")


def test_mismatched_rekey_intervals_fail_at_the_boundary() -> None:
    sender = RecordSender(SECRET, 2)
    receiver = RecordReceiver(SECRET, 3)
    assert receiver.open(sender.seal(b"0")) == (CT_DATA, b"0")
    assert receiver.open(sender.seal(b"1")) == (CT_DATA, b"1")
    with pytest.raises(DecryptError):
        receiver.open(sender.seal(b"2"))


@pytest.mark.parametrize(
    ("secret", "interval"), [(bytes(31), 10), (bytes(33), 10), (SECRET, 0), (SECRET, -1)]
)
def test_bad_parameters_are_local_errors(secret: bytes, interval: int) -> None:
    with pytest.raises(LocalProtocolError):
        RecordSender(secret, interval)
    with pytest.raises(LocalProtocolError):
        RecordReceiver(secret, interval)
