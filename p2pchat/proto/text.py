"""The one policy for untrusted text: what is escaped, refused, replaced or renamed.

Names, reasons, chat text, advertised labels and file names all arrive from
the network. Every rule about them is built here from a few classes of
characters, named by their Unicode general category:

* :data:`OTHER` (``C*``): controls (C0, DEL, C1), format characters (bidi
  overrides and isolates, zero-width characters), lone surrogates, private
  use and unassigned code points;
* :data:`BREAKS` (``Zl``, ``Zp``): the line and paragraph separators, which end
  a line like ``"\\n"`` does;
* :data:`SPACES` (``Zs``): the space and its look-alikes (no-break space,
  ideographic space, ...);
* :data:`JOINERS`: ZWNJ and ZWJ, format characters that emoji and several
  scripts need.

From them: :func:`sanitize` escapes ``OTHER | BREAKS`` for display,
:func:`check_name` and :func:`clean_reason` refuse or replace everything in
``OTHER | BREAKS | SPACES`` but the plain space, :func:`clean_label` and
:func:`replace_label` do the same for ``OTHER`` but the joiners (mDNS), and
:func:`safe_filename` replaces ``OTHER | BREAKS`` and the characters Windows
forbids. Pure: no I/O.
"""

from __future__ import annotations

import unicodedata
from typing import Final

from p2pchat.config import MAX_NAME_BYTES
from p2pchat.errors import MalformedFrameError, P2PChatError

__all__ = [
    "BREAKS",
    "JOINERS",
    "MAX_REASON",
    "MAX_SAFE_NAME_BYTES",
    "OTHER",
    "SPACES",
    "check_name",
    "clean_label",
    "clean_reason",
    "escape_char",
    "is_display_unsafe",
    "is_label_unsafe",
    "is_name_unsafe",
    "replace_label",
    "safe_filename",
    "sanitize",
    "split_ext",
    "truncate_utf8",
]

# ---------------------------------------------------------------- classes

#: Controls, format characters, surrogates, private use, unassigned.
OTHER: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
#: Line and paragraph separators (U+2028, U+2029).
BREAKS: Final = frozenset({"Zl", "Zp"})
#: Space separators: U+0020 and its look-alikes.
SPACES: Final = frozenset({"Zs"})
#: Zero-width non-joiner and joiner: format characters, but emoji and several
#: scripts need them, so an advertised name may hold them.
JOINERS: Final = frozenset("\u200c\u200d")

_DISPLAY_UNSAFE: Final = OTHER | BREAKS
_NAME_UNSAFE: Final = OTHER | BREAKS | SPACES

#: A peer's free-text reason is cut to this many characters.
MAX_REASON: Final = 200
#: A received file's name on disk, at most (room left for " (N)" and ".KEY.part").
MAX_SAFE_NAME_BYTES: Final = 200


def is_display_unsafe(ch: str) -> bool:
    """Whether ``ch`` could move the cursor, reorder or hide text, or break a
    line when shown: a control, format, separator-of-lines, surrogate,
    private-use or unassigned character."""
    return unicodedata.category(ch) in _DISPLAY_UNSAFE


def is_name_unsafe(ch: str) -> bool:
    """Whether ``ch`` may not appear in a name or reason: display-unsafe, or a
    space separator other than U+0020."""
    return ch != " " and unicodedata.category(ch) in _NAME_UNSAFE


def is_label_unsafe(ch: str) -> bool:
    """Whether ``ch`` may not appear in an advertised (mDNS) name: a control,
    format, surrogate, private-use or unassigned character other than the joiners."""
    return ch not in JOINERS and unicodedata.category(ch) in OTHER


# ---------------------------------------------------------------- display


def escape_char(ch: str) -> str:
    """``ch`` as a visible escape: ``\\xNN`` below U+0100, else ``\\uNNNN`` (or more digits)."""
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def sanitize(text: str) -> str:
    """``text`` with every control, format or line/paragraph separator escaped."""
    return "".join(escape_char(ch) if is_display_unsafe(ch) else ch for ch in text)


# ---------------------------------------------------------------- names and reasons


def clean_reason(text: str) -> str:
    """A peer's free-text reason, made safe to print and log: at most 200
    characters, every control, format or separator character but the space
    replaced by U+FFFD (it reaches terminals and log files)."""
    return "".join("\ufffd" if is_name_unsafe(ch) else ch for ch in text[:MAX_REASON])


def check_name(name: object, err: type[P2PChatError] = MalformedFrameError) -> str:
    """A display name: 1 to 64 UTF-8 bytes, no control or formatting characters,
    no leading or trailing space."""
    if not isinstance(name, str):
        raise err("name is not a string")
    if not name or len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise err(f"name must be 1 to {MAX_NAME_BYTES} bytes")
    if name != name.strip() or any(is_name_unsafe(ch) for ch in name):
        raise err("name contains control, formatting or surrounding space characters")
    return name


def clean_label(text: str) -> str | None:
    """``text`` if it is an acceptable advertised (mDNS TXT) display name, else
    None: not blank, nothing :func:`is_label_unsafe` (a lone surrogate is),
    at most 64 UTF-8 bytes."""
    if not text.strip() or any(is_label_unsafe(ch) for ch in text):
        return None
    if len(text.encode("utf-8")) > MAX_NAME_BYTES:
        return None
    return text


def replace_label(text: str) -> str:
    """``text`` with every :func:`is_label_unsafe` character replaced by ``?``."""
    return "".join("?" if is_label_unsafe(ch) else ch for ch in text)


def truncate_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, on a character boundary."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


# ---------------------------------------------------------------- file names

#: Names Windows reserves for devices, whatever the extension ("NUL.txt" too).
_RESERVED: Final = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{dev}{n}" for dev in ("COM", "LPT") for n in [*"123456789", "¹", "²", "³"]}
)
#: Characters no Windows file name may hold (the separators among them).
_FORBIDDEN: Final = frozenset('<>:"/\\|?*')
#: Our own working files; a received file never takes such a name.
_OWN_SUFFIXES: Final = (".part", ".resume")


def _is_filename_unsafe(ch: str) -> bool:
    return ch in _FORBIDDEN or is_display_unsafe(ch)


def split_ext(name: str) -> tuple[str, str]:
    """``("report", ".pdf")`` for ``"report.pdf"``; ``(name, "")`` when there is
    no extension (a leading dot starts no extension)."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return name, ""
    return stem, "." + ext


def safe_filename(name: str) -> str:
    """A file name to store ``name`` (from the network) under: one path component
    that cannot leave the directory it is joined to, show up hidden, name a
    device, or hold control characters.

    The last component of any ``/`` or ``\\`` path is kept, a drive letter
    dropped, control/format characters and ``<>:"|?*`` replaced by ``_``,
    leading and trailing dots and spaces stripped, a Windows device name
    prefixed with ``_``, our own ``.part``/``.resume`` suffixes defused, and the
    result cut to 200 UTF-8 bytes (keeping a short extension). An empty result
    becomes ``file``. Never raises."""
    name = unicodedata.normalize("NFC", name)
    parts = [p for p in name.replace("\\", "/").split("/") if p.strip(" .")]
    base = parts[-1] if parts else ""
    if len(base) >= 2 and base[1] == ":" and base[0].isascii() and base[0].isalpha():
        base = base[2:]  # "C:evil.exe", drive-relative
    base = "".join("_" if _is_filename_unsafe(ch) else ch for ch in base).strip(" .")
    if not base:
        base = "file"
    if base.split(".", 1)[0].rstrip(" ").upper() in _RESERVED:
        base = "_" + base
    if base.lower().endswith(_OWN_SUFFIXES):
        base += "_"
    if len(base.encode("utf-8")) > MAX_SAFE_NAME_BYTES:
        stem, ext = split_ext(base)
        if len(ext.encode("utf-8")) > 16:
            stem, ext = base, ""
        stem = truncate_utf8(stem, MAX_SAFE_NAME_BYTES - len(ext.encode("utf-8"))).rstrip(" .")
        base = (stem or "file") + ext
    return base
