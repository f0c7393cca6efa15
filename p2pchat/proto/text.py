"""The one policy for untrusted text: what is escaped, refused, replaced or renamed.

Names, reasons, chat text, advertised labels and file names all arrive from
the network. Every rule about them is built here from a few closed classes
of code points, listed below (and normatively in docs/PROTOCOL.md §3.2), not
from the local Unicode database: a character assigned after Python's tables
(an emoji of Unicode 15, say) is treated like any other, and two
implementations on different Unicode versions accept the same names.

**Escaped for display** (:data:`ESCAPED`; :func:`sanitize`, and refused in
names), what could drive a terminal, fake or reorder a line, or hide text:

* :data:`CONTROLS`: C0 controls, DEL and C1 controls (U+0000..U+001F,
  U+007F..U+009F), tab and newline included: :func:`display_lines` splits a
  multi-line message into lines instead;
* :data:`BREAKS`: the line and paragraph separators U+2028, U+2029;
* :data:`BIDI`: the bidi embeddings, overrides and isolates (U+202A..U+202E,
  U+2066..U+2069) and the bidi marks (U+061C, U+200E, U+200F). The marks are
  not scoped, but they are invisible strong characters: in a terminal that
  renders bidi they move the digits and punctuation around them (``10-20``
  can show as ``1020-``), and in one that does not they do nothing, so
  nothing a person writes on a chat line needs them;
* :data:`INVISIBLE`: format characters that render as nothing and so can hide
  a difference or break up a word unseen: soft hyphen U+00AD (also drawn one
  column wide by some terminals and zero by others), Mongolian vowel
  separator U+180E, zero width space U+200B, word joiner U+2060, the
  invisible operators U+2061..U+2064, the deprecated format characters
  U+206A..U+206F, the byte order mark U+FEFF, the interlinear annotation
  characters U+FFF9..U+FFFB (which can hide an annotation), the musical
  beam/tie/slur format characters U+1D173..U+1D17A and the deprecated
  LANGUAGE TAG U+E0001;
* :data:`SURROGATES`: lone surrogates U+D800..U+DFFF (not text at all);
* :data:`NONCHARACTERS`: U+FDD0..U+FDEF and the last two code points of every
  plane (U+FFFE, U+FFFF, ..., U+10FFFF), never to be interchanged;
* :data:`RESERVED`: the unassigned code points Unicode reserves as
  default-ignorable (U+2065, U+FFF0..U+FFF8, U+E0000, U+E0002..U+E001F,
  U+E0080..U+E00FF, U+E01F0..U+E0FFF): a format character assigned later
  lands there and would be invisible.

**Kept** is everything else, notably what people write that the old rule
escaped: ZWNJ and ZWJ (:data:`JOINERS`: emoji ZWJ sequences, Persian,
Indic scripts), the variation selectors (:data:`VARIATION_SELECTORS`,
Mongolian free variation selectors included), the emoji tag characters
(:data:`TAGS`, subdivision flags), emoji modifiers and combining marks, the
Arabic and other visible prepended concatenation marks (U+0600..U+0605,
U+06DD, ...), the Egyptian hieroglyph and shorthand format controls, every
space separator, private use characters (Apple's logo, icon fonts: they
cannot move the cursor or reorder anything) and every other unassigned code
point (where new characters are assigned: the local tables being older
than the sender's must not hide a new emoji).

**Refused in names** (:func:`check_name`; replaced in reasons by
:func:`clean_reason`) is :data:`ESCAPED` and, besides:

* :data:`SPACES`: every space separator but U+0020 (U+00A0, U+1680,
  U+2000..U+200A, U+202F, U+205F, U+3000), look-alikes of a plain space;
* :data:`PRIVATE_USE` (U+E000..U+F8FF, U+F0000..U+FFFFD, U+100000..U+10FFFD):
  it looks like whatever the local font says, so two people do not see the
  same name and no look-alike check can compare it;
* :data:`BLANKS`: characters that show nothing or a blank yet are not format
  characters: combining grapheme joiner U+034F, the Hangul fillers U+115F,
  U+1160, U+3164, U+FFA0, the Khmer inherent vowels U+17B4, U+17B5 and the
  Braille blank U+2800 (the classic "invisible name").

A name also may not start or end with U+0020, and must hold at least one
character that is neither U+0020, a joiner, a tag character nor a
combining mark (general category ``M``, which includes the variation
selectors): a name made only of joiners and selectors is invisible.

Advertised (mDNS) labels (:func:`clean_label`, :func:`replace_label`) and
file names (:func:`safe_filename`, which also replaces what Windows forbids)
go by :data:`ESCAPED`. Pure: no I/O; every test is one pass of a regular
expression compiled at import.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from p2pchat.config import MAX_NAME_BYTES
from p2pchat.errors import MalformedFrameError, P2PChatError

__all__ = [
    "BIDI",
    "BLANKS",
    "BREAKS",
    "CONTROLS",
    "ESCAPED",
    "INVISIBLE",
    "JOINERS",
    "MAX_REASON",
    "MAX_SAFE_NAME_BYTES",
    "NONCHARACTERS",
    "PRIVATE_USE",
    "RESERVED",
    "SPACES",
    "SURROGATES",
    "TAGS",
    "VARIATION_SELECTORS",
    "check_name",
    "clean_label",
    "clean_reason",
    "display_lines",
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

#: A class of code points: inclusive ranges, ascending.
Ranges = tuple[tuple[int, int], ...]

#: C0 controls, DEL, C1 controls.
CONTROLS: Final[Ranges] = ((0x00, 0x1F), (0x7F, 0x9F))
#: Line separator, paragraph separator.
BREAKS: Final[Ranges] = ((0x2028, 0x2029),)
#: Arabic letter mark, LRM, RLM; embeddings and overrides; isolates.
BIDI: Final[Ranges] = ((0x061C, 0x061C), (0x200E, 0x200F), (0x202A, 0x202E), (0x2066, 0x2069))
#: Format characters that render as nothing (module doc).
INVISIBLE: Final[Ranges] = (
    (0x00AD, 0x00AD),
    (0x180E, 0x180E),
    (0x200B, 0x200B),
    (0x2060, 0x2064),
    (0x206A, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
)
#: Surrogate code points: only ever lone in a str.
SURROGATES: Final[Ranges] = ((0xD800, 0xDFFF),)
#: The 66 noncharacters.
NONCHARACTERS: Final[Ranges] = (
    (0xFDD0, 0xFDEF),
    *((plane + 0xFFFE, plane + 0xFFFF) for plane in range(0, 0x110000, 0x10000)),
)
#: Unassigned, but reserved as default-ignorable: future format characters.
RESERVED: Final[Ranges] = (
    (0x2065, 0x2065),
    (0xFFF0, 0xFFF8),
    (0xE0000, 0xE0000),
    (0xE0002, 0xE001F),
    (0xE0080, 0xE00FF),
    (0xE01F0, 0xE0FFF),
)
#: Everything :func:`sanitize` escapes.
ESCAPED: Final[Ranges] = tuple(
    sorted(CONTROLS + BREAKS + BIDI + INVISIBLE + SURROGATES + NONCHARACTERS + RESERVED)
)

#: Space separators other than U+0020.
SPACES: Final[Ranges] = (
    (0x00A0, 0x00A0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
)
#: The private use areas.
PRIVATE_USE: Final[Ranges] = ((0xE000, 0xF8FF), (0xF0000, 0xFFFFD), (0x100000, 0x10FFFD))
#: Blank or invisible characters that are not format characters.
BLANKS: Final[Ranges] = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x2800, 0x2800),
    (0x3164, 0x3164),
    (0xFFA0, 0xFFA0),
)

#: Zero-width non-joiner and joiner: kept (emoji ZWJ sequences, Persian, Indic).
JOINERS: Final = frozenset("\u200c\u200d")
#: Variation selectors, Mongolian free variation selectors included: kept.
VARIATION_SELECTORS: Final[Ranges] = (
    (0x180B, 0x180D),
    (0x180F, 0x180F),
    (0xFE00, 0xFE0F),
    (0xE0100, 0xE01EF),
)
#: Tag characters of emoji tag sequences (subdivision flags), CANCEL TAG last: kept.
TAGS: Final[Ranges] = ((0xE0020, 0xE007F),)


def _class(ranges: Ranges) -> str:
    # the inside of a regular-expression character class
    return "".join(
        f"\\U{first:08x}" if first == last else f"\\U{first:08x}-\\U{last:08x}"
        for first, last in ranges
    )


_ESCAPED_CLASS: Final = _class(ESCAPED)
_UNSAFE_RE: Final = re.compile(f"[{_ESCAPED_CLASS}]")
#: an escaped character, or a backslash that would otherwise read as the start of an escape
_SANITIZE_RE: Final = re.compile(f"\\\\(?=[\\\\xuU{_ESCAPED_CLASS}])|[{_ESCAPED_CLASS}]")
_NAME_UNSAFE_RE: Final = re.compile(f"[{_ESCAPED_CLASS}{_class(SPACES + PRIVATE_USE + BLANKS)}]")
#: what shows nothing on its own in a name (combining marks are told by category)
_NOT_VISIBLE_ALONE_RE: Final = re.compile(f"[ \u200c\u200d{_class(TAGS)}]")
_LINE_BREAK_RE: Final = re.compile("\r\n|[\n\u2028\u2029]")

#: A peer's free-text reason is cut to this many characters.
MAX_REASON: Final = 200
#: A received file's name on disk, at most (room left for " (N)" and ".KEY.part").
MAX_SAFE_NAME_BYTES: Final = 200


def is_display_unsafe(ch: str) -> bool:
    """Whether ``ch`` is in :data:`ESCAPED`: it could drive a terminal, break
    or reorder a line, or hide text when shown."""
    return _UNSAFE_RE.match(ch) is not None


def is_name_unsafe(ch: str) -> bool:
    """Whether ``ch`` may not appear in a name or reason: display-unsafe, a
    space other than U+0020, private use, or a blank (module doc)."""
    return _NAME_UNSAFE_RE.match(ch) is not None


def is_label_unsafe(ch: str) -> bool:
    """Whether ``ch`` may not appear in an advertised (mDNS) name: the same as
    :func:`is_display_unsafe`."""
    return _UNSAFE_RE.match(ch) is not None


# ---------------------------------------------------------------- display


def escape_char(ch: str) -> str:
    """``ch`` as a visible escape of fixed width: ``\\xNN`` below U+0100,
    ``\\uNNNN`` in the BMP, else ``\\UNNNNNNNN`` (lower-case hex)."""
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _escape(match: re.Match[str]) -> str:
    found = match.group()
    return "\\\\" if found == "\\" else escape_char(found)


def sanitize(text: str) -> str:
    """``text`` (one line) safe to show: every :data:`ESCAPED` character as its
    :func:`escape_char` escape, everything else as it is.

    Unambiguous: a backslash that is followed by ``\\``, ``x``, ``u``, ``U`` or
    an escaped character is doubled, so the four characters ``\\x1b`` typed
    by a peer show as ``\\\\x1b`` and only a real ESC shows as ``\\x1b``; any
    other backslash (``¯\\_(ツ)_/¯``) is left alone. Reading the result left
    to right, ``\\\\`` is a backslash, ``\\x``/``\\u``/``\\U`` with 2/4/8 hex
    digits an escaped character, and any other character itself. The price:
    sanitize is not idempotent (an escape's backslash would be doubled), so
    apply it once, to the text as received, never to its own output. Newlines
    are escaped too: use :func:`display_lines` for multi-line text."""
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text  # the common case, without the regular expression
    return _SANITIZE_RE.sub(_escape, text)


def display_lines(text: str) -> list[str]:
    """``text`` as the lines a face shows, each escaped by :func:`sanitize`: split at
    ``"\\n"``, ``"\\r\\n"``, U+2028 and U+2029 (which break is not told apart;
    a lone ``"\\r"`` is escaped). Always at least one line; ``"a\\n"`` is
    ``["a", ""]``. Tabs stay escaped: how far one moves depends on the
    terminal, so it could line text up to fake a column."""
    if "\n" not in text and "\u2028" not in text and "\u2029" not in text:
        return [sanitize(text)]
    return [sanitize(line) for line in _LINE_BREAK_RE.split(text)]


# ---------------------------------------------------------------- names and reasons


def clean_reason(text: str) -> str:
    """A peer's free-text reason, made safe to print and log: at most 200
    characters, every character a name may not hold (:func:`is_name_unsafe`:
    controls, line breaks, bidi and invisible characters, odd spaces, ...)
    replaced by U+FFFD (it reaches terminals and log files)."""
    return _NAME_UNSAFE_RE.sub("\ufffd", text[:MAX_REASON])


def _is_visible_alone(ch: str) -> bool:
    return _NOT_VISIBLE_ALONE_RE.match(ch) is None and not unicodedata.category(ch).startswith("M")


def check_name(name: object, err: type[P2PChatError] = MalformedFrameError) -> str:
    """A display name (docs/PROTOCOL.md §3.2): 1 to 64 UTF-8 bytes, nothing
    :func:`is_name_unsafe`, no leading or trailing space, and something
    visible (not only joiners, tags and combining marks or selectors)."""
    if not isinstance(name, str):
        raise err("name is not a string")
    if not name or len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise err(f"name must be 1 to {MAX_NAME_BYTES} bytes")
    bad = _NAME_UNSAFE_RE.search(name)
    if bad is not None:
        raise err(
            f"name contains U+{ord(bad.group()):04X}: a name may hold no control, line "
            "break, bidi, invisible or private use character, nor a space but U+0020"
        )
    if name[0] == " " or name[-1] == " ":
        raise err("name starts or ends with a space")
    if not any(_is_visible_alone(ch) for ch in name):
        raise err("name has nothing visible in it")
    return name


def clean_label(text: str) -> str | None:
    """``text`` if it is an acceptable advertised (mDNS TXT) display name, else
    None: not blank, nothing :func:`is_label_unsafe`, at most 64 UTF-8 bytes."""
    if not text.strip() or _UNSAFE_RE.search(text) is not None:
        return None
    if len(text.encode("utf-8")) > MAX_NAME_BYTES:
        return None
    return text


def replace_label(text: str) -> str:
    """``text`` with every :func:`is_label_unsafe` character replaced by ``?``."""
    return _UNSAFE_RE.sub("?", text)


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


_FILENAME_UNSAFE_RE: Final = re.compile(
    f"[{_ESCAPED_CLASS}{re.escape(''.join(sorted(_FORBIDDEN)))}]"
)


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
    device, or hold control characters (anything :data:`ESCAPED`).

    The last component of any ``/`` or ``\\`` path is kept, a drive letter
    dropped, :data:`ESCAPED` characters and ``<>:"|?*`` replaced by ``_``,
    leading and trailing dots and spaces stripped, a Windows device name
    prefixed with ``_``, our own ``.part``/``.resume`` suffixes defused, and the
    result cut to 200 UTF-8 bytes (keeping a short extension). An empty result
    becomes ``file``. Never raises."""
    name = unicodedata.normalize("NFC", name)
    parts = [p for p in name.replace("\\", "/").split("/") if p.strip(" .")]
    base = parts[-1] if parts else ""
    if len(base) >= 2 and base[1] == ":" and base[0].isascii() and base[0].isalpha():
        base = base[2:]  # "C:evil.exe", drive-relative
    base = _FILENAME_UNSAFE_RE.sub("_", base).strip(" .")
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
