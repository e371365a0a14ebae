"""LLaMA-Factory datasets: a `dataset_info.json` entry (alpaca or sharegpt) and its local JSON/JSONL file.

Mirrors llamafactory 0.9.x (`data/parser.py::DatasetAttr`, `data/converter.py`):

- `columns` / `tags` defaults apply only when the entry has no `columns` / `tags` object at all; an
  entry that has one takes every name from it (missing names become unset), as `DatasetAttr.join` does.
- alpaca: LLaMA-Factory's user turn is `prompt` and `query` joined by "\\n" (`AlpacaDatasetConverter`),
  but only `prompt` is the instruction: `query` (the `input` column) is the row's data, so the seed
  is the `prompt` text alone (the `query` text only for an entry whose `columns` leave `prompt`
  unset). At rewrite time `InstructionRewriter` replaces that leading part and keeps the query.
  `all_turns` adds the user side of the `history` column before it.
- sharegpt (and openai, read the same way): user turns are messages whose role is `tags.user_tag`.
  Rows that LLaMA-Factory would skip (roles not alternating user/assistant, wrong message count)
  are skipped and counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.rows import MEDIA_KINDS, RowChecker, row_problem
from instraug_plugin.inputs.base import DEFAULT_TASK, RawSeeds, ReadOptions, SeedReader, brief

DATASET_INFO = "dataset_info.json"
FORMATTINGS = ("alpaca", "sharegpt", "openai")
COLUMN_DEFAULTS: dict[str, str | None] = {
    "prompt": "instruction",
    "query": "input",
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
DATA_SUFFIXES = (".json", ".jsonl")
Row = tuple[str, dict[str, Any]]


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


def user_turns(messages: Any, tags: ConversationTags, *, where: str, column: str) -> list[str]:
    """Contents of the user messages, in order; InstrAugError on a malformed message list."""
    if not isinstance(messages, list):
        raise InstrAugError(f"{where}: column {column!r} is not a list of messages")
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InstrAugError(f"{where}: {column}[{i}] is not an object")
        for key in (tags.role, tags.content):
            if key not in message:
                raise InstrAugError(f"{where}: {column}[{i}] has no key {key!r} (keys: {sorted(message)})")
        if message[tags.role] == tags.user:
            content = message[tags.content]
            if not isinstance(content, str):
                raise InstrAugError(f"{where}: {column}[{i}].{tags.content} is not a string")
            turns.append(content)
    return turns


def llamafactory_accepts(messages: list[dict[str, Any]], tags: ConversationTags, ranking: bool) -> bool:
    """False for rows `SharegptDatasetConverter` skips: roles not alternating, wrong message count."""
    if tags.system and messages and messages[0][tags.role] == tags.system:
        messages = messages[1:]
    accepted = ((tags.user, tags.observation), (tags.assistant, tags.function))
    if any(m[tags.role] not in accepted[i % 2] for i, m in enumerate(messages)):
        return False
    return (len(messages) % 2 == 1) == ranking


def row_task(row: dict[str, Any], task_column: str | None, where: str) -> str:
    """The row's task: the value of `task_column`, or "default" without one."""
    if task_column is None:
        return DEFAULT_TASK
    value = row.get(task_column)
    if value is None or value == "":
        raise InstrAugError(f"{where}: no value in task column {task_column!r} (row keys: {sorted(row)})")
    return str(value)


def _mapping(entry: dict[str, Any], key: str, defaults: dict[str, str | None], where: str) -> dict[str, Any]:
    if key not in entry:
        return dict(defaults)
    given = entry[key]
    if not isinstance(given, dict):
        raise InstrAugError(f"{where}: {key!r} must be an object")
    return {name: given.get(name) for name in defaults}


def _json_lines(path: Path, text: str) -> list[Any]:
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InstrAugError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
    return rows


def _file_rows(path: Path) -> list[Row]:
    if path.suffix not in DATA_SUFFIXES:
        raise InstrAugError(f"{path}: unsupported file type {path.suffix!r} (readable: .json, .jsonl)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InstrAugError(f"{path}: not a UTF-8 text file") from None
    if path.suffix == ".jsonl":
        data = _json_lines(path, text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            if exc.msg != "Extra data":  # a .json file may hold JSON lines, as `datasets` allows
                raise InstrAugError(
                    f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
                ) from None
            data = _json_lines(path, text)
        if not isinstance(data, list):
            raise InstrAugError(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
    rows = []
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise InstrAugError(f"{path}:row {i}: expected an object, got {type(row).__name__}")
        rows.append((f"{path}:row {i}", row))
    return rows


def load_rows(path: Path) -> list[Row]:
    """Rows of a dataset file, or of every file in a dataset directory, labelled "file:row i"."""
    if path.is_dir():
        return [row for file in sorted(p for p in path.iterdir() if p.is_file()) for row in _file_rows(file)]
    if not path.is_file():
        raise InstrAugError(f"dataset file not found: {path}")
    return _file_rows(path)


def _require_column(rows: list[Row], column: str, key: str, where: str) -> None:
    if rows and not any(column in row for _, row in rows):
        raise InstrAugError(
            f"{where}: column {column!r} ({key}) is in no row (row 0 keys: {sorted(rows[0][1])})"
        )


def instruction_column(columns: dict[str, Any]) -> str | None:
    """The alpaca column holding the instruction: `prompt`, or `query` when `prompt` is unset."""
    return columns["prompt"] or columns["query"]


def _alpaca_turns(row: dict[str, Any], columns: dict[str, Any], where: str, all_turns: bool) -> list[str]:
    column = instruction_column(columns)
    value = row.get(column) if column else None
    if value and not isinstance(value, str):
        raise InstrAugError(f"{where}: column {column!r} is not a string")
    current = [value] if value else []
    history = row.get(columns["history"]) if columns["history"] else None
    if not all_turns or not isinstance(history, list):
        return current
    earlier = []
    for i, turn in enumerate(history):
        if not (isinstance(turn, list | tuple) and len(turn) == 2 and isinstance(turn[0], str)):
            raise InstrAugError(f"{where}: {columns['history']}[{i}] is not a [prompt, response] pair")
        earlier.append(turn[0])
    return earlier + current


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


def row_contents(row: dict[str, Any], entry: dict[str, Any], where: str) -> tuple[list[str], list[str], dict[str, Any]]:
    """(user turn texts, every message text, media kind → column value) of a row, as LLaMA-Factory
    builds its messages: alpaca `prompt + "\\n" + query` (and history), sharegpt/openai messages
    except a leading system message. Malformed columns raise InstrAugError naming the row."""
    media = {kind: row.get(column) for kind, column in media_columns(entry).items()}
    columns = entry_columns(entry, where)
    if entry.get("formatting", "alpaca") == "alpaca":
        given = entry.get("columns")
        response_column = given.get("response") if isinstance(given, dict) else "output"
        users, answers = [], []
        history = row.get(columns["history"]) if columns["history"] else None
        for i, pair in enumerate(history if isinstance(history, list) else []):
            if not (isinstance(pair, list | tuple) and len(pair) == 2):
                raise InstrAugError(f"{where}: {columns['history']}[{i}] is not a [prompt, response] pair")
            users.append(pair[0])
            answers.append(pair[1])
        parts = [row.get(c) for c in (columns["prompt"], columns["query"]) if c]
        users.append("\n".join(p for p in parts if isinstance(p, str) and p))
        response = row.get(response_column) if response_column else None
        answers += response if isinstance(response, list) else [response]
        return users, [t for t in users + answers if isinstance(t, str)], media
    tags = entry_tags(entry, where)
    column = columns["messages"] or "conversations"
    messages = row.get(column)
    users = user_turns(messages, tags, where=where, column=column)
    start = 1 if tags.system and messages and messages[0][tags.role] == tags.system else 0
    texts = [m[tags.content] for m in messages[start:] if isinstance(m[tags.content], str)]
    return users, texts, media


def dataset_entry(info: Any, name: str, where: str) -> dict[str, Any]:
    """The named local-file entry of a parsed dataset_info.json, checked; InstrAugError otherwise."""
    if not isinstance(info, dict):
        raise InstrAugError(f"{where}: expected a JSON object of dataset entries")
    if name not in info:
        raise InstrAugError(f"{where}: unknown dataset {name!r} (known: {brief(sorted(info))})")
    entry = info[name]
    if not isinstance(entry, dict):
        raise InstrAugError(f"{where}:{name}: entry must be an object, got {type(entry).__name__}")
    if "file_name" not in entry:
        raise InstrAugError(f"{where}:{name}: only local datasets with 'file_name' can be read")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in FORMATTINGS:
        raise InstrAugError(f"{where}:{name}: unsupported formatting {formatting!r} (supported: alpaca, sharegpt)")
    return entry


@dataclass(frozen=True)
class _RowValidation:
    """`core.rows` checks of one dataset's rows (media paths relative to `media_root`)."""

    entry: dict[str, Any]
    checker: RowChecker
    media_root: Path

    def ok(self, row: dict[str, Any], where: str) -> bool:
        """True to read the row; False to skip it (invalid, with skip_invalid); raises otherwise."""
        return self.checker.ok(where, row_problem(*row_contents(row, self.entry, where), self.media_root))


class LlamaFactoryReader(SeedReader):
    """A named dataset of a `dataset_info.json`; `file_name` is relative to that file's directory."""

    name = "llamafactory"

    @classmethod
    def matches(cls, path: Path, document: Any, options: ReadOptions) -> bool:
        if options.dataset is not None or path.name == DATASET_INFO:
            return True
        return (
            isinstance(document, dict)
            and bool(document)
            and all(isinstance(v, dict) for v in document.values())
        )

    def read(self, path: Path, document: Any, options: ReadOptions) -> RawSeeds:
        if not isinstance(document, dict):
            raise InstrAugError(f"{path}: expected a JSON object of dataset entries")
        if options.dataset is None:
            raise InstrAugError(f"{path}: name the dataset to read (known: {brief(sorted(document))})")
        where = f"{path}:{options.dataset}"
        entry = dataset_entry(document, options.dataset, str(path))
        formatting = entry.get("formatting", "alpaca")
        columns = entry_columns(entry, where)
        rows = load_rows(path.parent / str(entry["file_name"]))
        raw = RawSeeds()
        # Relative media paths start at the dataset_info.json directory (LLaMA-Factory's default media_dir).
        check = _RowValidation(entry, RowChecker(options.skip_invalid), options.media_dir or path.parent)
        if formatting == "alpaca":
            self._read_alpaca(rows, columns, options, where, raw, check)
        else:
            tags = entry_tags(entry, where)
            self._read_conversations(rows, columns, tags, bool(entry.get("ranking")), options, where, raw, check)
        raw.invalid_rows = dict(check.checker.skipped)
        return raw

    @staticmethod
    def _read_alpaca(
        rows: list[Row], columns: dict[str, Any], options: ReadOptions, where: str, raw: RawSeeds,
        check: _RowValidation,
    ) -> None:
        column = instruction_column(columns)
        if not column:
            raise InstrAugError(f"{where}: alpaca dataset needs columns.prompt or columns.query")
        _require_column(rows, column, "columns.prompt" if columns["prompt"] else "columns.query", where)
        for row_where, row in rows:
            if not check.ok(row, row_where):
                continue
            task = row_task(row, options.task_column, row_where)
            texts = _alpaca_turns(row, columns, row_where, options.all_turns)
            add_turns(raw, task, texts, row_where, options.all_turns)

    @staticmethod
    def _read_conversations(
        rows: list[Row],
        columns: dict[str, Any],
        conv_tags: ConversationTags,
        ranking: bool,
        options: ReadOptions,
        where: str,
        raw: RawSeeds,
        check: _RowValidation,
    ) -> None:
        column = columns["messages"]
        if not column:
            raise InstrAugError(f"{where}: columns.messages is not set")
        _require_column(rows, column, "columns.messages", where)
        for row_where, row in rows:
            task = row_task(row, options.task_column, row_where)
            texts = user_turns(row.get(column), conv_tags, where=row_where, column=column)
            if not check.ok(row, row_where):
                continue
            if not llamafactory_accepts(row[column], conv_tags, ranking):
                raw.skipped_rows += 1
                continue
            add_turns(raw, task, texts, row_where, options.all_turns)


def add_turns(raw: RawSeeds, task: str, texts: list[str], where: str, all_turns: bool) -> None:
    """Add the first non-empty text (or all of them), counting a row without any as skipped."""
    texts = [t for t in texts if t.strip()]
    if not texts:
        raw.skipped_rows += 1
    for text in texts if all_turns else texts[:1]:
        raw.add(task, text, where)
