"""Row checks shared by `pregen`, `build` and the training hook: rows LLaMA-Factory cannot train on.

A row is invalid when it has no user turn with text, when (in a dataset with media columns) a media
placeholder count differs from its media list (LLaMA-Factory's `mm_plugin` counts `<image>`/`<video>`/`<audio>` over all messages
and fails the whole training on the first mismatch), or when a local media file does not exist.
By default an invalid row is a one-line error naming the file and row; with `skip_invalid` it is
dropped and counted by kind. Torch-free.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instraug_plugin.core.errors import InstrAugError

NO_USER_TURN = "no_user_turn"
MEDIA_COUNT = "media_count"
MISSING_MEDIA = "missing_media"
# a row LLaMA-Factory's converter skips at training time ("Skipping this abnormal example": roles out of turn,
# a message count of the wrong parity); never an error, always left out and counted
ABNORMAL = "abnormal"
PROBLEM_KINDS = (NO_USER_TURN, MEDIA_COUNT, MISSING_MEDIA, ABNORMAL)
MEDIA_KINDS = ("images", "videos", "audios")
# LLaMA-Factory's placeholders and the environment variables that override them (extras/constants.py).
_PLACEHOLDER_ENV = {"images": ("IMAGE_PLACEHOLDER", "<image>"), "videos": ("VIDEO_PLACEHOLDER", "<video>"),
                    "audios": ("AUDIO_PLACEHOLDER", "<audio>")}
_REMOTE = ("http://", "https://", "data:", "s3://", "gs://")


def media_placeholders() -> dict[str, str]:
    """Placeholder per media kind, as LLaMA-Factory reads them (environment overrides included)."""
    return {kind: os.environ.get(env, default) for kind, (env, default) in _PLACEHOLDER_ENV.items()}


def media_list(value: Any) -> list[Any]:
    """A row's media column as LLaMA-Factory sees it: None/[] → [], a single value → [value]."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _local_paths(item: Any) -> list[str]:
    """Local file paths in one media item (a path, or a video given as a list of frame paths)."""
    items = item if isinstance(item, list) else [item]
    return [p for p in items if isinstance(p, str) and not p.startswith(_REMOTE)]


def row_problem(user_texts: Iterable[str], texts: Iterable[str], media: dict[str, Any],
                media_root: Path | None) -> tuple[str, str] | None:
    """(kind, description) of the first problem of a row, or None when LLaMA-Factory can train on it.

    `user_texts`: the row's user turns; `texts`: every message text (placeholders are counted over
    all of them); `media`: media kind → the row's column value for the kinds the dataset maps (none
    mapped: a text dataset, where `<image>` is plain text and counts are not checked); `media_root`:
    where relative media paths start (LLaMA-Factory's `media_dir`), or None to skip the file check.
    """
    if not any(isinstance(text, str) and text.strip() for text in user_texts):
        return NO_USER_TURN, "no user turn with text"
    texts = [t for t in texts if isinstance(t, str)]
    for kind, placeholder in (media_placeholders().items() if media else ()):
        items = media_list(media.get(kind))
        tokens = sum(text.count(placeholder) for text in texts)
        if tokens != len(items):
            return MEDIA_COUNT, f"{tokens} {placeholder} placeholder(s) but {len(items)} {kind}"
    if media_root is not None:
        for kind in MEDIA_KINDS:
            for item in media_list(media.get(kind)):
                for path in _local_paths(item):
                    full = Path(path) if os.path.isabs(path) else media_root / path
                    if not full.is_file():
                        return MISSING_MEDIA, f"{kind[:-1]} file not found: {full}"
    return None


@dataclass
class RowChecker:
    """Applies `row_problem` row by row: raises on the first invalid row, or skips and counts it."""

    skip_invalid: bool = False
    hint: str = "--skip-invalid"
    skipped: Counter[str] = field(default_factory=Counter)

    def ok(self, where: str, problem: tuple[str, str] | None) -> bool:
        """True for a valid row; False for an invalid one when skipping; InstrAugError otherwise."""
        if problem is None:
            return True
        if not self.skip_invalid:
            raise InstrAugError(f"{where}: {problem[1]} (fix the row, or pass {self.hint} to skip invalid rows)")
        self.skipped[problem[0]] += 1
        return False

    def drop(self, kind: str) -> None:
        """Count a row that is left out whatever `skip_invalid` says (LLaMA-Factory skips it too)."""
        self.skipped[kind] += 1

    @property
    def total(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        """E.g. "skipped 3 invalid row(s): 2 no_user_turn, 1 media_count"; "" when none was skipped."""
        if not self.total:
            return ""
        kinds = ", ".join(f"{self.skipped[k]} {k}" for k in PROBLEM_KINDS if self.skipped[k])
        return f"skipped {self.total} invalid row(s): {kinds}"
