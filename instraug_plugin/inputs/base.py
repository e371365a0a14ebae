"""Shared types of the input readers: the Seed, a reader's raw output, and the reader interface.

A reader turns one input format into raw seeds grouped by task, each raw seed carrying a `where`
label ("file:task[i]" or "file:row n") for error messages. Task selection, placeholder validation,
deduplication and seed ids are applied afterwards, the same way for every format (see `registry`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from instraug_plugin.core.instances import TEMPLATE

DEFAULT_TASK = "default"


@dataclass(frozen=True)
class Seed:
    """One seed instruction; `seed_id` is f"{task}/{index}" with `index` counted inside the task.

    `kind` is `template` (shared by rows, or with fields) or `instance` (one row's own request;
    see `core.instances`)."""

    task: str
    seed_id: str
    text: str
    kind: str = TEMPLATE


@dataclass(frozen=True)
class RawSeed:
    """An instruction as read from the input, before validation and deduplication."""

    task: str
    text: str
    where: str


@dataclass
class RawSeeds:
    """A reader's output: raw seeds per task (in input order) and rows that yielded no instruction."""

    tasks: dict[str, list[RawSeed]] = field(default_factory=dict)
    skipped_rows: int = 0
    invalid_rows: dict[str, int] = field(default_factory=dict)  # skipped invalid rows by kind (core.rows)

    def add(self, task: str, text: str, where: str) -> None:
        """Append one instruction to `task`."""
        self.tasks.setdefault(task, []).append(RawSeed(task, text, where))


@dataclass(frozen=True)
class ReadOptions:
    """Format options of `load_seeds` that readers see."""

    dataset: str | None = None
    task_column: str | None = None
    all_turns: bool = False
    skip_invalid: bool = False
    media_dir: Path | None = None  # where media files are looked for (None: a dataset's default)


class SeedReader(ABC):
    """One input format. `matches` inspects the parsed JSON document; `read` extracts raw seeds."""

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def matches(cls, path: Path, document: Any, options: ReadOptions) -> bool:
        """True if `document` (the parsed JSON at `path`) is in this reader's format."""

    @abstractmethod
    def read(self, path: Path, document: Any, options: ReadOptions) -> RawSeeds:
        """Raw seeds per task; raises InstrAugError naming file/task/key/row on bad input."""


def brief(names: Sequence[str], limit: int = 8) -> str:
    """A short comma-separated listing of `names`, e.g. "a, b, c, ... (+12 more)"."""
    shown = ", ".join(names[:limit])
    return f"{shown}, ... (+{len(names) - limit} more)" if len(names) > limit else shown
