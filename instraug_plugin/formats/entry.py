"""LLaMA-Factory's dataset_info.json entries: columns, tags and media columns as `DatasetAttr` reads them.

Mirrors llamafactory 0.9.x `data/parser.py::DatasetAttr`: the `columns` / `tags` defaults apply only
when the entry has no `columns` / `tags` object at all; an entry that has one takes every name from it
(missing names become unset), as `DatasetAttr.join` does. The defaults are the same for every
`formatting`: an openai entry without `tags` reads `from` / `value` / `human` / `gpt` messages too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from instraug_plugin.core.errors import InstrAugError, brief
from instraug_plugin.core.rows import MEDIA_KINDS

DATASET_INFO = "dataset_info.json"
COLUMN_DEFAULTS: dict[str, str | None] = {
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "history": None,
    "messages": "conversations",
}
TAG_DEFAULTS: dict[str, str | None] = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}


@dataclass(frozen=True)
class ConversationTags:
    """Keys and role names of a message list (LLaMA-Factory `tags`; the defaults are LLaVA's)."""

    role: str = "from"
    content: str = "value"
    user: str = "human"
    assistant: str | None = "gpt"
    observation: str | None = "observation"
    function: str | None = "function_call"
    system: str | None = "system"


def _mapping(entry: dict[str, Any], key: str, defaults: dict[str, str | None], where: str) -> dict[str, Any]:
    if key not in entry:
        return dict(defaults)
    given = entry[key]
    if not isinstance(given, dict):
        raise InstrAugError(f"{where}: {key!r} must be an object")
    return {name: given.get(name) for name in defaults}


def entry_columns(entry: dict[str, Any], where: str) -> dict[str, Any]:
    """The entry's `columns` with LLaMA-Factory's semantics (defaults only without a `columns` object)."""
    return _mapping(entry, "columns", COLUMN_DEFAULTS, where)


def entry_tags(entry: dict[str, Any], where: str) -> ConversationTags:
    """The entry's message `tags` (LLaMA-Factory semantics); InstrAugError if a required tag is unset."""
    tags = _mapping(entry, "tags", TAG_DEFAULTS, where)
    for key in ("role_tag", "content_tag", "user_tag"):
        if not tags[key]:
            raise InstrAugError(f"{where}: tags.{key} is not set")
    return ConversationTags(
        role=tags["role_tag"],
        content=tags["content_tag"],
        user=tags["user_tag"],
        assistant=tags["assistant_tag"],
        observation=tags["observation_tag"],
        function=tags["function_tag"],
        system=tags["system_tag"],
    )


def media_columns(entry: dict[str, Any]) -> dict[str, str]:
    """Media kind ("images", "videos", "audios") → the entry's column for it, for the kinds it maps."""
    columns = entry.get("columns")
    if not isinstance(columns, dict):
        return {}
    return {kind: columns[kind] for kind in MEDIA_KINDS if isinstance(columns.get(kind), str)}


def dataset_entry(info: Any, name: str, where: str) -> dict[str, Any]:
    """The named local-file entry of a parsed dataset_info.json, checked; InstrAugError otherwise.

    Its `formatting` is checked where the format is picked (`registry.get_dataset_format`)."""
    if not isinstance(info, dict):
        raise InstrAugError(f"{where}: expected a JSON object of dataset entries")
    if name not in info:
        raise InstrAugError(f"{where}: unknown dataset {name!r} (known: {brief(sorted(info))})")
    entry = info[name]
    if not isinstance(entry, dict):
        raise InstrAugError(f"{where}:{name}: entry must be an object, got {type(entry).__name__}")
    if "file_name" not in entry:
        raise InstrAugError(f"{where}:{name}: only local datasets with 'file_name' can be read")
    return entry
