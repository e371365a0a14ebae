"""The writing system of an instruction, as a coarse language tag for per-language yields (torch-free)."""

from __future__ import annotations

import unicodedata

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.placeholders import DEFAULT_SPEC, PlaceholderSpec

# Unicode character-name prefixes, checked in order; kana decides Japanese before Han does Chinese.
_SCRIPTS = (("HIRAGANA", "ja"), ("KATAKANA", "ja"), ("HANGUL", "ko"), ("CJK", "zh"), ("CYRILLIC", "ru"),
            ("ARABIC", "ar"), ("DEVANAGARI", "hi"), ("THAI", "th"), ("GREEK", "el"), ("HEBREW", "he"))


def language_of(text: str, spec: PlaceholderSpec = DEFAULT_SPEC) -> str:
    """`zh`, `ja`, `ko`, `ru`, ... by the script of the free text (placeholders ignored); `latin` for
    Latin-script text (English and other European languages), `none` when there are no letters."""
    try:
        free = "".join(s.text for s in spec.parse(text) if not s.protected)
    except InstrAugError:  # an unparsable template still has a script
        free = text
    names = [unicodedata.name(ch, "") for ch in free if ch.isalpha()]
    for prefix, tag in _SCRIPTS:
        if any(name.startswith(prefix) for name in names):
            return tag
    return "latin" if names else "none"
