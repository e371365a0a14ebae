"""Robustness statistics of the eval report against hand-computed values: PDR, spread, consistency, bootstrap."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from instraug_plugin.evaluation.report import ScoredItem, summarize, to_markdown, write_report
from instraug_plugin.evaluation.robustness import (
    Interval,
    bootstrap_interval,
    consistency,
    paired_difference_interval,
    percentile,
    performance_drop_rate,
)

WORDINGS = ("original/0", "original/1", "heldout/0", "heldout/1")
# Per instance, its score under original/0, original/1, heldout/0, heldout/1.
TASK_A = {"a/0": (1, 1, 1, 1), "a/1": (1, 1, 0, 1), "a/2": (1, 0, 0, 0)}
TASK_B = {"b/0": (0.5, 1.0, 0.5, 0.5), "b/1": (0.4, 0.8, 0.6, 0.3), "b/2": (0.6, 0.6, 1.0, 0.7)}
METRICS = {"a": "exact_match", "b": "rouge_l", "c": "exact_match"}


def _items(task: str, table: dict[str, tuple[float, ...]], wordings: tuple[str, ...] = WORDINGS) -> list[ScoredItem]:
    return [ScoredItem(task, w, inst, "p", ("x",), float(s))
            for inst, scores in table.items() for w, s in zip(wordings, scores, strict=True)]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.fixture(scope="module")
def report():
    return summarize(_items("a", TASK_A) + _items("b", TASK_B), METRICS, name="n", model="m", variants="both")


def test_performance_drop_rate() -> None:
    assert performance_drop_rate(80.0, 60.0) == pytest.approx(0.25)
    assert performance_drop_rate(50.0, 75.0) == pytest.approx(-0.5)  # held-out better: negative drop
    assert performance_drop_rate(0.0, 10.0) is None
    assert performance_drop_rate(None, 10.0) is None and performance_drop_rate(10.0, None) is None


def test_consistency_counts_all_wordings_correct() -> None:
    # Correct = score >= 0.5: [0.5, 1] yes, [1, 0.49] no, [1, 1] yes -> 2 of 3.
    assert consistency([[0.5, 1.0], [1.0, 0.49], [1, 1]]) == pytest.approx(200 / 3)
    with pytest.raises(ValueError):
        consistency([])


def test_task_statistics_hand_computed(report) -> None:
    a, b = report.tasks
    # Task a, variant scores (mean over a/0..a/2, x100): o0 = 100, o1 = 66.67, h0 = 33.33, h1 = 66.67.
    assert a.variant_scores == pytest.approx(
        {"original/0": 100.0, "original/1": 200 / 3, "heldout/0": 100 / 3, "heldout/1": 200 / 3})
    assert a.mean == pytest.approx(200 / 3)  # (100 + 66.67 + 33.33 + 66.67) / 4
    assert a.spread == pytest.approx(200 / 3)  # max 100 - min 33.33
    assert a.original_mean == pytest.approx(250 / 3) and a.heldout_mean == pytest.approx(50.0)
    assert a.pdr == pytest.approx(0.4)  # 1 - 50 / 83.33
    # All four correct: a/0 only -> 1/3. Originals: a/0, a/1 -> 2/3. Held-out: a/0 -> 1/3.
    assert a.consistency == pytest.approx(100 / 3)
    assert a.consistency_original == pytest.approx(200 / 3)
    assert a.consistency_heldout == pytest.approx(100 / 3)
    # Task b: o0 = (0.5+0.4+0.6)/3 = 50, o1 = 80, h0 = 70, h1 = (0.5+0.3+0.7)/3 = 50.
    assert b.variant_scores == pytest.approx({"original/0": 50.0, "original/1": 80.0, "heldout/0": 70.0,
                                              "heldout/1": 50.0})
    assert (b.mean, b.spread) == (pytest.approx(62.5), pytest.approx(30.0))
    assert b.pdr == pytest.approx(1 - 60 / 65)  # original 65, held-out 60
    # b/0 (scores of exactly 0.5 count as correct) and b/2 are correct everywhere; b/1 fails 0.4 and 0.3.
    assert b.consistency == b.consistency_original == b.consistency_heldout == pytest.approx(200 / 3)


def test_overall_averages_over_tasks(report) -> None:
    o = report.overall
    assert o["mean"] == pytest.approx((200 / 3 + 62.5) / 2)
    assert o["spread"] == pytest.approx((200 / 3 + 30) / 2)
    assert o["pdr"] == pytest.approx((0.4 + 1 - 60 / 65) / 2)
    assert o["original_mean"] == pytest.approx((250 / 3 + 65) / 2) and o["heldout_mean"] == pytest.approx(55.0)
    assert o["consistency"] == pytest.approx(50.0)
    assert o["consistency_original"] == pytest.approx(200 / 3)
    assert o["consistency_heldout"] == pytest.approx(50.0)
    for key in ("mean", "std", "min", "max", "sensitivity"):  # the existing keys stay
        assert o[key] is not None


def test_no_heldout_and_zero_original() -> None:
    only_original = _items("a", {"a/0": (1, 0), "a/1": (1, 1)}, ("original/0", "original/1"))
    # Task c: originals all wrong (original mean 0), held-out half right -> PDR undefined.
    zero_original = _items("c", {"c/0": (0, 0, 1, 0), "c/1": (0, 0, 0, 0)})
    report = summarize(only_original + zero_original, METRICS, name="n", model="m", variants="both")
    a, c = report.tasks
    assert a.heldout_mean is None and a.pdr is None
    assert a.consistency == pytest.approx(50.0)  # a/1 right under both wordings
    assert a.consistency_original is None and a.consistency_heldout is None  # one kind only
    assert c.original_mean == 0.0 and c.heldout_mean == pytest.approx(25.0) and c.pdr is None
    assert (c.consistency, c.consistency_original, c.consistency_heldout) == (0.0, 0.0, 0.0)
    assert report.overall["pdr"] is None and report.overall["consistency_original"] == 0.0
    assert "instraug_eval/a/pdr" not in report.log_metrics()
    unprefixed = summarize(_items("a", {"a/0": (1, 0)}, ("v0", "v1")), METRICS, name="n", model="m", variants="x")
    assert unprefixed.tasks[0].pdr is None and unprefixed.tasks[0].original_mean is None


def test_percentile_linear_interpolation() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert percentile([10.0, 20.0, 30.0, 40.0, 50.0], 0.25) == 20.0
    assert (percentile([1.0, 9.0], 0.0), percentile([1.0, 9.0], 1.0)) == (1.0, 9.0)


def test_bootstrap_two_clusters() -> None:
    # Resample means of {0, 1}: 0 (p 1/4), 0.5 (p 1/2), 1 (p 1/4), so the 2.5% / 97.5% quantiles are 0 and 1.
    assert bootstrap_interval([0.0, 1.0], _mean) == Interval(0.5, 0.0, 1.0)


def test_bootstrap_deterministic_contains_mean_and_degenerate() -> None:
    rng = random.Random(5)
    values = [rng.random() for _ in range(30)]
    first = bootstrap_interval(values, _mean, seed=3)
    assert first == bootstrap_interval(values, _mean, seed=3)
    assert first != bootstrap_interval(values, _mean, seed=4)
    assert first.estimate == _mean(values) and first.low < first.estimate < first.high
    assert bootstrap_interval([0.75] * 10, _mean) == Interval(0.75, 0.75, 0.75)
    with pytest.raises(ValueError):
        bootstrap_interval([], _mean)
    with pytest.raises(ValueError):
        bootstrap_interval(values, _mean, confidence=1.0)


def test_bootstrap_wider_with_more_variance() -> None:
    # Same seed, same draws: values 50 + d * x give an interval d times as wide.
    xs = [-1.0, 0.0, 2.0, -3.0, 1.0, 1.0]
    narrow = bootstrap_interval([50 + x for x in xs], _mean)
    wide = bootstrap_interval([50 + 10 * x for x in xs], _mean)
    assert wide.high - wide.low == pytest.approx(10 * (narrow.high - narrow.low))
    assert narrow.high - narrow.low > 0


def test_paired_difference_interval() -> None:
    # Differences x: 1, y: 0, z: 0 -> 1/3. All three draws are y/z with p 8/27 and x with p 1/27 > 2.5%.
    a = {"x": 1.0, "y": 0.0, "z": 1.0}
    b = {"x": 0.0, "y": 0.0, "z": 1.0}
    assert paired_difference_interval(a, b) == Interval(pytest.approx(1 / 3), 0.0, 1.0)
    # Pairing removes the instances' own spread: a constant per-instance shift has a zero-width interval.
    shifted = {"x": 0.25, "y": -0.25, "z": 0.5}
    base = {"x": 0.5, "y": 0.0, "z": 0.75}
    assert paired_difference_interval(base, shifted) == Interval(0.25, 0.25, 0.25)
    # A list value (scores under several wordings or seeds) counts as its mean.
    assert paired_difference_interval({"x": [1.0, 0.0], "y": [1.0, 1.0]}, {"x": 0.0, "y": 0.5}).estimate == 0.5
    with pytest.raises(ValueError, match="same instances"):
        paired_difference_interval({"x": 1.0}, {"y": 1.0})


def test_report_bootstrap_resamples_instances(report) -> None:
    a, b = report.tasks
    # Balanced wordings: the task mean of a resample is the mean of its instances' wording means, so
    # resampling instances with the same seed (task k uses seed + k) gives the same interval.
    per_instance_a = [100 * _mean(list(s)) for s in TASK_A.values()]  # 100, 75, 25
    expected = bootstrap_interval(per_instance_a, _mean, seed=0)
    assert (a.mean_ci_low, a.mean_ci_high) == pytest.approx((expected.low, expected.high))
    for t in (a, b):
        assert t.mean_ci_low <= t.mean <= t.mean_ci_high and t.mean_ci_low < t.mean_ci_high
    o = report.overall
    assert o["mean_ci_low"] < o["mean"] < o["mean_ci_high"]
    assert report.bootstrap == {"n_resamples": 1000, "seed": 0, "confidence": 0.95}


def test_report_bootstrap_deterministic_and_degenerate() -> None:
    items = _items("a", TASK_A) + _items("b", TASK_B)
    shuffled = list(items)
    random.Random(1).shuffle(shuffled)
    first = summarize(items, METRICS, name="n", model="m", variants="both")
    assert summarize(shuffled, METRICS, name="n", model="m", variants="both").to_json() == first.to_json()
    single = summarize(_items("a", TASK_A), METRICS, name="n", model="m", variants="both", n_resamples=200, seed=7)
    t = single.tasks[0]  # with one task the stratified overall interval is the task's
    assert (single.overall["mean_ci_low"], single.overall["mean_ci_high"]) == (t.mean_ci_low, t.mean_ci_high)
    assert single.bootstrap["n_resamples"] == 200
    flat = summarize(_items("c", {"c/0": (1, 1, 1, 1), "c/1": (1, 1, 1, 1)}), METRICS, name="n", model="m",
                     variants="both")
    assert (flat.tasks[0].mean_ci_low, flat.tasks[0].mean_ci_high) == (100.0, 100.0)


def test_markdown_json_plot_and_log_metrics(report, tmp_path: Path) -> None:
    a = report.tasks[0]
    row = (f"| a | exact_match | 3 | 4 | 66.67 | 23.57 | 33.33 | 100.00 | 0.354 | "
           f"[{a.mean_ci_low:.2f}, {a.mean_ci_high:.2f}] | 66.67 | 0.400 | 33.33 | 66.67 | 33.33 |")
    text = to_markdown(report)
    assert row in text and "| 95% CI | spread | PDR | consistency | cons. original | cons. held-out |" in text
    paths = write_report(report, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert {"mean", "std", "min", "max", "sensitivity", "variant_scores", "spread", "mean_ci_low", "pdr",
            "consistency", "consistency_original", "consistency_heldout"} <= set(data["tasks"][0])
    assert data["overall"]["pdr"] == pytest.approx(report.overall["pdr"])
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    logged = report.log_metrics()
    assert logged["instraug_eval/a/pdr"] == pytest.approx(0.4)
    assert logged["instraug_eval/b/spread"] == pytest.approx(30.0)
    assert logged["instraug_eval/mean_ci_low"] == report.overall["mean_ci_low"]
    assert logged["instraug_eval/consistency_heldout"] == pytest.approx(50.0)
