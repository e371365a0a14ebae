"""The protocol every rewriter backend implements, and the request it receives.

Torch-free: backends that need torch import it in their own module. A backend turns a batch of
chat requests into reply strings, one per request, in order: `core.replies.Reply` strings when it can
tell why generation stopped (a reply cut off by the token budget is counted as `truncated`).
Batching, devices and quantization are the backend's business; caching and resume are the
pipeline's (see `core.cache`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from instraug_plugin.core.constraint import PlaceholderConstraint


@dataclass(frozen=True)
class GenerationRequest:
    """One sampled completion of a chat prompt.

    `required_spans` lists strings (placeholder sentinels) that a backend supporting constrained
    decoding must emit exactly once each before the end of the reply; empty means unconstrained.
    `single_line` asks for a one-line reply: a backend that can, ends the reply where the model
    would start a new line. `sample_index` distinguishes repeated samples of the same prompt.
    """

    messages: tuple[tuple[str, str], ...]
    temperature: float
    top_p: float = 0.9
    max_new_tokens: int = 64
    sample_index: int = 0
    required_spans: tuple[str, ...] = ()
    single_line: bool = False

    def cache_key(self, model_id: str) -> str:
        """Content address: model + prompt + sampling parameters + sample index."""
        payload = json.dumps(
            [model_id, self.messages, self.temperature, self.top_p, self.max_new_tokens,
             self.sample_index, self.required_spans, self.single_line],
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def sampling_seed(self, model_id: str, bits: int = 63) -> int:
        """A `bits`-bit sampling seed read from the cache key, for engines that seed each request."""
        return int(self.cache_key(model_id)[:16], 16) >> (64 - bits)

    @property
    def constraint(self) -> PlaceholderConstraint | None:
        """What constrained decoding must enforce (every engine derives its form from it), or None."""
        if not (self.required_spans or self.single_line):
            return None
        return PlaceholderConstraint(self.required_spans, self.single_line)


@runtime_checkable
class RewriterBackend(Protocol):
    """A rewriter LLM. `model_id` names the weights (it is part of every cache key)."""

    name: str
    model_id: str
    supports_constraints: bool

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """One reply per request, in order (`Reply` strings where the backend can tell a reply cut
        off by `max_new_tokens`). May raise; the caller decides on fallback."""
        ...

    def close(self) -> None:
        """Release the model (and accelerator memory)."""
        ...


def generate_batches(
    backend: RewriterBackend, batches: Sequence[Sequence[GenerationRequest]]
) -> Iterator[tuple[int, list[str]]]:
    """Yield `(batch index, replies)` as batches finish, in any order.

    A backend that fans batches out to replicas (the Ray executor) provides its own
    `generate_batches`; any other backend generates them one after the other.
    """
    fan_out = getattr(backend, "generate_batches", None)
    if fan_out is not None:
        yield from fan_out(batches)
        return
    for index, batch in enumerate(batches):
        yield index, backend.generate(batch)
