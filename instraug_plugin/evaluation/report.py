"""Aggregate per-instance scores into per-task robustness statistics; write JSON, markdown and PNG.

Per task, each variant's score is the mean over the task's instances (0-100). Across the variants of
a task: mean, population std, min, max, spread = max - min, and MultiInstruct's Sensitivity = std / mean.
Against the original wording: PromptBench's performance drop rate PDR = 1 - heldout mean / original mean
(means over the `original/*` and `heldout/*` variants). Consistency: percent of instances answered
correctly (score >= 0.5) under every wording, also for original-only and heldout-only wordings.
The mean gets a percentile bootstrap interval that resamples instances (each keeping all its wordings'
scores); the overall one resamples instances within each task (stratified), from a fixed seed.
Overall numbers are plain averages over tasks (those that are None for a task: over the tasks where defined).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from instraug_plugin.evaluation.evalset import VARIANT_KINDS
from instraug_plugin.evaluation.robustness import (
    bootstrap_replicates,
    consistency,
    percentile_interval,
    performance_drop_rate,
)


@dataclass(frozen=True)
class ScoredItem:
    """One instance under one variant, with the model's prediction and its score in [0, 1]."""

    task: str
    variant: str
    instance_id: str
    prediction: str
    answers: tuple[str, ...]
    score: float


@dataclass(frozen=True)
class TaskSummary:
    """Robustness statistics of one task across its instruction variants (scores 0-100)."""

    task: str
    metric: str
    n_instances: int
    variant_scores: dict[str, float]
    mean: float
    std: float
    min: float
    max: float
    sensitivity: float | None
    spread: float
    mean_ci_low: float
    mean_ci_high: float
    original_mean: float | None
    heldout_mean: float | None
    pdr: float | None
    consistency: float
    consistency_original: float | None
    consistency_heldout: float | None


BOOTSTRAP_DEFAULTS: dict[str, float] = {"n_resamples": 1000, "seed": 0, "confidence": 0.95}
_TASK_LOGGED = ("mean", "std", "sensitivity", "spread", "mean_ci_low", "mean_ci_high", "original_mean",
                "heldout_mean", "pdr", "consistency", "consistency_original", "consistency_heldout")
_AVERAGED = ("mean", "std", "min", "max", "sensitivity", "spread", "original_mean", "heldout_mean", "pdr",
             "consistency", "consistency_original", "consistency_heldout")


@dataclass(frozen=True)
class Report:
    """A whole evaluation: per-task summaries and their averages."""

    name: str
    model: str
    variants: str
    tasks: list[TaskSummary]
    overall: dict[str, float | None]
    meta: dict[str, Any] = field(default_factory=dict)
    bootstrap: dict[str, float] = field(default_factory=lambda: dict(BOOTSTRAP_DEFAULTS))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def log_metrics(self, prefix: str = "instraug_eval") -> dict[str, float]:
        """Flat `prefix/...` scalars for a trainer's log history (undefined values, e.g. Sensitivity, omitted)."""
        out: dict[str, float] = {}
        for key, value in self.overall.items():
            if value is not None:
                out[f"{prefix}/{key}"] = value
        for t in self.tasks:
            for key in _TASK_LOGGED:
                if (value := getattr(t, key)) is not None:
                    out[f"{prefix}/{t.task}/{key}"] = value
        return out


def spread(scores: Sequence[float]) -> tuple[float, float, float, float, float | None]:
    """(mean, population std, min, max, sensitivity = std / mean or None when mean is 0)."""
    if not scores:
        raise ValueError("spread() of an empty score list")
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    return mean, std, min(scores), max(scores), (std / mean if mean > 0 else None)


def variant_kind(variant: str) -> str | None:
    """The kind of a variant id ("heldout/2" -> "heldout"): "original", "heldout", or None for other ids."""
    kind = variant.split("/", 1)[0]
    return kind if kind in VARIANT_KINDS else None


def _kind_mean(variant_scores: dict[str, float], kind: str) -> float | None:
    scores = [s for v, s in variant_scores.items() if variant_kind(v) == kind]
    return sum(scores) / len(scores) if scores else None


def wording_mean(instances: Sequence[Sequence[tuple[str, float]]]) -> float:
    """The task mean (0-100) of instances given as (variant, score) pairs: mean over variants of their means."""
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for pairs in instances:
        for variant, score in pairs:
            totals[variant] += score
            counts[variant] += 1
    return 100 * sum(totals[v] / counts[v] for v in totals) / len(totals)


def _consistency_of(instances: Sequence[Sequence[tuple[str, float]]], kind: str) -> float | None:
    wanted = [[s for v, s in pairs if variant_kind(v) == kind] for pairs in instances]
    wanted = [scores for scores in wanted if scores]
    return consistency(wanted) if wanted else None


def summarize(
    items: Iterable[ScoredItem], metrics: dict[str, str], *, name: str, model: str, variants: str,
    meta: dict[str, Any] | None = None, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
) -> Report:
    """Group scores by task, then by variant (mean over instances), then take the spread across variants.

    Bootstrap intervals use `n_resamples` resamples of instances from `seed` (task k in name order: `seed + k`).
    """
    by_task: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    instances: dict[str, dict[str, list[tuple[str, float]]]] = defaultdict(lambda: defaultdict(list))
    for item in items:
        by_task[item.task][item.variant].append(item.score)
        instances[item.task][item.instance_id].append((item.variant, item.score))
    summaries, replicates = [], []
    for k, task in enumerate(sorted(by_task)):
        variant_scores = {v: 100 * sum(s) / len(s) for v, s in sorted(by_task[task].items())}
        mean, std, lo, hi, sens = spread(list(variant_scores.values()))
        clusters = [pairs for _, pairs in sorted(instances[task].items())]
        replicates.append(bootstrap_replicates(clusters, wording_mean, n_resamples, seed + k))
        ci_low, ci_high = percentile_interval(replicates[-1], confidence)
        original, heldout = _kind_mean(variant_scores, "original"), _kind_mean(variant_scores, "heldout")
        both = original is not None and heldout is not None
        summaries.append(TaskSummary(
            task, metrics[task], len(clusters), variant_scores, mean, std, lo, hi, sens, hi - lo, ci_low, ci_high,
            original, heldout, performance_drop_rate(original, heldout),
            consistency([[score for _, score in pairs] for pairs in clusters]),
            _consistency_of(clusters, "original") if both else None,
            _consistency_of(clusters, "heldout") if both else None,
        ))
    overall_ci = percentile_interval([sum(r) / len(r) for r in zip(*replicates)], confidence) if replicates else None
    return Report(name, model, variants, summaries, overall_averages(summaries, mean_ci=overall_ci), meta or {},
                  {"n_resamples": n_resamples, "seed": seed, "confidence": confidence})


def overall_averages(
    tasks: Sequence[TaskSummary], *, mean_ci: tuple[float, float] | None = None
) -> dict[str, float | None]:
    """Averages over tasks of each statistic (those a task may lack: over the tasks where defined).

    `mean_ci` is the overall mean's interval (a stratified bootstrap; interval bounds are not averaged).
    """
    out: dict[str, float | None] = {}
    for key in _AVERAGED:
        defined = [getattr(t, key) for t in tasks if getattr(t, key) is not None]
        out[key] = sum(defined) / len(defined) if defined else None
    out["mean_ci_low"], out["mean_ci_high"] = mean_ci if mean_ci is not None else (None, None)
    return out


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _fmt_ci(low: float | None, high: float | None) -> str:
    return "n/a" if low is None or high is None else f"[{low:.2f}, {high:.2f}]"


def to_markdown(report: Report) -> str:
    """A markdown table: one row per task plus the overall average."""
    conf, resamples = report.bootstrap["confidence"], report.bootstrap["n_resamples"]
    lines = [
        f"# Robustness evaluation: {report.name}",
        "",
        (f"Model: `{report.model}`; variants: {report.variants}. Scores 0-100 across instruction variants; "
         "Sensitivity = std / mean (lower is better); spread = max - min; "
         f"{conf:.0%} CI: percentile bootstrap of the mean over instances ({resamples} resamples); "
         "PDR = 1 - held-out mean / original mean (performance drop rate, lower is better); "
         "consistency = % of instances correct (score >= 0.5) under every wording (all, original only, held-out only)."),
        "",
        (f"| task | metric | instances | variants | mean | std | min | max | Sensitivity | {conf:.0%} CI | spread | "
         "PDR | consistency | cons. original | cons. held-out |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in report.tasks:
        lines.append(
            f"| {t.task} | {t.metric} | {t.n_instances} | {len(t.variant_scores)} | {_fmt(t.mean)} | "
            f"{_fmt(t.std)} | {_fmt(t.min)} | {_fmt(t.max)} | {_fmt(t.sensitivity, 3)} | "
            f"{_fmt_ci(t.mean_ci_low, t.mean_ci_high)} | {_fmt(t.spread)} | {_fmt(t.pdr, 3)} | "
            f"{_fmt(t.consistency)} | {_fmt(t.consistency_original)} | {_fmt(t.consistency_heldout)} |"
        )
    o = report.overall
    lines.append(
        f"| **overall** | | | | {_fmt(o['mean'])} | {_fmt(o['std'])} | {_fmt(o['min'])} | {_fmt(o['max'])} | "
        f"{_fmt(o['sensitivity'], 3)} | {_fmt_ci(o['mean_ci_low'], o['mean_ci_high'])} | {_fmt(o['spread'])} | "
        f"{_fmt(o['pdr'], 3)} | {_fmt(o['consistency'])} | {_fmt(o['consistency_original'])} | "
        f"{_fmt(o['consistency_heldout'])} |"
    )
    return "\n".join(lines) + "\n"


def plot(reports: Sequence[Report], path: Path, labels: Sequence[str] | None = None) -> Path:
    """Per-task bars (mean across variants), bootstrap-interval error bars, min-max lines, variants as dots.

    Several reports (e.g. baseline vs augmented) are drawn as grouped bars over their common tasks.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(labels or [r.model for r in reports])
    tasks = [t.task for t in reports[0].tasks if all(t.task in {u.task for u in r.tasks} for r in reports)]
    width = 0.8 / len(reports)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(tasks) * len(reports)), 4.5))
    for k, (report, label) in enumerate(zip(reports, labels)):
        by_name = {t.task: t for t in report.tasks}
        xs = [i + (k - (len(reports) - 1) / 2) * width for i in range(len(tasks))]
        means = [by_name[t].mean for t in tasks]
        errors = [[max(0.0, by_name[t].mean - by_name[t].mean_ci_low) for t in tasks],
                  [max(0.0, by_name[t].mean_ci_high - by_name[t].mean) for t in tasks]]
        bars = ax.bar(xs, means, width * 0.9, yerr=errors, capsize=3, alpha=0.75, label=label)
        for x, task in zip(xs, tasks):
            scores = list(by_name[task].variant_scores.values())
            ax.scatter([x] * len(scores), scores, s=10, color="black", zorder=3)
            ax.vlines(x, by_name[task].min, by_name[task].max, color=bars.patches[0].get_facecolor(),
                      linewidth=1, zorder=2)
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(tasks, rotation=20, ha="right")
    ax.set_ylabel("score across instruction variants (0-100)")
    ax.set_ylim(0, 105)
    conf = reports[0].bootstrap["confidence"]
    ax.set_title(f"{reports[0].name}: mean with {conf:.0%} bootstrap CI, line = min-max, dots = single variants")
    if len(reports) > 1:
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(report: Report, out_dir: Path, items: Sequence[ScoredItem] = ()) -> dict[str, Path]:
    """Write `report.json`, `report.md`, `report.png` and (if given) `predictions.jsonl` under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md", "plot": out_dir / "report.png"}
    paths["json"].write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False), encoding="utf-8")
    paths["markdown"].write_text(to_markdown(report), encoding="utf-8")
    plot([report], paths["plot"])
    if items:
        paths["predictions"] = out_dir / "predictions.jsonl"
        with paths["predictions"].open("w", encoding="utf-8") as fh:
            for item in items:
                fh.write(json.dumps(asdict(item), ensure_ascii=False) + "\n")
    return paths
