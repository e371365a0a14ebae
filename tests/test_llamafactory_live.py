"""Live mode: the real SmolLM2 rewriter in 4-bit (bitsandbytes on CPU) refreshing the pool during training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_llamafactory_train import data_dir, samples, train  # noqa: F401 - data_dir is a fixture

from instraug_plugin.core.pool import read_records
from instraug_plugin.integrations.llamafactory.config import parse_config
from instraug_plugin.integrations.llamafactory.live import LiveRefresher
from instraug_plugin.integrations.llamafactory.session import INDEX_COLUMN, start_session

pytestmark = pytest.mark.slow


def test_live_mode_trains_with_a_4bit_smollm2_rewriter(tmp_path: Path, tiny_llava: Path, data_dir: Path,  # noqa: F811
                                                       offline_env: dict[str, str]) -> None:
    result, out = train(tmp_path, "live", tiny_llava, data_dir, offline_env, instraug_mode="live",
                        instraug_pool=None, instraug_epsilon=0.0, instraug_live_model="smollm2",
                        instraug_live_quantization_bit=4, instraug_live_refresh_every=2, instraug_live_max_seeds=3,
                        instraug_live_num_samples=2, instraug_live_max_new_tokens=20)
    assert result.returncode == 0, result.stderr[-3000:]
    stats = [json.loads(line) for line in (out / "instraug_stats.jsonl").open()]
    assert [s["epoch"] for s in stats] == [0, 1]
    assert "live_refresh_seconds" in stats[0] and "live_refresh_seconds" not in stats[1]  # refresh_every: 2
    assert stats[0]["live_seeds"] == 3 and stats[0]["rewriter_fallbacks"] == 0
    assert stats[0]["live_paraphrases"] > 0 and stats[0]["rewriter_peak_mem_mb"] > 0
    records = list(read_records(out / "instraug_live" / "pool-epoch0"))
    assert {r.model for r in records} == {"SmolLM2-135M-Instruct@bnb4"}
    rows = samples(out)
    assert any(r["decision"] == "rewritten" for r in rows)
    assert all(r["image_tokens"] == 16 * r["images"] for r in rows)


def test_a_failing_rewriter_falls_back_and_counts(tmp_path: Path) -> None:
    from datasets import Dataset

    pool = Path(__file__).resolve().parents[1] / "dataset_info" / "instraug_demo" / "pool"
    not_a_model = tmp_path / "empty-model-dir"
    not_a_model.mkdir()
    session = start_session(parse_config({"instraug_mode": "live", "instraug_pool": str(pool), "instraug_scope": "all",
                                          "instraug_live_model": str(not_a_model)}), 42)
    prompts = [[{"role": "user", "content": f"<image>Question {i}?"}] for i in range(3)]
    session.train_dataset = Dataset.from_dict({"_prompt": prompts, INDEX_COLUMN: [0, 1, 2]})
    session.output_dir = str(tmp_path)
    before = list(session.rewriter.pool.records)
    refresher = LiveRefresher(session)
    refresher.refresh(0)
    assert session.fallbacks == 3
    assert session.rewriter.pool.records == before
    assert refresher.backend is None and refresher.last["live_paraphrases"] == 0


def test_live_refresh_reaches_persistent_dataloader_workers(tmp_path: Path, tiny_llava: Path,
                                                            data_dir: Path,  # noqa: F811
                                                            offline_env: dict[str, str]) -> None:
    """Refresh before each epoch, 2 persistent workers: epoch 1 draws from the pool refreshed for it, and the
    logged counts (recomputed in the main process) equal what the workers did."""
    result, out = train(tmp_path, "live-workers", tiny_llava, data_dir, offline_env, instraug_mode="live",
                        instraug_pool=None, instraug_epsilon=0.0, instraug_live_model="smollm2",
                        instraug_live_quantization_bit=4, instraug_live_refresh_every=1, instraug_live_max_seeds=5,
                        instraug_live_num_samples=5, instraug_live_max_new_tokens=40, instraug_live_keep_loaded=True,
                        instraug_log_samples=True, dataloader_num_workers=2, dataloader_persistent_workers=True)
    assert result.returncode == 0, result.stderr[-3000:]
    stats = [json.loads(line) for line in (out / "instraug_stats.jsonl").open() if '"epoch"' in line]
    pools = [{r.text for r in read_records(out / "instraug_live" / f"pool-epoch{e}")} for e in (0, 1)]
    assert pools[1] - pools[0], "the second refresh wrote no new wording; the test cannot tell the pools apart"
    rows = samples(out)
    for epoch in (0, 1):
        drawn = [r for r in rows if r["epoch"] == epoch]
        rewritten = [r for r in drawn if r["decision"] == "rewritten"]
        assert len(rewritten) == stats[epoch]["rewritten"] and len(drawn) == stats[epoch]["samples"]
        for row in rewritten:  # the wording comes from this epoch's pool (media tokens kept at the edges)
            assert any(text in row["user_turns"][0] for text in pools[epoch]), (epoch, row["user_turns"][0])
    only_new = pools[1] - pools[0]
    assert any(any(text in r["user_turns"][0] for text in only_new) for r in rows if r["epoch"] == 1)
