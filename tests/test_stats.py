"""`instraug-plugin stats`: numbers of a small real pool, the markdown report and the PNG plots."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from instraug_plugin.cli import app, main
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.pool import MANIFEST_FILE, PoolRecord, write_pool
from instraug_plugin.stats import LENGTH_PLOT, REPORT_FILE, TASK_PLOT, compute_stats, distinct_n, write_stats

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
    result = invoke([str(pool)])
    assert result.exit_code == 0, result.output
    assert "Pool statistics" in result.output and "2.67" in result.output and "25.0%" in result.output
    out = pool / "stats"
    report = (out / REPORT_FILE).read_text(encoding="utf-8")
    for row in (
        "| tasks | 2 |",
        "| expansion factor (rows / seeds) | 2.67 |",
        "| pass rate (kept / generated) | 25.0% |",
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
    result = invoke([str(pool / "pool.jsonl"), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "report" / REPORT_FILE).read_text(encoding="utf-8")
    assert "The manifest records no filter counts." in report
    assert "| pass rate (kept / generated) | n/a |" in report
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
