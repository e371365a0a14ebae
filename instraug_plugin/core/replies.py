"""A rewriter's reply: its text, and why generation stopped.

Backends return `Reply` strings, so a reply cut off by the token budget (`finish_reason` `length`,
as vLLM and OpenAI-compatible servers call it) can be told from one the model ended (`stop`). A
`Reply` is a `str`: code that only wants the text uses it as one. A plain `str` (a backend that
cannot tell) counts as stopped.
"""

from __future__ import annotations

STOP = "stop"
LENGTH = "length"


class Reply(str):
    """Reply text carrying `finish_reason`: `stop` (the model ended it) or `length` (the budget did)."""

    finish_reason: str

    def __new__(cls, text: str, finish_reason: str = STOP) -> Reply:
        reply = super().__new__(cls, text)
        reply.finish_reason = finish_reason
        return reply


def is_truncated(reply: str) -> bool:
    """Whether `reply` was cut off by the token budget."""
    return isinstance(reply, Reply) and reply.finish_reason == LENGTH
