"""Protocol constants and limits shared by every layer (no I/O, no imports of ours)."""

from __future__ import annotations

from typing import Final

#: Protocol versions this build speaks, newest first.
SUPPORTED_VERSIONS: Final = (1,)
PROTOCOL_VERSION: Final = 1

#: Protocol name, hashed into every transcript and used as the HKDF salt's source.
PROTOCOL_NAME: Final = b"p2pchat/1 RSA3072-OAEP-SHA256 X25519 HKDF-SHA256 AES256GCM"

#: DNS-SD service type advertised by hosts.
SERVICE_TYPE: Final = "_p2pchat._tcp.local."

#: The TCP port a host listens on unless told otherwise (it falls back to a
#: free port when this one is taken), and the one ``--connect ADDR`` assumes.
DEFAULT_PORT: Final = 47474

#: Largest frame body accepted once registered (bytes, after the 4-byte prefix).
MAX_FRAME: Final = 1 << 20
#: Largest frame body a relay accepts from a registered participant: the
#: ``deliver`` it makes of a ``send`` is at most 9 bytes longer ("deliver" vs
#: "send", "from" vs "to", a wider id), so it always fits MAX_FRAME.
MAX_SEND_FRAME: Final = MAX_FRAME - 16
#: Largest frame body accepted before registration completes.
MAX_FRAME_UNREGISTERED: Final = 4096

#: RSA identity keys: accepted modulus sizes and the one public exponent.
RSA_BITS: Final = 3072
RSA_MIN_BITS: Final = 3072
RSA_MAX_BITS: Final = 8192
RSA_EXPONENT: Final = 65537

#: Largest display name, in UTF-8 bytes.
MAX_NAME_BYTES: Final = 64
#: Largest chat message text, in UTF-8 bytes.
MAX_TEXT_BYTES: Final = 64 * 1024

#: Records sealed under one traffic key before both sides move to the next
#: (far below AES-GCM's 2**24.5 full-size-record limit, RFC 8446 section 5.5).
REKEY_INTERVAL: Final = 1 << 20

#: Seconds an end-to-end handshake may take from its first message.
HANDSHAKE_TIMEOUT: Final = 15.0

#: Seconds of quiet before a participant sends an encrypted keepalive to a peer.
KEEPALIVE_INTERVAL: Final = 5.0
#: Seconds without any record from a peer before it is presumed gone.
KEEPALIVE_DEAD: Final = 15.0

#: Handshakes a participant answers per second on average, and at once: each
#: costs it an RSA decryption, so a flood of new peers is refused, not served.
HANDSHAKE_RATE: Final = 20.0
HANDSHAKE_BURST: Final = 40.0
