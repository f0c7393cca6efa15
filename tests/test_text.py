"""The text policy (p2pchat.proto.text): what is escaped for display, which names
are refused, how reasons, advertised labels and file names are cleaned.

The hostile characters are listed here again, by hand and independently of
the module, so that a change to its classes has to change this file too.
Properties first (any string; then text built from what people write), then
the classes checked against the local Unicode database, then examples."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pchat.config import MAX_NAME_BYTES
from p2pchat.errors import HandshakeError, MalformedFrameError
from p2pchat.proto.text import (
    BIDI,
    BLANKS,
    CONTROLS,
    ESCAPED,
    INVISIBLE,
    JOINERS,
    MAX_REASON,
    NONCHARACTERS,
    PRIVATE_USE,
    RESERVED,
    SPACES,
    SURROGATES,
    TAGS,
    VARIATION_SELECTORS,
    check_name,
    clean_label,
    clean_reason,
    display_lines,
    is_display_unsafe,
    is_name_unsafe,
    replace_label,
    safe_filename,
    sanitize,
    truncate_utf8,
)

# ---------------------------------------------------------------- the hostile, by hand

C0_C1_DEL = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]]
BIDI_CONTROLS = list("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
BIDI_MARKS = list("\u200e\u200f\u061c")
HIDERS = list("\u00ad\u180e\u200b\u2060\u2061\u2062\u2063\u2064\u206a\u206f\ufeff\ufff9\ufffb")
HIDERS += ["\U0001d173", "\U0001d17a", "\U000e0001"]
LONE_SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]
NONCHARS = ["\ufdd0", "\ufdef", "\ufffe", "\uffff", "\U0001fffe", "\U0010ffff"]
RESERVED_IGNORABLE = ["\u2065", "\ufff0", "\U000e0000", "\U000e0002", "\U000e0080", "\U000e0fff"]
#: everything sanitize must escape (samples of the larger ranges)
MUST_ESCAPE = [
    *C0_C1_DEL,
    *["\u2028", "\u2029"],
    *BIDI_CONTROLS,
    *BIDI_MARKS,
    *HIDERS,
    *LONE_SURROGATES,
    *NONCHARS,
    *RESERVED_IGNORABLE,
]
#: and what a name may not hold besides
ODD_SPACES = list("\u00a0\u1680\u2000\u2003\u200a\u202f\u205f\u3000")
PRIVATE = ["\ue000", "\uf8ff", "\U000f0000", "\U0010fffd"]
BLANK = list("\u034f\u115f\u1160\u17b4\u17b5\u2800\u3164\uffa0")
NOT_IN_NAMES = MUST_ESCAPE + ODD_SPACES + PRIVATE + BLANK

#: Any code point at all, lone surrogates included, with the hostile ones and
#: the backslash (the escape character) often.
any_char = st.one_of(
    st.sampled_from([*NOT_IN_NAMES, "\\", "x", "u", "U"]), st.characters(exclude_categories=())
)
any_text = st.text(any_char, max_size=80)

#: What people write: emoji (modifiers, VS16, keycaps, ZWJ sequences, flags,
#: tag flags, emoji newer than CPython 3.11's Unicode 14 tables), combining
#: marks, CJK, Hangul, Arabic, Persian with ZWNJ, Hebrew, Devanagari with
#: ZWJ and ZWNJ, Mongolian with a free variation selector, private use,
#: visible format characters (Arabic number sign), spaces and punctuation.
WRITTEN = [
    *["😀", "👍🏽", "❤\ufe0f", "1\ufe0f\u20e3", "👨\u200d👩\u200d👧", "👩🏾\u200d💻"],
    *["🏳\ufe0f\u200d🌈", "🇫🇷", "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"],
    *["\U0001fae8", "\U0001fabf", "\U0001fae9", "\u263a\ufe0e", "\u8fbb\U000e0100"],
    *["e\u0301", "a\u0308\u0323", "世界", "こんにちは", "안녕", "مرحبا", "שלום"],
    *["می\u200cخواهم", "क्\u200dष", "क्\u200cष", "नमस्ते", "\u1820\u180b", "\uf8ff"],  # noqa: RUF001
    *["\u0600\u0661\u0662", "ok", "Zoë", "grüße", "O'Brien", ",", ".", "!", "?", "-", "/"],
    *[" ", "\u00a0", "\u3000"],
]
written_text = st.lists(st.sampled_from(WRITTEN), max_size=12).map("".join)
NAME_PARTS = [p for p in WRITTEN if p not in ("\uf8ff", "\u00a0", "\u3000")]
name_text = st.lists(st.sampled_from(NAME_PARTS), min_size=1, max_size=6).map("".join)

_ESCAPE_RE = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")


def unescape(shown: str) -> str:
    """The reading sanitize's docstring promises: left to right, ``\\\\`` is a
    backslash, ``\\x``/``\\u``/``\\U`` with 2/4/8 hex digits a character."""
    return _ESCAPE_RE.sub(lambda m: "\\" if m[1] == "\\" else chr(int(m[1][1:], 16)), shown)


def _in(ranges: tuple[tuple[int, int], ...], ch: str) -> bool:
    return any(a <= ord(ch) <= b for a, b in ranges)


# ---------------------------------------------------------------- sanitize: any string


@given(any_text)
def test_sanitize_output_holds_no_control_bidi_invisible_or_surrogate(text: str) -> None:
    out = sanitize(text)
    assert not any(ch in MUST_ESCAPE for ch in out)
    assert not any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") for ch in out)
    assert not any(_in(ESCAPED, ch) for ch in out)
    assert out.encode("utf-8").decode("utf-8") == out  # would raise on a lone surrogate


@given(any_text)
def test_sanitize_is_unambiguous(text: str) -> None:
    """Different texts never show the same: the escapes read back."""
    assert unescape(sanitize(text)) == text


@given(any_text)
def test_sanitize_again_only_doubles_backslashes(text: str) -> None:
    """Idempotent in what it escapes: a second pass finds no character to
    escape, and only doubles the backslashes that now start escapes (which is
    why sanitize is applied once, to the text as received)."""
    once = sanitize(text)
    assert sanitize(once) == re.sub(r"\\(?=[\\xuU])", r"\\\\", once)


@given(any_text)
def test_sanitize_changes_only_escaped_characters_and_backslashes(text: str) -> None:
    kept = [ch for ch in text if not is_display_unsafe(ch) and ch != "\\"]
    shown = sanitize(text)
    assert all(ch in shown for ch in kept)
    if not any(is_display_unsafe(ch) or ch == "\\" for ch in text):
        assert shown == text


@given(st.text(st.characters(max_codepoint=0x7F), max_size=80))
def test_the_ascii_shortcut_agrees_with_the_full_rule(text: str) -> None:
    from p2pchat.proto import text as policy

    assert sanitize(text) == policy._SANITIZE_RE.sub(policy._escape, text)


# ---------------------------------------------------------------- what people write


@given(written_text)
def test_what_people_write_is_shown_unchanged(text: str) -> None:
    assert sanitize(text) == text
    assert display_lines(text) == [text]
    assert replace_label(text) == text
    assert clean_reason(text) == text.translate({0xA0: 0xFFFD, 0x3000: 0xFFFD, 0xF8FF: 0xFFFD})


@given(name_text)
def test_what_people_write_is_a_name(name: str) -> None:
    name = truncate_utf8(name, MAX_NAME_BYTES).strip(" ")
    if not any(unicodedata.category(ch)[0] in "LNPS" for ch in name):
        return  # cut down to nothing visible
    assert check_name(name) == name
    assert clean_label(name) == name


@given(written_text, st.sampled_from(MUST_ESCAPE), written_text)
def test_one_hostile_character_is_escaped_and_the_rest_kept(
    before: str, bad: str, after: str
) -> None:
    shown = sanitize(before + bad + after)
    assert shown.startswith(before) and shown.endswith(after)
    assert shown[len(before) : len(shown) - len(after)] == _escape(bad)


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a\x1b[2Jb", "a\\x1b[2Jb"),  # ESC
        ("a\x9b2Jb", "a\\x9b2Jb"),  # C1 CSI
        ("\x85\x7f\x00", "\\x85\\x7f\\x00"),
        ("fake\nline\r", "fake\\x0aline\\x0d"),
        ("tab\there", "tab\\x09here"),
        ("abc\u202etxt.exe", "abc\\u202etxt.exe"),
        ("\u2066x\u2069", "\\u2066x\\u2069"),
        ("10\u200f-\u200f20", "10\\u200f-\\u200f20"),
        ("\u2028\u2029", "\\u2028\\u2029"),
        ("pa\u00ady pa\u200by \ufeff", "pa\\xady pa\\u200by \\ufeff"),
        ("\ud800", "\\ud800"),
        ("\U000e0001", "\\U000e0001"),  # fixed width: \U000e0001 is not \ue000 + "1"
        ("\ufffe\U0010ffff", "\\ufffe\\U0010ffff"),
        ("👨\u200d👩\u200d👧", "👨\u200d👩\u200d👧"),  # the family stays a family
        ("grüße 世界\u00a0\uf8ff", "grüße 世界\u00a0\uf8ff"),
        ("\U0001fae8 new", "\U0001fae8 new"),  # Unicode 15: unassigned to CPython 3.11
        ("¯\\_(ツ)_/¯", "¯\\_(ツ)_/¯"),  # a backslash is left alone ...
        ("\\x1b", "\\\\x1b"),  # ... unless it would read as an escape
        ("C:\\Users\\x", "C:\\\\Users\\\\x"),
        ("\\\x1b", "\\\\\\x1b"),  # a backslash, then a real ESC
        ("\\\\server", "\\\\\\server"),
    ],
)
def test_sanitize_examples(text: str, shown: str) -> None:
    assert sanitize(text) == shown


# ---------------------------------------------------------------- display_lines


@given(any_text)
def test_display_lines_splits_at_line_breaks_only(text: str) -> None:
    lines = display_lines(text)
    breaks = len(re.findall("\r\n|[\n\u2028\u2029]", text))
    assert len(lines) == breaks + 1
    assert "\n".join(unescape(line) for line in lines) == re.sub("\r\n|[\u2028\u2029]", "\n", text)
    for line in lines:
        assert not any(_in(ESCAPED, ch) for ch in line)


def test_display_lines_examples() -> None:
    assert display_lines("one\ntwo\r\nthree\u2028four\u2029") == ["one", "two", "three", "four", ""]
    assert display_lines("") == [""]
    assert display_lines("a\rb\x1b[A") == ["a\\x0db\\x1b[A"]  # a lone CR cannot rewrite a line
    assert display_lines("\u202ea\nb") == ["\\u202ea", "b"]


# ---------------------------------------------------------------- names and reasons


@given(any_text)
def test_an_accepted_name_holds_nothing_hostile(name: str) -> None:
    try:
        check_name(name)
    except MalformedFrameError:
        return
    assert not any(ch in NOT_IN_NAMES for ch in name)
    assert name == name.strip(" ") and name.strip(" \u200c\u200d")
    assert not any(is_display_unsafe(ch) for ch in name)


@given(st.text(max_size=20), st.sampled_from(NOT_IN_NAMES), st.text(max_size=20))
def test_check_name_refuses_every_hostile_character(before: str, bad: str, after: str) -> None:
    with pytest.raises(HandshakeError):
        check_name("a" + before + bad + after + "z", HandshakeError)


@pytest.mark.parametrize(
    "name",
    [
        *["a", "a b", "Zoë", "李小龙", "😀" * 16, "a" * MAX_NAME_BYTES],
        "Zoë 👩\u200d💻",
        "می\u200cخواهم",  # noqa: RUF001 (Persian, with a ZWNJ)
        "क्\u200dष क्\u200cष",
        "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
        "❤\ufe0f",
        "\U0001fae8",  # Unicode 15
        "back\\slash",
    ],
)
def test_check_name_accepts(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        *["", " a", "a ", "a\u00a0b", "a\u3000b", "a\u202eb", "a\u2028", "\ud800", "a\tb"],
        *["\u200d", "\u200d\ufe0f\u200c", "\u0301", "\U000e0067\U000e007f", " \u200d"],
        *["\u3164", "a\u2800", "\uf8ff", "a\u200bb", "a\u200fb", "a\uffff"],
        7,
        None,
    ],
)
def test_check_name_rejects(name: object) -> None:
    with pytest.raises(MalformedFrameError):
        check_name(name)


def test_check_name_says_which_character() -> None:
    with pytest.raises(MalformedFrameError, match="U\\+202E"):
        check_name("abc\u202e")


@given(any_text)
def test_clean_reason_holds_nothing_a_name_may_not(text: str) -> None:
    reason = clean_reason(text)
    assert len(reason) == min(len(text), MAX_REASON)
    assert not any(is_name_unsafe(ch) for ch in reason)
    assert not any(ch in NOT_IN_NAMES for ch in reason)


def test_clean_reason_examples() -> None:
    assert clean_reason("bad\nthing\u00a0here\u202e ok") == "bad\ufffdthing\ufffdhere\ufffd ok"
    assert clean_reason("x" * 300) == "x" * MAX_REASON
    assert clean_reason("key for 👩\u200d💻 changed") == "key for 👩\u200d💻 changed"


# ---------------------------------------------------------------- advertised labels


@given(any_text)
def test_labels_hold_nothing_the_display_escapes(text: str) -> None:
    label = clean_label(text)
    assert label is None or label == text
    if label is not None:
        assert not any(is_display_unsafe(ch) or ch in MUST_ESCAPE for ch in label)
    replaced = replace_label(text)
    assert len(replaced) == len(text)
    assert not any(ch in MUST_ESCAPE for ch in replaced)


def test_label_examples() -> None:
    assert clean_label("👨\u200d👩") == "👨\u200d👩"
    assert clean_label("🏴\U000e0067\U000e0062\U000e007f") == "🏴\U000e0067\U000e0062\U000e007f"
    assert clean_label("\U0001fae8") == "\U0001fae8"
    assert clean_label(" bob ") == " bob "  # surrounding space allowed here
    assert clean_label("a\u00a0b") == "a\u00a0b"
    assert clean_label("   ") is None
    assert clean_label("a\x00") is None
    assert clean_label("a\u202e") is None
    assert clean_label("a\u200b") is None
    assert clean_label("é" * 33) is None  # 66 bytes
    assert replace_label("a\x00b\u200d\u202ec\ufeff") == "a?b\u200d?c?"
    assert truncate_utf8("é" * 3, 5) == "éé"
    assert truncate_utf8("abc", 10) == "abc"


# ---------------------------------------------------------------- file names


@given(any_text)
def test_safe_filename_is_one_harmless_component(name: str) -> None:
    safe = safe_filename(name)
    assert safe and safe not in (".", "..") and not safe.startswith(".")
    assert "/" not in safe and "\\" not in safe
    assert sanitize(safe) == safe
    assert len(safe.encode("utf-8")) <= 200
    assert safe_filename(safe) == safe


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("C:evil.exe", "evil.exe"),
        ("..", "file"),
        ("rtl\u202etxt.exe", "rtl_txt.exe"),
        ("a\ud800b", "a_b"),
        ("nul.txt", "_nul.txt"),
        ("x.part", "x.part_"),
        ("e\u0301.txt", "é.txt"),  # NFC
        ("🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f.png", None),
    ],
)
def test_safe_filename_examples(name: str, safe: str | None) -> None:
    assert safe_filename(name) == (name if safe is None else safe)


# ---------------------------------------------------------------- the classes


_BY_CATEGORY: dict[str, set[int]] = {}


def _category_set(cat: str) -> set[int]:
    if not _BY_CATEGORY:
        for c in range(0x110000):
            _BY_CATEGORY.setdefault(unicodedata.category(chr(c)), set()).add(c)
    return _BY_CATEGORY.get(cat, set())


def _set(ranges: tuple[tuple[int, int], ...]) -> set[int]:
    return {c for a, b in ranges for c in range(a, b + 1)}


#: the format characters (Cf) kept on purpose: joiners, emoji tags, and visible
#: or script-needed ones (prepended concatenation marks; Egyptian hieroglyph
#: and Duployan shorthand format controls)
KEPT_FORMAT = _set(
    (
        (0x200C, 0x200D),
        (0x0600, 0x0605),
        (0x06DD, 0x06DD),
        (0x070F, 0x070F),
        (0x0890, 0x0891),
        (0x08E2, 0x08E2),
        (0x110BD, 0x110BD),
        (0x110CD, 0x110CD),
        (0x13430, 0x1343F),
        (0x1BCA0, 0x1BCA3),
        *TAGS,
    )
)


def test_the_classes_against_the_local_unicode_database() -> None:
    """Every control, surrogate and format character of the local tables is
    decided: escaped, or kept on purpose. A newer Python with a new format
    character fails here until someone decides."""
    escaped = _set(ESCAPED)
    assert _category_set("Cc") == _set(CONTROLS) <= escaped
    assert _category_set("Cs") == _set(SURROGATES) <= escaped
    assert _category_set("Zl") | _category_set("Zp") <= escaped
    assert _category_set("Cf") - escaped == KEPT_FORMAT & _category_set("Cf")
    assert _set(BIDI) | _set(INVISIBLE) <= _category_set("Cf")
    assert _category_set("Co") == _set(PRIVATE_USE)
    assert _category_set("Zs") == _set(SPACES) | {0x20}
    assert _set(NONCHARACTERS) | _set(RESERVED) <= _category_set("Cn")
    assert len(_set(NONCHARACTERS)) == 66
    assert _set(VARIATION_SELECTORS) <= _category_set("Mn")
    assert not escaped & (_set(VARIATION_SELECTORS) | _set(TAGS) | {ord(j) for j in JOINERS})
    assert not _set(BLANKS) & escaped
    escaped_list = [c for a, b in ESCAPED for c in (a, b)]
    assert escaped_list == sorted(escaped_list)  # ascending, no overlap


def test_faces_reach_the_policy_through_the_room() -> None:
    import p2pchat.room as room

    assert room.sanitize is sanitize and room.check_name is check_name
    assert room.display_lines is display_lines
