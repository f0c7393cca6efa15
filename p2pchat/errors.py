"""The one family of p2pchat errors.

Who is at fault is part of the type: a local misuse (:class:`LocalProtocolError`)
versus something the remote side sent (:class:`RemoteProtocolError`). Every
message is written for the user; the CLI prints it as one line.
"""

from __future__ import annotations

import enum
from typing import ClassVar

__all__ = [
    "BrokenConnectionError",
    "ClosedConnectionError",
    "ConfigError",
    "DecryptError",
    "DiscoveryError",
    "ExitCode",
    "FrameTooLargeError",
    "HandshakeError",
    "HomeError",
    "HomeInUseError",
    "IdentityError",
    "IncompatibleVersionError",
    "KeyMismatchError",
    "LocalProtocolError",
    "MalformedFrameError",
    "P2PChatError",
    "PeerKeyError",
    "RefusedError",
    "RemoteProtocolError",
    "TransferError",
    "TrustError",
    "UndeliveredError",
    "describe_error",
]


class ExitCode(enum.IntEnum):
    """Every exit code a p2pchat command returns (README.md, "Exit codes": the
    table there gives the causes of each)."""

    OK = 0
    FAILURE = 1  #: failed, connection lost, incompatible version, the host ended the chat
    #: bad usage or input (a line that cannot be sent), no host found, several
    #: and none chosen, --home unusable or in use by another p2pchat
    USAGE = 2
    MISMATCH = 3  #: a key mismatch, or a peer refused by the trust settings
    UNDELIVERED = 4  #: messages (or a file) not delivered within --timeout
    #: Ctrl-C where no chat was running to leave (128 + SIGINT, as shells do)
    INTERRUPTED = 130


class P2PChatError(Exception):
    """Base of every error p2pchat raises on purpose. ``exit_code`` and ``label``
    (the words before the message on the command's one error line) belong to the
    type; :func:`describe_error` is the one map from an error to that line."""

    exit_code: ExitCode = ExitCode.FAILURE
    label: ClassVar[str] = "error"


class ConfigError(P2PChatError):
    """A bad option, path or setting given by the user."""

    exit_code = ExitCode.USAGE
    label = ""


class HomeError(ConfigError):
    """The home directory (``--home``) cannot be used: it cannot be created, is
    not a directory, or a file that must be written there cannot be."""

    label = "error"


class HomeInUseError(HomeError):
    """Another p2pchat process holds the lock on this home (:mod:`p2pchat.store.lock`)."""


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

    exit_code = ExitCode.MISMATCH
    label = "not trusted"


class KeyMismatchError(TrustError):
    """A pinned name, or an expected fingerprint, now presents a different key."""

    label = "key mismatch"


class RefusedError(P2PChatError):
    """We refused the host's session: for trust (exit 3) or for a protocol failure (exit 1)."""

    def __init__(self, message: str, *, for_trust: bool) -> None:
        super().__init__(message)
        self.for_trust = for_trust
        self.exit_code = ExitCode.MISMATCH if for_trust else ExitCode.FAILURE


class UndeliveredError(P2PChatError):
    """What was sent was not acknowledged (or a transfer made no progress) in time."""

    exit_code = ExitCode.UNDELIVERED


class TransferError(P2PChatError):
    """A file transfer cannot go on: a local file problem, or a peer that broke the
    transfer's rules. It ends that one transfer, never the session."""


class DiscoveryError(P2PChatError):
    """No host could be found, or the choice among several is ambiguous."""

    exit_code = ExitCode.USAGE
    label = ""


def describe_error(exc: BaseException) -> tuple[str, ExitCode]:
    """The one line (without the program name) and the exit code for an error
    that ends a command. Anything not ours or an OSError is a bug: re-raise it."""
    if isinstance(exc, P2PChatError):
        label = type(exc).label
        return (f"{label}: {exc}" if label else str(exc)), ExitCode(exc.exit_code)
    if isinstance(exc, OSError):
        return f"error: {exc.strerror or exc}", ExitCode.FAILURE
    raise exc
