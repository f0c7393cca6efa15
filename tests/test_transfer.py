"""File transfer without the network: safe names, the file messages'
validation, both state machines, the progress meter, and the disk store
(resume, hash mismatch, never overwriting)."""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.errors import MalformedFrameError, TransferError
from p2pchat.proto.app import (
    MAX_CHUNK,
    MAX_FILE_SIZE,
    Chat,
    FileAccept,
    FileAck,
    FileCancel,
    FileData,
    FileDone,
    FileOffer,
    FileRefuse,
    encode_app,
    file_id,
    parse_app,
)
from p2pchat.proto.text import is_display_unsafe
from p2pchat.proto.transfer import (
    CHECKPOINT_BYTES,
    CHUNK_SIZE,
    TRANSITIONS,
    WINDOW,
    Incoming,
    Meter,
    Outgoing,
    Phase,
    format_duration,
    format_size,
    numbered,
    offer_name,
    safe_filename,
)
from p2pchat.store.filestore import HashMismatchError, Part, Source, part_key

# ---------------------------------------------------------------- names

HOSTILE = [
    ("../../etc/passwd", "passwd"),
    ("/etc/shadow", "shadow"),
    ("..\\..\\Windows\\System32\\evil.dll", "evil.dll"),
    ("C:\\Users\\x\\report.pdf", "report.pdf"),
    ("C:evil.exe", "evil.exe"),
    ("\\\\server\\share\\x.txt", "x.txt"),
    ("..", "file"),
    (".", "file"),
    ("", "file"),
    ("   ", "file"),
    ("...", "file"),
    ("a/..", "a"),
    ("dir/", "dir"),
    (".bashrc", "bashrc"),
    ("name. . ", "name"),
    ("CON", "_CON"),
    ("con.txt", "_con.txt"),
    ("NUL", "_NUL"),
    ("aux.tar.gz", "_aux.tar.gz"),
    ("COM1", "_COM1"),
    ("lpt9.log", "_lpt9.log"),
    ("COM¹.txt", "_COM¹.txt"),
    ("CONSOLE.txt", "CONSOLE.txt"),  # only the exact device names
    ("a\x00b", "a_b"),
    ("line\nbreak\r.txt", "line_break_.txt"),
    ("esc\x1b[2J.txt", "esc_[2J.txt"),
    ("rtl\u202etxt.exe", "rtl_txt.exe"),
    ("zero\u200bwidth", "zero_width"),
    ("sep\u2028x", "sep_x"),
    ('what?<>:"|*.txt', "what_______.txt"),
    ("x.part", "x.part_"),
    ("y.RESUME", "y.RESUME_"),
    ("ok name (1).pdf", "ok name (1).pdf"),
    ("grüße 世界.txt", "grüße 世界.txt"),
    ("family 👨\u200d👩\u200d👧.jpg", "family 👨\u200d👩\u200d👧.jpg"),  # ZWJ kept
    ("bom\ufeff.txt", "bom_.txt"),
]


@pytest.mark.parametrize(("name", "expected"), HOSTILE)
def test_hostile_names_are_made_safe(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


def test_overlong_names_are_cut_keeping_the_extension() -> None:
    name = "é" * 300 + ".tar"
    safe = safe_filename(name)
    assert len(safe.encode()) <= 200 and safe.endswith(".tar") and safe.startswith("é")
    assert safe_filename("x" * 300) == "x" * 200
    # an "extension" that is most of the name is not kept apart
    assert len(safe_filename("a." + "b" * 300).encode()) == 200


def _assert_stays_inside(directory: Path, name: str) -> None:
    safe = safe_filename(name)
    assert safe and safe not in (".", "..")
    assert "/" not in safe and "\\" not in safe and "\x00" not in safe
    assert len(safe.encode("utf-8")) <= 200
    # nothing the display escapes: no control, bidi or invisible character
    # (a file name may hold ZWJ, tags and code points newer than our tables)
    assert not any(is_display_unsafe(c) for c in safe)
    assert not any(unicodedata.category(c) in ("Cc", "Cs") for c in safe)
    assert not safe.startswith(".") and safe == safe.strip(" .")
    assert (directory / safe).resolve().parent == directory.resolve()
    assert safe_filename(safe) == safe  # stable


@given(st.text(max_size=300))
@settings(max_examples=400, deadline=None)
def test_no_name_escapes_the_directory(name: str) -> None:
    _assert_stays_inside(Path("/srv/inbox"), name)


@given(st.lists(st.sampled_from(["..", ".", "/", "\\", "C:", "a", " ", "\x00", "CON", "é"])))
@settings(max_examples=400, deadline=None)
def test_no_path_like_name_escapes_the_directory(parts: list[str]) -> None:
    _assert_stays_inside(Path("/srv/inbox"), "".join(parts))


def test_numbered_alternatives() -> None:
    assert numbered("report.pdf", 0) == "report.pdf"
    assert numbered("report.pdf", 1) == "report (1).pdf"
    assert numbered("archive.tar.gz", 2) == "archive.tar (2).gz"
    assert numbered("README", 3) == "README (3)"


def test_offer_name_is_valid_utf8_and_bounded() -> None:
    undecodable = b"caf\xe9.txt".decode("utf-8", "surrogateescape")
    assert offer_name(undecodable) == "caf\ufffd.txt"
    long = offer_name("n" * 400 + ".jpeg")
    assert len(long.encode()) == 255 and long.endswith(".jpeg")


def test_sizes_and_durations_for_people() -> None:
    assert format_size(999) == "999 B"
    assert format_size(50_000_000) == "50.0 MB"
    assert format_size(1_500_000_000) == "1.5 GB"
    assert format_duration(None) == "?"
    assert format_duration(0.42) == "0.4 s"
    assert format_duration(42) == "42 s"
    assert format_duration(185) == "3 min 5 s"
    assert format_duration(7260) == "2 h 1 min"


# ---------------------------------------------------------------- messages

SHA = hashlib.sha256(b"content").digest()
TID = file_id(SHA, "a.txt", 7)


@pytest.mark.parametrize(
    "msg",
    [
        FileOffer(TID, "a.txt", 7, SHA),
        FileOffer(file_id(SHA, "../../x", 0), "../../x", 0, SHA),
        FileAccept(TID, 0),
        FileAccept(TID, 7),
        FileData(TID, 0, b"x"),
        FileData(TID, 2**40, b"\x00" * MAX_CHUNK),
        FileAck(TID, 7),
        FileDone(TID),
        FileRefuse(TID, "not accepting files"),
        FileCancel(TID, ""),
    ],
)
def test_file_messages_round_trip(msg: object) -> None:
    assert parse_app(encode_app(msg)) == msg  # type: ignore[arg-type]


def test_file_id_is_stable_and_binds_every_field() -> None:
    assert file_id(SHA, "a.txt", 7) == TID and len(TID) == 16
    assert file_id(SHA, "b.txt", 7) != TID
    assert file_id(SHA, "a.txt", 8) != TID
    assert file_id(hashlib.sha256(b"other").digest(), "a.txt", 7) != TID
    expected = hashlib.sha256(b"p2pchat/1 file" + SHA + (7).to_bytes(8, "big") + b"a.txt")
    assert expected.digest()[:16] == TID


def _raw(**fields: object) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


GOOD_OFFER = {"t": "fo", "id": TID, "name": "a.txt", "size": 7, "hash": SHA}


@pytest.mark.parametrize(
    "fields",
    [
        {**GOOD_OFFER, "id": TID[:15]},
        {**GOOD_OFFER, "id": "x" * 16},
        {**GOOD_OFFER, "id": file_id(SHA, "b.txt", 7)},  # not derived from these fields
        {**GOOD_OFFER, "name": ""},
        {**GOOD_OFFER, "name": b"a.txt"},
        {**GOOD_OFFER, "size": -1},
        {**GOOD_OFFER, "size": True},
        {**GOOD_OFFER, "size": 7.0},
        {**GOOD_OFFER, "size": MAX_FILE_SIZE + 1},
        {**GOOD_OFFER, "hash": SHA[:31]},
        {k: v for k, v in GOOD_OFFER.items() if k != "hash"},
        {"t": "fa", "id": TID},
        {"t": "fa", "id": TID, "off": -5},
        {"t": "fa", "id": TID, "off": False},
        {"t": "fd", "id": TID, "off": 0, "data": b""},
        {"t": "fd", "id": TID, "off": 0, "data": b"x" * (MAX_CHUNK + 1)},
        {"t": "fd", "id": TID, "off": 0, "data": "text"},
        {"t": "fd", "id": TID, "off": MAX_FILE_SIZE, "data": b"x"},
        {"t": "fk", "id": TID, "off": "7"},
        {"t": "ff"},
        {"t": "fr", "id": TID},
        {"t": "fr", "id": TID, "reason": "é" * 513},
        {"t": "fx", "id": TID, "reason": 5},
        {"t": ["fo"]},
    ],
)
def test_bad_file_messages_are_rejected(fields: dict[str, object]) -> None:
    with pytest.raises(MalformedFrameError):
        parse_app(_raw(**fields))


def test_a_file_message_type_we_do_not_know_is_ignored_not_malformed() -> None:
    from p2pchat.proto.app import Unknown

    assert parse_app(_raw(t="fz", id=TID)) == Unknown("fz")


def test_a_long_name_at_the_limit_is_accepted_one_byte_more_is_not() -> None:
    name = "n" * 255
    parse_app(_raw(t="fo", id=file_id(SHA, name, 1), name=name, size=1, hash=SHA))
    name += "n"
    with pytest.raises(MalformedFrameError):
        parse_app(_raw(t="fo", id=file_id(SHA, name, 1), name=name, size=1, hash=SHA))


def test_chat_is_still_parsed_first() -> None:
    msg = Chat(b"i" * 16, "hello")
    assert parse_app(encode_app(msg)) == msg


# ---------------------------------------------------------------- state machines


def test_the_transition_table_covers_both_sides() -> None:
    sides = {side for side, _, _ in TRANSITIONS}
    assert sides == {"send", "recv"}
    assert all(nxt not in (Phase.FAILED,) for nxt in TRANSITIONS.values())


def test_sender_window_and_acks() -> None:
    size = CHUNK_SIZE * 40 + 100
    out = Outgoing("f.bin", size, SHA)
    assert out.next_chunk() is None  # nothing before an answer
    offer = out.offer()
    assert offer.transfer_id == out.transfer_id == file_id(SHA, "f.bin", size)
    out.on_accept(0)
    spans = []
    while (span := out.next_chunk()) is not None:
        spans.append(span)
    assert len(spans) == WINDOW  # the window is full
    assert spans[0] == (0, CHUNK_SIZE) and spans[-1][0] == (WINDOW - 1) * CHUNK_SIZE
    assert out.in_flight == WINDOW * CHUNK_SIZE
    out.on_ack(3 * CHUNK_SIZE)  # three acknowledged: three more may go
    assert [out.next_chunk() for _ in range(4)][-1] is None
    with pytest.raises(TransferError, match="outside"):
        out.on_ack(out.next_offset + 1)  # never sent
    with pytest.raises(TransferError, match="outside"):
        out.on_ack(CHUNK_SIZE)  # goes backwards
    # drain the rest: the last chunk is short, and the final ack moves to VERIFYING
    while out.phase is Phase.RUNNING:
        while out.next_chunk() is not None:
            pass
        out.on_ack(out.next_offset)
    assert out.phase is Phase.VERIFYING and out.acked == size
    out.on_ack(size)  # a repeat is harmless
    out.on_done()
    assert out.phase is Phase.DONE and out.final


def test_sender_resumes_where_the_receiver_says() -> None:
    size = 10 * CHUNK_SIZE
    out = Outgoing("f.bin", size, SHA)
    out.offer()
    out.on_accept(0)
    out.next_chunk()
    out.detach()
    assert out.phase is Phase.WAITING
    out.offer()
    with pytest.raises(TransferError):
        out.on_accept(size + 1)
    out.on_accept(7 * CHUNK_SIZE + 5)
    assert out.start == out.acked == 7 * CHUNK_SIZE + 5
    assert out.next_chunk() == (7 * CHUNK_SIZE + 5, CHUNK_SIZE)
    # a receiver that has it all: straight to VERIFYING, then done
    out.detach()
    out.offer()
    out.on_accept(size)
    assert out.phase is Phase.VERIFYING and out.next_chunk() is None
    out.on_done()


def test_sender_illegal_moves_name_the_event_and_phase() -> None:
    out = Outgoing("f.bin", 5, SHA)
    with pytest.raises(
        TransferError, match="'accept' is not allowed to a sender in phase 'waiting'"
    ):
        out.on_accept(0)
    out.offer()
    out.on_accept(0)
    with pytest.raises(TransferError, match=r"'done'.*'running'"):
        out.on_done()  # before every byte was acknowledged
    out.fail()
    assert out.phase is Phase.FAILED
    with pytest.raises(TransferError):
        out.fail()
    out.detach()  # nothing to do once final
    assert out.phase is Phase.FAILED


def test_receiver_expects_each_chunk_in_order_and_within_the_size() -> None:
    inc = Incoming.from_offer(FileOffer(file_id(SHA, "../x.bin", 100), "../x.bin", 100, SHA))
    assert inc.name == "x.bin" and inc.phase is Phase.OFFERED
    with pytest.raises(TransferError):
        inc.on_data(0, 10)  # not accepted yet
    inc.accept()
    assert inc.opened(40) == FileAccept(inc.transfer_id, 40)
    with pytest.raises(TransferError, match="expected 40"):
        inc.on_data(0, 10)
    assert inc.on_data(40, 50) is False
    with pytest.raises(TransferError, match="beyond"):
        inc.on_data(90, 11)
    inc.detach()
    assert inc.phase is Phase.WAITING
    assert inc.reoffer() == FileAccept(inc.transfer_id, 90)  # the sender comes back
    assert inc.start == 90
    assert inc.reoffer() == FileAccept(inc.transfer_id, 90)  # ... or restarts again
    assert inc.on_data(90, 10) is True and inc.phase is Phase.VERIFYING
    assert inc.reoffer() is None  # the verdict comes when verified
    inc.verified()
    assert inc.phase is Phase.DONE


def test_receiver_undecided_and_opening_offers_answer_later() -> None:
    inc = Incoming.from_offer(FileOffer(TID, "a.txt", 7, SHA))
    assert inc.reoffer() is None
    inc.accept()
    assert inc.reoffer() is None and inc.phase is Phase.OPENING
    inc.detach()
    assert inc.phase is Phase.OPENING
    inc.opened(7)
    assert inc.phase is Phase.VERIFYING


def test_meter_rate_eta_and_reporting_pace() -> None:
    meter = Meter(100.0, 1000, interval=0.5)
    assert meter.rate == 0 and meter.eta(10_000) is None
    meter.add(101.0, 3000)
    assert meter.rate == pytest.approx(2000) and meter.eta(10_000) == pytest.approx(3.5)
    for t in range(2, 10):
        meter.add(100.0 + t, 1000 + 2000 * t + (5000 if t > 6 else 0))
    assert meter.rate == pytest.approx((19000 + 5000 - 13000) / 3)  # the last 3 s only
    assert meter.average(110.0, 21000) == pytest.approx(2000)
    assert meter.due(0.0) and not meter.due(0.2) and meter.due(0.5)
    assert meter.due(0.6, force=True)


# ---------------------------------------------------------------- the disk


FP = b"f" * 32


def _offer(tmp_path: Path, data: bytes, name: str = "data.bin") -> tuple[Path, bytes, bytes]:
    return (
        tmp_path / "inbox",
        hashlib.sha256(data).digest(),
        file_id(hashlib.sha256(data).digest(), name, len(data)),
    )


def _write_chunks(part: Part, data: bytes, upto: int) -> None:
    while part.offset < upto:
        n = min(CHUNK_SIZE, upto - part.offset)
        part.write(part.offset, data[part.offset : part.offset + n])


def test_part_receives_verifies_and_never_overwrites(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    inbox, sha, tid = _offer(tmp_path, data)
    inbox.mkdir()
    (inbox / "data.bin").write_bytes(b"mine")
    (inbox / "data (1).bin").write_bytes(b"also mine")
    part = Part(inbox, "data.bin", tid, FP, len(data), sha)
    key = part_key(tid, FP)
    assert part.offset == 0 and part.part_path.name == f"data.bin.{key}.part"
    assert part.resume_path.exists()  # the offer is recorded from the start
    with pytest.raises(TransferError):
        part.write(5, b"x")  # not where the file ends
    _write_chunks(part, data, len(data))
    final = part.finish()
    assert final == inbox / "data (2).bin" and final.read_bytes() == data
    assert (inbox / "data.bin").read_bytes() == b"mine"
    assert (inbox / "data (1).bin").read_bytes() == b"also mine"
    assert sorted(p.name for p in inbox.iterdir()) == ["data (1).bin", "data (2).bin", "data.bin"]


def test_part_hash_mismatch_removes_the_working_files(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    inbox, _, tid = _offer(tmp_path, data)
    part = Part(inbox, "data.bin", tid, FP, len(data), hashlib.sha256(b"something else").digest())
    _write_chunks(part, data, len(data))
    with pytest.raises(HashMismatchError, match="does not match"):
        part.finish()
    assert list(inbox.iterdir()) == []


def test_part_resumes_from_its_checkpoint_after_a_crash(tmp_path: Path) -> None:
    data = os.urandom(CHECKPOINT_BYTES + 5 * CHUNK_SIZE + 77)
    inbox, sha, tid = _offer(tmp_path, data)
    part = Part(inbox, "data.bin", tid, FP, len(data), sha)
    _write_chunks(part, data, CHECKPOINT_BYTES + 3 * CHUNK_SIZE)
    # a crash: no close, no checkpoint since the automatic one at 8 MiB
    state = json.loads(part.resume_path.read_text())
    assert state["offset"] == CHECKPOINT_BYTES
    assert state["prefix"] == hashlib.sha256(data[:CHECKPOINT_BYTES]).hexdigest()
    again = Part(inbox, "data.bin", tid, FP, len(data), sha)
    assert again.offset == CHECKPOINT_BYTES  # the 3 chunks after it are written again
    assert again.part_path.stat().st_size == CHECKPOINT_BYTES
    _write_chunks(again, data, len(data))
    assert again.finish().read_bytes() == data
    part.close()


def test_part_resume_point_on_pause_and_a_damaged_prefix(tmp_path: Path) -> None:
    data = os.urandom(10 * CHUNK_SIZE)
    inbox, sha, tid = _offer(tmp_path, data)
    part = Part(inbox, "data.bin", tid, FP, len(data), sha)
    _write_chunks(part, data, 6 * CHUNK_SIZE)
    part.checkpoint()  # what a pause does
    part.close()
    assert Part(inbox, "data.bin", tid, FP, len(data), sha).offset == 6 * CHUNK_SIZE
    # another sender's or another file's state does not apply
    assert Part(inbox, "data.bin", tid, b"g" * 32, len(data), sha).offset == 0
    # the .part was changed on disk: the prefix no longer hashes right, start over
    with part.part_path.open("r+b") as f:
        f.seek(100)
        f.write(bytes([data[100] ^ 0xFF]))  # flipped: random data may already hold any byte
    fresh = Part(inbox, "data.bin", tid, FP, len(data), sha)
    assert fresh.offset == 0 and fresh.part_path.stat().st_size == 0
    fresh.discard()
    # a garbled resume file: start over too
    junk = Part(inbox, "data.bin", tid, FP, len(data), sha)
    _write_chunks(junk, data, 2 * CHUNK_SIZE)
    junk.checkpoint()
    junk.close()
    junk.resume_path.write_text("{not json")
    assert Part(inbox, "data.bin", tid, FP, len(data), sha).offset == 0


def test_part_refuses_what_the_disk_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(TransferError, match="not enough disk space"):
        Part(tmp_path / "inbox", "huge.bin", TID, FP, 2**62, SHA)
    # and a directory it cannot create
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TransferError, match="cannot write in"):
        Part(blocker / "sub", "a.bin", TID, FP, 1, SHA)


def test_source_reads_and_hashes_in_blocks(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    path = tmp_path / "src.bin"
    path.write_bytes(data)
    src = Source(path)
    assert src.size == len(data) and src.hash() == hashlib.sha256(data).digest()
    assert src.read(1024 * 1024 - 2, 10) == data[1024 * 1024 - 2 : 1024 * 1024 + 8]
    with pytest.raises(TransferError, match="shorter"):
        src.read(len(data) - 3, 10)
    src.close()
    with pytest.raises(TransferError, match="not a regular file"):
        Source(tmp_path)
    with pytest.raises(TransferError, match="cannot read"):
        Source(tmp_path / "missing")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(TransferError, match="not a regular file"):
        Source(fifo)  # and it does not block
