"""The dataset format protocol: one `DatasetFormat` object per row layout LLaMA-Factory trains on.

Modelled on LLaMA-Factory's `data/converter.py` (a `DatasetConverter` per `formatting`, the
`DATASET_CONVERTERS` registry, `register_dataset_converter`). A format object is made for one dataset
(its dataset_info.json entry) and does every job the plugin has for that layout:

- `conversation`: a row's messages as LLaMA-Factory's converter aligns them (roles user, assistant,
  observation, function; the system prompt left out). The other jobs are built on it, so a user
  turn's position is the one the training hook sees in LLaMA-Factory's `_prompt`;
- `read_seeds`: the instruction texts per task, for `pregen`;
- `rewrite`: a copy of a row whose user turns an `InstructionRewriter` reworded (answers, system
  prompts, media and placeholders untouched), for `build`;
- `problem`: the `core.rows` checks (no user turn, media count, missing media file);
- `output`: the `build` data file and the dataset_info.json entry that reads it.

A new format is one file holding a `DatasetFormat` subclass plus one line in
`registry.DATASET_FORMATS` (for training, LLaMA-Factory needs a converter of the same `formatting`
name: `register_dataset_converter`).
"""

from __future__ import annotations

import copy
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.rows import ABNORMAL, RowChecker, row_problem
from instraug_plugin.core.sampling import Decision, InstructionRewriter, rewrite_messages
from instraug_plugin.formats.entry import media_columns
from instraug_plugin.formats.files import Row

DEFAULT_TASK = "default"
# LLaMA-Factory's `Role` values, the roles of an aligned conversation.
USER, ASSISTANT, OBSERVATION, FUNCTION, SYSTEM = "user", "assistant", "observation", "function", "system"
Message = dict[str, Any]  # {"role": one of the roles above (None: a role LLaMA-Factory cannot map), "content": ...}


@dataclass(frozen=True)
class RawSeed:
    """An instruction as read from the input, before validation and deduplication."""

    task: str
    text: str
    where: str


@dataclass
class RawSeeds:
    """Seed reading's output: raw seeds per task (in input order) and rows that yielded no instruction."""

    tasks: dict[str, list[RawSeed]] = field(default_factory=dict)
    skipped_rows: int = 0
    invalid_rows: dict[str, int] = field(default_factory=dict)  # skipped invalid rows by kind (core.rows)

    def add(self, task: str, text: str, where: str) -> None:
        """Append one instruction to `task`."""
        self.tasks.setdefault(task, []).append(RawSeed(task, text, where))


def row_task(row: dict[str, Any], task_column: str | None, where: str) -> str:
    """The row's task: the value of `task_column`, or "default" without one."""
    if task_column is None:
        return DEFAULT_TASK
    value = row.get(task_column)
    if value is None or value == "":
        raise InstrAugError(f"{where}: no value in task column {task_column!r} (row keys: {sorted(row)})")
    return str(value)


def require_column(rows: list[Row], column: str, key: str, where: str) -> None:
    """InstrAugError when no row has `column` (the entry's `key`, e.g. "columns.messages")."""
    if rows and not any(column in row for _, row in rows):
        raise InstrAugError(
            f"{where}: column {column!r} ({key}) is in no row (row 0 keys: {sorted(rows[0][1])})"
        )


class DatasetFormat(ABC):
    """One dataset format, made for one dataset: `entry` is its dataset_info.json entry, `where` names
    it in error messages ("dataset_info.json:name", or the data file)."""

    def __init__(self, entry: dict[str, Any], where: str) -> None:
        self.entry = entry
        self.where = where
        self.media_columns = media_columns(entry)

    @abstractmethod
    def conversation(self, row: dict[str, Any], where: str) -> list[Message]:
        """The row's messages as LLaMA-Factory's converter aligns them, system prompt left out; also for
        a row the converter skips (see `accepts`). InstrAugError naming the row when it is malformed."""

    @abstractmethod
    def with_user_turns(self, row: dict[str, Any], turns: dict[int, str], where: str) -> dict[str, Any]:
        """A copy of `row` in which each user message of `conversation` at a position in `turns` has that text."""

    def instructions(self, row: dict[str, Any], where: str, all_turns: bool) -> list[str]:
        """The row's instruction texts in order (pregen's seeds: the first, or all with `all_turns`)."""
        return [m["content"] for m in self.conversation(row, where) if m["role"] == USER]

    def accepts(self, row: dict[str, Any], where: str) -> bool:
        """False for a row LLaMA-Factory's converter skips (it trains on no part of it)."""
        return True

    @abstractmethod
    def check_columns(self, rows: list[Row]) -> None:
        """InstrAugError when the entry's columns cannot give any row an instruction (pregen, before the rows)."""

    def problem(self, row: dict[str, Any], where: str, media_root: Path | None) -> tuple[str, str] | None:
        """(kind, description) of the row's `core.rows` problem, or None when LLaMA-Factory can train on it."""
        messages = self.conversation(row, where)
        media = {kind: row.get(column) for kind, column in self.media_columns.items()}
        users = [m["content"] for m in messages if m["role"] == USER]
        return row_problem(users, [m["content"] for m in messages], media, media_root)

    def rewrite(self, row: dict[str, Any], rewriter: InstructionRewriter, *, task: str | None, epoch: int,
                index: int, all_turns: bool, where: str) -> tuple[dict[str, Any], Decision]:
        """A copy of `row` with its first (or every) user turn rewritten, drawn as the training hook
        draws it (`rewrite_messages` over the aligned conversation); other messages and columns kept."""
        messages = self.conversation(row, where)
        new, decision = rewrite_messages(rewriter, messages, task=task, epoch=epoch, index=index,
                                         all_turns=all_turns)
        turns = {i: m["content"] for i, (m, old) in enumerate(zip(new, messages)) if m is not old}
        return (self.with_user_turns(row, turns, where) if turns else copy.deepcopy(row)), decision

    def read_seeds(self, rows: list[Row], *, task_column: str | None, all_turns: bool, skip_invalid: bool,
                   media_root: Path | None) -> RawSeeds:
        """Instruction texts per task for pregen: each row's first non-empty one, or all with `all_turns`.

        Invalid rows (`core.rows`; media files looked for under `media_root`, None: not checked) raise,
        or with `skip_invalid` are skipped and counted by kind; rows LLaMA-Factory skips (`abnormal`) are
        always skipped and counted with them; rows without an instruction are counted in `skipped_rows`.
        """
        self.check_columns(rows)
        raw = RawSeeds()
        checker = RowChecker(skip_invalid)
        for where, row in rows:
            if not checker.ok(where, self.problem(row, where, media_root)):
                continue
            if not self.accepts(row, where):
                checker.drop(ABNORMAL)
                continue
            task = row_task(row, task_column, where)
            texts = [text for text in self.instructions(row, where, all_turns) if text.strip()]
            if not texts:
                raw.skipped_rows += 1
            for text in texts if all_turns else texts[:1]:
                raw.add(task, text, where)
        raw.invalid_rows = dict(checker.skipped)
        return raw

    def absolute_media(self, row: dict[str, Any], media_dir: Path) -> None:
        """Make the row's relative media paths that exist under `media_dir` absolute (in place)."""
        for column in self.media_columns.values():
            value = row.get(column)
            if isinstance(value, str):
                row[column] = _absolute(value, media_dir)
            elif isinstance(value, list):
                row[column] = [_absolute(v, media_dir) if isinstance(v, str) else v for v in value]

    def output(self, rows: list[dict[str, Any]], file_name: str) -> tuple[str, dict[str, Any]]:
        """The `build` output: the data file's text and the dataset_info.json entry that reads it."""
        entry = {"file_name": file_name} | copy.deepcopy(self.entry)
        entry["file_name"] = file_name
        return json.dumps(rows, ensure_ascii=False, indent=1), entry


def _absolute(path: str, media_dir: Path) -> str:
    full = media_dir / path
    return str(full.resolve()) if full.exists() else path
