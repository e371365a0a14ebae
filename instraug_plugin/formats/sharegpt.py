"""LLaMA-Factory's sharegpt formatting: a message list per row (`columns.messages`), read with the entry's `tags`.

Mirrors `SharegptDatasetConverter`: a leading message whose role is `tags.system_tag` is the system
prompt (never rewritten); every other message is aligned one to one, so a user turn's position is
its position in the list after the system message. A row whose roles do not alternate (user or
observation, then assistant or function) or whose message count is wrong (odd for `ranking`) is
skipped by LLaMA-Factory: pregen counts it as skipped, build copies it.
"""

from __future__ import annotations

import copy
from typing import Any

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.formats.base import (
    ASSISTANT,
    FUNCTION,
    OBSERVATION,
    SYSTEM,
    USER,
    DatasetFormat,
    Message,
    require_column,
)
from instraug_plugin.formats.entry import ConversationTags, entry_columns, entry_tags
from instraug_plugin.formats.files import Row


def role_mapping(tags: ConversationTags) -> dict[str | None, str]:
    """Dataset role → LLaMA-Factory role, built as the converters build their `tag_mapping`."""
    return {tags.user: USER, tags.assistant: ASSISTANT, tags.observation: OBSERVATION, tags.function: FUNCTION,
            tags.system: SYSTEM}


class SharegptFormat(DatasetFormat):
    """Rows whose `columns.messages` column is a list of `{tags.role_tag: ..., tags.content_tag: ...}`."""

    def __init__(self, entry: dict[str, Any], where: str) -> None:
        super().__init__(entry, where)
        self.tags = entry_tags(entry, where)
        column = entry_columns(entry, where)["messages"]
        if not column:
            raise InstrAugError(f"{where}: columns.messages is not set")
        self.column: str = column
        self.ranking = bool(entry.get("ranking"))

    def messages(self, row: dict[str, Any], where: str) -> list[dict[str, Any]]:
        """The row's message list, checked: objects with the role and content keys, user contents strings."""
        messages = row.get(self.column)
        if not isinstance(messages, list):
            raise InstrAugError(f"{where}: column {self.column!r} is not a list of messages")
        role, content = self.tags.role, self.tags.content
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise InstrAugError(f"{where}: {self.column}[{i}] is not an object")
            for key in (role, content):
                if key not in message:
                    raise InstrAugError(f"{where}: {self.column}[{i}] has no key {key!r} (keys: {sorted(message)})")
            if message[role] == self.tags.user and not isinstance(message[content], str):
                raise InstrAugError(f"{where}: {self.column}[{i}].{content} is not a string")
        return messages

    def system_offset(self, messages: list[dict[str, Any]]) -> int:
        """1 when the first message is the system prompt, else 0."""
        return int(bool(self.tags.system and messages and messages[0][self.tags.role] == self.tags.system))

    def conversation(self, row: dict[str, Any], where: str) -> list[Message]:
        messages = self.messages(row, where)
        mapping = role_mapping(self.tags)
        role, content = self.tags.role, self.tags.content
        return [{"role": mapping.get(m[role]) if isinstance(m[role], str | None) else None, "content": m[content]}
                for m in messages[self.system_offset(messages):]]

    def with_user_turns(self, row: dict[str, Any], turns: dict[int, str], where: str) -> dict[str, Any]:
        out = copy.deepcopy(row)
        messages = out[self.column]
        start = self.system_offset(messages)
        for position, text in turns.items():
            messages[start + position][self.tags.content] = text
        return out

    def accepts(self, row: dict[str, Any], where: str) -> bool:
        messages = self.messages(row, where)
        messages = messages[self.system_offset(messages):]
        tags = self.tags
        accepted = ((tags.user, tags.observation), (tags.assistant, tags.function))
        if any(m[tags.role] not in accepted[i % 2] for i, m in enumerate(messages)):
            return False
        return (len(messages) % 2 == 1) == self.ranking

    def check_columns(self, rows: list[Row]) -> None:
        require_column(rows, self.column, "columns.messages", self.where)
