"""LLaVA instruction data: a JSON list of `{id, image, conversations: [{from: human|gpt, value}]}`,
read by `formats.llava.LlavaFormat`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.formats import LlavaFormat, RawSeeds
from instraug_plugin.formats.llava import CONVERSATIONS
from instraug_plugin.inputs.base import ReadOptions, SeedReader


class LlavaReader(SeedReader):
    """The first human turn of each conversation (every human turn with `all_turns`); `<image>` is kept.

    Rows are checked as LLaMA-Factory would train on them (a user turn, one `<image>` per image);
    image files are looked for only in an explicit `media_dir` (their folder is a training option).
    """

    name = "llava"

    @classmethod
    def matches(cls, path: Path, document: Any, options: ReadOptions) -> bool:
        return isinstance(document, list)

    def read(self, path: Path, document: Any, options: ReadOptions) -> RawSeeds:
        rows = []
        for i, row in enumerate(document):
            where = f"{path}:row {i}"
            if not isinstance(row, dict):
                raise InstrAugError(f"{where}: expected an object with a {CONVERSATIONS!r} list")
            rows.append((where, row))
        return LlavaFormat(str(path)).read_seeds(rows, task_column=options.task_column, all_turns=options.all_turns,
                                                 skip_invalid=options.skip_invalid, media_root=options.media_dir)
