"""Content-addressed generation cache: an append-only JSONL file of {key, text, finish_reason}.

Keys come from `GenerationRequest.cache_key` (model + prompt + sampling params + sample index), so a
killed `pregen` run restarts without redoing or duplicating work. A line cut short by a kill is
ignored on load. A reply stored without `finish_reason` (a backend that cannot tell, or an older
cache) reads back as stopped (`core.replies`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from instraug_plugin.core.replies import STOP, Reply


class GenerationCache:
    """Replies by content key; `put_many` appends and flushes to disk before returning."""

    def __init__(self, path: Path):
        self.path = path
        self._replies: dict[str, Reply] = {}
        self._cut_line = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
        if path.is_file():
            with path.open(encoding="utf-8") as fh:
                for line in fh:
                    try:
                        row = json.loads(line)
                        self._replies[row["key"]] = Reply(row["text"], row.get("finish_reason", STOP))
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a partial last line from an interrupted run

    def __contains__(self, key: str) -> bool:
        return key in self._replies

    def __len__(self) -> int:
        return len(self._replies)

    def get(self, key: str) -> Reply | None:
        return self._replies.get(key)

    def put_many(self, items: Iterable[tuple[str, str]]) -> None:
        rows = [(k, t) for k, t in items if k not in self._replies]
        if not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            if self._cut_line:  # end the partial line so the next record starts on its own line
                fh.write("\n")
                self._cut_line = False
            fh.write("".join(json.dumps(_row(k, t), ensure_ascii=False) + "\n" for k, t in rows))
            fh.flush()
            os.fsync(fh.fileno())
        self._replies.update((k, t if isinstance(t, Reply) else Reply(t)) for k, t in rows)


def _row(key: str, text: str) -> dict[str, str]:
    """The cache line of one reply; `finish_reason` only when the backend told it."""
    return {"key": key, "text": text} | ({"finish_reason": text.finish_reason} if isinstance(text, Reply) else {})
