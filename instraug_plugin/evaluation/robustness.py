"""Robustness statistics across instruction wordings (torch-free, pure Python).

- Performance drop rate (PromptBench's PDR): 1 - heldout_score / original_score.
- Consistency (MMBench's CircularEval applied to wordings): the share of instances answered correctly
  under every wording, "correct" meaning `metrics.is_correct` (score >= 0.5; 1 for exact-match metrics).
- Bootstrap percentile intervals that resample clusters (e.g. instances, each keeping the scores of
  all its wordings and training seeds) with replacement, from a fixed seed, so they are deterministic.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import NamedTuple, TypeVar

from instraug_plugin.evaluation.metrics import is_correct

T = TypeVar("T")


class Interval(NamedTuple):
    """A point estimate and its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float


def performance_drop_rate(original_score: float | None, heldout_score: float | None) -> float | None:
    """PromptBench PDR = 1 - heldout / original; None when a score is missing or original is 0."""
    if original_score is None or heldout_score is None or original_score == 0:
        return None
    return 1 - heldout_score / original_score


def consistency(instances: Iterable[Iterable[float]]) -> float:
    """Percent (0-100) of instances whose scores (one per wording) are all correct (`is_correct`)."""
    flags = [all(is_correct(s) for s in scores) for scores in instances]
    if not flags:
        raise ValueError("consistency() of no instances")
    return 100 * sum(flags) / len(flags)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("percentile() of an empty list")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def bootstrap_replicates(
    values_by_cluster: Sequence[T], statistic: Callable[[Sequence[T]], float], n_resamples: int = 1000,
    seed: int = 0,
) -> list[float]:
    """`statistic` of `n_resamples` resamples (clusters drawn with replacement, same size) from `seed`."""
    if not values_by_cluster:
        raise ValueError("bootstrap of no clusters")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = random.Random(seed)
    n = len(values_by_cluster)
    return [statistic([values_by_cluster[i] for i in rng.choices(range(n), k=n)]) for _ in range(n_resamples)]


def percentile_interval(replicates: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """The central `confidence` percentile interval of bootstrap replicates."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    tail = (1 - confidence) / 2
    return percentile(replicates, tail), percentile(replicates, 1 - tail)


def bootstrap_interval(
    values_by_cluster: Sequence[T], statistic: Callable[[Sequence[T]], float], n_resamples: int = 1000,
    seed: int = 0, confidence: float = 0.95,
) -> Interval:
    """`statistic` of all clusters with its percentile bootstrap interval (clusters resampled as units).

    A cluster is whatever `statistic` reads, e.g. one instance's scores under every wording and seed.
    """
    low, high = percentile_interval(bootstrap_replicates(values_by_cluster, statistic, n_resamples, seed), confidence)
    return Interval(statistic(values_by_cluster), low, high)


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)


def paired_difference_interval(
    a_by_instance: Mapping[Hashable, float | Sequence[float]], b_by_instance: Mapping[Hashable, float | Sequence[float]],
    n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
) -> Interval:
    """mean(a) - mean(b) over instances, with a bootstrap interval resampling instances (paired: same keys).

    An instance's value may be a list (e.g. its scores under several wordings or seeds): its mean is used.
    """
    if a_by_instance.keys() != b_by_instance.keys():
        raise ValueError("paired_difference_interval needs the same instances in both arms")

    def value(v: float | Sequence[float]) -> float:
        return _mean(v) if isinstance(v, Sequence) else float(v)

    pairs = [(value(a_by_instance[k]), value(b_by_instance[k])) for k in a_by_instance]
    return bootstrap_interval(pairs, lambda ps: _mean(a - b for a, b in ps), n_resamples, seed, confidence)
