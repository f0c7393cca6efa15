"""The one family of p2pchat errors.

Who is at fault is part of the type: a local misuse (:class:`LocalProtocolError`)
versus something the remote side sent (:class:`RemoteProtocolError`). Every
message is written for the user; the CLI prints it as one line.
"""

from __future__ import annotations

__all__ = [
    "BrokenConnectionError",
    "ClosedConnectionError",
    "ConfigError",
    "DecryptError",
    "DiscoveryError",
    "FrameTooLargeError",
    "HandshakeError",
    "IdentityError",
    "IncompatibleVersionError",
    "KeyMismatchError",
    "LocalProtocolError",
    "MalformedFrameError",
    "P2PChatError",
    "PeerKeyError",
    "RemoteProtocolError",
    "TransferError",
    "TrustError",
]


class P2PChatError(Exception):
    """Base of every error p2pchat raises on purpose."""


class ConfigError(P2PChatError):
    """A bad option, path or setting given by the user."""


class LocalProtocolError(P2PChatError):
    """This side tried to do something the protocol does not allow now."""


class RemoteProtocolError(P2PChatError):
    """The remote side sent something the protocol does not allow."""


class MalformedFrameError(RemoteProtocolError):
    """A frame that is not valid length-prefixed msgpack of a known shape."""


class FrameTooLargeError(MalformedFrameError):
    """A length prefix above the cap in force."""


class HandshakeError(RemoteProtocolError):
    """The end-to-end handshake failed (bad order, bad proof, bad field)."""


class IncompatibleVersionError(HandshakeError):
    """No protocol version both sides speak."""


class PeerKeyError(HandshakeError):
    """The peer's public key is of the wrong type, size or exponent."""


class DecryptError(RemoteProtocolError):
    """A record failed authentication: replayed, reordered, altered or foreign."""


class ClosedConnectionError(P2PChatError):
    """The connection was closed (by us, or cleanly by the peer)."""


class BrokenConnectionError(P2PChatError):
    """The connection broke without an authenticated close."""


class IdentityError(P2PChatError):
    """The identity key file is missing, unreadable or of the wrong kind."""


class TrustError(P2PChatError):
    """A peer is not trusted: unknown under --require-known, or not the one expected."""


class KeyMismatchError(TrustError):
    """A pinned name, or an expected fingerprint, now presents a different key."""


class TransferError(P2PChatError):
    """A file transfer cannot go on: a local file problem, or a peer that broke the
    transfer's rules. It ends that one transfer, never the session."""


class DiscoveryError(P2PChatError):
    """No host could be found, or the choice among several is ambiguous."""
