"""The embedded Qwen2.5-Coder-1.5B rewriter on the real model (llama.cpp, CPU): varied meta-prompts keep
every placeholder, Chinese seeds get Chinese paraphrases, and the rewriter-as-judge scores pairs
alike in any batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from instraug_plugin.core.language import language_of
from instraug_plugin.core.placeholders import DEFAULT_SPEC
from instraug_plugin.core.pool import read_manifest

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "instraug_plugin"]
SEEDS = {
    "count": ["How many shapes are in the scene?"],
    "region": ["Describe the content of {region_split_token.join(region)} in the image."],
    "zh_who": ["他是谁？"],
    "zh_describe": ["<image>请描述这张图片"],
}


@pytest.fixture(scope="module")
def qwen_pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("qwen")
    templates = root / "templates.json"
    templates.write_text(json.dumps(SEEDS, ensure_ascii=False), encoding="utf-8")
    out = root / "pool"
    result = subprocess.run(
        [*CLI, "pregen", str(templates), "--model", "qwen2.5-coder-1.5b", "--varied-prompts", "1",
         "--min-fidelity", "0", "--min-per-seed", "0", "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_varied_prompts_keep_every_placeholder_and_the_seed_language(qwen_pool: Path) -> None:
    records = [json.loads(line) for line in (qwen_pool / "pool.jsonl").read_text(encoding="utf-8").splitlines()]
    paraphrases = [r for r in records if r["strategy"] != "seed"]
    manifest = read_manifest(qwen_pool)
    assert manifest["backend"] == "llamacpp" and manifest["model"].startswith("Qwen2.5-Coder-1.5B-Instruct")
    assert manifest["meta_prompt_counts"]["varied"] == 2  # one English, one Chinese prompt
    assert manifest["candidates"] > manifest["generated"]  # a reply lists several rewordings
    for record in paraphrases:
        assert DEFAULT_SPEC.same_placeholders(record["seed"], record["text"]), record
        assert language_of(record["text"]) == language_of(record["seed"]), record
        assert record["meta_prompt"].startswith("varied/zh/" if language_of(record["seed"]) == "zh" else "varied/en/")
    kept = {seed: sum(r["seed"] == seed for r in paraphrases) for texts in SEEDS.values() for seed in texts}
    assert all(n >= 1 for n in kept.values()), kept  # every seed, the two Chinese ones included
    assert sum(kept.values()) >= 8, kept


def test_rewriter_judge_scores_do_not_depend_on_the_batch() -> None:
    from instraug_plugin.judges import load_judge

    judge = load_judge("qwen2.5-coder-1.5b")
    pairs = [("How many shapes are in the scene?", "Count the shapes in the scene."),
             ("Which shape is listed last?", "Which shape is listed first?"),
             ("他是谁？", "这个人是谁？")]
    together = judge.score(pairs)
    alone = [judge.score([pair])[0] for pair in pairs]
    assert all(0.0 <= s <= 1.0 for s in together)
    # llama.cpp's batched kernels round differently for other batch shapes: close, not bit-equal
    assert together == pytest.approx(alone, abs=0.05)
