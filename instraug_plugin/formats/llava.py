"""LLaVA instruction data: a JSON list of `{id, image, conversations: [{from: human|gpt, value}]}`.

LLaMA-Factory reads such a file as sharegpt with the default tags (`LLAVA_ENTRY`), so this is the
sharegpt format over that fixed entry; `<image>` tokens stay in the turns. A LLaVA json has no
dataset_info.json entry of its own, so a row without `conversations` is named by its row.
"""

from __future__ import annotations

import copy
from typing import Any

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.formats.files import Row
from instraug_plugin.formats.sharegpt import SharegptFormat

CONVERSATIONS = "conversations"
# The dataset_info entry that reads a LLaVA json in LLaMA-Factory.
LLAVA_ENTRY = {"formatting": "sharegpt", "columns": {"messages": CONVERSATIONS, "images": "image"}}


class LlavaFormat(SharegptFormat):
    """The sharegpt format of a LLaVA json; `where` names the file."""

    def __init__(self, where: str) -> None:
        super().__init__(copy.deepcopy(LLAVA_ENTRY), where)

    def messages(self, row: dict[str, Any], where: str) -> list[dict[str, Any]]:
        if CONVERSATIONS not in row:
            raise InstrAugError(f"{where}: expected an object with a {CONVERSATIONS!r} list")
        return super().messages(row, where)

    def check_columns(self, rows: list[Row]) -> None:
        """Nothing: `messages` names each row that lacks `conversations`."""
