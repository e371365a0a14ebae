"""Pool coverage of a training set's instructions, checked before training by every integration (torch-free).

Pool mode with epsilon < 1 needs paraphrases: no paraphrase for any training instruction is an error,
coverage below `LOW_COVERAGE` in a task a warning (on stderr and in `instraug_stats.jsonl`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from instraug_plugin.core.errors import InstrAugError, one_line
from instraug_plugin.core.sampling import InstructionRewriter

LOW_COVERAGE = 0.5  # warn when fewer than half of a task's distinct instructions have a paraphrase


@dataclass
class TaskCoverage:
    """Distinct instructions of one task (None: no task column) and those with a paraphrase."""

    task: str | None
    instructions: int = 0
    covered: int = 0
    first_unmatched: str | None = None

    @property
    def share(self) -> float:
        return self.covered / self.instructions if self.instructions else 0.0


@dataclass
class Coverage:
    """Pool coverage of the training instructions, overall and per task."""

    tasks: dict[str | None, TaskCoverage] = field(default_factory=dict)
    _seen: set[tuple[str | None, str]] = field(default_factory=set, repr=False)

    def add(self, task: str | None, text: str, rewriter: InstructionRewriter) -> None:
        """Count a training instruction of `task` once (repeats are ignored), covered if the pool has a paraphrase."""
        if (task, text) in self._seen:
            return
        self._seen.add((task, text))
        entry = self.tasks.setdefault(task, TaskCoverage(task))
        entry.instructions += 1
        if rewriter.candidates(text, task).variants:
            entry.covered += 1
        elif entry.first_unmatched is None:
            entry.first_unmatched = text

    @property
    def instructions(self) -> int:
        return sum(t.instructions for t in self.tasks.values())

    @property
    def covered(self) -> int:
        return sum(t.covered for t in self.tasks.values())

    @property
    def share(self) -> float:
        return self.covered / self.instructions if self.instructions else 0.0

    def first_unmatched(self) -> str | None:
        return next((t.first_unmatched for t in self.tasks.values() if t.first_unmatched is not None), None)

    def low(self, threshold: float = LOW_COVERAGE) -> list[TaskCoverage]:
        """Tasks (or the single task-less group) whose coverage is below `threshold`."""
        return [t for t in self.tasks.values() if t.instructions and t.share < threshold]

    def record(self) -> dict[str, Any]:
        """The JSON form written to `instraug_stats.jsonl`."""
        record: dict[str, Any] = {"instructions": self.instructions, "covered": self.covered,
                                  "share": round(self.share, 4)}
        if any(task is not None for task in self.tasks):
            record["tasks"] = {str(t.task): round(t.share, 4) for t in self.tasks.values()}
        return record


def coverage_verdict(coverage: Coverage, *, pools: Sequence[str], mode: str, epsilon: float) -> list[str]:
    """Warnings about low coverage; InstrAugError when the pool matches no training instruction.

    Only pool mode with epsilon < 1 needs paraphrases before training: with epsilon 1 the original
    wording is always kept, and live mode writes its pool during training.
    """
    if mode != "pool" or epsilon >= 1.0 or not coverage.instructions:
        return []
    pool_names = ", ".join(pools)
    if coverage.covered == 0:
        first = one_line(str(coverage.first_unmatched()))[:120]
        raise InstrAugError(
            f"instraug_pool: {pool_names} has no paraphrase for any of the {coverage.instructions} training "
            f"instructions (first unmatched: {first!r}); pregen the pool from this dataset, or check "
            "instraug_task_column and instraug_turns (one row's own request is reworded only with instraug_scope: all)"
        )
    warnings = []
    for task in coverage.low():
        label = "" if task.task is None else f" of task {task.task!r}"
        first = one_line(str(task.first_unmatched))[:80]
        warnings.append(
            f"pool coverage {task.share:.0%}{label}: {task.covered} of {task.instructions} distinct training "
            f"instructions have a paraphrase in {pool_names} (below {LOW_COVERAGE:.0%}; first unmatched: {first!r})"
        )
    return warnings


def summarize(coverage: Coverage, skipped: dict[str, int]) -> str:
    """One log line: coverage and the rows skipped as invalid."""
    line = (f"instraug: pool coverage {coverage.share:.0%} ({coverage.covered} of {coverage.instructions} "
            "distinct training instructions have a paraphrase)")
    if skipped:
        line += f"; skipped {sum(skipped.values())} invalid row(s): " + ", ".join(f"{n} {k}" for k, n in skipped.items())
    return line
