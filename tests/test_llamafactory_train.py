"""End to end: the real `llamafactory-cli train` on a tiny LLaVA with `instraug_*` keys (CPU, offline)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("lf") / "data"
    shutil.copytree(REPO / "dataset_info", target)
    return target


def train(tmp: Path, name: str, model: Path, data_dir: Path, env: dict[str, str], *, cli: str = "llamafactory-cli",
          **overrides: Any) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run a real training from examples/tiny_llava_cpu_pool.yaml with `overrides` (None deletes a key)."""
    config = yaml.safe_load((REPO / "examples" / "tiny_llava_cpu_pool.yaml").read_text())
    config.update(model_name_or_path=str(model), dataset_dir=str(data_dir), output_dir=str(tmp / name),
                  instraug_pool=str(data_dir / "instraug_demo" / "pool"))
    config.update(overrides)
    config = {k: v for k, v in config.items() if v is not None}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [str(BIN / cli), "train", str(path)]
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=env, cwd=tmp, timeout=600)
    return result, tmp / name


def samples(out: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for f in sorted((out / "instraug_samples").glob("*.jsonl")) for line in f.open()]
    return sorted(rows, key=lambda r: (r["epoch"], r["index"]))


@pytest.fixture(scope="module")
def pool_run(tmp_path_factory: pytest.TempPathFactory, tiny_llava: Path, data_dir: Path,
             offline_env: dict[str, str]) -> Path:
    """One 2-epoch pool-mode run through the startup hook (`llamafactory-cli`), no DataLoader workers."""
    hook = Path(sysconfig.get_paths()["purelib"]) / "instraug_plugin_llamafactory.pth"
    assert hook.is_file(), f"startup hook not installed ({hook}); run: pip install -e ."
    result, out = train(tmp_path_factory.mktemp("run"), "pool", tiny_llava, data_dir, offline_env)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


BASELINE_LABELS = r"""
import hashlib, json, sys, yaml
from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer

config = {k: v for k, v in yaml.safe_load(open(sys.argv[1])).items() if not k.startswith("instraug_")}
config["output_dir"] = sys.argv[2]
model_args, data_args, training_args, _, _ = get_train_args(config)
tokenizer_module = load_tokenizer(model_args)
template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
module = get_dataset(template, model_args, data_args, training_args, "sft", **tokenizer_module)
for labels in module["train_dataset"]["labels"]:
    print("LABEL_SHA", hashlib.sha1(json.dumps([t for t in labels if t != -100]).encode()).hexdigest()[:16])
"""


def baseline_label_shas(run: Path, env: dict[str, str], tmp: Path) -> list[str]:
    """Label hashes of the same rows tokenized by plain LLaMA-Factory (no instraug keys, no plugin)."""
    proc = subprocess.run([sys.executable, "-c", BASELINE_LABELS, str(run.parent / f"{run.name}.yaml"), str(tmp)],
                          check=False, capture_output=True, text=True, env=env, cwd=run.parent, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("LABEL_SHA ")]


def test_wording_changes_between_epochs_and_nothing_else_does(pool_run: Path, offline_env: dict[str, str],
                                                              tmp_path: Path) -> None:
    rows = samples(pool_run)
    by_index: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        by_index[row["index"]][row["epoch"]] = row
    assert len(by_index) == 9 and all(set(epochs) == {0, 1} for epochs in by_index.values())
    changed = [i for i, e in by_index.items() if e[0]["user_turns"] != e[1]["user_turns"]]
    assert changed, "no instruction was worded differently in epoch 1 than in epoch 0"
    for row in rows:
        assert row["image_tokens"] == 16 * row["images"] > 0  # every <image> survived, expanded by mm_plugin
        assert sum(t.count("<image>") for t in row["user_turns"]) == row["images"]
    baseline = baseline_label_shas(pool_run, offline_env, tmp_path / "baseline")
    assert len(baseline) == len(by_index) == 9
    for index, epochs in by_index.items():  # answers/labels are exactly those of un-augmented training
        assert epochs[0]["label_sha"] == epochs[1]["label_sha"] == baseline[index], index
    assert any(r["decision"] == "rewritten" for r in rows) and any(r["decision"] == "no_entry" for r in rows)


def test_epoch_stats_reach_log_history_and_jsonl(pool_run: Path) -> None:
    stats = [json.loads(line) for line in (pool_run / "instraug_stats.jsonl").open()]
    assert [s["epoch"] for s in stats] == [0, 1]
    coverage = stats[0]["pool_coverage"]  # measured before training, repeated in every record
    assert 0 < coverage["covered"] < coverage["instructions"] and set(coverage["tasks"]) == {"colors", "shapes"}
    assert all(s["pool_coverage"] == coverage for s in stats)
    counted = defaultdict(lambda: defaultdict(int))
    for row in samples(pool_run):
        counted[row["epoch"]][row["decision"]] += 1
    for s in stats:  # the planned counts equal what the data hook actually did
        assert (s["rewritten"], s["kept_original"], s["no_pool_entry"]) == (
            counted[s["epoch"]]["rewritten"], counted[s["epoch"]]["original"], counted[s["epoch"]]["no_entry"])
    history = json.loads((pool_run / "trainer_state.json").read_text())["log_history"]
    assert [h["instraug/rewritten"] for h in history if "instraug/rewritten" in h] == [s["rewritten"] for s in stats]


@pytest.mark.parametrize("persistent", [False, True], ids=["workers-per-epoch", "persistent-workers"])
def test_rerun_with_two_workers_and_explicit_cli_rewrites_identically(
    pool_run: Path, tmp_path: Path, tiny_llava: Path, data_dir: Path, offline_env: dict[str, str], persistent: bool
) -> None:
    """Workers forked per epoch, or kept across epochs, read the epoch the callback publishes."""
    result, out = train(tmp_path, "workers", tiny_llava, data_dir, offline_env, cli="instraug-plugin",
                        dataloader_num_workers=2, dataloader_persistent_workers=persistent)
    assert result.returncode == 0, result.stderr[-3000:]
    rerun = samples(out)
    assert len({Path(f).name for f in (out / "instraug_samples").iterdir()}) >= 2  # written by worker processes
    assert rerun == samples(pool_run)
    assert (out / "instraug_stats.jsonl").read_text() == (pool_run / "instraug_stats.jsonl").read_text()


def test_typo_in_an_instraug_key_fails_in_one_line(tmp_path: Path, tiny_llava: Path, data_dir: Path,
                                                   offline_env: dict[str, str]) -> None:
    result, _ = train(tmp_path, "typo", tiny_llava, data_dir, offline_env, instraug_epsilom=0.3)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "instraug" in line]
    assert errors == ["instraug: error: unknown key 'instraug_epsilom' (did you mean 'instraug_epsilon'?)"]
    assert "Traceback" not in result.stderr


def test_packing_is_rejected_before_training(tmp_path: Path, tiny_llava: Path, data_dir: Path,
                                             offline_env: dict[str, str]) -> None:
    result, out = train(tmp_path, "packing", tiny_llava, data_dir, offline_env, packing=True)
    assert result.returncode == 2
    assert "instraug: error: packing: incompatible with instraug_mode" in result.stderr
    assert "Traceback" not in result.stderr and not (out / "trainer_state.json").exists()


def test_without_instraug_keys_the_plugin_is_inert(tmp_path: Path, tiny_llava: Path, data_dir: Path,
                                                   offline_env: dict[str, str]) -> None:
    no_keys = {k: None for k in yaml.safe_load((REPO / "examples" / "tiny_llava_cpu_pool.yaml").read_text())
               if k.startswith("instraug_")}
    plain, out = train(tmp_path, "plain", tiny_llava, data_dir, offline_env, num_train_epochs=1, **no_keys)
    disabled, out_disabled = train(tmp_path, "disabled", tiny_llava, data_dir,
                                   {**offline_env, "INSTRAUG_PLUGIN_DISABLE": "1"}, num_train_epochs=1, **no_keys)
    assert plain.returncode == disabled.returncode == 0, plain.stderr[-2000:] + disabled.stderr[-2000:]
    assert not (out / "instraug_stats.jsonl").exists() and not (out / "instraug_samples").exists()
    assert "training example:" in plain.stdout and "tokenized lazily" not in plain.stdout

    def losses(path: Path) -> list[float]:
        return [h["loss"] for h in json.loads((path / "trainer_state.json").read_text())["log_history"] if "loss" in h]

    assert losses(out) == losses(out_disabled) and losses(out)


def test_two_ranks_rewrite_like_one_process(pool_run: Path, tmp_path: Path, tiny_llava: Path, data_dir: Path,
                                            offline_env: dict[str, str]) -> None:
    """torchrun with 2 CPU ranks (gloo): the startup hook reaches both children, wording is rank-independent."""
    env = {**offline_env, "FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2",
           "PATH": f"{BIN}{os.pathsep}{offline_env.get('PATH', '')}"}
    result, out = train(tmp_path, "ddp", tiny_llava, data_dir, env, per_device_train_batch_size=1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {f.name.split("-")[0] for f in (out / "instraug_samples").iterdir()} == {"rank0", "rank1"}

    def by_key(rows: list[dict[str, Any]]) -> dict[tuple[int, int], dict[str, Any]]:
        return {(r["epoch"], r["index"]): r for r in rows}  # DistributedSampler repeats a sample to even out

    assert by_key(samples(out)) == by_key(samples(pool_run))
    assert (out / "instraug_stats.jsonl").read_text() == (pool_run / "instraug_stats.jsonl").read_text()
