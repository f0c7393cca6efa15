"""The end-to-end handshake between two participants, as a pure state machine.

Four messages (docs/PROTOCOL.md has the normative text)::

    M1  I -> R  versions, nonce_i, eph_i, key_i, commit = H("p2pchat/1 commit" || ms_i)
    M2  R -> I  version, nonce_r, eph_r, key_r, ct_r = OAEP(key_i, ms_r)
    M3  I -> R  ct_i = OAEP(key_r, ms_i), fin_i = HMAC(fk_i, TH2)
    M4  R -> I  fin_r = HMAC(fk_r, TH4)

Only the holder of each private key can recover the other's secret, so a good
Finished proves possession and agreement on every byte of the transcript.
Randomness (``rng``) and time (``now``) are passed in; nothing here does I/O.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from cryptography.hazmat.primitives.asymmetric import rsa, x25519

from p2pchat.config import HANDSHAKE_TIMEOUT, PROTOCOL_NAME, REKEY_INTERVAL, SUPPORTED_VERSIONS
from p2pchat.errors import (
    HandshakeError,
    IncompatibleVersionError,
    KeyMismatchError,
    LocalProtocolError,
)
from p2pchat.proto.framing import pack
from p2pchat.proto.kdf import expand_label, hkdf_extract, sha256
from p2pchat.proto.keys import fingerprint, load_peer_key, public_der
from p2pchat.proto.messages import (
    HS_TAG,
    M1,
    M2,
    M3,
    M4,
    HsError,
    HsMessage,
    check_name,
    parse_handshake,
)
from p2pchat.proto.oaep import OAEP_PADDING, oaep_decrypt, oaep_encrypt
from p2pchat.proto.record import RecordReceiver, RecordSender

__all__ = ["Handshake", "HandshakeResult", "Role", "State", "format_sas"]

SECRET_LEN: Final = 32
Rng = Callable[[int], bytes]
KeyLog = Callable[[str, bytes], None]


class Role(enum.Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class State(enum.Enum):
    """What this side knows so far."""

    S0_NOTHING = "nothing sent or received"
    I1_SENT_M1 = "sent M1, waiting for M2"
    I2_KNOW_KEYS = "sent M3, waiting for M4"
    R1_SENT_M2 = "sent M2, waiting for M3"
    DONE = "handshake complete"
    FAILED = "handshake failed"


class Event(enum.Enum):
    SEND_M1 = "send M1"
    RECV_M1 = "receive M1"
    RECV_M2 = "receive M2"
    RECV_M3 = "receive M3"
    RECV_M4 = "receive M4"


#: The one transition table: (role, state, event) -> next state.
TRANSITIONS: Final[dict[tuple[Role, State, Event], State]] = {
    (Role.INITIATOR, State.S0_NOTHING, Event.SEND_M1): State.I1_SENT_M1,
    (Role.INITIATOR, State.I1_SENT_M1, Event.RECV_M2): State.I2_KNOW_KEYS,
    (Role.INITIATOR, State.I2_KNOW_KEYS, Event.RECV_M4): State.DONE,
    (Role.RESPONDER, State.S0_NOTHING, Event.RECV_M1): State.R1_SENT_M2,
    (Role.RESPONDER, State.R1_SENT_M2, Event.RECV_M3): State.DONE,
}
_RECV_EVENT: Final = {M1: Event.RECV_M1, M2: Event.RECV_M2, M3: Event.RECV_M3, M4: Event.RECV_M4}


def format_sas(prk: bytes, th2: bytes) -> str:
    """Six decimal digits, ``123 456``: the short authentication string.

    It is derived from PRK and TH2, both fixed before either side can see the
    other's secret (ms_i is committed in M1, ms_r sent in M2), never from
    TH4: the initiator chooses M3's bytes after seeing M2 and could grind a
    string that covered them."""
    value = int.from_bytes(expand_label(prk, b"sas", th2, 8), "big") % 1_000_000
    return f"{value // 1000:03d} {value % 1000:03d}"


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    """What a completed handshake established."""

    version: int
    peer_name: str  #: the display name the peer put in the (authenticated) transcript
    peer_key: bytes = field(repr=False)  #: the peer's SubjectPublicKeyInfo DER, proven
    peer_fingerprint: bytes
    transcript_hash: bytes  #: TH4
    sas: str  #: short authentication string both users can compare
    sender: RecordSender = field(repr=False)
    receiver: RecordReceiver = field(repr=False)


class Handshake:
    """One side of one handshake. ``initiate()`` (initiator only) gives M1;
    ``receive(msg)`` consumes a peer message and returns the reply to send, if
    any. Every failure moves to ``FAILED`` and raises a typed error.

    All randomness comes from ``rng`` except the OAEP encryption seeds, which
    OpenSSL draws itself unless ``seeded_oaep`` is set (the test vectors set
    it, so that every byte is reproducible; the wire format is the same)."""

    def __init__(
        self,
        role: Role,
        private_key: rsa.RSAPrivateKey,
        *,
        name: str,
        rng: Rng,
        now: float,
        versions: tuple[int, ...] = SUPPORTED_VERSIONS,
        expected_peer: bytes | None = None,
        timeout: float = HANDSHAKE_TIMEOUT,
        rekey_interval: int = REKEY_INTERVAL,
        keylog: KeyLog | None = None,
        seeded_oaep: bool = False,
    ) -> None:
        self.role = role
        self.state = State.S0_NOTHING
        self.result: HandshakeResult | None = None
        self.peer_fingerprint: bytes | None = None
        self.deadline = now + timeout
        self._key = private_key
        self._key_der = public_der(private_key.public_key())
        self._name = check_name(name, LocalProtocolError)
        self._peer_name = ""
        self._rng = rng
        self._versions = versions
        self._expected = expected_peer
        self._rekey = rekey_interval
        self._keylog = keylog
        self._seeded_oaep = seeded_oaep
        self._transcript: list[bytes] = [PROTOCOL_NAME]
        # filled in as the handshake goes
        self._ms_i = b""
        self._ms_r = b""
        self._eph: x25519.X25519PrivateKey | None = None
        self._peer_key: rsa.RSAPublicKey | None = None
        self._peer_der = b""
        self._peer_eph = b""
        self._commit = b""
        self._version = 0
        self._prk_value = b""

    # ------------------------------------------------------------ plumbing

    def _step(self, event: Event) -> None:
        nxt = TRANSITIONS.get((self.role, self.state, event))
        if nxt is None:
            where = f"{self.role.value} in state {self.state.name}"
            self.state = State.FAILED
            if event is Event.SEND_M1:
                raise LocalProtocolError(f"cannot {event.value} as {where}")
            raise HandshakeError(f"unexpected handshake message: {event.value} as {where}")
        self.state = nxt

    def _emit(self, msg: HsMessage) -> bytes:
        body = pack(msg.to_wire())
        if not isinstance(msg, HsError):
            self._transcript.append(body)
        return bytes((HS_TAG,)) + body

    def _log(self, label: str, secret: bytes) -> None:
        if self._keylog is not None:
            self._keylog(label, secret)

    def _fail(self, exc: Exception) -> Exception:
        self.state = State.FAILED
        self._eph = None
        self._ms_i = self._ms_r = b""
        return exc

    def _new_eph(self) -> bytes:
        self._eph = x25519.X25519PrivateKey.from_private_bytes(self._rng(32))
        return self._eph.public_key().public_bytes_raw()

    def _wrap(self, secret: bytes) -> bytes:
        """RSA-OAEP of ``secret`` under the peer's key."""
        assert self._peer_key is not None
        if self._seeded_oaep:
            return oaep_encrypt(self._peer_key, secret, self._rng(32))
        # OpenSSL's OAEP draws its seed from the OS CSPRNG; same wire format,
        # and ~15x faster than the public-key operation in Python integers
        return self._peer_key.encrypt(secret, OAEP_PADDING)

    def _accept_peer_key(self, der: bytes) -> None:
        self._peer_key = load_peer_key(der)
        self._peer_der = der
        self.peer_fingerprint = fingerprint(der)
        if self._expected is not None and not hmac.compare_digest(
            self.peer_fingerprint, self._expected
        ):
            raise KeyMismatchError("the peer's key is not the one expected for it")

    def _prk(self) -> bytes:
        assert self._eph is not None
        try:
            dh = self._eph.exchange(x25519.X25519PublicKey.from_public_bytes(self._peer_eph))
        except ValueError as exc:  # all-zero shared secret: a low-order point
            raise HandshakeError("peer's ephemeral key is invalid") from exc
        self._eph = None
        prk = hkdf_extract(sha256(PROTOCOL_NAME), dh + self._ms_i + self._ms_r)
        self._ms_i = self._ms_r = b""
        return prk

    def _th(self) -> bytes:
        return sha256(*self._transcript)

    def _finish(self, prk: bytes, th2: bytes, th4: bytes) -> None:
        secret_i = expand_label(prk, b"i traffic", th4, 32)
        secret_r = expand_label(prk, b"r traffic", th4, 32)
        exporter = expand_label(prk, b"exporter", th4, 32)
        self._log("i traffic", secret_i)
        self._log("r traffic", secret_r)
        self._log("exporter", exporter)
        mine, theirs = (secret_i, secret_r) if self.role is Role.INITIATOR else (secret_r, secret_i)
        self.result = HandshakeResult(
            version=self._version,
            peer_name=self._peer_name,
            peer_key=self._peer_der,
            peer_fingerprint=fingerprint(self._peer_der),
            transcript_hash=th4,
            sas=format_sas(prk, th2),
            sender=RecordSender(mine, self._rekey),
            receiver=RecordReceiver(theirs, self._rekey),
        )

    # ------------------------------------------------------------ public API

    @property
    def complete(self) -> bool:
        return self.state is State.DONE

    def check_deadline(self, now: float) -> None:
        """Raise HandshakeError once the handshake has taken longer than its timeout."""
        if self.state not in (State.DONE, State.FAILED) and now >= self.deadline:
            raise self._fail(HandshakeError("handshake timed out"))

    def initiate(self) -> bytes:
        """M1, as the envelope payload to send (initiator only)."""
        self._step(Event.SEND_M1)
        nonce = self._rng(32)
        eph = self._new_eph()
        self._ms_i = self._rng(SECRET_LEN)
        commit = sha256(b"p2pchat/1 commit", self._ms_i)
        return self._emit(M1(self._versions, nonce, eph, self._key_der, self._name, commit))

    def receive(self, payload: bytes) -> bytes | None:
        """Consume one envelope payload carrying a handshake message; return the
        payload to send back, or None."""
        if self.state in (State.DONE, State.FAILED):
            raise self._fail(
                HandshakeError(f"handshake message received in state {self.state.name}")
            )
        try:
            if not payload or payload[0] != HS_TAG:
                raise HandshakeError("expected a handshake message")
            body = payload[1:]
            msg = parse_handshake(body)
            if isinstance(msg, HsError):
                if "version" in msg.reason:
                    raise IncompatibleVersionError(f"peer refused: {msg.reason}")
                raise HandshakeError(f"peer aborted the handshake: {msg.reason}")
            self._step(_RECV_EVENT[type(msg)])
            if not isinstance(msg, M4):  # TH4 covers M1..M3; M4 only confirms it
                self._transcript.append(body)
            if isinstance(msg, M1):
                return self._on_m1(msg)
            if isinstance(msg, M2):
                return self._on_m2(msg)
            if isinstance(msg, M3):
                return bytes((HS_TAG,)) + pack(M4(self._on_m3(msg)).to_wire())
            assert isinstance(msg, M4)
            self._on_m4(msg)
            return None
        except (HandshakeError, KeyMismatchError, LocalProtocolError) as exc:
            raise self._fail(exc) from None

    def refusal(self, reason: str) -> bytes:
        """An HsError payload to tell the peer why we stop (no secrets in ``reason``)."""
        return self._emit(HsError(reason))

    # ------------------------------------------------------------ per message

    def _on_m1(self, m1: M1) -> bytes:
        common = sorted(set(m1.versions) & set(self._versions))
        if not common:
            raise IncompatibleVersionError(
                f"no common protocol version (peer speaks {sorted(m1.versions)}, "
                f"we speak {sorted(self._versions)})"
            )
        self._version = common[-1]
        self._accept_peer_key(m1.key)
        self._peer_name = m1.name
        assert self._peer_key is not None
        self._peer_eph = m1.eph
        self._commit = m1.commit
        nonce = self._rng(32)
        eph = self._new_eph()
        self._ms_r = self._rng(SECRET_LEN)
        ct = self._wrap(self._ms_r)
        return self._emit(M2(self._version, nonce, eph, self._key_der, self._name, ct))

    def _on_m2(self, m2: M2) -> bytes:
        if m2.version not in self._versions:
            raise IncompatibleVersionError(f"peer chose protocol version {m2.version}")
        self._version = m2.version
        self._accept_peer_key(m2.key)
        self._peer_name = m2.name
        assert self._peer_key is not None
        self._peer_eph = m2.eph
        ms_r = oaep_decrypt(self._key, m2.ct)
        # implicit rejection: go on with a random secret, fail at the peer's Finished check
        self._ms_r = ms_r if ms_r is not None and len(ms_r) == SECRET_LEN else self._rng(32)
        th2 = self._th()
        ct = self._wrap(self._ms_i)
        self._prk_value = self._prk()
        fk_i = expand_label(self._prk_value, b"i finished", th2, 32)
        fin = hmac.digest(fk_i, th2, "sha256")
        return self._emit(M3(ct, fin))

    def _on_m3(self, m3: M3) -> bytes:
        th2 = sha256(*self._transcript[:3])
        ms_i = oaep_decrypt(self._key, m3.ct)
        good = (
            ms_i is not None
            and len(ms_i) == SECRET_LEN
            and hmac.compare_digest(sha256(b"p2pchat/1 commit", ms_i), self._commit)
        )
        self._ms_i = ms_i if good and ms_i is not None else self._rng(32)
        prk = self._prk()
        fk_i = expand_label(prk, b"i finished", th2, 32)
        if not hmac.compare_digest(hmac.digest(fk_i, th2, "sha256"), m3.fin):
            raise HandshakeError("handshake failed: the peer did not prove its key")
        th4 = self._th()
        fk_r = expand_label(prk, b"r finished", th4, 32)
        self._finish(prk, th2, th4)
        return hmac.digest(fk_r, th4, "sha256")

    def _on_m4(self, m4: M4) -> None:
        th2 = sha256(*self._transcript[:3])
        th4 = self._th()
        prk = self._prk_value
        self._prk_value = b""
        fk_r = expand_label(prk, b"r finished", th4, 32)
        if not hmac.compare_digest(hmac.digest(fk_r, th4, "sha256"), m4.fin):
            raise HandshakeError("handshake failed: the peer did not prove its key")
        self._finish(prk, th2, th4)
