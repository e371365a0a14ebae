"""Metrics against hand-computed cases; aggregation, Sensitivity grouping and report writing."""

from __future__ import annotations

import json
import math

import pytest

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.evaluation.metrics import (
    METRICS,
    choice_index,
    exact_match,
    get_metric,
    is_correct,
    multiple_choice,
    normalize_vqa,
    prefix_match,
    rouge_l,
    vqa_accuracy,
)
from instraug_plugin.evaluation.report import ScoredItem, spread, summarize, to_markdown, write_report


@pytest.mark.parametrize(
    ("prediction", "references", "expected"),
    [
        ("3", ["3"], 1.0),
        ("  Red. ", ["red"], 1.0),
        ('"Blue circle!"', ["blue  circle"], 1.0),
        ("red circle", ["red"], 0.0),
        ("three", ["3", "three"], 1.0),
        ("", ["3"], 0.0),
    ],
)
def test_exact_match(prediction: str, references: list[str], expected: float) -> None:
    assert exact_match(prediction, references) == expected


@pytest.mark.parametrize(
    ("prediction", "references", "expected"),
    [
        ("3 circles", ["3"], 1.0),
        ("30", ["3"], 0.0),
        ("Circle, top left", ["circle"], 1.0),
        ("a circle", ["circle"], 0.0),
        ("top left corner", ["top left"], 1.0),
        ("top", ["top left"], 0.0),
        ("anything", [""], 0.0),
    ],
)
def test_prefix_match(prediction: str, references: list[str], expected: float) -> None:
    assert prefix_match(prediction, references) == expected


OPTIONS = ["red", "blue", "green", "dark blue"]


@pytest.mark.parametrize(
    ("prediction", "expected_index"),
    [
        ("B", 1),
        ("(B)", 1),
        ("B. blue", 1),
        ("b", 1),
        ("The answer is C", 2),
        ("Answer: (c)", 2),
        ("green", 2),
        ("It is Green.", 2),
        ("dark blue", 3),
        ("A red one", 0),  # "A " is an article here, not a letter; the option text decides
        ("red or green", None),  # two options named: no choice
        ("E", None),  # letter beyond the options
        ("purple", None),
        ("é", None),  # a one-letter answer outside A-Z is no option letter (used to crash)
        ("É.", None),
        ("The answer is a blue square", 1),  # the article "a" is not option A; "blue" decides
        ("the answer is b.", 1),  # a lowercase letter closed by "." is a letter
        ("answer: (d)", 3),
        ("the answer is d", 3),  # ... or by the end of the text
        ("The answer is Blue", 1),  # a capitalized word is not the letter B
    ],
)
def test_choice_index(prediction: str, expected_index: int | None) -> None:
    assert choice_index(prediction, OPTIONS) == expected_index


def test_multiple_choice_article_is_not_a_letter() -> None:
    assert multiple_choice("The answer is a blue square", ["B"], OPTIONS) == 1.0
    assert multiple_choice("The answer is a blue square", ["A"], OPTIONS) == 0.0
    assert multiple_choice("é", ["A"], OPTIONS) == 0.0


def test_multiple_choice_letter_or_text_reference() -> None:
    assert multiple_choice("(B)", ["B"], OPTIONS) == 1.0
    assert multiple_choice("blue", ["B"], OPTIONS) == 1.0
    assert multiple_choice("B", ["blue"], OPTIONS) == 1.0
    assert multiple_choice("C", ["B"], OPTIONS) == 0.0
    with pytest.raises(InstrAugError, match="options"):
        multiple_choice("B", ["B"], None)
    with pytest.raises(InstrAugError, match="purple"):
        multiple_choice("B", ["purple"], OPTIONS)


def test_vqa_normalization() -> None:
    assert normalize_vqa("The Two dogs.") == "2 dogs"
    assert normalize_vqa("1,000") == "1000"
    assert normalize_vqa("3.5 m") == "3.5 m"
    assert normalize_vqa("it's red!") == "its red"


def test_vqa_accuracy_few_references_is_any_match() -> None:
    assert vqa_accuracy("A red one", ["red one"]) == 1.0
    assert vqa_accuracy("two", ["2", "two"]) == 1.0
    assert vqa_accuracy("blue", ["red", "violet"]) == 0.0


def test_vqa_accuracy_annotator_formula() -> None:
    # 10 annotators, 2 said "cat": leaving out a matching annotator leaves 1 match (1/3),
    # leaving out another leaves 2 (2/3): (2 * 1/3 + 8 * 2/3) / 10 = 0.6.
    refs = ["cat", "cat"] + ["dog"] * 8
    assert vqa_accuracy("cat", refs) == pytest.approx(0.6)
    # 4 or more matches among 10: every subset keeps >= 3, so 1.
    assert vqa_accuracy("dog", refs) == pytest.approx(1.0)
    # 3 matches: subsets without a match keep 2 (2/3); the 7 others keep 3 (1): (3*2/3 + 7)/10 = 0.9.
    assert vqa_accuracy("cat", ["cat"] * 3 + ["dog"] * 7) == pytest.approx(0.9)


def test_rouge_l_hand_computed() -> None:
    # LCS("the cat sat on mat", "the cat is on the mat") = the cat on mat = 4; P = 4/5, R = 4/6.
    p, r = 4 / 5, 4 / 6
    assert rouge_l("The cat sat on mat", ["the cat is on the mat"]) == pytest.approx(2 * p * r / (p + r))
    assert rouge_l("key egg", ["key egg"]) == 1.0
    assert rouge_l("egg key", ["key egg"]) == pytest.approx(0.5)  # LCS 1 of 2 tokens each way
    assert rouge_l("", ["key"]) == 0.0
    assert rouge_l("dog", ["cat", "dog sun"]) == pytest.approx(2 * 1 * 0.5 / 1.5)  # best reference


def test_registry() -> None:
    assert set(METRICS) == {"exact_match", "prefix_match", "multiple_choice", "vqa_accuracy", "rouge_l"}
    assert get_metric("rouge_l") is rouge_l
    with pytest.raises(InstrAugError, match=r"unknown metric 'bleu'.*exact_match"):
        get_metric("bleu")


def test_is_correct_threshold() -> None:
    assert is_correct(1.0) and is_correct(0.5) and not is_correct(0.49) and not is_correct(0.0)


def test_spread_and_sensitivity() -> None:
    mean, std, lo, hi, sens = spread([50.0, 70.0, 60.0, 80.0, 40.0])
    assert (mean, lo, hi) == (60.0, 40.0, 80.0)
    assert std == pytest.approx(math.sqrt(200))  # population std: mean of squared deviations = 1000/5
    assert sens == pytest.approx(math.sqrt(200) / 60)
    assert spread([0.0, 0.0])[4] is None


def _items(task: str, scores: dict[str, list[float]]) -> list[ScoredItem]:
    return [
        ScoredItem(task, variant, f"{task}/{i}", "p", ("a",), score)
        for variant, per_instance in scores.items()
        for i, score in enumerate(per_instance)
    ]


def test_sensitivity_groups_by_task_then_variant() -> None:
    # Task a: variant scores are means over instances: v0 = 100 * (1+1+0+0)/4 = 50, v1 = 100.
    # Task b: v0 = 25, v1 = 25, v2 = 100 (three variants). Task c: all zero (Sensitivity undefined).
    items = (
        _items("a", {"v0": [1, 1, 0, 0], "v1": [1, 1, 1, 1]})
        + _items("b", {"v0": [1, 0, 0, 0], "v1": [0, 0, 0, 1], "v2": [1, 1, 1, 1]})
        + _items("c", {"v0": [0, 0], "v1": [0, 0]})
    )
    report = summarize(items, {"a": "exact_match", "b": "rouge_l", "c": "exact_match"}, name="n", model="m",
                       variants="both")
    a, b, c = report.tasks
    assert a.variant_scores == {"v0": 50.0, "v1": 100.0}
    assert (a.mean, a.std, a.min, a.max, a.n_instances) == (75.0, 25.0, 50.0, 100.0, 4)
    assert a.sensitivity == pytest.approx(25 / 75)
    b_std = math.sqrt(((25 - 50) ** 2 * 2 + 50**2) / 3)
    assert (b.mean, b.std) == (50.0, pytest.approx(b_std))
    assert b.sensitivity == pytest.approx(b_std / 50)
    assert c.sensitivity is None
    # Averaged over tasks (not pooled over items); Sensitivity over the tasks where it is defined.
    assert report.overall["mean"] == pytest.approx((75 + 50 + 0) / 3)
    assert report.overall["sensitivity"] == pytest.approx((25 / 75 + b_std / 50) / 2)
    pooled = [v for t in (a, b) for v in t.variant_scores.values()]
    assert report.overall["sensitivity"] != pytest.approx(spread(pooled)[4])
    metrics = report.log_metrics()
    assert metrics["instraug_eval/a/mean"] == 75.0 and "instraug_eval/c/sensitivity" not in metrics


def test_report_files(tmp_path) -> None:
    items = _items("a", {"original/0": [1, 0], "heldout/0": [0, 0]})
    report = summarize(items, {"a": "exact_match"}, name="bench", model="m", variants="both")
    paths = write_report(report, tmp_path, items)
    data = json.loads(paths["json"].read_text())
    assert data["tasks"][0]["variant_scores"] == {"heldout/0": 0.0, "original/0": 50.0}
    assert data["overall"]["sensitivity"] == pytest.approx(1.0)
    assert "| a | exact_match | 2 | 2 | 25.00 | 25.00 | 0.00 | 50.00 | 1.000 |" in to_markdown(report)
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(paths["predictions"].read_text().splitlines()) == 4
