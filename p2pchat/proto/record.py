"""Record layer: AES-256-GCM with a key and IV per direction.

A record on the wire (inside an envelope payload) is::

    0x02 | content type (1 byte) | AES-GCM ciphertext and 16-byte tag

The two header bytes are the associated data. The nonce is the 12-byte IV
XOR the record's sequence number (big-endian, left-padded): the sequence is
implicit, starts at 0 and goes up by one per record, so a replayed, reordered,
dropped or spliced record fails authentication. After ``rekey_interval``
records both sides derive the next traffic secret and restart the sequence,
far below AES-GCM's usage limits.
"""

from __future__ import annotations

from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p2pchat.config import REKEY_INTERVAL
from p2pchat.errors import DecryptError, LocalProtocolError
from p2pchat.proto.kdf import expand_label

__all__ = [
    "CT_CLOSE",
    "CT_DATA",
    "RECORD_TAG",
    "RecordReceiver",
    "RecordSender",
    "record_size",
    "traffic_keys",
]

RECORD_TAG: Final = 0x02
CT_DATA: Final = 0x00
CT_CLOSE: Final = 0x01
_CONTENT_TYPES: Final = frozenset((CT_DATA, CT_CLOSE))
NONCE_LEN: Final = 12
KEY_LEN: Final = 32
TAG_LEN: Final = 16
_HEADERS: Final = {ct: bytes((RECORD_TAG, ct)) for ct in _CONTENT_TYPES}
#: From this size on, records are encrypted in place and viewed, not copied.
_IN_PLACE_MIN: Final = 4096


def record_size(payload_len: int) -> int:
    """Bytes of a record carrying ``payload_len`` bytes of payload."""
    return 2 + payload_len + TAG_LEN


def traffic_keys(secret: bytes) -> tuple[bytes, bytes]:
    """(key, iv) for one traffic secret."""
    return (
        expand_label(secret, b"key", b"", KEY_LEN),
        expand_label(secret, b"iv", b"", NONCE_LEN),
    )


def next_secret(secret: bytes) -> bytes:
    """The traffic secret that follows ``secret`` at a key update."""
    return expand_label(secret, b"key update", b"", KEY_LEN)


class _Direction:
    __slots__ = ("_aead", "_interval", "_iv", "_secret", "closed", "epoch", "seq")

    def __init__(self, secret: bytes, rekey_interval: int = REKEY_INTERVAL) -> None:
        if len(secret) != KEY_LEN:
            raise LocalProtocolError("traffic secret must be 32 bytes")
        if rekey_interval < 1:
            raise LocalProtocolError("rekey interval must be at least 1")
        self._interval = rekey_interval
        self.epoch = 0
        self.closed = False
        self._install(secret)

    def _install(self, secret: bytes) -> None:
        key, iv = traffic_keys(secret)
        self._secret = secret
        self._aead = AESGCM(key)
        self._iv = int.from_bytes(iv, "big")
        self.seq = 0

    def _rekey(self) -> None:
        self.epoch += 1
        self._install(next_secret(self._secret))


class RecordSender(_Direction):
    """Seals records for one direction. Not thread-safe; one per session and direction."""

    __slots__ = ()

    def seal(self, payload: bytes, content_type: int = CT_DATA) -> bytes:
        """The wire bytes of one record carrying ``payload``."""
        return bytes(self.seal_after(b"", payload, content_type))

    def seal_after(
        self, head: bytes, payload: bytes, content_type: int = CT_DATA
    ) -> bytes | bytearray:
        """``head`` followed by the record for ``payload``: the fast form of
        ``head + seal(payload)``. Large payloads are encrypted in place, so the
        ciphertext is never copied. ``head`` is typically
        :func:`~p2pchat.proto.messages.send_head` for :func:`record_size`."""
        if self.closed:
            raise LocalProtocolError("cannot seal: this direction was closed")
        header = _HEADERS.get(content_type)
        if header is None:
            raise LocalProtocolError(f"unknown record content type {content_type}")
        if content_type == CT_CLOSE and payload:
            raise LocalProtocolError("a close record carries no payload")
        # nonce = IV xor sequence; to_bytes gives exactly 12 bytes or raises
        nonce = (self._iv ^ self.seq).to_bytes(NONCE_LEN, "big")
        out: bytes | bytearray
        if len(payload) < _IN_PLACE_MIN:
            out = head + header + self._aead.encrypt(nonce, payload, header)
        else:
            start = len(head) + 2
            out = bytearray(start + len(payload) + TAG_LEN)
            out[: start - 2] = head
            out[start - 2 : start] = header
            self._aead.encrypt_into(nonce, payload, header, memoryview(out)[start:])
        if content_type == CT_CLOSE:
            self.closed = True
        self.seq += 1
        if self.seq >= self._interval:
            self._rekey()
        return out

    def seal_close(self) -> bytes:
        """The authenticated close: after it, this direction seals nothing more."""
        return self.seal(b"", CT_CLOSE)


class RecordReceiver(_Direction):
    """Opens records for one direction, strictly in order."""

    __slots__ = ()

    def open(self, record: bytes) -> tuple[int, bytes]:
        """(content type, payload) of the next record; DecryptError if it is not it."""
        if self.closed:
            raise DecryptError("record received after the peer's authenticated close")
        if len(record) < 2 + TAG_LEN or record[0] != RECORD_TAG:
            raise DecryptError("record too short or not a record")
        content_type = record[1]
        if content_type > CT_CLOSE:
            raise DecryptError(f"record of unknown content type {content_type}")
        nonce = (self._iv ^ self.seq).to_bytes(NONCE_LEN, "big")
        try:
            if len(record) < _IN_PLACE_MIN:
                payload = self._aead.decrypt(nonce, record[2:], record[:2])
            else:
                with memoryview(record) as view:
                    payload = self._aead.decrypt(nonce, view[2:], view[:2])
        except InvalidTag as exc:
            raise DecryptError(
                "record failed authentication "
                "(replayed, reordered, altered or from another session)"
            ) from exc
        if content_type == CT_CLOSE:
            if payload:
                raise DecryptError("close record with a payload")
            self.closed = True
        self.seq += 1
        if self.seq >= self._interval:
            self._rekey()
        return content_type, payload
