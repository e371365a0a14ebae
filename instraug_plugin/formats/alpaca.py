"""LLaMA-Factory's alpaca formatting: an instruction (`columns.prompt`), its input (`columns.query`), an
answer (`columns.response`) and optional earlier `[prompt, response]` pairs (`columns.history`).

Mirrors `AlpacaDatasetConverter`: the history pairs come first, then the user turn `prompt + "\\n" +
query` (the non-empty ones), then the answer. Only `prompt` is the instruction: `query` is the row's
data, so a seed is the `prompt` text alone (the `query` text only for an entry whose `columns` leave
`prompt` unset); `all_turns` adds the history prompts before it. At rewrite time `InstructionRewriter`
replaces the leading part of the joined turn and the query is kept (if the pool held the joined text
itself, the rewritten turn goes to `prompt` and `query` is emptied: LLaMA-Factory sees the same turn).
"""

from __future__ import annotations

import copy
from typing import Any

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.formats.base import ASSISTANT, USER, DatasetFormat, Message, require_column
from instraug_plugin.formats.entry import entry_columns
from instraug_plugin.formats.files import Row


class AlpacaFormat(DatasetFormat):
    """Rows with instruction / input / output columns (named by the entry's `columns`)."""

    def __init__(self, entry: dict[str, Any], where: str) -> None:
        super().__init__(entry, where)
        columns = entry_columns(entry, where)
        self.prompt: str | None = columns["prompt"]
        self.query: str | None = columns["query"]
        self.response: str | None = columns["response"]
        self.history: str | None = columns["history"]

    @property
    def instruction_column(self) -> str | None:
        """The column holding the instruction: `prompt`, or `query` when `prompt` is unset."""
        return self.prompt or self.query

    def check_columns(self, rows: list[Row]) -> None:
        column = self.instruction_column
        if not column:
            raise InstrAugError(f"{self.where}: alpaca dataset needs columns.prompt or columns.query")
        require_column(rows, column, "columns.prompt" if self.prompt else "columns.query", self.where)

    @staticmethod
    def _text(row: dict[str, Any], column: str | None, where: str) -> str:
        value = row.get(column) if column else None
        if value is None:
            return ""
        if not isinstance(value, str):
            raise InstrAugError(f"{where}: column {column!r} is not a string")
        return value

    def _pairs(self, row: dict[str, Any], where: str) -> list[tuple[str, str]]:
        history = row.get(self.history) if self.history else None
        if not isinstance(history, list):
            return []
        for i, pair in enumerate(history):
            if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                raise InstrAugError(f"{where}: {self.history}[{i}] is not a [prompt, response] pair")
        return [(prompt, response) for prompt, response in history]

    def conversation(self, row: dict[str, Any], where: str) -> list[Message]:
        messages: list[Message] = []
        for prompt, response in self._pairs(row, where):
            messages += [{"role": USER, "content": prompt}, {"role": ASSISTANT, "content": response}]
        parts = (self._text(row, self.prompt, where), self._text(row, self.query, where))
        messages.append({"role": USER, "content": "\n".join(part for part in parts if part)})
        answer = row.get(self.response) if self.response else None
        messages += [{"role": ASSISTANT, "content": text} for text in (answer if isinstance(answer, list) else [answer])
                     if isinstance(text, str)]
        return messages

    def instructions(self, row: dict[str, Any], where: str, all_turns: bool) -> list[str]:
        earlier = [prompt for prompt, _ in self._pairs(row, where)] if all_turns else []
        return [*earlier, self._text(row, self.instruction_column, where)]

    def with_user_turns(self, row: dict[str, Any], turns: dict[int, str], where: str) -> dict[str, Any]:
        out = copy.deepcopy(row)
        pairs = self._pairs(row, where)
        for position, text in turns.items():
            if position < 2 * len(pairs):
                out[self.history][position // 2] = [text, pairs[position // 2][1]]
                continue
            prompt, query = self._text(row, self.prompt, where), self._text(row, self.query, where)
            if prompt and query:
                head = text.removesuffix("\n" + query)
                out[self.prompt] = head
                if head == text:  # the joined text itself was rewritten
                    out[self.query] = ""
            elif prompt:
                out[self.prompt] = text
            else:
                out[self.query] = text
        return out
