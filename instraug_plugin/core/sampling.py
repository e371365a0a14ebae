"""Deterministic epsilon sampling of instruction wording, keyed by (seed, epoch, index, turn).

Torch-free and process-independent: the draw is a stable hash (BLAKE2b) of the key, never Python's
salted `hash()` or a shared RNG, so reruns, DataLoader workers and ranks all agree. With
probability epsilon a sample keeps its original wording; otherwise one of the pool's paraphrases
of that instruction is drawn uniformly. Only instruction text changes: a paraphrase whose
protected spans (placeholders, media tokens) differ from the original is never used.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.placeholders import DEFAULT_SPEC, MEDIA_TOKENS, PlaceholderSpec
from instraug_plugin.core.pool import Pool

_MEMO_LIMIT = 100_000
Decision = Literal["rewritten", "original", "no_entry"]
_MEDIA = "|".join(re.escape(token) for token in MEDIA_TOKENS)
_EDGE_RE = re.compile(rf"^((?:\s*(?:{_MEDIA}))*\s*)(.*?)(\s*(?:(?:{_MEDIA})\s*)*)$", re.DOTALL)


def split_edge_media(text: str) -> tuple[str, str, str]:
    """(leading media tokens + whitespace, core text, trailing media tokens + whitespace)."""
    match = _EDGE_RE.match(text)
    assert match is not None  # the pattern matches any string
    return match.group(1), match.group(2), match.group(3)


def unit_draw(seed: int, epoch: int, index: int, turn: int = 0) -> float:
    """A uniform number in [0, 1) that depends only on its arguments."""
    digest = hashlib.blake2b(struct.pack("<qqqq", seed, epoch, index, turn), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def choose(seed: int, epoch: int, index: int, turn: int, n_variants: int, epsilon: float) -> int | None:
    """Index of the paraphrase to use, or None to keep the original (probability epsilon)."""
    if n_variants == 0:
        return None
    u = unit_draw(seed, epoch, index, turn)
    if u < epsilon:
        return None
    return min(int((u - epsilon) / (1.0 - epsilon) * n_variants), n_variants - 1)


class Match(NamedTuple):
    """Where a pool entry matched a text: prefix + paraphrase + suffix rewrites it; `seed` is the matched part."""

    prefix: str
    suffix: str
    variants: Sequence[str]
    seed: str


NO_MATCH = Match("", "", (), "")


@dataclass
class InstructionRewriter:
    """Rewrites one instruction from a pool; cheap enough for the per-sample training hot path.

    Lookup tries the whole text first, then the text without leading/trailing media tokens (LLaVA
    data puts `<image>\\n` before the question; pools may store the bare question), re-attaching
    the media tokens unchanged. Failing both, it tries the longest leading part of the text (after
    any leading media tokens, or with them) that ends just before a line break and has pool entries:
    LLaMA-Factory joins an alpaca row's instruction and `input` as `instruction + "\\n" + input`,
    and only the instruction is rewritten; the rest is kept verbatim. Then the trailing part after a
    line break (context first, instruction last: "Scene: ...\nWhat is the first shape?"), longest
    first. At most four lookups per line break.

    `epsilon` is the probability of the original wording; `task_epsilon` overrides it per task (the row's
    task, else the pool task of the matched seed when only one task has it): a plan file, a
    `{task: value}` map, or the online loop's shared values, read at every draw.
    """

    pool: Pool
    epsilon: float
    seed: int
    spec: PlaceholderSpec = DEFAULT_SPEC
    task_epsilon: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._safe: dict[tuple[str, str], bool] = {}

    def candidates(self, text: str, task: str | None) -> Match:
        """The pool entry that rewrites `text` (see the class docstring), or NO_MATCH."""
        variants = self.pool.variants(text, task)
        if variants:
            return Match("", "", variants, text)
        prefix, core, suffix = split_edge_media(text)
        if prefix or suffix:
            variants = self.pool.variants(core, task)
            if variants:
                return Match(prefix, suffix, variants, core)
        start = len(prefix)
        end = text.rfind("\n", start)
        while end > start:
            if prefix:  # the pool may hold the instruction with its leading media tokens
                variants = self.pool.variants(text[:end], task)
                if variants:
                    return Match("", text[end:], variants, text[:end])
            variants = self.pool.variants(text[start:end], task)
            if variants:
                return Match(prefix, text[end:], variants, text[start:end])
            end = text.rfind("\n", start, end)
        stop = len(text) - len(suffix)
        begin = text.find("\n", start, stop)
        while 0 <= begin < stop:
            variants = self.pool.variants(text[begin + 1:stop], task)
            if variants:
                return Match(text[:begin + 1], suffix, variants, text[begin + 1:stop])
            begin = text.find("\n", begin + 1, stop)
        return NO_MATCH

    def epsilon_for(self, task: str | None, seed: str) -> float:
        """The probability of keeping the original wording for an instruction of `task` matched at `seed`."""
        if not self.task_epsilon:
            return self.epsilon
        if task is None:
            task = self.pool.task_of(seed)
        value = self.task_epsilon.get(task) if task is not None else None
        return self.epsilon if value is None else value

    def rewrite(self, text: str, *, task: str | None, epoch: int, index: int, turn: int = 0) -> tuple[str, Decision]:
        """The wording to train on for this (epoch, sample, turn), and what was decided."""
        prefix, suffix, variants, seed = self.candidates(text, task)
        if not variants:
            return text, "no_entry"
        pick = choose(self.seed, epoch, index, turn, len(variants), self.epsilon_for(task, seed))
        if pick is None:
            return text, "original"
        new = prefix + variants[pick] + suffix
        key = (text, new)
        safe = self._safe.get(key)
        if safe is None:
            if len(self._safe) >= _MEMO_LIMIT:
                self._safe.clear()
            safe = self._safe[key] = self.spec.same_placeholders(text, new)
        return (new, "rewritten") if safe else (text, "original")


def rewrite_messages(
    rewriter: InstructionRewriter,
    messages: list[dict[str, Any]],
    *,
    task: str | None,
    epoch: int,
    index: int,
    all_turns: bool,
    role: str = "role",
    content: str = "content",
    user: str = "user",
) -> tuple[list[dict[str, Any]], Decision]:
    """Rewrite the first (or every) user turn of a message list; the decision is for the whole sample.

    `turn` is the message's position in the list. Used by the training hook (LLaMA-Factory's aligned
    `_prompt`: role/content/user) and by `build` (the dataset's own tags). Other messages and keys
    are kept; a rewritten message is a new dict, the input is not modified.
    """
    out = list(messages)
    decisions: list[Decision] = []
    for turn, message in enumerate(messages):
        if not isinstance(message, dict) or message.get(role) != user:
            continue
        text = message.get(content)
        if not isinstance(text, str):
            raise InstrAugError(f"message {turn}: {content!r} is not a string")
        new, decision = rewriter.rewrite(text, task=task, epoch=epoch, index=index, turn=turn)
        decisions.append(decision)
        if decision == "rewritten":
            out[turn] = {**message, content: new}
        if not all_turns:
            break
    if "rewritten" in decisions:
        return out, "rewritten"
    return out, "original" if "original" in decisions else "no_entry"
