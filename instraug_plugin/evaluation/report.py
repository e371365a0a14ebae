"""Aggregate per-instance scores into per-task robustness statistics; write JSON, markdown and PNG.

Per task, each variant's score is the mean over the task's instances (0-100). Across the variants of
a task: mean, population std, min, max, and MultiInstruct's Sensitivity = std / mean. Overall numbers
are plain averages over tasks (Sensitivity over the tasks where it is defined, i.e. mean > 0).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


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


@dataclass(frozen=True)
class Report:
    """A whole evaluation: per-task summaries and their averages."""

    name: str
    model: str
    variants: str
    tasks: list[TaskSummary]
    overall: dict[str, float | None]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def log_metrics(self, prefix: str = "instraug_eval") -> dict[str, float]:
        """Flat `prefix/...` scalars for a trainer's log history (undefined Sensitivity omitted)."""
        out: dict[str, float] = {}
        for key, value in self.overall.items():
            if value is not None:
                out[f"{prefix}/{key}"] = value
        for t in self.tasks:
            out[f"{prefix}/{t.task}/mean"] = t.mean
            out[f"{prefix}/{t.task}/std"] = t.std
            if t.sensitivity is not None:
                out[f"{prefix}/{t.task}/sensitivity"] = t.sensitivity
        return out


def spread(scores: Sequence[float]) -> tuple[float, float, float, float, float | None]:
    """(mean, population std, min, max, sensitivity = std / mean or None when mean is 0)."""
    if not scores:
        raise ValueError("spread() of an empty score list")
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    return mean, std, min(scores), max(scores), (std / mean if mean > 0 else None)


def summarize(
    items: Iterable[ScoredItem], metrics: dict[str, str], *, name: str, model: str, variants: str,
    meta: dict[str, Any] | None = None,
) -> Report:
    """Group scores by task, then by variant (mean over instances), then take the spread across variants."""
    by_task: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    instances: dict[str, set[str]] = defaultdict(set)
    for item in items:
        by_task[item.task][item.variant].append(item.score)
        instances[item.task].add(item.instance_id)
    summaries = []
    for task in sorted(by_task):
        variant_scores = {v: 100 * sum(s) / len(s) for v, s in sorted(by_task[task].items())}
        mean, std, lo, hi, sens = spread(list(variant_scores.values()))
        summaries.append(TaskSummary(task, metrics[task], len(instances[task]), variant_scores, mean, std, lo, hi, sens))
    return Report(name, model, variants, summaries, overall_averages(summaries), meta or {})


def overall_averages(tasks: Sequence[TaskSummary]) -> dict[str, float | None]:
    """Averages over tasks of mean, std, min and max; Sensitivity averaged over tasks where defined."""
    if not tasks:
        return {"mean": None, "std": None, "min": None, "max": None, "sensitivity": None}
    out: dict[str, float | None] = {
        key: sum(getattr(t, key) for t in tasks) / len(tasks) for key in ("mean", "std", "min", "max")
    }
    defined = [t.sensitivity for t in tasks if t.sensitivity is not None]
    out["sensitivity"] = sum(defined) / len(defined) if defined else None
    return out


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def to_markdown(report: Report) -> str:
    """A markdown table: one row per task plus the overall average."""
    lines = [
        f"# Robustness evaluation: {report.name}",
        "",
        (f"Model: `{report.model}`; variants: {report.variants}. Scores 0-100 across instruction variants; "
         "Sensitivity = std / mean (lower is better)."),
        "",
        "| task | metric | instances | variants | mean | std | min | max | Sensitivity |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in report.tasks:
        lines.append(
            f"| {t.task} | {t.metric} | {t.n_instances} | {len(t.variant_scores)} | {_fmt(t.mean)} | "
            f"{_fmt(t.std)} | {_fmt(t.min)} | {_fmt(t.max)} | {_fmt(t.sensitivity, 3)} |"
        )
    o = report.overall
    lines.append(
        f"| **overall** | | | | {_fmt(o['mean'])} | {_fmt(o['std'])} | {_fmt(o['min'])} | {_fmt(o['max'])} | "
        f"{_fmt(o['sensitivity'], 3)} |"
    )
    return "\n".join(lines) + "\n"


def plot(reports: Sequence[Report], path: Path, labels: Sequence[str] | None = None) -> Path:
    """Per-task bars (mean across variants), std error bars, and each variant's score as a dot.

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
        stds = [by_name[t].std for t in tasks]
        bars = ax.bar(xs, means, width * 0.9, yerr=stds, capsize=3, alpha=0.75, label=label)
        for x, task in zip(xs, tasks):
            scores = list(by_name[task].variant_scores.values())
            ax.scatter([x] * len(scores), scores, s=10, color="black", zorder=3)
            ax.vlines(x, by_name[task].min, by_name[task].max, color=bars.patches[0].get_facecolor(),
                      linewidth=1, zorder=2)
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(tasks, rotation=20, ha="right")
    ax.set_ylabel("score across instruction variants (0-100)")
    ax.set_ylim(0, 105)
    ax.set_title(f"{reports[0].name}: mean ± std, dots = single variants")
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
