"""Rule filters that decide which paraphrases enter the pool; each is named and counts its rejects.

A candidate is checked against its parent (the text it was rephrased from: the seed in round 1)
for length, echo and near-duplicates, and against its root seed for placeholders.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Protocol

from instraug_plugin.core.placeholders import DEFAULT_SPEC, PlaceholderSpec
from instraug_plugin.core.pool import normalize


@dataclass(frozen=True)
class Candidate:
    """A restored paraphrase with the texts it is judged against."""

    text: str
    parent: str
    seed: str
    seed_id: str


class Filter(Protocol):
    name: str

    def accepts(self, candidate: Candidate) -> bool: ...


def word_count(text: str) -> int:
    return len(text.split())


@dataclass
class LengthWindow:
    """Word count within (low·L, high·L) of the parent's length L (paper: 0.5–1.5)."""

    low: float = 0.5
    high: float = 1.5
    name: str = "length"

    def accepts(self, candidate: Candidate) -> bool:
        reference = word_count(candidate.parent)
        return self.low * reference < word_count(candidate.text) < self.high * reference


@dataclass
class SamePlaceholders:
    """The multiset of protected spans equals the root seed's."""

    spec: PlaceholderSpec = DEFAULT_SPEC
    name: str = "placeholders"

    def accepts(self, candidate: Candidate) -> bool:
        return self.spec.same_placeholders(candidate.seed, candidate.text)


_CONTRACTION = re.compile(r"\w'(?:d|ll)\b", re.IGNORECASE)


@dataclass
class NoContractions:
    """No `'d` / `'ll` contractions (the paper's early runs; off by default)."""

    name: str = "contractions"

    def accepts(self, candidate: Candidate) -> bool:
        return not _CONTRACTION.search(candidate.text)


@dataclass
class NotEcho:
    """Differs from its parent and its seed after normalization."""

    name: str = "echo"

    def accepts(self, candidate: Candidate) -> bool:
        text = normalize(candidate.text)
        return text != normalize(candidate.parent) and text != normalize(candidate.seed)


_META = re.compile(
    r"\b(?:rephras\w*|paraphras\w*|reword\w*|rewrit\w*|revised|the (?:input|original|given) sentence|"
    r"as an ai|i'm sorry|i am sorry|i cannot|here is|here's|language model|placeholder\w*)\b",
    re.IGNORECASE,
)


_STRAY_MARKER = re.compile(r"[\[(<{]\s*[A-Z]\s*[\])>}]")


@dataclass
class NoMetaText:
    """No talk about the rewriting itself ("rephrased", "here is", "as an AI") and no leftover mask
    markers such as `[A]`, unless the seed has them."""

    name: str = "meta_text"

    def accepts(self, candidate: Candidate) -> bool:
        seed_terms = {m.lower() for m in _META.findall(candidate.seed)} | set(_STRAY_MARKER.findall(candidate.seed))
        found = [m.lower() for m in _META.findall(candidate.text)] + _STRAY_MARKER.findall(candidate.text)
        return all(m in seed_terms for m in found)


@dataclass
class NotDuplicate:
    """Not an exact duplicate (normalized) of any text already in the pool, across all tasks."""

    name: str = "duplicate"
    _seen: set[str] = field(default_factory=set)

    def accepts(self, candidate: Candidate) -> bool:
        key = normalize(candidate.text)
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    def remember(self, text: str) -> None:
        self._seen.add(normalize(text))


@dataclass
class NotNearDuplicate:
    """Word-level similarity to every kept text of the same seed stays below `threshold`."""

    threshold: float = 0.9
    name: str = "near_duplicate"
    _kept: dict[str, list[list[str]]] = field(default_factory=lambda: defaultdict(list))

    def accepts(self, candidate: Candidate) -> bool:
        words = normalize(candidate.text).split()
        for other in self._kept[candidate.seed_id]:
            if SequenceMatcher(None, words, other, autojunk=False).ratio() >= self.threshold:
                return False
        self._kept[candidate.seed_id].append(words)
        return True

    def remember(self, seed_id: str, text: str) -> None:
        self._kept[seed_id].append(normalize(text).split())


@dataclass(frozen=True)
class FilterConfig:
    """Which filters run and their parameters."""

    length_low: float = 0.5
    length_high: float = 1.5
    contractions: bool = False
    near_duplicate_threshold: float = 0.9


class FilterChain:
    """Runs filters in order (stateless first, stateful dedup last); counts rejects per filter."""

    def __init__(self, config: FilterConfig = FilterConfig(), spec: PlaceholderSpec = DEFAULT_SPEC):
        self.duplicate = NotDuplicate()
        self.near_duplicate = NotNearDuplicate(config.near_duplicate_threshold)
        filters: list[Filter] = [SamePlaceholders(spec), LengthWindow(config.length_low, config.length_high)]
        if config.contractions:
            filters.append(NoContractions())
        filters += [NotEcho(), NoMetaText(), self.duplicate]
        if config.near_duplicate_threshold < 1.0:
            filters.append(self.near_duplicate)
        self.filters: Sequence[Filter] = filters
        self.rejected: Counter[str] = Counter({f.name: 0 for f in filters})

    def add_seed(self, seed_id: str, text: str) -> None:
        """Seeds are always kept; later paraphrases must differ from them."""
        self.duplicate.remember(text)
        self.near_duplicate.remember(seed_id, text)

    def accepts(self, candidate: Candidate) -> bool:
        for f in self.filters:
            if not f.accepts(candidate):
                self.rejected[f.name] += 1
                return False
        return True
