"""User-facing errors: one line, naming the file, task, key or row at fault; secrets in URLs redacted."""

from __future__ import annotations

import re
from collections.abc import Sequence

# `scheme://userinfo@` (a user name can be a token too) and secret-looking query parameters.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
_QUERY_SECRET = re.compile(
    r"(?i)([?&](?:api[_-]?key|key|token|access[_-]?token|secret|password|passwd|sig|signature)=)[^&#\s'\"]+"
)


class InstrAugError(Exception):
    """An error caused by user input; the CLI prints it as one line without a traceback."""


def redact(text: str) -> str:
    """`text` with URL credentials (`user:pass@`) and secret query parameters replaced by `***`."""
    return _QUERY_SECRET.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when the message is empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe(exc: BaseException) -> str:
    """`Type: first line of the message` (just `Type` when the message is empty), for one-line reports."""
    line = first_line(exc)
    return line if line == type(exc).__name__ else f"{type(exc).__name__}: {line}"


def one_line(text: str) -> str:
    """`text` with its whitespace (line breaks included) collapsed: a message fit for one stderr line."""
    return " ".join(text.split())


def brief(names: Sequence[str], limit: int = 8) -> str:
    """A short comma-separated listing of `names` for a message, e.g. "a, b, c, ... (+12 more)"."""
    shown = ", ".join(names[:limit])
    return f"{shown}, ... (+{len(names) - limit} more)" if len(names) > limit else shown
