"""The text policy (p2pchat.proto.text): what is escaped for display, which names
are refused, how reasons, advertised labels and file names are cleaned.

Properties first, then the old five rules (as they stood in messages.py,
discovery.py, transfer.py and faces/lines.py before they moved here) as
oracles, then a few examples pinning today's behaviour."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pchat.config import MAX_NAME_BYTES
from p2pchat.errors import HandshakeError, MalformedFrameError
from p2pchat.proto.text import (
    MAX_REASON,
    check_name,
    clean_label,
    clean_reason,
    replace_label,
    safe_filename,
    sanitize,
    truncate_utf8,
)

#: Characters a hostile peer reaches for: C0, DEL, C1, bidi embeddings,
#: overrides, isolates and marks, zero-width ones, line/paragraph separators,
#: odd spaces, lone surrogates, private use, unassigned, path punctuation.
CONTROLS = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]]
HOSTILE = (
    CONTROLS
    + list("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
    + list("\u200b\u200c\u200d\u2060\ufeff\U000e0001\u2028\u2029\u00a0\u3000\u2003")
    + ["\ud800", "\udfff", "\ue000", "\U0010ffff", "\u0378"]
    + list('/\\.:<>"|?* ')
)
BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

#: Any code point at all, lone surrogates included, with the hostile ones often.
any_char = st.one_of(st.sampled_from(HOSTILE), st.characters(exclude_categories=()))
any_text = st.text(any_char, max_size=80)
#: Text with nothing sanitize escapes in it.
printable = st.text(
    st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")), max_size=80
)


def _is_c0_c1(ch: str) -> bool:
    return ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0


# ---------------------------------------------------------------- the old rules, as oracles


def old_sanitize(text: str) -> str:  # faces/lines.py
    out = []
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def _old_is_unsafe(ch: str) -> bool:  # messages.py
    return unicodedata.category(ch)[0] in "CZ" and ch != " "


def old_clean_reason(text: str) -> str:  # messages.py
    return "".join("\ufffd" if _old_is_unsafe(ch) else ch for ch in text[:200])


def old_name_ok(name: str) -> bool:  # messages.check_name, minus the exception
    return (
        bool(name)
        and len(name.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES
        and name == name.strip()
        and not any(_old_is_unsafe(ch) for ch in name)
    )


def old_clean_name(text: str) -> str | None:  # discovery._clean_name
    if not text.strip() or len(text.encode("utf-8")) > MAX_NAME_BYTES:
        return None
    for ch in text:
        if unicodedata.category(ch)[0] == "C" and ch not in "\u200c\u200d":
            return None
    return text


def old_label(text: str) -> str:  # discovery._sanitize
    return "".join(
        "?" if unicodedata.category(ch)[0] == "C" and ch not in "\u200c\u200d" else ch
        for ch in text
    )


# ---------------------------------------------------------------- sanitize


@given(any_text)
def test_sanitize_output_holds_no_control_bidi_or_surrogate(text: str) -> None:
    out = sanitize(text)
    assert not any(_is_c0_c1(ch) for ch in out)
    assert not any(ch in BIDI for ch in out)
    assert not any(0xD800 <= ord(ch) < 0xE000 for ch in out)
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in out)
    assert out.encode("utf-8").decode("utf-8") == out  # would raise on a lone surrogate


@given(printable)
def test_sanitize_is_the_identity_on_printable_text(text: str) -> None:
    assert sanitize(text) == text


@given(any_text)
def test_sanitize_is_idempotent_and_unchanged(text: str) -> None:
    assert sanitize(sanitize(text)) == sanitize(text)
    assert sanitize(text) == old_sanitize(text)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a\x1b[2Jb", "a\\x1b[2Jb"),
        ("fake\nline", "fake\\x0aline"),
        ("\x85\x7f\x00", "\\x85\\x7f\\x00"),
        ("abc\u202etxt.exe", "abc\\u202etxt.exe"),
        ("\u2066x\u2069", "\\u2066x\\u2069"),
        ("\u2028\u2029", "\\u2028\\u2029"),
        ("\ud800", "\\ud800"),
        ("\U000e0001", "\\ue0001"),
        ("👨\u200d👩", "👨\\u200d👩"),  # display escapes even the joiners
        ("grüße 世界\u00a0\t", "grüße 世界\u00a0\\x09"),
        ("back\\slash", "back\\slash"),  # a literal backslash is left alone
    ],
)
def test_sanitize_examples(text: str, shown: str) -> None:
    assert sanitize(text) == shown


# ---------------------------------------------------------------- names and reasons


@given(any_text)
def test_check_name_accepts_exactly_what_it_accepted_before(name: str) -> None:
    if old_name_ok(name):
        assert check_name(name) == name
    else:
        with pytest.raises(MalformedFrameError):
            check_name(name)


@given(st.text(max_size=20), st.sampled_from(CONTROLS), st.text())
def test_check_name_rejects_controls(before: str, control: str, after: str) -> None:
    assert unicodedata.category(control) == "Cc"
    with pytest.raises(HandshakeError):
        check_name(before + control + after, HandshakeError)


@pytest.mark.parametrize("name", ["a", "a b", "Zoë", "李小龙", "😀" * 16, "a" * MAX_NAME_BYTES])
def test_check_name_accepts(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", " a", "a ", "a\u00a0b", "a\u3000b", "👨\u200d👩", "a\u202eb", "a\u2028", "\ud800", 7],
)
def test_check_name_rejects(name: object) -> None:
    with pytest.raises(MalformedFrameError):
        check_name(name)


@given(any_text)
def test_clean_reason_is_unchanged(text: str) -> None:
    assert clean_reason(text) == old_clean_reason(text)
    assert len(clean_reason(text)) <= MAX_REASON
    assert sanitize(clean_reason(text)) == clean_reason(text)


def test_clean_reason_examples() -> None:
    assert clean_reason("bad\nthing\u00a0here\u202e ok") == "bad\ufffdthing\ufffdhere\ufffd ok"
    assert clean_reason("x" * 300) == "x" * MAX_REASON


# ---------------------------------------------------------------- advertised labels


@given(st.text(st.characters(), max_size=40))
def test_labels_are_unchanged(text: str) -> None:
    try:
        expected = old_clean_name(text)
    except UnicodeEncodeError:  # the old rule raised on a lone surrogate: now refused
        expected = None
    assert clean_label(text) == expected
    assert replace_label(text) == old_label(text)


def test_label_examples() -> None:
    assert clean_label("👨\u200d👩") == "👨\u200d👩"  # joiners allowed here
    assert clean_label(" bob ") == " bob "  # surrounding space allowed here
    assert clean_label("a\u00a0b") == "a\u00a0b"
    assert clean_label("   ") is None
    assert clean_label("a\x00") is None
    assert clean_label("a\u202e") is None
    assert clean_label("é" * 33) is None  # 66 bytes
    assert replace_label("a\x00b\u200d\u202ec") == "a?b\u200d?c"
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
    ],
)
def test_safe_filename_examples(name: str, safe: str) -> None:
    assert safe_filename(name) == safe
