"""Locate files shipped with the package (meta-prompt templates, bundled data)."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def templates_dir() -> Path:
    """`templates/` of a source checkout, or the copy packaged inside the wheel."""
    for candidate in (_PACKAGE_DIR.parent / "templates", _PACKAGE_DIR / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("instraug-plugin templates/ directory not found; reinstall the package")


def bundled_templates_file() -> Path:
    """The bundled MultiInstruct instruction templates (`templates/multiinstruct_templates.json`)."""
    return templates_dir() / "multiinstruct_templates.json"
