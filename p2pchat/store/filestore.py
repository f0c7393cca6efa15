"""The disk side of file transfers: the only code that reads or writes transferred files.

* :class:`Source` is a file being sent: opened once, hashed in blocks, read
  chunk by chunk at any offset (memory stays bounded whatever its size).
* :class:`Part` is a file being received, in the target directory:
  ``NAME.KEY.part`` holds the bytes so far, ``NAME.KEY.resume`` beside it
  (JSON) the resume point: the offer it belongs to, an offset and the SHA-256
  of the .part's first ``offset`` bytes. ``KEY`` is derived from the transfer
  id and the sender's fingerprint. The resume point is written every
  :data:`~p2pchat.proto.transfer.CHECKPOINT_BYTES` (after syncing the .part) and
  whenever the transfer pauses. On resume the prefix is read again and
  hashed: it rebuilds the running hash (Python's hashlib cannot save one) and
  proves the prefix is what was written; if it is not, the transfer starts
  over from zero. Once the whole file is there and its hash matches the
  offer, it is linked into place under a name that exists nowhere yet
  (``NAME``, ``NAME (1).ext``, ...): nothing is ever overwritten. On a
  mismatch both working files are removed.

Every method blocks: the asyncio service runs them in a worker thread, one
at a time per file. Every failure is a :class:`~p2pchat.errors.TransferError`
with a message for the user.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any, BinaryIO, Final

from p2pchat.errors import TransferError
from p2pchat.proto.transfer import CHECKPOINT_BYTES, format_size, numbered
from p2pchat.store.identity import write_private

__all__ = ["HashMismatchError", "NoSpaceError", "Part", "Source", "kept_parts", "part_key"]

_BLOCK: Final = 1 << 20
_RESUME_VERSION: Final = 1
#: Alternatives tried for a name that exists already ("name (1).ext" ...).
_MAX_NUMBERED: Final = 1000
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_BINARY: Final = getattr(os, "O_BINARY", 0)


class HashMismatchError(TransferError):
    """The received bytes do not hash to what the sender offered."""


class NoSpaceError(TransferError):
    """The target directory's file system has not enough room for the file."""


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def part_key(transfer_id: bytes, sender: bytes) -> str:
    """12 hex digits naming one sender's transfer in the working files' names."""
    return hashlib.sha256(b"p2pchat/1 part" + transfer_id + sender).hexdigest()[:12]


# ---------------------------------------------------------------- sending


class Source:
    """A regular file opened for sending."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.absolute = os.path.abspath(path)  #: as it is remembered (outgoing.json)
        try:
            # stat first: opening a FIFO for reading would block until a writer comes
            if not stat.S_ISREG(os.stat(path).st_mode):
                raise TransferError(f"{path} is not a regular file")
            fd = os.open(path, os.O_RDONLY | _BINARY)
        except OSError as exc:
            raise TransferError(f"cannot read {path}: {_why(exc)}") from exc
        self._file: BinaryIO = os.fdopen(fd, "rb", buffering=0)
        try:
            st = os.fstat(fd)
        except OSError as exc:
            self._file.close()
            raise TransferError(f"cannot read {path}: {_why(exc)}") from exc
        if not stat.S_ISREG(st.st_mode):
            self._file.close()
            raise TransferError(f"{path} is not a regular file")
        self.size = st.st_size

    def hash(self) -> bytes:
        """SHA-256 of the whole file, read in 1 MiB blocks."""
        digest = hashlib.sha256()
        try:
            self._file.seek(0)
            left = self.size
            while left > 0:
                block = self._file.read(min(_BLOCK, left))
                if not block:
                    break
                digest.update(block)
                left -= len(block)
        except (OSError, ValueError) as exc:
            raise TransferError(f"cannot read {self.path}: {exc}") from exc
        if left:
            raise TransferError(f"{self.path} got shorter while it was read")
        return digest.digest()

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (the file must still be that long)."""
        try:
            self._file.seek(offset)
            data = self._file.read(length)
        except (OSError, ValueError) as exc:
            raise TransferError(f"cannot read {self.path}: {exc}") from exc
        if data is None or len(data) != length:
            raise TransferError(f"{self.path} got shorter while it was sent")
        return data

    def close(self) -> None:
        self._file.close()


# ---------------------------------------------------------------- receiving


class Part:
    """An incoming file: its .part, its resume point, and its running hash."""

    def __init__(
        self,
        directory: Path,
        name: str,
        transfer_id: bytes,
        sender: bytes,
        size: int,
        sha256: bytes,
        keep_free: int = 0,
    ) -> None:
        """Open (or resume) the working files for this transfer. ``name`` is
        already safe (:func:`~p2pchat.proto.transfer.safe_filename`). Raises
        TransferError if the directory cannot take it, NoSpaceError if what is
        left to write would leave less than ``keep_free`` bytes free."""
        self.directory = directory
        self.name = name
        self.size = size
        self.sha256 = sha256
        self._meta = {
            "v": _RESUME_VERSION,
            "id": transfer_id.hex(),
            "sender": sender.hex(),
            "name": name,
            "size": size,
            "sha256": sha256.hex(),
        }
        key = part_key(transfer_id, sender)
        self.part_path = directory / f"{name}.{key}.part"
        self.resume_path = directory / f"{name}.{key}.resume"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.part_path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _BINARY, 0o600)
        except OSError as exc:
            raise TransferError(f"cannot write in {directory}: {_why(exc)}") from exc
        self._file: BinaryIO = os.fdopen(fd, "r+b", buffering=0)
        self._hash = hashlib.sha256()
        self.offset = 0  #: every byte below this is written and hashed
        self._checkpointed = 0
        try:
            self._resume()
            free = shutil.disk_usage(directory).free
        except OSError as exc:
            self._file.close()
            raise TransferError(f"cannot write in {directory}: {_why(exc)}") from exc
        except TransferError:
            self._file.close()
            raise
        if free - keep_free < size - self.offset:
            if self.offset == 0:
                self.discard()  # nothing worth keeping: a refusal leaves no files behind
            else:
                self._file.close()  # what was received stays, for a resume once there is room
            kept = f", {format_size(keep_free)} kept free" if keep_free else ""
            raise NoSpaceError(
                f"not enough disk space ({format_size(size - self.offset)} needed, "
                f"{format_size(free)} free{kept})"
            )

    # -- resume

    def _load_resume(self) -> tuple[int, str] | None:
        try:
            state: Any = json.loads(self.resume_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None
        if not isinstance(state, dict) or any(state.get(k) != v for k, v in self._meta.items()):
            return None
        offset, prefix = state.get("offset"), state.get("prefix")
        if not isinstance(offset, int) or not isinstance(prefix, str):
            return None
        if not 0 <= offset <= self.size:
            return None
        return offset, prefix

    def _resume(self) -> None:
        """Pick up where the resume point says, if the .part agrees; else start at 0."""
        saved = self._load_resume()
        have = os.fstat(self._file.fileno()).st_size
        if saved is not None and saved[0] <= have:
            offset, prefix = saved
            digest = hashlib.sha256()
            self._file.seek(0)
            left = offset
            while left > 0:
                block = self._file.read(min(_BLOCK, left))
                if not block:
                    break
                digest.update(block)
                left -= len(block)
            if left == 0 and digest.hexdigest() == prefix:
                self._hash = digest
                self.offset = self._checkpointed = offset
        # whatever lies beyond the verified prefix is written again
        self._file.truncate(self.offset)
        if self.offset == 0:
            self._save(0, hashlib.sha256().hexdigest())

    def _save(self, offset: int, prefix: str) -> None:
        state = {**self._meta, "offset": offset, "prefix": prefix}
        write_private(self.resume_path, json.dumps(state).encode("utf-8"))

    def checkpoint(self) -> None:
        """Record the resume point: the .part is synced first, so it holds what the point says."""
        if self._file.closed:
            return
        try:
            os.fsync(self._file.fileno())
            self._save(self.offset, self._hash.copy().hexdigest())
        except OSError as exc:
            raise TransferError(f"cannot write {self.resume_path}: {_why(exc)}") from exc
        self._checkpointed = self.offset

    # -- data

    def write(self, offset: int, data: bytes) -> None:
        """Write a chunk (it continues the file exactly) and hash it; checkpoints when due."""
        if offset != self.offset:
            raise TransferError(f"write at {offset}, expected {self.offset}")
        try:
            self._file.seek(offset)
            self._file.write(data)
        except OSError as exc:
            raise TransferError(f"cannot write {self.part_path}: {_why(exc)}") from exc
        except ValueError as exc:  # closed meanwhile
            raise TransferError(f"{self.part_path} is closed") from exc
        self._hash.update(data)
        self.offset += len(data)
        if self.offset - self._checkpointed >= CHECKPOINT_BYTES:
            self.checkpoint()

    def finish(self) -> Path:
        """Check the hash, then move the file into place under a new name; its path.
        On a mismatch both working files are removed (HashMismatchError)."""
        if self.offset != self.size:
            raise TransferError(f"only {self.offset} of {self.size} bytes arrived")
        if self._hash.digest() != self.sha256:
            self.discard()
            raise HashMismatchError(
                "the received file's SHA-256 does not match the sender's (the file "
                "changed while it was sent?); nothing was kept"
            )
        try:
            os.fsync(self._file.fileno())
            self._file.close()
            final = self._place()
        except OSError as exc:
            raise TransferError(
                f"cannot store {self.name} in {self.directory}: {_why(exc)}"
            ) from exc
        with contextlib.suppress(OSError):
            os.unlink(self.resume_path)
        return final

    def _place(self) -> Path:
        """Link the .part to the first free name; never replaces anything."""
        for n in range(_MAX_NUMBERED):
            final = self.directory / numbered(self.name, n)
            try:
                os.link(self.part_path, final)
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                # no hard links here (FAT, some network file systems): claim the name, then replace
                try:
                    fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
                except FileExistsError:
                    continue
                os.close(fd)
                os.replace(self.part_path, final)
                return final
            os.unlink(self.part_path)
            return final
        raise TransferError(f"{self.name} and {_MAX_NUMBERED - 1} numbered variants all exist")

    def discard(self) -> None:
        """Remove the working files (a failed or cancelled transfer)."""
        self.close()
        for path in (self.part_path, self.resume_path):
            with contextlib.suppress(OSError):
                os.unlink(path)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def _part_key_of(filename: str, suffix: str) -> str | None:
    """The KEY of ``NAME.KEY.part`` / ``NAME.KEY.resume``, or None."""
    if not filename.endswith(suffix):
        return None
    stem = filename[: -len(suffix)]
    _, dot, key = stem.rpartition(".")
    if not dot or len(key) != 12 or any(c not in "0123456789abcdef" for c in key):
        return None
    return key


def kept_parts(directory: Path, expiry: float, busy: set[str], now: float) -> dict[str, int]:
    """The unfinished transfers' working files in ``directory``: KEY -> bytes
    of its .part. Working files not modified for ``expiry`` seconds are removed
    first, except those of the transfers in ``busy`` (KEYs in use). Only
    regular files named like ours are looked at; nothing else is touched."""
    found: dict[str, int] = {}
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return found
    for entry in entries:
        key = _part_key_of(entry.name, ".part") or _part_key_of(entry.name, ".resume")
        if key is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if key not in busy and now - st.st_mtime > expiry:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
            continue
        if entry.name.endswith(".part"):
            found[key] = found.get(key, 0) + st.st_size
    return found
