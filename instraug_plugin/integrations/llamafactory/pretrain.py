"""Checks of the training split before training starts: invalid rows and pool coverage.

Runs once in `_get_preprocessed_dataset` on LLaMA-Factory's aligned rows (`_prompt`, `_response`,
`_images`, `_videos`, `_audios`), after the rows LLaMA-Factory itself drops are gone:

- rows it could not train on (`core.rows`: no user turn with text, a media placeholder count that
  differs from the row's media, a missing media file) are an error naming the row, or with
  `instraug_skip_invalid: true` are dropped and counted by kind;
- pool coverage: the share of distinct training instructions (per task with `instraug_task_column`)
  that have at least one paraphrase in the pool. No coverage at all is an error naming the pool and
  the first unmatched instruction (pool mode, epsilon < 1: training would never see a paraphrase);
  coverage below `LOW_COVERAGE` is a warning on stderr and in `instraug_stats.jsonl`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instraug_plugin.core.errors import InstrAugError, one_line
from instraug_plugin.core.rows import RowChecker, row_problem
from instraug_plugin.core.sampling import InstructionRewriter

LOW_COVERAGE = 0.5  # warn when fewer than half of a task's distinct instructions have a paraphrase
MEDIA_COLUMNS = {"images": "_images", "videos": "_videos", "audios": "_audios"}
TASK_COLUMN = "_instraug_task"


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


def _user_texts(messages: Sequence[dict[str, Any]], all_turns: bool) -> list[str]:
    texts = [m.get("content") for m in messages if m.get("role") == "user"]
    texts = [t for t in texts if isinstance(t, str)]
    return texts if all_turns else texts[:1]


def check_training_rows(
    dataset: Any, rewriter: InstructionRewriter, *, all_turns: bool, skip_invalid: bool, check_media: bool,
    media_root: Path, where: str,
) -> tuple[list[int] | None, dict[str, int], Coverage]:
    """One pass over the aligned rows: (indices to keep or None for all, skipped rows by kind, coverage).

    `check_media`: the template is multimodal, so placeholder counts must match the media (a text
    template's plugin treats `<image>` as text); `where` names the datasets in error messages.
    """
    columns = [c for c in ("_prompt", "_response", TASK_COLUMN, *MEDIA_COLUMNS.values()) if c in dataset.column_names]
    checker = RowChecker(skip_invalid, hint="instraug_skip_invalid: true")
    keep: list[int] = []
    coverage = Coverage()
    seen: set[tuple[str | None, str]] = set()
    index = 0
    for batch in dataset.with_format(None).select_columns(columns).iter(batch_size=1000):
        tasks = batch.get(TASK_COLUMN) or [None] * len(batch["_prompt"])
        for i, (prompt, task) in enumerate(zip(batch["_prompt"], tasks)):
            messages = list(prompt) + list(batch["_response"][i] or [])
            media = {kind: batch[column][i] for kind, column in MEDIA_COLUMNS.items() if column in batch}
            problem = row_problem(_user_texts(prompt, True), [m.get("content") for m in messages],
                                  media if check_media else {}, media_root)
            if checker.ok(f"{where}: training row {index}", problem):
                keep.append(index)
                for text in _user_texts(prompt, all_turns):
                    if (task, text) in seen:
                        continue
                    seen.add((task, text))
                    entry = coverage.tasks.setdefault(task, TaskCoverage(task))
                    entry.instructions += 1
                    if rewriter.candidates(text, task)[2]:
                        entry.covered += 1
                    elif entry.first_unmatched is None:
                        entry.first_unmatched = text
            index += 1
    return (None if len(keep) == index else keep), dict(checker.skipped), coverage


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

