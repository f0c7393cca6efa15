"""outgoing.json: the chat's unfinished outgoing transfers (p2pchat/store/outgoing.py)."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from p2pchat.store.outgoing import EXPIRY, FILE_NAME, MAX_ENTRIES, OutgoingBook, Remembered

NOW = 1_800_000_000.0


def entry(i: int, when: float = NOW, *, path: str | None = None) -> Remembered:
    where = path if path is not None else str(Path.cwd() / f"f{i}.bin")
    fp = i.to_bytes(2, "big") * 16
    return Remembered(i.to_bytes(16, "big"), where, f"f{i}.bin", i, b"\x07" * 32, fp, "bob", when)


def test_entries_survive_a_restart_and_are_removed_once_over(tmp_path: Path) -> None:
    book = OutgoingBook(tmp_path / FILE_NAME, now=NOW)
    book.add(entry(1))
    book.add(entry(2))
    again = OutgoingBook(tmp_path / FILE_NAME, now=NOW)
    assert again.entries() == [entry(1), entry(2)]
    assert again.entries(entry(2).fingerprint) == [entry(2)]
    again.remove(entry(1).fingerprint, entry(1).transfer_id)
    assert OutgoingBook(tmp_path / FILE_NAME, now=NOW).entries() == [entry(2)]
    if sys.platform != "win32":
        assert stat.S_IMODE((tmp_path / FILE_NAME).stat().st_mode) == 0o600


def test_it_is_bounded_and_forgets_the_oldest(tmp_path: Path) -> None:
    book = OutgoingBook(tmp_path / FILE_NAME, now=NOW)
    for i in range(MAX_ENTRIES + 10):
        book.add(entry(i, NOW - 1000 + i))
    kept = OutgoingBook(tmp_path / FILE_NAME, now=NOW).entries()
    assert len(kept) == MAX_ENTRIES
    assert kept[0] == entry(10, NOW - 990) and kept[-1] == entry(MAX_ENTRIES + 9, NOW - 1000 + 73)


def test_entries_older_than_the_part_expiry_are_dropped(tmp_path: Path) -> None:
    book = OutgoingBook(tmp_path / FILE_NAME, now=NOW)
    book.add(entry(1, NOW - EXPIRY - 1))
    book.add(entry(2, NOW - EXPIRY + 60))
    assert OutgoingBook(tmp_path / FILE_NAME, now=NOW).entries() == [entry(2, NOW - EXPIRY + 60)]


@pytest.mark.parametrize(
    "content",
    [b"", b"not json", b"[]", b'{"outgoing": 5}', b"\xff" * 10, b'{"outgoing": [{"id": "zz"}]}'],
)
def test_a_broken_file_is_ignored(tmp_path: Path, content: bytes) -> None:
    (tmp_path / FILE_NAME).write_bytes(content)
    book = OutgoingBook(tmp_path / FILE_NAME, now=NOW)
    assert book.entries() == []
    book.add(entry(1))  # and rewritten
    assert OutgoingBook(tmp_path / FILE_NAME, now=NOW).entries() == [entry(1)]


def test_bad_entries_are_skipped_and_the_good_ones_kept(tmp_path: Path) -> None:
    book = OutgoingBook(tmp_path / FILE_NAME, now=NOW)
    book.add(entry(1))
    book.add(entry(2, path="relative/f2.bin"))
    doc = json.loads((tmp_path / FILE_NAME).read_text())
    doc["outgoing"].append({**doc["outgoing"][0], "sha256": "00"})  # a short hash
    (tmp_path / FILE_NAME).write_text(json.dumps(doc))
    assert OutgoingBook(tmp_path / FILE_NAME, now=NOW).entries() == [entry(1)]


def test_an_offer_again_keeps_its_time_and_only_progress_extends_it(tmp_path: Path) -> None:
    """An offer nobody takes still expires; one that moved lives as long as the
    receiver keeps its .part (7 days from its last write)."""
    book = OutgoingBook(tmp_path / FILE_NAME, now=NOW)
    book.add(entry(1, NOW - EXPIRY + 60))
    book.add(entry(1, NOW))  # offered again by the next chat, never taken
    assert book.entries() == [entry(1, NOW - EXPIRY + 60)]
    assert OutgoingBook(tmp_path / FILE_NAME, now=NOW + 120).entries() == []
    book.touch(entry(1).fingerprint, entry(1).transfer_id, now=NOW)  # it moved
    assert OutgoingBook(tmp_path / FILE_NAME, now=NOW + EXPIRY - 60).entries() == [entry(1)]


def test_a_file_name_that_is_not_utf8_is_remembered(tmp_path: Path) -> None:
    """A name in another encoding reaches Python as surrogates: it must not
    stop the book from being written (every later /send with it)."""
    odd = str(Path.cwd() / "caf\udce9.txt")  # b"caf\xe9.txt" as os.fsdecode gives it
    book = OutgoingBook(tmp_path / FILE_NAME, now=NOW)
    book.add(entry(1, path=odd))
    book.add(entry(2))
    assert book.holds(entry(2).fingerprint, entry(2).transfer_id)
    assert OutgoingBook(tmp_path / FILE_NAME, now=NOW).entries() == [
        entry(1, path=odd),
        entry(2),
    ]


def test_forgetting_a_key_drops_its_transfers_only(tmp_path: Path) -> None:
    book = OutgoingBook(tmp_path / FILE_NAME, now=NOW)
    for i in (1, 2):
        book.add(entry(i))
    assert book.forget(entry(1).fingerprint) == 1
    assert book.forget(entry(1).fingerprint) == 0
    assert OutgoingBook(tmp_path / FILE_NAME, now=NOW).entries() == [entry(2)]


def test_it_holds_only_what_is_on_disk(tmp_path: Path) -> None:
    book = OutgoingBook(tmp_path / FILE_NAME, now=NOW)
    book.add(entry(1))
    assert book.holds(entry(1).fingerprint, entry(1).transfer_id)
    assert not book.holds(entry(2).fingerprint, entry(2).transfer_id)
    # the file cannot be written (a directory in its place): nothing is promised
    (tmp_path / FILE_NAME).unlink()
    (tmp_path / FILE_NAME).mkdir()
    book.add(entry(2))
    assert not book.holds(entry(1).fingerprint, entry(1).transfer_id)
    assert not book.holds(entry(2).fingerprint, entry(2).transfer_id)


def test_what_is_written_can_be_read_back_whole(tmp_path: Path) -> None:
    """Texts are not cut on reading (a cut path is another file): what would
    not fit is not written; the file stays under the reader's limit."""
    book = OutgoingBook(tmp_path / FILE_NAME, now=NOW)
    book.add(entry(1, path=str(Path.cwd() / ("x" * 5000))))  # too long to read back
    assert book.entries() == []
    long = str(Path.cwd() / ("ü" * 2000))
    for i in range(MAX_ENTRIES):  # 64 long non-ASCII paths: over 256 KiB as JSON
        book.add(entry(i, NOW - 1000 + i, path=long))
    assert (tmp_path / FILE_NAME).stat().st_size <= 256 * 1024
    again = OutgoingBook(tmp_path / FILE_NAME, now=NOW).entries()
    assert again == book.entries() and 0 < len(again) < MAX_ENTRIES
    assert again[-1] == entry(MAX_ENTRIES - 1, NOW - 1000 + MAX_ENTRIES - 1, path=long)
