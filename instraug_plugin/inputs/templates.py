"""MultiInstruct-style template files: a JSON object `{task: [template, ...]}`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.formats import RawSeeds
from instraug_plugin.inputs.base import ReadOptions, SeedReader


class TemplateReader(SeedReader):
    """Every template of every task is a seed; placeholders such as `{question}` are kept verbatim."""

    name = "templates"

    @classmethod
    def matches(cls, path: Path, document: Any, options: ReadOptions) -> bool:
        return isinstance(document, dict) and all(isinstance(v, list) for v in document.values())

    def read(self, path: Path, document: Any, options: ReadOptions) -> RawSeeds:
        if options.task_column is not None or options.all_turns:
            raise InstrAugError(f"{path}: task_column and all_turns apply to datasets, not template files")
        raw = RawSeeds()
        for task, templates in document.items():
            raw.tasks[task] = []
            for i, template in enumerate(templates):
                where = f"{path}:{task}[{i}]"
                if not isinstance(template, str):
                    raise InstrAugError(f"{where}: expected a string template, got {type(template).__name__}")
                if not template.strip():
                    raise InstrAugError(f"{where}: empty template")
                raw.add(task, template, where)
        return raw
