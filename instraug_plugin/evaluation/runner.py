"""The generic evaluation loop: answer every (instance, variant) prompt with a model, score, summarize.

The model side is any `AnswerGenerator`; the LLaMA-Factory one (its loaders, template and multimodal
plugin) is `integrations.llamafactory.generator.Generator`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from instraug_plugin.evaluation.evalset import EvalItem, EvalSet
from instraug_plugin.evaluation.metrics import get_metric
from instraug_plugin.evaluation.report import Report, ScoredItem, summarize


@dataclass(frozen=True)
class GenerationSettings:
    """Greedy decoding settings for evaluation."""

    batch_size: int = 8
    max_new_tokens: int = 16


class AnswerGenerator(Protocol):
    """A model that answers prompts: greedy answers for (prompt with `<image>` tokens, image paths) pairs."""

    settings: GenerationSettings

    def generate(self, batch_prompts: Sequence[tuple[str, Sequence[str]]], system: str | None = None) -> list[str]:
        """One answer per pair, in input order."""
        ...


def score_items(items: Sequence[EvalItem], predictions: Sequence[str], eval_set: EvalSet) -> list[ScoredItem]:
    """Score each prediction with its task's metric."""
    scored = []
    for item, prediction in zip(items, predictions, strict=True):
        metric = get_metric(eval_set.tasks[item.instance.task].metric)
        score = metric(prediction, item.instance.answers, item.instance.options)
        scored.append(
            ScoredItem(item.instance.task, item.variant, item.instance.id, prediction, item.instance.answers, score)
        )
    return scored


def evaluate(
    generator: AnswerGenerator, eval_set: EvalSet, *, model_name: str, variants: str
) -> tuple[Report, list[ScoredItem]]:
    """Generate for every (instance, variant) pair, score, and summarize across variants."""
    items = eval_set.items()
    started = time.perf_counter()
    predictions = generator.generate([(item.prompt, item.instance.images) for item in items])
    seconds = time.perf_counter() - started
    scored = score_items(items, predictions, eval_set)
    metrics = {name: spec.metric for name, spec in eval_set.tasks.items()}
    meta = {"n_generations": len(items), "generation_seconds": round(seconds, 2),
            "batch_size": generator.settings.batch_size, "max_new_tokens": generator.settings.max_new_tokens}
    report = summarize(scored, metrics, name=eval_set.name, model=model_name, variants=variants, meta=meta)
    return report, scored
