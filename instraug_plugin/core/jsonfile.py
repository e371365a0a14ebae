"""Reading JSON files with one-line errors that name the file (torch-free)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from instraug_plugin.core.errors import InstrAugError


class DuplicateKeyError(ValueError):
    """A JSON object or YAML mapping gives the same key twice."""

    def __init__(self, key: object):
        super().__init__(f"the key {key!r} is given twice")
        self.key = key


def unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook` that refuses a key given twice (json keeps the last one silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(key)
        out[key] = value
    return out


def loads_json(text: str) -> Any:
    """`json.loads` that refuses duplicate keys (DuplicateKeyError) and the non-standard NaN/Infinity tokens."""
    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    return json.loads(text, object_pairs_hook=unique_object, parse_constant=no_constant)


def read_json(path: Path) -> Any:
    """Parse a JSON file; InstrAugError naming it if it is missing, not UTF-8, not strict JSON or gives a
    key twice."""
    if not path.is_file():
        raise InstrAugError(f"file not found: {path}")
    try:
        return loads_json(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InstrAugError(f"{path}: not a UTF-8 text file") from None
    except json.JSONDecodeError as exc:
        raise InstrAugError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:  # DuplicateKeyError, NaN/Infinity
        raise InstrAugError(f"{path}: {exc}") from None


def read_json_object(path: Path) -> dict[str, Any]:
    """`read_json` for files that must hold a JSON object."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise InstrAugError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
