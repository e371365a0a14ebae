"""Shared types of the input readers: the `SeedInstruction` and the reader interface.

A reader turns one kind of input (a template file, a dataset_info.json dataset, a LLaVA json) into
raw seeds grouped by task (`formats.base.RawSeeds`; a dataset's rows are read by its dataset format),
each raw seed carrying a `where` label ("file:task[i]" or "file:row n") for error messages. Task
selection, placeholder validation, deduplication and seed ids are applied afterwards, the same way
for every input (see `registry`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from instraug_plugin.core.instances import TEMPLATE
from instraug_plugin.formats.base import RawSeeds


@dataclass(frozen=True)
class SeedInstruction:
    """One seed instruction; `seed_id` is f"{task}/{index}" with `index` counted inside the task.

    `kind` is `template` (shared by rows, or with fields) or `instance` (one row's own request;
    see `core.instances`)."""

    task: str
    seed_id: str
    text: str
    kind: str = TEMPLATE


@dataclass(frozen=True)
class ReadOptions:
    """Options of `load_seeds` that readers see."""

    dataset: str | None = None
    task_column: str | None = None
    all_turns: bool = False
    skip_invalid: bool = False
    media_dir: Path | None = None  # where media files are looked for (None: a dataset's default)


class SeedReader(ABC):
    """One kind of input. `matches` inspects the parsed JSON document; `read` extracts raw seeds."""

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def matches(cls, path: Path, document: Any, options: ReadOptions) -> bool:
        """True if `document` (the parsed JSON at `path`) is in this reader's format."""

    @abstractmethod
    def read(self, path: Path, document: Any, options: ReadOptions) -> RawSeeds:
        """Raw seeds per task; raises InstrAugError naming file/task/key/row on bad input."""

