"""Names that cannot be spoofed (p2pchat.proto.names): the UTS #39 skeleton,
when two names are the same name, mixed scripts, and how faces show a name.

Properties first, then the whole confusables table, then examples."""

from __future__ import annotations

import string
import subprocess
import sys
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pchat.proto import confusables
from p2pchat.proto.names import (
    MIXED_MARK,
    comparison_keys,
    display_name,
    fold,
    is_mixed_script,
    name_scripts,
    same_name,
    skeleton,
)

any_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)
CYRILLIC_O = "\u043e"
GREEK_OMICRON = "\u03bf"


def table() -> dict[str, str]:
    """The shipped table, parsed here independently of the module under test."""
    out = {}
    for line in confusables.DATA.splitlines():
        src, proto = line.split(";")
        out[chr(int(src, 16))] = "".join(chr(int(h, 16)) for h in proto.split())
    return out


# ---------------------------------------------------------------- properties


@given(any_text)
def test_skeleton_is_idempotent(text: str) -> None:
    assert skeleton(skeleton(text)) == skeleton(text)


@given(any_text)
def test_a_comparison_key_is_the_same_name_as_what_it_came_from(text: str) -> None:
    for key in comparison_keys(text):
        assert key in comparison_keys(key)
        assert same_name(text, key)


@given(any_text, any_text)
def test_same_name_is_reflexive_and_symmetric(a: str, b: str) -> None:
    assert same_name(a, a)
    assert same_name(a, b) == same_name(b, a)


@given(any_text)
def test_nfkc_and_case_forms_are_the_same_name(text: str) -> None:
    assert same_name(text, unicodedata.normalize("NFKC", text))
    assert same_name(text, unicodedata.normalize("NFD", text))
    assert same_name(text, fold(text))


@given(st.text(string.ascii_letters + string.digits, min_size=1, max_size=16))
def test_fullwidth_bold_and_upper_case_ascii_are_the_plain_name(name: str) -> None:
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in name)
    assert same_name(fullwidth, name)
    assert same_name(name.upper(), name)
    # mathematical bold letters: NFKC gives the letter back
    bolded = "".join(
        unicodedata.lookup(f"MATHEMATICAL BOLD {'CAPITAL' if c.isupper() else 'SMALL'} {c.upper()}")
        if c.isalpha()
        else c
        for c in name
    )
    assert same_name(bolded, name)


@given(
    st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzé"), min_size=1, max_size=12),
    st.text(st.sampled_from("0123456789 -_.!?@#'👩💻🎉\u0301\u0308"), max_size=8),
)
def test_common_and_inherited_characters_never_make_a_name_mixed(letters: str, others: str) -> None:
    assert not is_mixed_script(letters + others)
    assert not is_mixed_script(others + letters)
    assert is_mixed_script(letters + others + CYRILLIC_O)


# ---------------------------------------------------------------- the table


def test_the_table_is_unicodes_13() -> None:
    assert confusables.VERSION == "13.0.0"
    assert len(table()) > 6000


def test_every_mapping_of_the_table_gives_equal_skeletons() -> None:
    """Each source and its prototype have one skeleton, and so are one name.

    But for a few sources that NFD decomposes: UTS #39 maps the decomposition,
    so their own line of the table is never consulted (``ȧ`` is ``a`` and a
    dot above, not the table's ``å``)."""
    pairs = table()
    unused = []
    for source, prototype in pairs.items():
        if skeleton(source) != skeleton(prototype):
            assert unicodedata.normalize("NFD", source) != source, hex(ord(source))
            unused.append(source)
            continue
        assert same_name(source, prototype), hex(ord(source))
    assert len(unused) < 30, unused


def test_the_table_is_loaded_on_the_first_comparison_only() -> None:
    code = (
        "import sys\n"
        "from p2pchat.proto import names\n"
        "names.is_mixed_script('b\\u043eb'); names.display_name('bob')\n"
        "print('p2pchat.proto.confusables' in sys.modules)\n"
        "names.same_name('bob', 'b\\u043eb')\n"
        "print('p2pchat.proto.confusables' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["False", "True"]


# ---------------------------------------------------------------- examples


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (f"b{CYRILLIC_O}b", "bob"),  # the impersonator
        (f"b{GREEK_OMICRON}b", "bob"),
        ("\u0431\u043e\u0431", "\u0411\u041e\u0411"),  # боб, БОБ
        ("b0b", "bob"),  # digit zero's prototype is capital O
        ("Bob", "bob"),
        ("\uff42\uff4f\uff42", "bob"),  # fullwidth
        ("\U0001d41b\U0001d428\U0001d41b", "bob"),  # mathematical bold
        ("rn", "m"),
        ("corn", "com"),
        ("Zo\u00eb", "Zoe\u0308"),  # composed and decomposed
        ("\u0397\u039b\u0399\u0391\u03a3", "\u03b7\u03bb\u03b9\u03b1\u03c3"),  # ΗΛΙΑΣ, ηλιας
        ("\u0397ELLO", "hello"),  # capital Greek Eta is Latin H
        ("I1l", "lll"),
        # what shows nothing is dropped first: joiners, selectors, tags, fillers
        ("bo\u200db", "bob"),
        ("b\u200cob", "bob"),
        ("\u2764\ufe0f bob", "\u2764 bob"),
        ("\U0001f469\u200d\U0001f4bb", "\U0001f469\U0001f4bb"),
        ("\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f", "\U0001f3f4"),
        ("\u3164bob", "bob"),
        ("bob\u2800", "bob"),
    ],
)
def test_look_alikes_are_the_same_name(a: str, b: str) -> None:
    assert same_name(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("alice", "bob"),
        ("bob", "bobby"),
        ("bob", "rob"),
        ("ann", "arm"),
        ("\u0431\u043e\u0431", "bob"),  # боб: б is no b
        ("山田", "田山"),
    ],
)
def test_different_names_stay_different(a: str, b: str) -> None:
    assert not same_name(a, b)


@pytest.mark.parametrize(
    ("name", "scripts"),
    [
        (f"b{CYRILLIC_O}b", {"Latin", "Cyrillic"}),
        (f"b{GREEK_OMICRON}b", {"Latin", "Greek"}),
        ("\u0391\u0392\u0393bob", {"Latin", "Greek"}),
        ("Иван Smith", {"Latin", "Cyrillic"}),
        ("שלוםbob", {"Latin", "Hebrew"}),
        ("bob\u0628", {"Latin", "Arabic"}),
        ("김철수たろう", {"Hangul", "Hiragana"}),  # Korean with kana is no allowed mix
    ],
)
def test_mixed_scripts(name: str, scripts: set[str]) -> None:
    assert name_scripts(name) == scripts
    assert is_mixed_script(name)
    assert display_name(name) == name + MIXED_MARK


@pytest.mark.parametrize(
    "name",
    [
        "bob",
        "bob2",
        "\u0431\u043e\u0431",  # боб: Cyrillic only
        "山田たろう",  # Japanese: Han, Hiragana
        "山田タロウ",  # Han, Katakana
        "山田Taro",  # Latin may join Japanese
        "らーめん",  # the prolonged sound mark is Common
        "김철수 金哲洙 Kim",  # Korean: Hangul, Han, Latin
        "陳ㄅㄆ",  # Chinese with Bopomofo
        "Zoë 👩‍💻",
        "\u043e\u0301\u0431",  # Cyrillic with a combining acute: Inherited
        "\U0001d41b\U0001d428\U0001d41b",  # mathematical bold: Latin after NFKC
        "ʻokina",  # a modifier letter is Common
        "O'Brien-2",
        "🎉🎉",
    ],
)
def test_not_mixed(name: str) -> None:
    assert not is_mixed_script(name)
    assert display_name(name) == name


def test_display_name_escapes_what_a_terminal_would_obey() -> None:
    assert display_name("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert display_name("x\u202ey") == "x\\u202ey"
    assert display_name("\U0001f469\u200d\U0001f4bb") == "\U0001f469\u200d\U0001f4bb"  # ZWJ kept
    flag = "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"
    assert display_name(flag) == flag  # tags kept
    assert display_name("\u0915\u094d\u200c\u0937") == "\u0915\u094d\u200c\u0937"  # ZWNJ kept
    assert display_name("a\u200fb\ufeff") == "a\\u200fb\\ufeff"
    assert display_name("\\x1b") == "\\\\x1b"  # typed, not a real ESC
    assert display_name(f"b{CYRILLIC_O}b\x07") == f"b{CYRILLIC_O}b\\x07{MIXED_MARK}"
