"""The meaning-fidelity filter: batching, masking, counting; the echo rule; the labeled set's figures."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from instraug_plugin.core.filters import (
    DEFAULT_FIDELITY_JUDGE,
    DEFAULT_MIN_FIDELITY,
    Candidate,
    FilterChain,
    FilterConfig,
    mask_for_scoring,
)
from instraug_plugin.core.language import language_of

ROOT = Path(__file__).resolve().parent.parent
SEED = "Generate a caption for {region_split_token.join(region)}."


class TableJudge:
    """Scores from a fixed table keyed by the masked paraphrase; records every call."""

    name = "table"

    def __init__(self, scores: dict[str, float]):
        self.scores = scores
        self.calls: list[list[tuple[str, str]]] = []

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        self.calls.append(list(pairs))
        return [self.scores[text] for _, text in pairs]


def _cand(text: str, task: str = "GC") -> Candidate:
    return Candidate(text=text, parent=SEED, seed=SEED, seed_id=f"{task}/0", task=task)


def test_mask_for_scoring_masks_placeholders_alike() -> None:
    assert mask_for_scoring(SEED) == "Generate a caption for X."
    assert mask_for_scoring("Describe <image> and {question}") == "Describe X and X"
    assert mask_for_scoring("unbalanced { brace") == "unbalanced { brace"  # left as is, never raises


def test_fidelity_scores_one_batch_of_rule_passing_candidates_and_counts_rejects_per_task() -> None:
    judge = TableJudge({"Write a caption for X.": 0.9, "What X is doing.": 0.3, "Describe X briefly.": 0.6})
    chain = FilterChain(FilterConfig(min_fidelity=0.5, task_shape=False), judge=judge)
    chain.add_seed("GC/0", SEED)
    candidates = [
        _cand("Write a caption for {region_split_token.join(region)}."),
        _cand("What {region_split_token.join(region)} is doing.", task="VG"),
        _cand("Generate a caption for {region_split_token.join(region)}"),  # echo: never reaches the judge
        _cand("Write a caption for the picture."),  # placeholder lost: never reaches the judge
        _cand("Describe {region_split_token.join(region)} briefly."),
        _cand("Write a caption for {region_split_token.join(region)}."),  # duplicate, after fidelity
    ]
    assert chain.select(candidates) == [True, False, False, False, True, False]
    assert len(judge.calls) == 1  # one batched call
    assert judge.calls[0] == [("Generate a caption for X.", t) for t in
                              ("Write a caption for X.", "What X is doing.", "Describe X briefly.")]
    assert chain.rejected["fidelity"] == 1 and chain.rejected["echo"] == 1 and chain.rejected["duplicate"] == 1
    assert chain.fidelity_score(candidates[0]) == 0.9 and chain.fidelity_score(candidates[2]) is None
    summary = chain.fidelity_summary()
    assert summary is not None and summary["judge"] == "table" and summary["min_fidelity"] == 0.5
    assert summary["tasks"] == {"GC": {"judged": 3, "rejected": 0}, "VG": {"judged": 1, "rejected": 1}}
    assert sorted(summary["scores"]) == [0.3, 0.6, 0.9]


def test_without_a_judge_the_chain_has_no_fidelity_filter() -> None:
    chain = FilterChain(FilterConfig(min_fidelity=0.5, task_shape=False))
    assert "fidelity" not in chain.rejected and chain.fidelity_summary() is None
    assert chain.select([_cand("What {region_split_token.join(region)} is doing.")]) == [True]


@pytest.mark.parametrize(
    "text,seed",
    [
        ("Generate a caption for {region}", "Generate a caption for {region}."),
        ("  generate a CAPTION for {region} !", "Generate a caption for {region}."),
        ('"Generate a caption for {region}."', "Generate a caption for {region}."),
        ("请描述这张图片", "请描述这张图片。"),
    ],
)
def test_echo_ignores_case_whitespace_and_edge_punctuation(text: str, seed: str) -> None:
    chain = FilterChain(FilterConfig(length_low=0.0, length_high=10.0))
    assert not chain.accepts(Candidate(text=text, parent=seed, seed=seed, seed_id="t/0"))
    assert chain.rejected["echo"] == 1


@pytest.mark.parametrize(
    "text,language",
    [("Describe {question} in the image.", "latin"), ("请描述这张图片。<image>", "zh"), ("この画像を説明してください", "ja"),
     ("이 이미지를 설명하세요", "ko"), ("Опишите изображение", "ru"), ("{question} <image>", "none")],
)
def test_language_of(text: str, language: str) -> None:
    assert language_of(text) == language


def _fidelity_script():
    spec = importlib.util.spec_from_file_location("fidelity_judge", ROOT / "benchmarks" / "fidelity_judge.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_labeled_set_covers_real_output_of_six_tasks() -> None:
    rows = _fidelity_script().load_labels()
    assert len(rows) >= 150 and len({r["task"] for r in rows}) >= 6
    assert {r["mode"] for r in rows} == {"constrained", "mask"}
    assert all(isinstance(r["same_task"], bool) and r["seed"] != r["paraphrase"] for r in rows)
    assert 0.2 < sum(r["same_task"] for r in rows) / len(rows) < 0.8  # both classes well represented


def test_operating_point_and_threshold_rule_by_hand() -> None:
    script = _fidelity_script()
    scores, labels = [0.9, 0.8, 0.7, 0.4, 0.6, 0.2], [True, True, True, True, False, False]
    at = script.operating_point(scores, labels, 0.5)
    assert (at.faithful_kept, at.unfaithful_rejected, at.precision, at.kept) == (0.75, 0.5, 0.75, 4)
    chosen = script.choose_threshold(scores, labels, min_keep=0.75)
    assert chosen.threshold == 0.7 and chosen.unfaithful_rejected == 1.0  # highest threshold keeping 3 of 4


@pytest.mark.slow
def test_default_filters_reproduce_the_published_figures_on_the_labels() -> None:
    script = _fidelity_script()
    rows = script.load_labels()
    labels = [r["same_task"] for r in rows]
    scores = script.score_pairs(DEFAULT_FIDELITY_JUDGE, rows)
    at = script.operating_point(scores, labels, DEFAULT_MIN_FIDELITY, script.rules_keep(rows))
    published = json.loads((ROOT / "benchmarks" / "results" / "fidelity_judge.json").read_text())
    figures = published["judges"][DEFAULT_FIDELITY_JUDGE]["at_threshold"]
    assert figures["threshold"] == DEFAULT_MIN_FIDELITY
    assert at.faithful_kept == pytest.approx(figures["faithful_kept"], abs=1e-6)
    assert at.unfaithful_rejected == pytest.approx(figures["unfaithful_rejected"], abs=1e-6)
    assert at.precision == pytest.approx(figures["precision"], abs=1e-6)
    # The bar: keep >= 90% of the faithful paraphrases (met); reject >= 70% of the unfaithful ones
    # is not met by any packaged judge measured (README); guard what the default reaches today.
    assert at.faithful_kept >= 0.9 and at.unfaithful_rejected >= 0.6


@pytest.mark.slow
def test_meaning_filters_on_the_heldout_tasks_reproduce_the_published_figures() -> None:
    script = _fidelity_script()
    held = script.load_labels(script.HELDOUT)
    assert len(held) >= 80 and not {r["task"] for r in held} & {r["task"] for r in script.load_labels()}
    published = json.loads((ROOT / "benchmarks" / "results" / "fidelity_judge.json").read_text())["meaning_filters"][DEFAULT_FIDELITY_JUDGE]
    before = script.rules_keep(held, task_shape=False)
    sub = [r for r, ok in zip(held, before) if ok]
    point = script.operating_point(script.score_pairs(DEFAULT_FIDELITY_JUDGE, sub), [r["same_task"] for r in sub],
                                   DEFAULT_MIN_FIDELITY, script.rules_keep(sub))
    figures = published["heldout"]
    assert (point.faithful_kept, point.unfaithful_rejected, point.precision) == pytest.approx(
        (figures["faithful_kept"], figures["unfaithful_rejected"], figures["precision"]), abs=1e-6)
    assert point.faithful_kept >= 0.9  # README: the rejection target (>= 70%) is not met on unseen tasks
