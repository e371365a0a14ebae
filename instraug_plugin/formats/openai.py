"""LLaMA-Factory's openai formatting: sharegpt-style message lists with OpenAI's tool messages.

Mirrors `OpenAIDatasetConverter` (llamafactory 0.9.x), which aligns messages unlike sharegpt:

- an assistant (or function) message with `tool_calls` becomes a function message whose content is
  the JSON list of the calls' `function` objects;
- consecutive observation (tool) messages become one observation message, their contents joined by
  "\\n</tool_response>\\n<tool_response>\\n"; observations at the very end are dropped;
- roles must alternate after that, so a user turn's position (the one the training hook sees in
  `_prompt`, which keys its draw) can differ from its position in the row's list;
- a role no tag names stops LLaMA-Factory (a KeyError): here it is an error naming the row.

The leading system message and the `columns` / `tags` defaults are sharegpt's: without a `tags`
object an openai entry reads `from` / `value` / `human` / `gpt` messages too, so an entry over
OpenAI-style messages names its tags, e.g. `{"role_tag": "role", "content_tag": "content",
"user_tag": "user", "assistant_tag": "assistant", "system_tag": "system", "observation_tag": "tool"}`.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.formats.base import ASSISTANT, FUNCTION, OBSERVATION, USER, Message
from instraug_plugin.formats.sharegpt import SharegptFormat, role_mapping

TOOL_RESPONSE_SEPARATOR = "\n</tool_response>\n<tool_response>\n"


def _tool_functions(calls: Any, where: str) -> list[Any]:
    if not (isinstance(calls, list) and all(isinstance(call, dict) and "function" in call for call in calls)):
        raise InstrAugError(f"{where}.tool_calls is not a list of objects with a 'function' key")
    return [call["function"] for call in calls]


class OpenAIFormat(SharegptFormat):
    """Rows whose `columns.messages` column is a list of OpenAI chat messages (roles named by `tags`)."""

    def _aligned(self, row: dict[str, Any], where: str) -> tuple[list[Message], list[int | None]]:
        """The aligned messages and each one's index in the row's list (None: merged tool responses)."""
        messages = self.messages(row, where)
        tags, mapping = self.tags, role_mapping(self.tags)
        aligned: list[Message] = []
        positions: list[int | None] = []
        observations: list[str] = []
        for i in range(self.system_offset(messages), len(messages)):
            message, at = messages[i], f"{where}: {self.column}[{i}]"
            role, content = message[tags.role], message[tags.content]
            if role in (tags.assistant, tags.function) and message.get("tool_calls"):
                content = json.dumps(_tool_functions(message["tool_calls"], at), ensure_ascii=False)
                role = tags.function
            if role == tags.observation:
                if not isinstance(content, str):
                    raise InstrAugError(f"{at}.{tags.content} is not a string")
                observations.append(content)
                continue
            if observations:
                aligned.append({"role": OBSERVATION, "content": TOOL_RESPONSE_SEPARATOR.join(observations)})
                positions.append(None)
                observations = []
            if not isinstance(role, str | None) or role not in mapping:
                raise InstrAugError(f"{at} has role {role!r}, which no tag of the entry names "
                                    f"(LLaMA-Factory's openai converter stops on it)")
            aligned.append({"role": mapping[role], "content": content})
            positions.append(i)
        return aligned, positions

    def conversation(self, row: dict[str, Any], where: str) -> list[Message]:
        return self._aligned(row, where)[0]

    def with_user_turns(self, row: dict[str, Any], turns: dict[int, str], where: str) -> dict[str, Any]:
        positions = self._aligned(row, where)[1]
        out = copy.deepcopy(row)
        for position, text in turns.items():
            out[self.column][positions[position]][self.tags.content] = text
        return out

    def accepts(self, row: dict[str, Any], where: str) -> bool:
        aligned = self.conversation(row, where)
        accepted = ((USER, OBSERVATION), (ASSISTANT, FUNCTION))
        if any(m["role"] not in accepted[i % 2] for i, m in enumerate(aligned)):
            return False
        return (len(aligned) % 2 == 1) == self.ranking
