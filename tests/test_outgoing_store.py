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
