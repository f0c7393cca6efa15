"""Tests for p2pchat.store.identity: the key file, the home directory and the pin store."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import platformdirs
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from p2pchat.errors import ConfigError, IdentityError, TrustError
from p2pchat.proto.keys import fingerprint, format_fingerprint, public_der
from p2pchat.store import identity as ident
from p2pchat.store.identity import (
    ENV_HOME,
    ENV_PASSPHRASE,
    Identity,
    Pin,
    TrustStore,
    Verdict,
    load_identity,
    resolve_home,
)

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")

FP_A = bytes(range(32))
FP_B = bytes(range(1, 33))
FP_C = bytes(range(2, 34))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _write_pem(path: Path, key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_HOME, raising=False)
    monkeypatch.delenv(ENV_PASSPHRASE, raising=False)


@pytest.fixture(scope="module")
def created(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Identity]:
    """The one RSA-3072 key generated for real in this module, by load_identity."""
    home = tmp_path_factory.mktemp("created")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(ENV_PASSPHRASE, raising=False)
        return home, load_identity(home)


@pytest.fixture
def home(tmp_path: Path, created: tuple[Path, Identity]) -> Path:
    """A fresh home holding a copy of the generated (unencrypted) key."""
    shutil.copy2(created[0] / "identity.pem", tmp_path / "identity.pem")
    return tmp_path


@pytest.fixture
def no_keygen(monkeypatch: pytest.MonkeyPatch, created: tuple[Path, Identity]) -> list[int]:
    """Make 'generation' return the already generated key; counts the calls."""
    calls: list[int] = []

    def fake() -> rsa.RSAPrivateKey:
        calls.append(1)
        return created[1].private_key

    monkeypatch.setattr(ident, "_generate_key", fake)
    return calls


# --- identity ---------------------------------------------------------------


def test_create_then_reload_gives_same_identity(created: tuple[Path, Identity]) -> None:
    home, first = created
    assert first.private_key.key_size == 3072
    assert first.private_key.public_key().public_numbers().e == 65537
    assert first.public_der == public_der(first.private_key.public_key())
    assert first.fingerprint == fingerprint(first.public_der)
    assert len(first.fingerprint) == 32
    assert first.fingerprint_text == format_fingerprint(first.fingerprint)
    again = load_identity(home, create=False)
    assert again.fingerprint == first.fingerprint
    assert again.public_der == first.public_der
    assert b"ENCRYPTED" not in (home / "identity.pem").read_bytes()


def test_no_temporary_files_left(created: tuple[Path, Identity]) -> None:
    assert sorted(p.name for p in created[0].iterdir()) == ["identity.pem"]


@posix_only
def test_created_key_file_is_0600(created: tuple[Path, Identity]) -> None:
    assert _mode(created[0] / "identity.pem") == 0o600


def test_missing_without_create(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="no identity key"):
        load_identity(tmp_path, create=False)
    assert not (tmp_path / "identity.pem").exists()


def test_existing_key_is_not_regenerated(home: Path, no_keygen: list[int]) -> None:
    load_identity(home)
    assert no_keygen == []


def test_passphrase_round_trip(
    tmp_path: Path, no_keygen: list[int], created: tuple[Path, Identity]
) -> None:
    made = load_identity(tmp_path, passphrase=b"correct horse")
    assert no_keygen == [1]
    pem = (tmp_path / "identity.pem").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in pem
    again = load_identity(tmp_path, passphrase=b"correct horse", create=False)
    assert again.fingerprint == made.fingerprint == created[1].fingerprint

    with pytest.raises(IdentityError, match=r"passphrase-protected: set P2PCHAT_PASSPHRASE"):
        load_identity(tmp_path)
    with pytest.raises(IdentityError, match="wrong passphrase"):
        load_identity(tmp_path, passphrase=b"battery staple")
    assert (tmp_path / "identity.pem").read_bytes() == pem


def test_passphrase_from_environment(
    tmp_path: Path, no_keygen: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_PASSPHRASE, "from env")
    made = load_identity(tmp_path)
    assert b"ENCRYPTED" in (tmp_path / "identity.pem").read_bytes()
    assert load_identity(tmp_path, create=False).fingerprint == made.fingerprint
    # an explicit argument wins over the environment
    with pytest.raises(IdentityError, match="wrong passphrase"):
        load_identity(tmp_path, passphrase=b"other")
    monkeypatch.delenv(ENV_PASSPHRASE)
    assert load_identity(tmp_path, passphrase=b"from env").fingerprint == made.fingerprint


def test_passphrase_for_unencrypted_key_is_ignored(
    home: Path, created: tuple[Path, Identity], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="p2pchat.store.identity"):
        got = load_identity(home, passphrase=b"unused")
    assert got.fingerprint == created[1].fingerprint
    assert "not encrypted" in caplog.text
    assert "unused" not in caplog.text


def test_ed25519_key_rejected(tmp_path: Path) -> None:
    _write_pem(tmp_path / "identity.pem", ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(IdentityError, match="not an RSA key"):
        load_identity(tmp_path)


def test_2048_bit_key_rejected(tmp_path: Path) -> None:
    _write_pem(tmp_path / "identity.pem", rsa.generate_private_key(65537, 2048))
    with pytest.raises(IdentityError, match="2048 bits"):
        load_identity(tmp_path)


def test_garbage_key_file_rejected(tmp_path: Path) -> None:
    (tmp_path / "identity.pem").write_bytes(b"not a key\n")
    with pytest.raises(IdentityError, match="does not hold a PEM private key"):
        load_identity(tmp_path, create=True)
    assert (tmp_path / "identity.pem").read_bytes() == b"not a key\n"


@posix_only
def test_loose_permissions_are_tightened(
    home: Path, created: tuple[Path, Identity], caplog: pytest.LogCaptureFixture
) -> None:
    path = home / "identity.pem"
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="p2pchat.store.identity"):
        got = load_identity(home)
    assert got.fingerprint == created[1].fingerprint
    assert _mode(path) == 0o600
    assert "0644" in caplog.text and "0600" in caplog.text
    assert "PRIVATE" not in caplog.text


@posix_only
def test_private_permissions_do_not_warn(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    (home / "identity.pem").chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="p2pchat.store.identity"):
        load_identity(home)
    assert caplog.records == []


def test_repr_hides_key_material(created: tuple[Path, Identity]) -> None:
    me = created[1]
    text = repr(me)
    assert "PRIVATE" not in text
    assert str(me.private_key.private_numbers().d) not in text
    assert str(me.private_key.public_key().public_numbers().n) not in text
    assert repr(me.public_der) not in text
    assert me.public_der.hex() not in text
    assert me.fingerprint_text in text
    assert text == str(me)


# --- home directory -------------------------------------------------------------


def test_home_argument_wins_over_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_HOME, str(tmp_path / "env"))
    got = resolve_home(tmp_path / "arg")
    assert got == tmp_path / "arg"
    assert got.is_dir()
    assert not (tmp_path / "env").exists()


def test_home_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_HOME, str(tmp_path / "env" / "nested"))
    assert resolve_home(None) == tmp_path / "env" / "nested"
    assert (tmp_path / "env" / "nested").is_dir()
    assert resolve_home(str(tmp_path / "s")) == tmp_path / "s"


def test_home_default_is_platform_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[object, ...]] = []

    def fake_user_data_dir(*args: object, **kwargs: object) -> str:
        seen.append((*args, *sorted(kwargs.items())))
        return str(tmp_path / "platform")

    monkeypatch.setattr(platformdirs, "user_data_dir", fake_user_data_dir)
    assert resolve_home(None) == tmp_path / "platform"
    assert seen == [("p2pchat", ("appauthor", False))]
    monkeypatch.setenv(ENV_HOME, "")  # empty counts as unset
    assert resolve_home(None) == tmp_path / "platform"


@posix_only
def test_home_created_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        got = resolve_home(tmp_path / "new")
    finally:
        os.umask(old)
    assert _mode(got) == 0o700


def test_home_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        resolve_home(tmp_path / "file")
    with pytest.raises(ConfigError, match="cannot create"):
        resolve_home(tmp_path / "file" / "below")


# --- trust store ------------------------------------------------------------------


def test_verdicts(tmp_path: Path) -> None:
    store = TrustStore.open(tmp_path)
    assert store.check("alice", FP_A) is Verdict.NEW
    store.pin("alice", FP_A, now=100.0)
    assert store.check("alice", FP_A) is Verdict.KNOWN
    assert store.check("alice-laptop", FP_A) is Verdict.KNOWN  # renamed: still known
    assert store.check("alice", FP_B) is Verdict.NAME_MISMATCH
    assert store.check("bob", FP_B) is Verdict.NEW


def test_pin_updates_name_keeps_first_seen_and_verified(tmp_path: Path) -> None:
    store = TrustStore.open(tmp_path)
    first = store.pin("alice", FP_A, now=100.0)
    assert first == Pin(FP_A, "alice", 100.0, 100.0, False)
    store.set_verified(FP_A)
    second = store.pin("alice2", FP_A, now=200.0)
    assert second == Pin(FP_A, "alice2", 100.0, 200.0, True)
    assert store.get(FP_A) == second
    assert store.by_name("alice") == []
    assert store.by_name("alice2") == [second]
    assert store.get(FP_B) is None


def test_store_persists_and_is_private(tmp_path: Path) -> None:
    store = TrustStore.open(tmp_path)
    store.pin("alice", FP_A, now=1.5)
    store.set_verified(FP_A)
    reopened = TrustStore(tmp_path / "known_peers.json")
    assert reopened.get(FP_A) == Pin(FP_A, "alice", 1.5, 1.5, True)
    reopened.set_verified(FP_A, False)
    assert TrustStore.open(tmp_path).get(FP_A) == Pin(FP_A, "alice", 1.5, 1.5, False)
    doc = json.loads((tmp_path / "known_peers.json").read_text("utf-8"))
    assert doc == {
        "version": 1,
        "peers": {
            FP_A.hex(): {"name": "alice", "first_seen": 1.5, "last_seen": 1.5, "verified": False}
        },
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["known_peers.json"]
    if os.name == "posix":
        assert _mode(tmp_path / "known_peers.json") == 0o600


def test_two_instances_do_not_lose_pins(tmp_path: Path) -> None:
    one = TrustStore.open(tmp_path)
    two = TrustStore.open(tmp_path)
    one.pin("alice", FP_A, now=1.0)
    two.pin("bob", FP_B, now=2.0)
    one.set_verified(FP_B)
    assert [p.name for p in one.all()] == ["alice", "bob"]
    pin_b = two.get(FP_B)
    assert pin_b is not None and pin_b.verified


def test_set_verified_unknown(tmp_path: Path) -> None:
    store = TrustStore.open(tmp_path)
    with pytest.raises(TrustError, match=format_fingerprint(FP_A)):
        store.set_verified(FP_A)
    assert not (tmp_path / "known_peers.json").exists()


def test_all_sorted_by_name_and_by_name(tmp_path: Path) -> None:
    store = TrustStore.open(tmp_path)
    store.pin("carol", FP_A, now=1.0)
    store.pin("alice", FP_B, now=2.0)
    store.pin("alice", FP_C, now=3.0)
    assert [p.name for p in store.all()] == ["alice", "alice", "carol"]
    assert [p.fingerprint for p in store.by_name("alice")] == [FP_B, FP_C]


def test_forget_by_name(tmp_path: Path) -> None:
    store = TrustStore.open(tmp_path)
    store.pin("alice", FP_A, now=1.0)
    store.pin("alice", FP_B, now=2.0)
    store.pin("bob", FP_C, now=3.0)
    gone = store.forget("alice")
    assert {p.fingerprint for p in gone} == {FP_A, FP_B}
    assert [p.name for p in TrustStore.open(tmp_path).all()] == ["bob"]


@pytest.mark.parametrize(
    "form",
    [
        format_fingerprint,
        lambda fp: format_fingerprint(fp).lower().replace("-", " "),
        lambda fp: fp.hex(),
        lambda fp: ":".join(f"{b:02X}" for b in fp),
    ],
)
def test_forget_by_fingerprint(tmp_path: Path, form: Callable[[bytes], str]) -> None:
    store = TrustStore.open(tmp_path)
    store.pin("alice", FP_A, now=1.0)
    store.pin("bob", FP_B, now=2.0)
    gone = store.forget(form(FP_A))
    assert [p.fingerprint for p in gone] == [FP_A]
    assert [p.fingerprint for p in TrustStore.open(tmp_path).all()] == [FP_B]


def test_forget_unknown(tmp_path: Path) -> None:
    store = TrustStore.open(tmp_path)
    store.pin("alice", FP_A, now=1.0)
    with pytest.raises(TrustError, match="mallory"):
        store.forget("mallory")
    with pytest.raises(TrustError):
        store.forget(format_fingerprint(FP_B))
    assert store.get(FP_A) is not None


def _store_with(entry: dict[str, object]) -> bytes:
    return json.dumps({"version": 1, "peers": {FP_A.hex(): entry}}).encode()


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe",
        b"[]",
        b'{"version": 2, "peers": {}}',
        b'{"version": 1}',
        b'{"version": 1, "peers": []}',
        b'{"version": 1, "peers": {"abcd": {}}}',
        _store_with({"name": "a"}),
        _store_with({"name": 1, "first_seen": 1, "last_seen": 1, "verified": False}),
        _store_with({"name": "a", "first_seen": "x", "last_seen": 1, "verified": False}),
        _store_with({"name": "a", "first_seen": 1, "last_seen": 1, "verified": "yes"}),
    ],
)
def test_corrupt_store(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "known_peers.json"
    path.write_bytes(content)
    with pytest.raises(IdentityError, match="corrupt"):
        TrustStore.open(tmp_path)
    assert path.read_bytes() == content


def test_store_corrupted_later_is_not_overwritten(tmp_path: Path) -> None:
    store = TrustStore.open(tmp_path)
    store.pin("alice", FP_A, now=1.0)
    path = tmp_path / "known_peers.json"
    path.write_bytes(b"{garbage")
    with pytest.raises(IdentityError, match="corrupt"):
        store.pin("bob", FP_B)
    with pytest.raises(IdentityError, match="corrupt"):
        store.check("bob", FP_B)
    assert path.read_bytes() == b"{garbage"


def test_repeat_pin_is_not_rewritten_but_other_writers_are_seen(tmp_path: Path) -> None:
    fp, other = b"\x01" * 32, b"\x02" * 32
    store = TrustStore.open(tmp_path)
    store.pin("bob", fp, now=1000.0)
    before = store.path.stat().st_mtime_ns
    # the same name again within the hour: no write (a session start costs no fsync)
    assert store.pin("bob", fp, now=1000.0 + ident.LAST_SEEN_STEP / 2).last_seen == 1000.0
    assert store.path.stat().st_mtime_ns == before
    # a new name, or an hour later, is written
    assert store.pin("robert", fp, now=1001.0).name == "robert"
    assert store.pin("robert", fp, now=1001.0 + ident.LAST_SEEN_STEP).last_seen > 1001.0
    # a second store on the same file (another process) sees changes made by the first
    reader = TrustStore.open(tmp_path)
    assert reader.get(other) is None
    store.pin("carol", other, now=2000.0)
    assert reader.check("carol", other) is Verdict.KNOWN


def test_last_sas_is_kept_apart_from_the_pins(tmp_path: Path) -> None:
    """A session's SAS goes to its own file: the pins are not rewritten per
    session. It is only for pinned keys, one from before a forget does not
    count, and a damaged SAS file is no SAS (never an error)."""
    store = TrustStore.open(tmp_path)
    store.pin("bob", FP_A, now=1000.0)
    store.pin("carol", FP_B, now=1000.0)
    pins_before = store.path.read_bytes(), store.path.stat().st_mtime_ns
    assert store.last_sas(FP_A) is None
    store.record_sas(FP_A, "123 456", now=1100.0)
    store.record_sas(FP_B, "654 321", now=1100.0)
    store.record_sas(FP_A, "111 222", now=1200.0)
    store.record_sas(FP_C, "999 999", now=1200.0)  # not pinned: not recorded
    assert (store.path.read_bytes(), store.path.stat().st_mtime_ns) == pins_before
    assert store.last_sas(FP_A) == ident.LastSas("111 222", 1200.0)
    assert TrustStore.open(tmp_path).last_sas(FP_B) == ident.LastSas("654 321", 1100.0)
    assert store.last_sas(FP_C) is None
    # forgotten and pinned again: the old session's SAS is not this key's any more
    store.forget("carol")
    store.pin("carol", FP_B, now=1300.0)
    assert store.last_sas(FP_B) is None
    store.record_sas(FP_A, "333 444", now=1400.0)  # drops the stale entries
    assert set(json.loads(store.sas_path.read_text())["sas"]) == {FP_A.hex()}
    for junk in (b"{not json", b'{"version": 1, "sas": []}', b'{"version": 9}', b"\xff"):
        store.sas_path.write_bytes(junk)
        assert store.last_sas(FP_A) is None
    store.record_sas(FP_A, "555 666", now=1500.0)  # and a damaged file is replaced
    assert store.last_sas(FP_A) == ident.LastSas("555 666", 1500.0)


def test_a_known_key_cannot_take_a_pinned_name(tmp_path: Path) -> None:
    alice, mallory = b"\x0a" * 32, b"\x0b" * 32
    store = TrustStore.open(tmp_path)
    store.pin("alice", alice, now=1.0)
    store.set_verified(alice)
    store.pin("mallory", mallory, now=2.0)
    # mallory's key is known, but the name she now claims belongs to another key
    assert store.check("alice", mallory) is Verdict.NAME_MISMATCH
    # look-alike spellings count as the same name
    assert store.check("ALICE", mallory) is Verdict.NAME_MISMATCH
    assert store.check("\uff41lice", mallory) is Verdict.NAME_MISMATCH  # fullwidth a
    # a known key under a name nobody else holds is still known
    assert store.check("mal", mallory) is Verdict.KNOWN
    assert store.check("alice", alice) is Verdict.KNOWN


def test_a_confusable_name_is_the_pinned_name(tmp_path: Path) -> None:
    """bob pinned and verified: b\u043eb (Cyrillic o) with another key is a
    mismatch, not a new contact, and finds bob's pin."""
    bob, mallory = b"\x0c" * 32, b"\x0d" * 32
    store = TrustStore.open(tmp_path)
    store.pin("bob", bob, now=1.0)
    store.set_verified(bob)
    for spoof in ("b\u043eb", "b\u03bfb", "B0B", "\U0001d41b\U0001d428\U0001d41b"):
        assert store.check(spoof, mallory) is Verdict.NAME_MISMATCH, spoof
        assert [p.fingerprint for p in store.by_name(spoof)] == [bob], spoof
    assert store.check("b\u043eb", bob) is Verdict.KNOWN  # bob may spell himself so
    assert store.check("rob", mallory) is Verdict.NEW
    assert store.by_name("rob") == []
    # and the other way round: a look-alike pinned first holds the name too
    store.pin("rn\u0430ry", mallory, now=2.0)  # Cyrillic a
    assert store.check("mary", b"\x0e" * 32) is Verdict.NAME_MISMATCH
    assert [p.name for p in store.by_name("mary")] == ["rn\u0430ry"]
