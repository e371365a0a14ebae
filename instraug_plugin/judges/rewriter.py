"""The rewriter LLM as fidelity judge: asked whether a paraphrase asks for the same thing as its seed,
scored by its own probability of answering yes (one forward pass per pair, no generation).

The prompts and their worked examples are `templates/meta_prompts/judge.json`, one per language (the
seed's script picks it; other scripts get English). The model runs through the llama.cpp backend (GGUF on
the CPU); pairs are decoded side by side, the shared prompt prefix (system prompt and examples)
prefilled once per batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from instraug_plugin.backends.llamacpp_backend import LlamaCppBackend
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.jsonfile import read_json_object
from instraug_plugin.core.language import language_of
from instraug_plugin.resources import templates_dir

YES = ("yes", "Yes", " yes", " Yes")
NO = ("no", "No", " no", " No")
FALLBACK_LANGUAGE = "en"


@dataclass(frozen=True)
class _Prompt:
    system: str
    request: str
    examples: tuple[tuple[str, str, str], ...]

    def chat(self, seed: str, paraphrase: str) -> list[tuple[str, str]]:
        turns = [("system", self.system)]
        for a, b, answer in self.examples:
            turns += [("user", self._fill(a, b)), ("assistant", answer)]
        return [*turns, ("user", self._fill(seed, paraphrase))]

    def _fill(self, a: str, b: str) -> str:
        return self.request.replace("{{a}}", a).replace("{{b}}", b)


def load_judge_prompts() -> dict[str, _Prompt]:
    """`judge.json`: {"languages": {tag: {system, request, examples: [{a, b, answer}]}}}, with an "en" entry."""
    path = templates_dir() / "meta_prompts" / "judge.json"
    try:
        prompts = {language: _Prompt(str(entry["system"]), str(entry["request"]),
                                     tuple((str(e["a"]), str(e["b"]), str(e["answer"])) for e in entry["examples"]))
                   for language, entry in read_json_object(path)["languages"].items()}
    except (KeyError, TypeError, AttributeError):
        prompts = {}
    if FALLBACK_LANGUAGE not in prompts:
        raise InstrAugError(f"{path}: needs 'languages' with an 'en' entry of 'system', 'request' and 'examples' [{{a, b, answer}}]")
    return prompts


def _probability(logprobs: Sequence[float]) -> float:
    return sum(math.exp(v) for v in logprobs)


class RewriterJudge:
    """P(yes) / (P(yes) + P(no)) of an embedded rewriter asked "same task, same answer?"."""

    def __init__(self, model: str, *, name: str, batch_size: int = 32, threads: int | None = None):
        self.prompts = load_judge_prompts()
        self.name = name
        self.backend = LlamaCppBackend(model, batch_size=batch_size, threads=threads, context_size=8192)

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """One score in [0, 1] per (seed, paraphrase): the judge's probability of "yes" against "no"."""
        if not pairs:
            return []
        chats = [self.prompts.get(language_of(a), self.prompts[FALLBACK_LANGUAGE]).chat(a, b) for a, b in pairs]
        scores = []
        for row in self.backend.first_token_logprobs(chats, YES + NO):
            yes, no = _probability(row[: len(YES)]), _probability(row[len(YES) :])
            scores.append(yes / (yes + no) if yes + no > 0 else 0.0)
        return scores
