"""Reading JSON files with one-line errors that name the file (torch-free)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from instraug_plugin.core.errors import InstrAugError


def read_json(path: Path) -> Any:
    """Parse a JSON file; InstrAugError naming it if it is missing, not UTF-8 or not JSON."""
    if not path.is_file():
        raise InstrAugError(f"file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InstrAugError(f"{path}: not a UTF-8 text file") from None
    except json.JSONDecodeError as exc:
        raise InstrAugError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


def read_json_object(path: Path) -> dict[str, Any]:
    """`read_json` for files that must hold a JSON object."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise InstrAugError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
