"""A tokenizer view for the lazy training path that remembers recently encoded strings.

LLaMA-Factory's templates encode each message piece separately (`tokenizer.encode(piece,
add_special_tokens=False)`), so re-tokenizing a sample every epoch encodes the template's system
prompt again for every sample, and the short answers that recur across rows ("Yes.", "2", option
letters) again and again. A small LRU cache keyed by the exact string returns those ids without
the tokenizer; encoding is a pure function of the string, so the ids are the same. The cache is
small on purpose: only strings that recur within a few dozen encodes stay in it (a row's own
question and answer, seen once an epoch, do not), so its memory stays bounded on any dataset.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

DEFAULT_SIZE = 64


class EncodeCache:
    """Delegates everything to `tokenizer`; `encode(text[, add_special_tokens=...])` is memoized."""

    def __init__(self, tokenizer: Any, maxsize: int = DEFAULT_SIZE):
        self.tokenizer = tokenizer
        self.maxsize = maxsize
        self._cached = functools.lru_cache(maxsize)(self._encode)

    def _encode(self, text: str, add_special_tokens: bool) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def encode(self, text: Any, *args: Any, **kwargs: Any) -> list[int]:
        if args or not isinstance(text, str) or kwargs.keys() - {"add_special_tokens"}:
            return self.tokenizer.encode(text, *args, **kwargs)
        return list(self._cached(text, kwargs.get("add_special_tokens", True)))

    def cache_info(self) -> Any:
        return self._cached.cache_info()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.tokenizer(*args, **kwargs)

    def __len__(self) -> int:
        return len(self.tokenizer)

    def __getattr__(self, name: str) -> Any:
        if name in ("tokenizer", "maxsize", "_cached"):  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.tokenizer, name)

    def __reduce__(self) -> tuple[Any, ...]:
        return (EncodeCache, (self.tokenizer, self.maxsize))


def with_encode_cache(processor: Any, maxsize: int = DEFAULT_SIZE) -> Any:
    """A shallow copy of a LLaMA-Factory dataset processor whose tokenizer is an `EncodeCache`."""
    cached = copy.copy(processor)
    cached.tokenizer = EncodeCache(processor.tokenizer, maxsize)
    return cached
