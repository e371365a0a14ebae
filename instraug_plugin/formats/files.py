"""Dataset files: the rows of a local JSON / JSON-lines file (or of every file in a folder), labelled for errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from instraug_plugin.core.errors import InstrAugError

DATA_SUFFIXES = (".json", ".jsonl")
Row = tuple[str, dict[str, Any]]  # ("file:row i", the row)


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
