"""LLaVA instruction data: a JSON list of `{id, image, conversations: [{from: human|gpt, value}]}`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.rows import RowChecker, row_problem
from instraug_plugin.inputs.base import RawSeeds, ReadOptions, SeedReader
from instraug_plugin.inputs.llamafactory import (
    ConversationTags,
    add_turns,
    row_contents,
    row_task,
    user_turns,
)

CONVERSATIONS = "conversations"
# The dataset_info entry that reads a LLaVA json in LLaMA-Factory.
LLAVA_ENTRY = {"formatting": "sharegpt", "columns": {"messages": CONVERSATIONS, "images": "image"}}


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
        raw = RawSeeds()
        tags = ConversationTags()
        checker = RowChecker(options.skip_invalid)
        for i, row in enumerate(document):
            where = f"{path}:row {i}"
            if not isinstance(row, dict) or CONVERSATIONS not in row:
                raise InstrAugError(f"{where}: expected an object with a {CONVERSATIONS!r} list")
            if not checker.ok(where, row_problem(*row_contents(row, LLAVA_ENTRY, where), options.media_dir)):
                continue
            task = row_task(row, options.task_column, where)
            texts = user_turns(row[CONVERSATIONS], tags, where=where, column=CONVERSATIONS)
            add_turns(raw, task, texts, where, options.all_turns)
        raw.invalid_rows = dict(checker.skipped)
        return raw
