"""The rewriter LLM as fidelity judge: asked whether a paraphrase asks for the same thing as its seed,
scored by its own probability of answering yes (one forward pass per pair, no generation).

The prompt and its worked examples are `templates/meta_prompts/judge.json`. The model runs through
the llama.cpp backend (GGUF on the CPU); pairs are decoded side by side, the shared prompt prefix
(system prompt and examples) prefilled once per batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from instraug_plugin.backends.llamacpp_backend import LlamaCppBackend
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.jsonfile import read_json_object
from instraug_plugin.resources import templates_dir

YES = ("yes", "Yes", " yes", " Yes")
NO = ("no", "No", " no", " No")


def _probability(logprobs: Sequence[float]) -> float:
    return sum(math.exp(v) for v in logprobs)


class RewriterJudge:
    """P(yes) / (P(yes) + P(no)) of an embedded rewriter asked "same task, same answer?"."""

    def __init__(self, model: str, *, name: str, batch_size: int = 32, threads: int | None = None):
        path = templates_dir() / "meta_prompts" / "judge.json"
        data = read_json_object(path)
        try:
            self.system, self.request = str(data["system"]), str(data["request"])
            self.examples = [(str(e["a"]), str(e["b"]), str(e["answer"])) for e in data["examples"]]
        except (KeyError, TypeError):
            raise InstrAugError(f"{path}: needs 'system', 'request' and 'examples' [{{a, b, answer}}]") from None
        self.name = name
        self.backend = LlamaCppBackend(model, batch_size=batch_size, threads=threads, context_size=8192)

    def _chat(self, seed: str, paraphrase: str) -> list[tuple[str, str]]:
        turns = [("system", self.system)]
        for a, b, answer in self.examples:
            turns += [("user", self.request.replace("{{a}}", a).replace("{{b}}", b)), ("assistant", answer)]
        return [*turns, ("user", self.request.replace("{{a}}", seed).replace("{{b}}", paraphrase))]

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """One score in [0, 1] per (seed, paraphrase): the judge's probability of "yes" against "no"."""
        if not pairs:
            return []
        rows = self.backend.first_token_logprobs([self._chat(a, b) for a, b in pairs], YES + NO)
        scores = []
        for row in rows:
            yes, no = _probability(row[: len(YES)]), _probability(row[len(YES) :])
            scores.append(yes / (yes + no) if yes + no > 0 else 0.0)
        return scores
