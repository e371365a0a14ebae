"""Does InstrAug make a model robust to unseen instruction wordings? Baseline vs pool-mode training.

Steps (all offline, CPU by default):
1. draw the shapes benchmark (`make_benchmark`) from `--seed`;
2. build a pool from the benchmark's training templates with `instraug-plugin pregen` (SmolLM2), or
   reuse `--template-pool`, and expand it over the training rows' filled-in instructions;
3. train the same small model twice through `llamafactory-cli train` (or `instraug-plugin train`
   when the startup hook is not installed): (a) `instraug_epsilon: 1` = original templates only,
   (b) `instraug_epsilon: --epsilon` = InstrAug pool mode;
4. evaluate both with `instraug-plugin eval` on the held-out wordings (never seen in training) and
   print mean accuracy and Sensitivity per task and overall, plus a comparison plot.

Default model: the ~6M-parameter LLaVA of tests/tiny_llava.py trained from scratch (full fine-tuning).

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

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(cmd: list[str], log: Path, env: dict[str, str]) -> float:
    """Run a command, teeing its output to `log`; exit with its tail on failure. Returns seconds."""
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    return time.perf_counter() - started


def fmt(value: float | None, digits: int = 2) -> str:
    """A number for the summary table; n/a when undefined."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def train_command(config: Path) -> list[str]:
    """`llamafactory-cli train` when our startup hook is installed, else the explicit `instraug-plugin train`."""
    site = Path(sysconfig.get_paths()["purelib"])
    if (site / "instraug_plugin_llamafactory.pth").is_file():
        return [str(BIN / "llamafactory-cli"), "train", str(config)]
    return [str(BIN / "instraug-plugin"), "train", str(config)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "robustness")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, help="LLaVA-style model dir (default: build the tiny LLaVA)")
    parser.add_argument("--finetuning-type", default="full", choices=["full", "lora"])
    parser.add_argument("--train-per-task", type=int, default=200)
    parser.add_argument("--test-per-task", type=int, default=40)
    parser.add_argument("--epochs", type=float, default=4.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--epsilon", type=float, default=0.3, help="InstrAug run: probability of the original wording")
    parser.add_argument("--template-pool", type=Path, help="existing pool over the benchmark templates (skips pregen)")
    parser.add_argument("--pregen-args", default="--placeholder-mode mask --direct-prompts 3 --guided-prompts 2",
                        help="extra arguments for instraug-plugin pregen")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from instraug_plugin.evaluation.report import Report, TaskSummary, plot
    from instraug_plugin.evaluation.shapes import DATASET_NAME, instantiate_pool, make_benchmark

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HOME": os.environ.get("HF_HOME", str(work / "hf_home"))}
    timings: dict[str, float] = {}

    bench = work / "bench"
    make_benchmark(bench, seed=args.seed, train_per_task=args.train_per_task, test_per_task=args.test_per_task)
    model = args.model
    if model is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_llava import build_tiny_llava

        model = work / "tiny_llava"
        if not (model / "config.json").is_file():
            build_tiny_llava(model)
    model = model.resolve()

    template_pool = args.template_pool
    if template_pool is None:
        template_pool = work / "template_pool"
        timings["pregen"] = run(
            [str(BIN / "instraug-plugin"), "pregen", str(ROOT / "templates/benchmark/shapes_train_templates.json"),
             "--out", str(template_pool), "--device", args.device, *args.pregen_args.split()],
            work / "pregen.log", env)
    pool = instantiate_pool(template_pool, bench, work / "pool")

    reports: dict[str, Report] = {}
    for label, epsilon in (("baseline (eps=1)", 1.0), (f"instraug (eps={args.epsilon})", args.epsilon)):
        name = "baseline" if epsilon == 1.0 else "instraug"
        out = work / "train" / name
        config = {
            "model_name_or_path": str(model), "stage": "sft", "do_train": True,
            "finetuning_type": args.finetuning_type, "dataset_dir": str(bench), "dataset": DATASET_NAME,
            "template": "llava", "cutoff_len": 256, "overwrite_cache": True, "dataloader_num_workers": 0,
            "output_dir": str(out), "overwrite_output_dir": True, "logging_steps": 20, "save_strategy": "no",
            "report_to": "none", "per_device_train_batch_size": args.batch_size, "learning_rate": args.learning_rate,
            "num_train_epochs": args.epochs, "lr_scheduler_type": "cosine", "warmup_ratio": 0.05,
            "bf16": False, "fp16": False, "seed": args.seed,
            "instraug_mode": "pool", "instraug_pool": str(pool.parent), "instraug_epsilon": epsilon,
            "instraug_seed": args.seed, "instraug_task_column": "task",
        }
        if args.finetuning_type == "lora":
            config.update(lora_rank=8, lora_target="all")
        config_path = work / f"{name}.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        timings[f"train {name}"] = run(train_command(config_path), work / f"train_{name}.log", env)
        stats = out / "instraug_stats.jsonl"
        if stats.is_file():
            print(f"{label}: augmentation stats, last epoch: {stats.read_text().splitlines()[-1]}")
        report_dir = work / "eval" / name
        timings[f"eval {name}"] = run(
            [str(BIN / "instraug-plugin"), "eval", str(out), "--eval-set", str(bench / "eval.json"),
             "--template", "llava", "--variants", "heldout", "--max-new-tokens", "8", "--batch-size", "16",
             "--out", str(report_dir)] + (["--base-model", str(model)] if args.finetuning_type == "lora" else []),
            work / f"eval_{name}.log", env)
        data = json.loads((report_dir / "report.json").read_text())
        reports[label] = Report(data["name"], label, data["variants"], [TaskSummary(**t) for t in data["tasks"]],
                                data["overall"], data["meta"])

    labels = list(reports)
    print(f"\nHeld-out wordings ({args.test_per_task} instances/task x 5 wordings), score 0-100; Sens = std/mean")
    print(f"{'task':<16}" + "".join(f"{l + ' mean':>26}{'Sens':>8}" for l in labels))
    base, aug = (reports[l] for l in labels)
    for t_base, t_aug in zip(base.tasks, aug.tasks):
        print(f"{t_base.task:<16}" + "".join(f"{fmt(t.mean):>26}{fmt(t.sensitivity, 3):>8}" for t in (t_base, t_aug)))
    print(f"{'overall':<16}" + "".join(
        f"{fmt(r.overall['mean']):>26}{fmt(r.overall['sensitivity'], 3):>8}" for r in (base, aug)))
    plot([base, aug], work / "robustness_effect.png", labels)
    summary = {"labels": labels, "reports": {l: r.to_json() for l, r in reports.items()},
               "timings_s": {k: round(v, 1) for k, v in timings.items()}, "args": vars(args) | {
                   "work": str(work), "model": str(model), "template_pool": str(template_pool)}}
    (work / "robustness_effect.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    print(f"timings (s): {summary['timings_s']}\nwrote {work / 'robustness_effect.json'} and "
          f"{work / 'robustness_effect.png'}")


if __name__ == "__main__":
    main()
