"""Cost of on-the-fly instruction augmentation inside LLaMA-Factory, measured in one run.

1. Per-sample hook cost (rewrite of the user turns) next to LLaMA-Factory's own tokenization cost
   (`preprocess_dataset`, which the lazy hook also pays, once per sample per epoch); then the data
   path per training batch (LLaMA-Factory's dataset + collator, pool on vs off, first epoch and
   later epochs), which is all the plugin adds to a step, set against the measured step time.
2. Train-step time of real LLaMA-Factory training with pool mode on vs off (target <= 2%), on the
   demo rows made unique and repeated to `--rows` (100: 50 steps per epoch). Three arms: no
   instraug keys (`pool_off`), the example's pool mode (`pool_on`, epsilon 0.3), and pool mode
   with epsilon 1 (`pool_on_original`: every sample goes through the lazy path and keeps its
   wording, so it trains on exactly the tokens of `pool_off` and isolates the mechanism's cost).
   After one uncounted warm-up round, `--repeats` rounds run back to back, each arm once per round,
   the order rotating. Every step is clocked in two phases (`step_phases.py`: compute, and between
   steps); a run's overhead is taken against its own compute time (see `train_step_report`).
3. Live mode: one pool refresh with the real SmolLM2 rewriter (4-bit bitsandbytes on CPU, or on
   the GPU when there is one): refresh time and the rewriter's peak memory.

Usage: python benchmarks/hook_overhead.py [--model DIR] [--steps 100] [--rows 100] [--repeats 6] [--workers N [--persistent-workers]] [--out results.json]
Without --model, the tiny offline LLaVA of tests/tiny_llava.py is built in a temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "tiny_llava_cpu_pool.yaml"


def base_config(model: Path, out: Path, data_dir: Path) -> dict[str, Any]:
    config = yaml.safe_load(EXAMPLE.read_text())
    config.update(model_name_or_path=str(model), dataset_dir=str(data_dir), output_dir=str(out),
                  instraug_pool=str(REPO / "dataset_info" / "instraug_demo" / "pool"), instraug_log_samples=False)
    return config


def replicated_demo(tmp: Path, rows: int) -> Path:
    """A dataset_dir whose `instraug_demo` holds the demo rows repeated to `rows` rows, so an epoch
    spans many steps as in real training. Every row is its own as in a real dataset: image paths of
    its own (links to the demo images), so no media work is shared between rows, and its own text
    (its number after each user turn's instruction, which keeps the pool match, and after each
    answer), so no tokenization is shared between rows either."""
    data = tmp / "data"
    images = data / "instraug_demo" / "images"
    images.mkdir(parents=True)
    demo = json.loads((REPO / "dataset_info" / "instraug_demo" / "demo.json").read_text())
    out = []
    for i in range(rows):
        row = dict(demo[i % len(demo)])
        row["messages"] = [{**m, "content": m["content"] + (f"\nSample {i}." if m["role"] == "user" else f" ({i})")}
                           for m in row["messages"]]
        linked = []
        for j, image in enumerate(row.get("images") or []):
            link = images / f"row{i}_{j}{Path(image).suffix}"
            link.symlink_to(REPO / "dataset_info" / image)
            linked.append(str(link.relative_to(data)))
        row["images"] = linked
        out.append(row)
    (data / "instraug_demo" / "demo.json").write_text(json.dumps(out))
    info = json.loads((REPO / "dataset_info" / "dataset_info.json").read_text())
    (data / "dataset_info.json").write_text(json.dumps({"instraug_demo": info["instraug_demo"]}))
    return data


def per_sample_costs(model: Path, tmp: Path, data_dir: Path, n: int) -> dict[str, float]:
    """Microseconds per sample: our rewrite vs LLaMA-Factory's tokenization, on the demo rows."""
    from llamafactory.data import get_template_and_fix_tokenizer, loader
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    from instraug_plugin.core.sampling import rewrite_messages
    from instraug_plugin.integrations.llamafactory.config import split_args
    from instraug_plugin.integrations.llamafactory.encode_cache import with_encode_cache
    from instraug_plugin.integrations.llamafactory.media_cache import MediaExpansionCache
    from instraug_plugin.integrations.llamafactory.patches import media_placeholders
    from instraug_plugin.integrations.llamafactory.session import start_session

    config, rest = split_args(base_config(model, tmp / "micro", data_dir))
    assert config is not None and isinstance(rest, dict)
    model_args, data_args, training_args, _, _ = get_train_args(rest)
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    processor = loader._get_dataset_processor(data_args, "sft", template, **tokenizer_module)
    aligned = loader._get_merged_dataset(data_args.dataset, model_args, data_args, training_args, "sft")
    rows = aligned.to_list()
    rows = (rows * (n // len(rows) + 1))[:n]
    session = start_session(config, 42)
    started = time.perf_counter()
    for i, row in enumerate(rows):
        rewrite_messages(session.rewriter, row["_prompt"], task=None, epoch=1, index=i, all_turns=True)
    hook = (time.perf_counter() - started) / n
    batch = {key: [row[key] for row in rows] for key in rows[0]}
    started = time.perf_counter()
    processor.preprocess_dataset(batch)
    tokenize = (time.perf_counter() - started) / n
    # What the lazy path pays per sample and epoch: the media expansion is learned before training
    # and reused, and the ids of recurring strings (the system prompt) come from the encode cache.
    MediaExpansionCache.install(template.mm_plugin, media_placeholders())
    processor.preprocess_dataset(batch)
    lazy_processor = with_encode_cache(processor)
    started = time.perf_counter()
    lazy_processor.preprocess_dataset(batch)
    cached = (time.perf_counter() - started) / n
    return {"samples": n, "hook_us_per_sample": round(hook * 1e6, 2),
            "llamafactory_tokenize_us_per_sample": round(tokenize * 1e6, 2),
            "llamafactory_tokenize_lazy_path_us_per_sample": round(cached * 1e6, 2),
            "hook_vs_tokenize_percent": round(100 * hook / tokenize, 3)}


def data_path_costs(model: Path, tmp: Path, data_dir: Path, epochs: int, repeats: int) -> dict[str, Any]:
    """Milliseconds per training batch spent fetching and collating it, pool on vs off.

    The plugin changes nothing in a step but its data path, so this is its whole cost per step,
    measured without the model's compute and its noise: LLaMA-Factory's own training dataset
    (pre-tokenized, or lazy with the hook) and collator, iterated in this process for `epochs`
    epochs, `repeats` times per arm, alternating. The first epoch of a pool-on run also learns
    each sample's media expansion; later epochs reuse it.
    """
    import torch
    from llamafactory.data import SFTDataCollatorWith4DAttentionMask, get_template_and_fix_tokenizer, loader
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer
    from torch.utils.data import DataLoader

    from instraug_plugin.integrations.llamafactory.config import split_args
    from instraug_plugin.integrations.llamafactory.patches import install
    from instraug_plugin.integrations.llamafactory.session import ACTIVE, start_session

    config, rest = split_args(base_config(model, tmp / "data_path", data_dir))
    assert config is not None and isinstance(rest, dict)
    model_args, data_args, training_args, _, _ = get_train_args(rest)
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    collator = SFTDataCollatorWith4DAttentionMask(template=template, model=None, pad_to_multiple_of=8,
                                                  label_pad_token_id=-100, **tokenizer_module)
    install()  # inert while no session is running: that is the pool-off arm

    def run(pool: bool) -> list[float]:
        template.mm_plugin.__dict__.pop("process_messages", None)  # a fresh media cache per run
        session = start_session(config, 42)
        with ACTIVE.running(session) if pool else contextlib.nullcontext():
            dataset = loader.get_dataset(template, model_args, data_args, training_args, "sft",
                                         **tokenizer_module)["train_dataset"]
        per_epoch = []
        for epoch in range(epochs):
            session.state.epoch = epoch
            batches = DataLoader(dataset, batch_size=training_args.per_device_train_batch_size, shuffle=True,
                                 collate_fn=collator, generator=torch.Generator().manual_seed(epoch))
            started = time.perf_counter()
            for _ in batches:
                pass
            per_epoch.append(1000 * (time.perf_counter() - started) / len(batches))
        return per_epoch

    runs: dict[str, list[list[float]]] = {"pool_off": [], "pool_on": []}
    for _ in range(repeats):
        for pool, name in ((False, "pool_off"), (True, "pool_on")):
            runs[name].append(run(pool))
    first = {name: statistics.median(r[0] for r in values) for name, values in runs.items()}
    later = {name: statistics.median(ms for r in values for ms in r[1:]) for name, values in runs.items()}
    return {
        "epochs": epochs, "repeats": repeats,
        **{f"{name}_ms_per_batch_per_epoch": [[round(ms, 3) for ms in r] for r in values] for name, values in runs.items()},
        "first_epoch_extra_ms_per_batch": round(first["pool_on"] - first["pool_off"], 3),
        "later_epochs_extra_ms_per_batch": round(later["pool_on"] - later["pool_off"], 3),
    }


ARMS = {"pool_off": None, "pool_on": {}, "pool_on_original": {"instraug_epsilon": 1.0}}  # instraug keys per arm


def train_step_time(model: Path, tmp: Path, data_dir: Path, steps: int, arm: str, workers: int,
                    persistent: bool = False) -> dict[str, Any]:
    """One real training run of an arm (`ARMS`: no instraug keys, or the example's keys with these
    overrides), each step clocked in two phases by `step_phases.py`: compute (forward, backward,
    optimizer) and between steps (logging, the next batch's fetch and collation, epoch boundaries).
    """
    config = base_config(model, tmp / arm, data_dir)
    config.update(max_steps=steps, num_train_epochs=1000, logging_steps=1, dataloader_num_workers=workers,
                  dataloader_persistent_workers=persistent, include_num_input_tokens_seen="all")
    overrides = ARMS[arm]
    if overrides is None:
        config = {k: v for k, v in config.items() if not k.startswith("instraug_")}
    else:
        config.update(overrides)
    path, phases = tmp / f"{arm}.yaml", tmp / f"{arm}_phases.json"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": os.environ.get("HF_HOME", str(tmp / "hf_home"))}
    command = [sys.executable, str(REPO / "benchmarks" / "step_phases.py"), str(path), str(phases)]
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=env, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"{arm} run failed:\n{result.stderr[-3000:]}")
    clock = json.loads(phases.read_text())
    begins, ends = clock["step_begins"], clock["step_ends"]
    compute = [end - begin for begin, end in zip(begins, ends)][:-1]
    cycles = [b - a for a, b in pairwise(begins)]  # step i's compute, then what precedes step i + 1
    history = json.loads((tmp / arm / "trainer_state.json").read_text())["log_history"]
    tokens = max(entry.get("num_input_tokens_seen", 0) for entry in history if "loss" in entry)
    return {"steps": steps,
            "seconds_per_step": round(statistics.fmean(cycles), 5),
            "compute_median_ms": round(1000 * statistics.median(compute), 3),
            "between_steps_mean_ms": round(1000 * statistics.fmean(c - d for c, d in zip(cycles, compute)), 3),
            "step_over_compute": sum(cycles) / sum(compute),
            "tokens_per_step": round(tokens / steps, 1)}


def train_step_report(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Each instraug arm against `pool_off`, round by round.

    The plugin changes nothing in a step's compute, only what happens between steps, while this
    machine's speed drifts by tens of percent between runs minutes apart. So the overhead of a run
    is measured against its own compute time: a run's step time over its compute time, pool on
    over pool off, minus one. That is the step-time overhead when the compute is the same work
    (`pool_on_original` trains on exactly `pool_off`'s tokens), and cancels a drift that slows a
    whole run. The compute times themselves are compared too (the plugin must not slow them), and
    the plain change in step time per round is kept for reference.
    """
    base = runs["pool_off"]

    def change(arm: str, metric: str) -> list[float]:
        return [round(100 * (on[metric] / off[metric] - 1), 2) for off, on in zip(base, runs[arm])]

    report: dict[str, Any] = {
        f"{arm}_{metric}": [round(run[metric], 4) for run in values] for arm, values in runs.items()
        for metric in ("seconds_per_step", "compute_median_ms", "between_steps_mean_ms", "step_over_compute",
                       "tokens_per_step")
    }
    for arm in runs:
        if arm == "pool_off":
            continue
        normalized = change(arm, "step_over_compute")
        report |= {
            f"{arm}_overhead_percent_per_round": normalized,
            f"{arm}_overhead_percent_median_of_rounds": round(statistics.median(normalized), 2),
            f"{arm}_extra_between_steps_ms_per_round": [
                round(on["between_steps_mean_ms"] - off["between_steps_mean_ms"], 3) for off, on in zip(base, runs[arm])],
            f"{arm}_compute_change_percent_per_round": change(arm, "compute_median_ms"),
            f"{arm}_compute_change_percent_median_of_rounds": round(statistics.median(change(arm, "compute_median_ms")), 2),
            f"{arm}_plain_step_time_change_percent_per_round": change(arm, "seconds_per_step"),
            f"{arm}_tokens_per_step_change_percent": statistics.median(change(arm, "tokens_per_step")),
        }
    return report


def live_refresh(tmp: Path, seeds: int) -> dict[str, Any]:
    """One refresh of the live pool with SmolLM2 in 4-bit on the demo instructions."""
    from datasets import Dataset

    from instraug_plugin.integrations.llamafactory.config import parse_config
    from instraug_plugin.integrations.llamafactory.live import LiveRefresher
    from instraug_plugin.integrations.llamafactory.session import INDEX_COLUMN, start_session

    rows = json.loads((REPO / "dataset_info" / "instraug_demo" / "demo.json").read_text())
    config = parse_config({"instraug_mode": "live", "instraug_live_quantization_bit": 4,
                           "instraug_live_max_seeds": seeds, "instraug_live_num_samples": 2})
    session = start_session(config, 42)
    session.output_dir = str(tmp / "live")
    session.train_dataset = Dataset.from_dict({"_prompt": [r["messages"][:1] for r in rows],
                                               INDEX_COLUMN: list(range(len(rows)))})
    import torch

    refresher = LiveRefresher(session)
    refresher.refresh(0)
    return {**refresher.last, "rewriter_fallbacks": session.fallbacks,
            "device": "cuda" if torch.cuda.is_available() else "cpu", "quantization_bit": 4}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a LLaVA checkpoint directory (default: build the tiny one)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=0, help="dataloader_num_workers of both training runs")
    parser.add_argument("--persistent-workers", action="store_true", help="dataloader_persistent_workers in both runs")
    parser.add_argument("--rows", type=int, default=100, help="training rows (the demo rows repeated)")
    parser.add_argument("--repeats", type=int, default=6, help="rounds of training runs (each arm once per round)")
    parser.add_argument("--live-seeds", type=int, default=4)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        data_dir = replicated_demo(tmp, args.rows)
        model = args.model
        if model is None:
            sys.path.insert(0, str(REPO / "tests"))
            from tiny_llava import build_tiny_llava

            model = build_tiny_llava(tmp / "tiny_llava")
        report: dict[str, Any] = {"per_sample": per_sample_costs(model, tmp, data_dir, args.samples),
                                  "data_path": data_path_costs(model, tmp, data_dir, epochs=3, repeats=args.repeats)}
        arms = list(ARMS)
        for arm in arms:  # a warm-up round, not counted: the first runs pay one-time costs
            train_step_time(model, tmp, data_dir, 10, arm, workers=args.workers, persistent=args.persistent_workers)
        runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
        for repeat in range(args.repeats):  # rounds, the order of the arms rotating
            for arm in arms[repeat % len(arms):] + arms[:repeat % len(arms)]:
                runs[arm].append(train_step_time(model, tmp, data_dir, args.steps, arm, workers=args.workers,
                                                 persistent=args.persistent_workers))
        report["train_step"] = {"steps": args.steps, "rows": args.rows, "repeats": args.repeats,
                                "workers": args.workers, "persistent_workers": args.persistent_workers,
                                **train_step_report(runs)}
        step_ms = 1000 * statistics.median(run["seconds_per_step"] for run in runs["pool_off"])
        data_path = report["data_path"]
        report["overhead_from_data_path"] = {  # the plugin's cost per step over the pool-off step time
            "pool_off_step_ms": round(step_ms, 2),
            "first_epoch_percent": round(100 * data_path["first_epoch_extra_ms_per_batch"] / step_ms, 2),
            "later_epochs_percent": round(100 * data_path["later_epochs_extra_ms_per_batch"] / step_ms, 2),
        }
        report["live"] = live_refresh(tmp, args.live_seeds)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
