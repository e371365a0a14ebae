"""Lexical diversity of a paraphrase against its seed (torch-free).

`new_word_share`: the share of a paraphrase's content words that are not in its seed. Stop-words and
placeholders do not count; words are lower-cased letters and digits; Chinese and Japanese, written
without spaces, count each Han / kana character as a word, minus a short list of function characters.
A paraphrase that only reorders the seed's words scores 0; one that says it all in other words, 1.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.placeholders import DEFAULT_SPEC, PlaceholderSpec

STOP_WORDS = frozenset(
    """a an the and or but if then than so of to in on at by for with from into onto about as is are was were be
    been being am do does did doing have has had having it its this that these those there here what which who
    whom whose where when why how i me my we our you your he him his she her they them their one ones all any
    each every some no not can could would should will shall may might must please just also only very
    up down out over under again more most such own same too s t don""".split()
)
CJK_STOP_CHARACTERS = frozenset("的了是在吗呢吧啊和与及或个这那一请你我他她它们么呀哪些中里上下")
_LATIN_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_CJK_CHARACTER = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def content_words(text: str, spec: PlaceholderSpec = DEFAULT_SPEC) -> set[str]:
    """The content words of `text`'s free text (placeholders dropped)."""
    try:
        free = " ".join(span.text for span in spec.parse(text) if not span.protected)
    except InstrAugError:
        free = text
    words = {c for c in _CJK_CHARACTER.findall(free) if c not in CJK_STOP_CHARACTERS}
    latin = _CJK_CHARACTER.sub(" ", free).casefold()
    words |= {w for w in _LATIN_WORD.findall(latin) if w not in STOP_WORDS and not w.isdigit()}
    return words


def new_word_share(seed: str, paraphrase: str, spec: PlaceholderSpec = DEFAULT_SPEC) -> float | None:
    """Share of the paraphrase's content words not in the seed; None when it has none."""
    words = content_words(paraphrase, spec)
    if not words:
        return None
    return len(words - content_words(seed, spec)) / len(words)


def mean_new_word_share(pairs: Iterable[tuple[str, str]], spec: PlaceholderSpec = DEFAULT_SPEC) -> float | None:
    """Mean `new_word_share` over (seed, paraphrase) pairs that have content words; None if none do."""
    shares = [s for seed, text in pairs if (s := new_word_share(seed, text, spec)) is not None]
    return round(sum(shares) / len(shares), 4) if shares else None
