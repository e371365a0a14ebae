"""Remember how LLaMA-Factory's mm_plugin expands each sample's media placeholders.

Lazy per-epoch tokenization calls `mm_plugin.process_messages` for every sample every epoch, and
most plugins run the image processor there only to learn how many tokens each `<image>` becomes.
That expansion depends on the media, never on the instruction wording, and a rewrite never touches
a placeholder. So the expansion of each placeholder is learned from the plugin's own output, once
per sample's media, and later calls (every epoch, any wording) splice the same strings in. The hook
learns them all before training (`prime`, a `datasets.map` over LLaMA-Factory's preprocessing
workers, like its own tokenization pass); a sample it could not learn there is learned on its first
call. A plugin output that does not split unambiguously into "the input with each placeholder
replaced" (a plugin that edits text elsewhere, adjacent placeholders, media that are not paths) is
never cached: those samples keep going through the plugin.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

PLACEHOLDERS = {"image": "<image>", "video": "<video>", "audio": "<audio>"}
Expansions = tuple[tuple[str, str], ...]  # (placeholder, what the plugin made of it), in order
_UNCACHEABLE: Expansions = ()


class MediaExpansionCache:
    """Wraps `plugin.process_messages` (instance attribute) with per-media memoization."""

    def __init__(self, plugin: Any, placeholders: dict[str, str] | None = None):
        self.plugin = plugin
        self.original = plugin.process_messages
        self._split = re.compile("(" + "|".join(map(re.escape, (placeholders or PLACEHOLDERS).values())) + ")")
        self._expansions: dict[bytes, Expansions] = {}
        self._interned: dict[str, str] = {}
        self.hits = 0
        self.misses = 0

    @classmethod
    def install(cls, plugin: Any, placeholders: dict[str, str] | None = None) -> MediaExpansionCache:
        """Wrap `plugin.process_messages` once; returns the cache in place."""
        current = getattr(plugin.process_messages, "__self__", None)
        if isinstance(current, cls):
            return current
        cache = cls(plugin, placeholders)
        plugin.process_messages = cache.process_messages
        return cache

    def prime(self, dataset: Any, processor: Any, num_proc: int | None, load_from_cache_file: bool) -> int:
        """Learn every row's media expansion before training; returns how many rows were learned.

        Runs the plugin once per row of the aligned `dataset` (columns `_prompt`, `_response`,
        `_images`, `_videos`, `_audios`) in `num_proc` processes with `datasets.map`, as
        LLaMA-Factory's own preprocessing does, so the first epoch is as cheap as the later ones and
        DataLoader workers, forked after this, start with every expansion.
        """
        if not any(getattr(self.plugin, f"{kind}_token", None) for kind in PLACEHOLDERS):
            return 0  # a text-only template: nothing to expand
        columns = ["_prompt", "_response", "_images", "_videos", "_audios"]
        learned = dataset.select_columns(columns).map(
            self._learn_rows, fn_kwargs={"processor": processor}, batched=True, num_proc=num_proc,
            remove_columns=columns, load_from_cache_file=load_from_cache_file,
            desc="instraug: learning media expansions",
        )
        primed = 0
        for batch in learned.iter(batch_size=1000):
            for key, flat in zip(batch["key"], batch["expansions"]):
                if key is not None and flat and key not in self._expansions:
                    self._remember(key, list(zip(flat[0::2], flat[1::2])))
                    primed += 1
        return primed

    def _learn_rows(self, batch: dict[str, list[Any]], processor: Any) -> dict[str, list[Any]]:
        """`datasets.map` body: (media key, flattened expansions or None) per row."""
        keys, flats = [], []
        for prompt, response, images, videos, audios in zip(
            batch["_prompt"], batch["_response"], batch["_images"], batch["_videos"], batch["_audios"]
        ):
            messages = prompt + response
            key = _media_key(images, videos, audios) if images or videos or audios else None
            expansions = None
            if key is not None:
                expansions = self._learn(messages, self.original(messages, images or [], videos or [], audios or [], processor))
            keys.append(key)
            flats.append([text for pair in expansions for text in pair] if expansions else None)
        return {"key": keys, "expansions": flats}

    def process_messages(self, messages: list[dict[str, str]], images: list[Any], videos: list[Any],
                         audios: list[Any], processor: Any) -> list[dict[str, str]]:
        key = _media_key(images, videos, audios)
        learned = self._expansions.get(key) if key is not None else _UNCACHEABLE
        if learned:
            spliced = self._splice(messages, learned)
            if spliced is not None:
                self.hits += 1
                return spliced
        out = self.original(messages, images, videos, audios, processor)
        self.misses += 1
        if key is not None and learned is None:
            self._remember(key, self._learn(messages, out))
        return out

    def _remember(self, key: bytes, expansions: list[tuple[str, str]] | None) -> None:
        """Keep a media key's expansions (each distinct string once); none learned: never cached."""
        self._expansions[key] = (
            tuple((p, self._interned.setdefault(text, text)) for p, text in expansions) if expansions else _UNCACHEABLE
        )

    def _learn(self, before: list[dict[str, str]], after: list[dict[str, str]]) -> list[tuple[str, str]] | None:
        """Each placeholder's expansion, in order of appearance; None when the output is not that shape."""
        if len(before) != len(after) or any(b.keys() != a.keys() or b.get("role") != a.get("role")
                                            for b, a in zip(before, after)):
            return None
        expansions: list[tuple[str, str]] = []
        for b, a in zip(before, after):
            parts = self._split.split(b["content"])
            texts = parts[0::2]
            if len(texts) == 1:
                if a["content"] != b["content"]:
                    return None
                continue
            if any(not t for t in texts[1:-1]):  # adjacent placeholders: the boundary is ambiguous
                return None
            groups = [_match(texts, a["content"], lazy) for lazy in (True, False)]
            if groups[0] is None or groups[0] != groups[1]:  # no match, or more than one split
                return None
            expansions += list(zip(parts[1::2], groups[0]))
        return expansions

    def _splice(self, messages: list[dict[str, str]], learned: Expansions) -> list[dict[str, str]] | None:
        """`messages` with the learned expansions put in; None if the placeholders do not line up."""
        queues: dict[str, list[str]] = {}
        for placeholder, text in learned:
            queues.setdefault(placeholder, []).append(text)
        used = dict.fromkeys(queues, 0)
        out = []
        for message in messages:
            parts = self._split.split(message["content"])
            for i in range(1, len(parts), 2):
                placeholder = parts[i]
                if used.get(placeholder, 0) >= len(queues.get(placeholder, ())):
                    return None
                parts[i] = queues[placeholder][used[placeholder]]
                used[placeholder] += 1
            out.append({**message, "content": "".join(parts)})
        return out if all(used[p] == len(q) for p, q in queues.items()) else None


def _match(texts: list[str], content: str, lazy: bool) -> list[str] | None:
    """The strings between `texts` when `content` is texts[0] X texts[1] Y ... texts[-1]."""
    group = "(.*?)" if lazy else "(.*)"
    match = re.fullmatch(group.join(map(re.escape, texts)), content, flags=re.DOTALL)
    return list(match.groups()) if match else None


def _media_key(images: list[Any], videos: list[Any], audios: list[Any]) -> bytes | None:
    """A digest of the sample's media when they are all paths (or URLs); None otherwise."""
    media = (images or [], videos or [], audios or [])
    if not all(isinstance(item, str) for group in media for item in group):
        return None
    return hashlib.blake2b(repr(media).encode(), digest_size=16).digest()
