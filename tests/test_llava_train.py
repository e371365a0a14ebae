"""End to end: LLaVA's own `train()` (llava-torch, in .venv-llava) with `--instraug_*` arguments (CPU, offline).

A tiny LlavaLlama (tests/tiny_llava_torch.py: tiny Llama + sentencepiece tokenizer + tiny CLIP tower)
fine-tuned with LoRA on the bundled LLaVA-format demo data (images included), 2 epochs. The LLaVA venv
comes from scripts/setup_llava.sh; these tests are skipped only when that script recorded that the
package index cannot provide llava-torch.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from instraug_plugin.core.errors import one_line

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-llava"
DATA_DIR = REPO / "dataset_info"
DEMO = DATA_DIR / "instraug_demo"
DATA = DEMO / "demo_llava.json"
POOL = DEMO / "pool"
SEED = 7
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llava_python() -> Path:
    lacks = VENV / "INDEX_LACKS_LLAVA"
    if lacks.is_file():
        pytest.skip(f"scripts/setup_llava.sh recorded: {one_line(lacks.read_text())}")
    python = VENV / "bin" / "python"
    assert (VENV / ".instraug-setup").is_file() and python.is_file(), "no LLaVA venv: run bash scripts/setup_llava.sh"
    return python


@pytest.fixture(scope="module")
def model(llava_python: Path, tmp_path_factory: pytest.TempPathFactory, offline_env: dict[str, str]) -> Path:
    out = tmp_path_factory.mktemp("tiny_llava_torch")
    result = subprocess.run([str(llava_python), str(REPO / "tests" / "tiny_llava_torch.py"), str(out), str(DATA),
                             str(POOL / "pool.jsonl")], check=False, capture_output=True, text=True, env=offline_env,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def llava_arguments(model: Path, output_dir: Path, *, workers: int, checkpointing: bool) -> list[str]:
    """LLaVA-1.5's LoRA fine-tuning recipe (scripts/v1_5/finetune_lora.sh), scaled down for CPU."""
    args = {
        "lora_enable": True, "lora_r": 8, "lora_alpha": 16, "mm_projector_lr": 2e-5,
        "model_name_or_path": model / "llm", "version": "v1", "data_path": DATA, "image_folder": DATA_DIR,
        "vision_tower": model / "vision", "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
        "mm_use_im_start_end": False, "mm_use_im_patch_token": False, "image_aspect_ratio": "pad",
        "group_by_modality_length": True, "output_dir": output_dir, "num_train_epochs": 2,
        "per_device_train_batch_size": 2, "save_strategy": "no", "learning_rate": 2e-4, "model_max_length": 256,
        "gradient_checkpointing": checkpointing, "dataloader_num_workers": workers, "lazy_preprocess": True,
        "report_to": "none", "seed": 42,
    }
    return [part for key, value in args.items() for part in (f"--{key}", str(value))]


INSTRAUG = ["--instraug_mode", "pool", "--instraug_pool", str(POOL), "--instraug_epsilon", "0.3",
            "--instraug_seed", str(SEED), "--instraug_log_samples", "True"]


def train(launcher: list[str], arguments: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*launcher, "instraug_plugin.integrations.llava.train", *arguments], check=False,
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=900)


def samples(out: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for f in sorted((out / "instraug_samples").glob("*.jsonl")) for line in f.open()]
    return sorted(rows, key=lambda r: (r["epoch"], r["index"]))


@pytest.fixture(scope="module")
def single_run(llava_python: Path, model: Path, tmp_path_factory: pytest.TempPathFactory,
               offline_env: dict[str, str]) -> Path:
    """`python -m ...llava.train`: one process, no DataLoader workers, gradient checkpointing as in the recipe."""
    out = tmp_path_factory.mktemp("llava_run") / "single"
    result = train([str(llava_python), "-m"], [*llava_arguments(model, out, workers=0, checkpointing=True), *INSTRAUG],
                   offline_env, out.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


BASELINE_LABELS = r"""
import hashlib, json, sys
import transformers
from llava import conversation as conversation_lib
from llava.train.train import DataArguments, LazySupervisedDataset

model, data, image_folder = sys.argv[1:4]
# What LLaVA's train() sets up for --version v1 --model_max_length 256, without any InstrAug code loaded.
tokenizer = transformers.AutoTokenizer.from_pretrained(model + "/llm", model_max_length=256, padding_side="right",
                                                       use_fast=False)
tokenizer.pad_token = tokenizer.unk_token
conversation_lib.default_conversation = conversation_lib.conv_templates["v1"]
data_args = DataArguments(data_path=data, is_multimodal=True, image_folder=image_folder, image_aspect_ratio="pad")
data_args.image_processor = transformers.CLIPImageProcessor.from_pretrained(model + "/vision")
data_args.mm_use_im_start_end = False
dataset = LazySupervisedDataset(data_path=data, tokenizer=tokenizer, data_args=data_args)
for i in range(len(dataset)):
    labels = [t for t in dataset[i]["labels"].tolist() if t != -100]
    print("LABELS", len(labels), hashlib.sha1(json.dumps(labels).encode()).hexdigest()[:16])
"""


def baseline_labels(llava_python: Path, model: Path, env: dict[str, str]) -> list[tuple[int, str]]:
    """(answer token count, label hash) per row, from LLaVA's own dataset without augmentation."""
    result = subprocess.run([str(llava_python), "-c", BASELINE_LABELS, str(model), str(DATA), str(DATA_DIR)],
                            check=False, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return [(int(n), sha) for _, n, sha in (line.split() for line in result.stdout.splitlines()
                                            if line.startswith("LABELS "))]


def test_wording_changes_between_epochs_and_nothing_else_does(single_run: Path, llava_python: Path, model: Path,
                                                              offline_env: dict[str, str]) -> None:
    rows = samples(single_run)
    data = json.loads(DATA.read_text())
    by_index: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        assert row["epoch"] not in by_index[row["index"]], "a sample was built twice in one epoch"
        by_index[row["index"]][row["epoch"]] = row
    assert sorted(by_index) == list(range(len(data))) and all(set(e) == {0, 1} for e in by_index.values())
    changed = [i for i, epochs in by_index.items() if epochs[0]["user_turns"] != epochs[1]["user_turns"]]
    assert changed, "no instruction was worded differently in epoch 1 than in epoch 0"
    for row in rows:
        original = [m["value"] for m in data[row["index"]]["conversations"] if m["from"] == "human"]
        assert (row["user_turns"] != original) == (row["decision"] == "rewritten"), row
        assert row["user_turns"][1:] == original[1:]  # only the first human turn is reworded (instraug_turns first)
        assert row["images"] == row["image_tokens"] == 1  # the image reached the model as LLaVA's image token
        assert sum(turn.count("<image>") for turn in row["user_turns"]) == 1
    baseline = baseline_labels(llava_python, model, offline_env)
    assert len(baseline) == len(data) and all(n > 0 for n, _ in baseline)  # LLaVA's masking kept the answers
    for index, epochs in by_index.items():  # the answers trained on are exactly those of un-augmented LLaVA
        assert epochs[0]["label_sha"] == epochs[1]["label_sha"] == baseline[index][1], index
    assert {r["decision"] for r in rows} == {"rewritten", "original", "no_entry"}


def test_epoch_counts_reach_the_trainer_log_and_stats_file(single_run: Path) -> None:
    stats = [json.loads(line) for line in (single_run / "instraug_stats.jsonl").open()]
    assert [s["epoch"] for s in stats] == [0, 1]
    assert stats[0]["pool_coverage"] == {"instructions": 4, "covered": 3, "share": 0.75}
    done: dict[int, Counter[str]] = defaultdict(Counter)
    for row in samples(single_run):
        done[row["epoch"]][row["decision"]] += 1
    for s in stats:  # the counts equal what the data hook actually did
        assert (s["rewritten"], s["kept_original"], s["no_pool_entry"]) == (
            done[s["epoch"]]["rewritten"], done[s["epoch"]]["original"], done[s["epoch"]]["no_entry"])
    history = json.loads((single_run / "trainer_state.json").read_text())["log_history"]
    assert [h["instraug/rewritten"] for h in history if "instraug/rewritten" in h] == [s["rewritten"] for s in stats]
    assert (single_run / "adapter_model.bin").is_file()  # LLaVA's own LoRA save ran after training


def test_two_ranks_with_two_workers_each_rewrite_like_one_process(
        single_run: Path, llava_python: Path, model: Path, tmp_path: Path, offline_env: dict[str, str]) -> None:
    """torchrun, 2 CPU ranks (gloo) x 2 DataLoader workers, one seed: every sample worded as in the single run.

    Without gradient checkpointing: DDP rejects the reentrant checkpointing LLaVA enables (LLaVA's GPU
    recipes run under deepspeed, not DDP).
    """
    out = tmp_path / "ranks"
    torchrun = [str(VENV / "bin" / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m"]
    result = train(torchrun, [*llava_arguments(model, out, workers=2, checkpointing=False), *INSTRAUG], offline_env,
                   tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    files = list((out / "instraug_samples").glob("*.jsonl"))
    assert {f.name.split("-")[0] for f in files} == {"rank0", "rank1"} and len(files) >= 4  # worker processes wrote
    seen = {json.dumps(row, sort_keys=True) for row in samples(out)}  # a rank may repeat a row to even out shards
    assert seen == {json.dumps(row, sort_keys=True) for row in samples(single_run)}


def test_typo_in_an_instraug_argument_fails_in_one_line(llava_python: Path, model: Path, tmp_path: Path,
                                                        offline_env: dict[str, str]) -> None:
    arguments = [*llava_arguments(model, tmp_path / "typo", workers=0, checkpointing=False), *INSTRAUG,
                 "--instraug_epsilom", "0.3"]
    result = train([str(llava_python), "-m"], arguments, offline_env, tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["instraug: error: unknown key 'instraug_epsilom' (did you mean "
                                          "'instraug_epsilon'?)"]
    assert not (tmp_path / "typo").exists()


def test_a_row_llava_cannot_train_on_fails_before_training_naming_it(
        llava_python: Path, model: Path, tmp_path: Path, offline_env: dict[str, str]) -> None:
    rows = json.loads(DATA.read_text())
    rows[3]["image"] = "instraug_demo/images/missing.png"
    data = tmp_path / "data.json"
    data.write_text(json.dumps(rows))
    arguments = [*llava_arguments(model, tmp_path / "bad", workers=0, checkpointing=False), *INSTRAUG]
    arguments[arguments.index("--data_path") + 1] = str(data)
    result = train([str(llava_python), "-m"], arguments, offline_env, tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("instraug: error")] == [
        f"instraug: error: {data}: row 3: image file not found: {DATA_DIR / 'instraug_demo/images/missing.png'} "
        "(fix the row, or pass --instraug_skip_invalid True to skip invalid rows)"]
    assert not (tmp_path / "bad" / "instraug_stats.jsonl").exists()
