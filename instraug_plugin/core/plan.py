"""Per-task augmentation plan: epsilon and paraphrase budget from measured wording robustness (torch-free).

One rule, used by `instraug-plugin plan` (offline, from an eval report), `pregen --plan` (budget) and
the online loop (`instraug_adaptive`, from the development report at each epoch end):

    signal_t   = max(pdr_t, sensitivity_t, 0)
                 pdr_t: performance drop rate, 1 - unfamiliar-wording mean / original-wording mean
                 sensitivity_t: std / mean of the task's score across all its wordings
    weakness_t = min(1, strength * signal_t)                       in [0, 1]
    epsilon_t  = epsilon - (epsilon - floor) * weakness_t          in [floor, epsilon]
    budget_t   = 1 + round((max_budget - 1) * weakness_t)          in [1, max_budget]

`epsilon` is the global probability of the original wording, `floor` <= `epsilon` the lowest any task
gets. A more fragile task (larger drop or spread under wordings) trains on paraphrases more often and
gets more paraphrases generated. A task absent from the report, or one whose report has neither
signal (no wording scored above 0), keeps `epsilon` and budget 1.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.jsonfile import read_json_object

PLAN_FORMAT = "instraug-plan/1"
DEFAULT_FLOOR = 0.05
DEFAULT_STRENGTH = 2.0
DEFAULT_MAX_BUDGET = 4


@dataclass(frozen=True)
class Rule:
    """The bounded map from a task's wording signal to its epsilon and paraphrase budget."""

    epsilon: float
    floor: float = DEFAULT_FLOOR
    strength: float = DEFAULT_STRENGTH
    max_budget: int = DEFAULT_MAX_BUDGET

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise InstrAugError(f"epsilon must be in [0, 1]; got {self.epsilon}")
        if not 0.0 <= self.floor <= self.epsilon:
            raise InstrAugError(f"epsilon floor must be in [0, epsilon={self.epsilon}]; got {self.floor}")
        if not self.strength >= 0.0 or math.isinf(self.strength):
            raise InstrAugError(f"strength must be a finite number >= 0; got {self.strength}")
        if self.max_budget < 1:
            raise InstrAugError(f"max budget must be >= 1; got {self.max_budget}")

    def weakness(self, pdr: float | None, sensitivity: float | None) -> float | None:
        """The task's weakness in [0, 1], or None when the report has no signal for it."""
        signals = [s for s in (pdr, sensitivity) if s is not None and not math.isnan(s)]
        if not signals:
            return None
        return min(1.0, self.strength * max(0.0, *signals))

    def task_epsilon(self, weakness: float | None) -> float:
        if weakness is None:
            return self.epsilon
        return self.epsilon - (self.epsilon - self.floor) * weakness

    def budget(self, weakness: float | None) -> int:
        if weakness is None:
            return 1
        return 1 + round((self.max_budget - 1) * weakness)


@dataclass(frozen=True)
class TaskPlan:
    """One task's share of the plan and the signals it came from."""

    epsilon: float
    budget: int
    weakness: float | None = None
    pdr: float | None = None
    sensitivity: float | None = None


@dataclass(frozen=True)
class Plan:
    """Per-task epsilon and paraphrase budget; tasks not listed use `rule.epsilon` and budget 1."""

    rule: Rule
    tasks: dict[str, TaskPlan] = field(default_factory=dict)
    source: str | None = None

    def epsilon_for(self, task: str | None) -> float:
        plan = self.tasks.get(task) if task is not None else None
        return self.rule.epsilon if plan is None else plan.epsilon

    def budget_for(self, task: str | None) -> int:
        plan = self.tasks.get(task) if task is not None else None
        return 1 if plan is None else plan.budget

    def epsilons(self) -> dict[str, float]:
        return {task: plan.epsilon for task, plan in self.tasks.items()}

    def to_json(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "source": self.source, **asdict(self.rule),
                "tasks": {task: asdict(plan) for task, plan in sorted(self.tasks.items())}}

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


def plan_from_signals(rule: Rule, signals: Mapping[str, tuple[float | None, float | None]],
                      source: str | None = None) -> Plan:
    """Apply the rule to each task's (pdr, sensitivity)."""
    tasks = {}
    for task, (pdr, sensitivity) in signals.items():
        weakness = rule.weakness(pdr, sensitivity)
        tasks[task] = TaskPlan(round(rule.task_epsilon(weakness), 6), rule.budget(weakness),
                               None if weakness is None else round(weakness, 6), pdr, sensitivity)
    return Plan(rule, tasks, source)


def report_signals(report: Mapping[str, Any], *, source: str = "report") -> dict[str, tuple[float | None, float | None]]:
    """(pdr, sensitivity) per task from an evaluation report's JSON (`evaluation.report.Report.to_json`)."""
    tasks = report.get("tasks")
    if not isinstance(tasks, list):
        raise InstrAugError(f"{source}: not an evaluation report (no 'tasks' list; expected instraug-plugin eval's report.json)")
    out: dict[str, tuple[float | None, float | None]] = {}
    for i, task in enumerate(tasks):
        if not isinstance(task, dict) or not isinstance(task.get("task"), str):
            raise InstrAugError(f"{source}: tasks[{i}] has no task name")
        out[task["task"]] = (_number(task.get("pdr"), source, f"tasks[{i}].pdr"),
                             _number(task.get("sensitivity"), source, f"tasks[{i}].sensitivity"))
    return out


def _number(value: Any, source: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InstrAugError(f"{source}: {where} is not a number: {value!r}")
    return float(value)


def load_plan(path: Path) -> Plan:
    """Read a plan file written by `instraug-plugin plan`; one-line errors naming the file."""
    data = read_json_object(path)
    if data.get("format") != PLAN_FORMAT:
        raise InstrAugError(f"{path}: not a plan file (format {data.get('format')!r}, expected {PLAN_FORMAT!r})")
    try:
        rule = Rule(float(data["epsilon"]), float(data["floor"]), float(data["strength"]), int(data["max_budget"]))
        tasks = {}
        for task, entry in dict(data["tasks"]).items():
            plan = TaskPlan(float(entry["epsilon"]), int(entry["budget"]), entry.get("weakness"), entry.get("pdr"),
                            entry.get("sensitivity"))
            if not rule.floor <= plan.epsilon <= rule.epsilon or not 1 <= plan.budget <= rule.max_budget:
                raise InstrAugError(f"task {task!r}: epsilon {plan.epsilon} or budget {plan.budget} outside the "
                                    f"plan's bounds [{rule.floor}, {rule.epsilon}] / [1, {rule.max_budget}]")
            tasks[str(task)] = plan
    except (KeyError, TypeError, ValueError, InstrAugError) as exc:
        detail = str(exc) if isinstance(exc, InstrAugError) else f"{type(exc).__name__}: {exc}"
        raise InstrAugError(f"{path}: bad plan ({detail})") from None
    return Plan(rule, tasks, data.get("source"))
