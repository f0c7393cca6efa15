"""This device's identity key and the store of pinned peers, on disk.

This is the only module that reads or writes the key file and the pin store.
Everything lives in one home directory (:func:`resolve_home`):

* ``identity.pem``: our RSA private key, PKCS#8 PEM, optionally encrypted
  with a passphrase; mode 0600.
* ``known_peers.json``: the fingerprints we have seen (trust on first use),
  under the name each last used; mode 0600.
* ``last_sas.json``: per pinned fingerprint, the short authentication string
  of the last session and when it came up (what ``trust verify`` shows);
  mode 0600. Kept apart from the pins: a new one comes with every session,
  and rewriting the pins that often could lose a ``trust verify`` or
  ``forget`` made meanwhile by another process (the last writer wins).

The files are written atomically: a private temporary file in the same
directory, flushed to disk, then renamed over the old one. Key material is
never logged.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import math
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import platformdirs
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from p2pchat.config import RSA_BITS, RSA_EXPONENT, RSA_MAX_BITS, RSA_MIN_BITS
from p2pchat.errors import ConfigError, HomeError, IdentityError, TrustError
from p2pchat.proto.keys import (
    FINGERPRINT_LEN,
    fingerprint,
    format_fingerprint,
    parse_fingerprint,
    public_der,
)
from p2pchat.proto.names import same_name

__all__ = [
    "ENV_HOME",
    "ENV_PASSPHRASE",
    "IDENTITY_FILE",
    "SAS_FILE",
    "STORAGE_KEY_FILE",
    "TRUST_FILE",
    "Identity",
    "LastSas",
    "Pin",
    "TrustStore",
    "Verdict",
    "load_identity",
    "load_storage_key",
    "resolve_home",
    "write_private",
]

ENV_HOME = "P2PCHAT_HOME"
ENV_PASSPHRASE = "P2PCHAT_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)
IDENTITY_FILE = "identity.pem"
TRUST_FILE = "known_peers.json"
SAS_FILE = "last_sas.json"
#: Seconds: a pin's last_seen is rewritten at most this often.
LAST_SEEN_STEP = 3600.0
#: 32 random bytes that encrypt messages at rest (the outbox); never a session key.
STORAGE_KEY_FILE = "storage.key"
_STORE_VERSION = 1
_POSIX = os.name == "posix"

log = logging.getLogger("p2pchat.store.identity")


# --- files -------------------------------------------------------------------


def resolve_home(arg: str | os.PathLike[str] | None) -> Path:
    """The home directory: ``arg`` (``--home``) if given, else ``$P2PCHAT_HOME``,
    else the platform's per-user data directory. Created (mode 0700) if missing;
    raises HomeError (exit 2) if it cannot be created or is not a directory.
    A home that exists but is read-only fails later, with the same error, at
    the first file that must be written there (a new key, the lock)."""
    if arg is not None and os.fspath(arg):
        raw: str | os.PathLike[str] = arg
    elif os.environ.get(ENV_HOME):
        raw = os.environ[ENV_HOME]
    else:
        raw = platformdirs.user_data_dir("p2pchat", appauthor=False)
    home = Path(raw).expanduser()
    if home.exists() and not home.is_dir():
        raise HomeError(f"p2pchat home {home} exists but is not a directory")
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise HomeError(f"cannot create p2pchat home {home}: {exc.strerror or exc}") from exc
    return home


def _write_private(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Atomically replace ``path`` with ``data``: write a temporary file created
    with mode 0600 in the same directory, fsync it (unless not ``durable``:
    then a crash may lose the new content, never tear the file), then rename
    it into place. Raises OSError; the temporary file never outlives a failure."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable and _POSIX:  # make the rename itself durable
        with contextlib.suppress(OSError):
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


write_private = _write_private


def load_storage_key(home: Path) -> bytes:
    """The local storage key under ``home`` (created on first use, mode 0600).

    It encrypts data at rest such as the outbox; it is independent of the
    identity key and of every session key."""
    path = home / STORAGE_KEY_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = secrets.token_bytes(32)
        try:
            _write_private(path, data)
        except OSError as exc:
            raise _unwritable(home, path, exc) from exc
        return data
    except OSError as exc:
        raise IdentityError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) != 32:
        raise IdentityError(f"{path} is not a 32-byte storage key; move it away to start afresh")
    _tighten_permissions(path)
    return data


def _unwritable(home: Path, path: Path, exc: OSError) -> HomeError:
    """A file the home must hold cannot be created: the home is unusable (read-only, full)."""
    return HomeError(
        f"cannot use p2pchat home {home}: cannot write {path.name} there: {exc.strerror or exc}"
    )


def _tighten_permissions(path: Path) -> None:
    """On POSIX, make ``path`` 0600 if group or others have any access to it."""
    if not _POSIX:
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & 0o077:
        return
    try:
        os.chmod(path, 0o600)
    except OSError as exc:
        log.warning(
            "%s is accessible by other users (mode %04o) and could not be made 0600: %s",
            path,
            mode,
            exc.strerror or exc,
        )
    else:
        log.warning("%s was accessible by other users (mode %04o); changed to 0600", path, mode)


# --- identity ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identity:
    """This device's identity: its RSA private key and the derived public values."""

    private_key: rsa.RSAPrivateKey = field(repr=False)
    public_der: bytes = field(repr=False)  #: SubjectPublicKeyInfo DER
    fingerprint: bytes  #: SHA-256 of :attr:`public_der`

    @property
    def fingerprint_text(self) -> str:
        """The fingerprint as people compare it (``ABCD-EFGH-...``)."""
        return format_fingerprint(self.fingerprint)

    def __repr__(self) -> str:
        return f"Identity(fingerprint={self.fingerprint_text!r})"

    @classmethod
    def from_key(cls, key: rsa.RSAPrivateKey) -> Identity:
        der = public_der(key.public_key())
        return cls(private_key=key, public_der=der, fingerprint=fingerprint(der))


def _generate_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=RSA_EXPONENT, key_size=RSA_BITS)


def load_identity(home: Path, *, passphrase: bytes | None = None, create: bool = True) -> Identity:
    """Load ``home/identity.pem``, or generate and save a new RSA-3072 key if the
    file is missing and ``create`` is true.

    ``passphrase`` (else ``$P2PCHAT_PASSPHRASE``, UTF-8; empty means none)
    decrypts the file, or encrypts a newly created one. Raises IdentityError if
    the file cannot be read or written, is encrypted and no or the wrong
    passphrase is given, or does not hold an RSA key of 3072 to 8192 bits with
    public exponent 65537."""
    if passphrase is None and (env := os.environ.get(ENV_PASSPHRASE)):
        passphrase = env.encode("utf-8")
    passphrase = passphrase or None
    path = home / IDENTITY_FILE
    try:
        exists = path.exists()
        if not exists and create:
            try:
                return _create_identity(path, passphrase)
            except OSError as exc:
                raise _unwritable(home, path, exc) from exc
        if not exists:
            raise IdentityError(f"no identity key at {path}")
        _tighten_permissions(path)
        data = path.read_bytes()
    except OSError as exc:
        raise IdentityError(f"cannot access identity key {path}: {exc.strerror or exc}") from exc
    return Identity.from_key(_parse_key(path, data, passphrase))


def _create_identity(path: Path, passphrase: bytes | None) -> Identity:
    key = _generate_key()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    _write_private(path, pem)
    identity = Identity.from_key(key)
    log.info(
        "created new identity key %s (%s), fingerprint %s",
        path,
        "passphrase-protected" if passphrase else "not encrypted",
        identity.fingerprint_text,
    )
    return identity


def _parse_key(path: Path, data: bytes, passphrase: bytes | None) -> rsa.RSAPrivateKey:
    try:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except TypeError:  # the file is encrypted
            if passphrase is None:
                raise IdentityError(
                    f"identity key {path} is passphrase-protected: set {ENV_PASSPHRASE} "
                    "or supply the passphrase"
                ) from None
            try:
                key = serialization.load_pem_private_key(data, password=passphrase)
            except (TypeError, ValueError):
                raise IdentityError(
                    f"wrong passphrase for identity key {path} (or the file is damaged)"
                ) from None
        else:
            if passphrase is not None:
                log.warning("identity key %s is not encrypted; passphrase ignored", path)
    except (ValueError, UnsupportedAlgorithm):
        raise IdentityError(f"{path} does not hold a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise IdentityError(f"identity key {path} is not an RSA key")
    bits = key.key_size
    if not RSA_MIN_BITS <= bits <= RSA_MAX_BITS:
        raise IdentityError(
            f"identity key {path} has {bits} bits (accepted: {RSA_MIN_BITS} to {RSA_MAX_BITS})"
        )
    if key.private_numbers().public_numbers.e != RSA_EXPONENT:
        raise IdentityError(f"identity key {path} has a public exponent other than {RSA_EXPONENT}")
    return key


# --- pinned peers ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pin:
    """A peer key we have seen: its fingerprint and the name it last used."""

    fingerprint: bytes
    name: str  #: name last seen
    first_seen: float  #: unix time
    last_seen: float  #: unix time
    verified: bool  #: the user compared the fingerprint out of band


@dataclass(frozen=True, slots=True)
class LastSas:
    """The short authentication string of the last session with a pinned key."""

    sas: str  #: as both sides printed it (``123 456``)
    at: float  #: unix time the session came up


class Verdict(enum.Enum):
    """What a (name, fingerprint) pair means against the pins."""

    NEW = "new"  #: neither the fingerprint nor the name is pinned
    KNOWN = "known"  #: the fingerprint is pinned (whatever its name)
    NAME_MISMATCH = "name_mismatch"  #: the name is pinned under another fingerprint


class TrustStore:
    """The pinned peers in ``known_peers.json``::

        {"version": 1, "peers": {"<hex fp>": {"name": ..., "first_seen": ...,
                                              "last_seen": ..., "verified": bool}}}

    Every method reads the file afresh, so processes sharing a home see each
    other's changes. A mutation re-reads the file, applies the change and
    rewrites the whole file atomically: two processes mutating at the very same
    moment can lose one change (the last writer wins for the whole file), but
    never leave a torn file. A file that does not parse raises IdentityError
    and is never overwritten.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sas_path = path.with_name(SAS_FILE)
        self._lock = threading.Lock()
        self._sas_lock = threading.Lock()
        self._cache: tuple[tuple[int, int, int], dict[bytes, Pin]] | None = None
        self._read()  # fail early on a corrupt file

    @classmethod
    def open(cls, home: Path) -> TrustStore:
        return cls(home / TRUST_FILE)

    # queries

    def get(self, fp: bytes) -> Pin | None:
        return self._refresh().get(fp)

    def by_name(self, name: str) -> list[Pin]:
        """The pins whose last seen name is ``name`` or looks like it (compared
        as :func:`~p2pchat.proto.names.same_name` does), oldest first."""
        pins = [p for p in self._refresh().values() if same_name(p.name, name)]
        return sorted(pins, key=lambda p: (p.first_seen, p.fingerprint))

    def check(self, name: str, fp: bytes) -> Verdict:
        """NAME_MISMATCH when ``name`` is pinned under another key, whether or
        not ``fp`` itself is pinned (a known key taking someone else's name is
        refused too); KNOWN for a pinned ``fp``; NEW otherwise. Names are
        compared by :func:`~p2pchat.proto.names.same_name`: after NFKC
        normalisation and case folding, and by their UTS #39 skeletons, so
        look-alike spellings of a pinned name (``ALICE``, a full-width ``a``, a
        Cyrillic ``a``, ``rn`` for ``m``) count as that name."""
        peers = self._refresh()
        if any(same_name(p.name, name) and p.fingerprint != fp for p in peers.values()):
            return Verdict.NAME_MISMATCH
        if fp in peers:
            return Verdict.KNOWN
        return Verdict.NEW

    def all(self) -> list[Pin]:
        """Every pin, sorted by name (then fingerprint)."""
        return sorted(self._refresh().values(), key=lambda p: (p.name, p.fingerprint))

    # mutations

    def pin(self, name: str, fp: bytes, *, now: float | None = None) -> Pin:
        """Pin ``fp`` under ``name``, or update the name and last_seen of an
        existing pin (first_seen and verified are kept). Persists."""
        _check_fp(fp)
        when = time.time() if now is None else now
        old = self.get(fp)
        if old is not None and old.name == name and 0 <= when - old.last_seen < LAST_SEEN_STEP:
            # nothing worth a write (and an fsync) on every session: last_seen
            # is kept to the hour
            return old
        with self._mutate() as peers:
            old = peers.get(fp)
            if old is None:
                new = Pin(fp, name, first_seen=when, last_seen=when, verified=False)
            else:
                new = replace(old, name=name, last_seen=when)
            peers[fp] = new
        return new

    def set_verified(self, fp: bytes, verified: bool = True) -> Pin:
        """Mark a pinned fingerprint as verified (or not). Raises TrustError if
        ``fp`` is not pinned. Persists."""
        with self._mutate() as peers:
            old = peers.get(fp)
            if old is None:
                raise TrustError(f"no pinned peer has fingerprint {format_fingerprint(fp)}")
            peers[fp] = new = replace(old, verified=verified)
        return new

    def forget(self, name_or_fp: str) -> list[Pin]:
        """Remove the pins named exactly ``name_or_fp``, and the pin whose
        fingerprint it is (any form :func:`parse_fingerprint` accepts). Returns
        the removed pins; raises TrustError if nothing matched. Persists."""
        try:
            fp: bytes | None = parse_fingerprint(name_or_fp)
        except ConfigError:
            fp = None
        with self._mutate() as peers:
            gone = [p for p in peers.values() if p.name == name_or_fp or p.fingerprint == fp]
            if not gone:
                raise TrustError(f"no pinned peer is named or has fingerprint {name_or_fp!r}")
            for p in gone:
                del peers[p.fingerprint]
        return sorted(gone, key=lambda p: (p.name, p.fingerprint))

    def unpin(self, fp: bytes) -> Pin | None:
        """Remove the pin of ``fp`` alone, if there is one (a key pinned by a
        handshake that was refused after all). Persists."""
        if self.get(fp) is None:
            return None
        with self._mutate() as peers:
            return peers.pop(fp, None)

    # the last SAS per pin (its own file: see the module doc)

    def last_sas(self, fp: bytes) -> LastSas | None:
        """The SAS of the last session with ``fp`` recorded since it was
        pinned (one from before a ``forget`` does not count), or None."""
        pin = self.get(fp)
        got = self._read_sas().get(fp)
        if pin is None or got is None or got.at < pin.first_seen:
            return None
        return got

    def record_sas(self, fp: bytes, sas: str, *, now: float | None = None) -> None:
        """Remember ``sas`` as the last of ``fp`` (if pinned), and drop those of
        keys no longer pinned (or pinned again since). Blocking file work: call
        it off the event loop. Not fsynced: a crash can lose it, and ``trust
        verify`` then says so."""
        _check_fp(fp)
        when = time.time() if now is None else now
        pinned = self._refresh()
        if fp not in pinned:
            return
        with self._sas_lock:
            known = {
                k: v
                for k, v in self._read_sas().items()
                if k in pinned and v.at >= pinned[k].first_seen
            }
            known[fp] = LastSas(sas, when)
            doc = {
                "version": _STORE_VERSION,
                "sas": {k.hex(): {"sas": v.sas, "at": v.at} for k, v in sorted(known.items())},
            }
            data = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
            _write_private(self.sas_path, data, durable=False)

    def _read_sas(self) -> dict[bytes, LastSas]:
        """The SAS file's entries; a missing or unreadable file is none (it
        only ever helps a comparison, the fingerprints stand without it)."""
        try:
            doc: Any = json.loads(self.sas_path.read_bytes().decode("utf-8"))
            entries = doc["sas"] if doc.get("version") == _STORE_VERSION else {}
            found: dict[bytes, LastSas] = {}
            for key, entry in entries.items():
                sas, at = entry["sas"], entry["at"]
                fp = bytes.fromhex(key)
                if (
                    len(fp) == FINGERPRINT_LEN
                    and isinstance(sas, str)
                    and isinstance(at, int | float)
                    and not isinstance(at, bool)
                    and math.isfinite(at)
                ):
                    found[fp] = LastSas(sas, float(at))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("ignoring %s: %s", self.sas_path, exc)
            return {}
        return found

    # file

    def _refresh(self) -> dict[bytes, Pin]:
        with self._lock:
            return self._read()

    @contextlib.contextmanager
    def _mutate(self) -> Iterator[dict[bytes, Pin]]:
        """Re-read the file, let the caller change a copy, then write it (only
        if the caller did not raise)."""
        with self._lock:
            peers = dict(self._read())
            yield peers
            self._write(peers)

    def _read(self) -> dict[bytes, Pin]:
        # parsed again only when the file changed (another process may write it)
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        except OSError:
            st = None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size) if st is not None else None
        if stamp is not None and self._cache is not None and self._cache[0] == stamp:
            return self._cache[1]
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise IdentityError(
                f"cannot read trust store {self.path}: {exc.strerror or exc}"
            ) from exc
        try:
            peers = _decode_store(raw)
        except (ValueError, TypeError, KeyError) as exc:
            detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise IdentityError(
                f"trust store {self.path} is corrupt ({detail}); fix it or move it away"
            ) from None
        if stamp is not None:
            self._cache = (stamp, peers)
        return peers

    def _write(self, peers: dict[bytes, Pin]) -> None:
        doc = {
            "version": _STORE_VERSION,
            "peers": {
                fp.hex(): {
                    "name": p.name,
                    "first_seen": p.first_seen,
                    "last_seen": p.last_seen,
                    "verified": p.verified,
                }
                for fp, p in sorted(peers.items())
            },
        }
        data = (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            _write_private(self.path, data)
        except OSError as exc:
            raise _unwritable(self.path.parent, self.path, exc) from exc


def _check_fp(fp: bytes) -> None:
    if not isinstance(fp, bytes) or len(fp) != FINGERPRINT_LEN:
        raise ValueError(f"a fingerprint is {FINGERPRINT_LEN} bytes")


def _decode_store(raw: bytes) -> dict[bytes, Pin]:
    """Parse and check the store's JSON; raises ValueError/TypeError/KeyError."""
    doc: Any = json.loads(raw.decode("utf-8"))
    if not isinstance(doc, dict):
        raise TypeError("not a JSON object")
    if doc.get("version") != _STORE_VERSION:
        raise ValueError(f"unknown version {doc.get('version')!r}")
    entries = doc["peers"]
    if not isinstance(entries, dict):
        raise TypeError("'peers' is not an object")
    peers: dict[bytes, Pin] = {}
    for key, entry in entries.items():
        fp = bytes.fromhex(key)
        if len(fp) != FINGERPRINT_LEN:
            raise ValueError(f"bad fingerprint {key!r}")
        if not isinstance(entry, dict):
            raise TypeError(f"entry {key!r} is not an object")
        name, verified = entry["name"], entry["verified"]
        first, last = entry["first_seen"], entry["last_seen"]
        if not isinstance(name, str) or not isinstance(verified, bool):
            raise TypeError(f"entry {key!r} has a bad name or verified flag")
        for t in (first, last):
            if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
                raise TypeError(f"entry {key!r} has a bad time")
        peers[fp] = Pin(fp, name, float(first), float(last), verified)
    return peers
