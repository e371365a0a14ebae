"""The placeholder constraint of constrained decoding: every owed sentinel exactly once, then end.

One specification, torch-free, from which every engine's form is derived, so they accept exactly
the same replies:

* `advance` / `accepts`: the state machine over characters; the transformers decoder's logits
  processor (`backends.constraints`) steps it with the text of each sampled token;
* `to_regex`: a regular expression for engines that take one (vLLM structured outputs, offline or
  served through the openai backend);
* `to_gbnf`: a llama.cpp grammar.

The language: free text, each owed sentinel (`{A}`, `{B}`, …) exactly once, free text, then end.
Free text never holds a brace (a `{` only opens an owed sentinel) and, for a single-line reply, no
newline. Up to `MAX_PERMUTED` sentinels may come in any order (the regex lists every order: 5! = 120
branches); with more, they must keep the seed's order (still safe by construction, a little less
free) in every derivation alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import permutations

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.placeholders import SENTINEL_LETTERS

MAX_PERMUTED = 5
OPEN, CLOSE = "{", "}"

# Phases of the state machine: in free text, just after an opening brace, after a sentinel's letter.
FREE, OPENED, LETTERED = "free", "opened", "lettered"


@dataclass(frozen=True)
class ConstraintState:
    """Where a reply stands: its phase and the sentinels it still owes (in seed order)."""

    phase: str
    owed: tuple[str, ...]


@dataclass(frozen=True)
class PlaceholderConstraint:
    """Each of `sentinels` exactly once, in any order up to `MAX_PERMUTED` of them (else in this
    order), around free text without braces (and without newlines when `single_line`), then end."""

    sentinels: tuple[str, ...]
    single_line: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "sentinels", tuple(self.sentinels))
        for sentinel in self.sentinels:
            if len(sentinel) != 3 or sentinel[0] != OPEN or sentinel[2] != CLOSE or sentinel[1] not in SENTINEL_LETTERS:
                raise InstrAugError(f"constraint sentinel {sentinel!r} is not one of {{A}}…{{Z}}")
        if len(set(self.sentinels)) != len(self.sentinels):
            raise InstrAugError(f"constraint sentinels {', '.join(self.sentinels)} repeat one; each is owed once")

    @property
    def forbidden(self) -> str:
        """Characters free text may not contain."""
        return OPEN + CLOSE + ("\n" if self.single_line else "")

    @property
    def any_order(self) -> bool:
        """Whether the sentinels may come in any order (else in the seed's)."""
        return len(self.sentinels) <= MAX_PERMUTED

    def start(self) -> ConstraintState:
        return ConstraintState(FREE, self.sentinels)

    def next_sentinels(self, owed: tuple[str, ...]) -> tuple[str, ...]:
        """Of the sentinels still `owed`, those that may be placed next."""
        return owed if self.any_order else owed[:1]

    def may_end(self, state: ConstraintState) -> bool:
        """Whether the reply may end here: in free text, nothing owed."""
        return state.phase == FREE and not state.owed

    def advance(self, state: ConstraintState, text: str) -> ConstraintState | None:
        """The state after `text`, or None when the constraint forbids it."""
        phase, owed, forbidden = state.phase, state.owed, self.forbidden
        for char in text:
            if phase == FREE:
                if char == OPEN and owed:
                    phase = OPENED
                elif char in forbidden:
                    return None
            elif phase == OPENED:
                sentinel = OPEN + char + CLOSE
                if sentinel not in self.next_sentinels(owed):
                    return None
                phase, owed = LETTERED, tuple(s for s in owed if s != sentinel)
            elif char == CLOSE:
                phase = FREE
            else:
                return None
        return ConstraintState(phase, owed)

    def accepts(self, text: str) -> bool:
        """Whether `text` is a whole reply the constraint allows."""
        state = self.advance(self.start(), text)
        return state is not None and self.may_end(state)

    def to_regex(self) -> str:
        """The whole-reply regular expression (Python `re` syntax, as vLLM structured outputs take it)."""
        free = self._free_class() + "*"
        if not self.sentinels:
            return free
        orders = permutations(self.sentinels) if self.any_order else [self.sentinels]
        branches = [free + free.join(re.escape(s) for s in order) + free for order in orders]
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    def to_gbnf(self) -> str:
        """The whole-reply llama.cpp grammar (rule `root`).

        In any order, rule `owed-XY…` places one of the sentinels X, Y, … and then the others: one
        rule per subset still owed (at most 2^5 - 1) instead of an alternative per order (5!).
        """
        rules: dict[str, str] = {}
        if self.any_order:
            rules["root"] = "free" + (f" {_owed_rule(self.sentinels)}" if self.sentinels else "")
            _add_owed_rules(self.sentinels, rules)
        else:
            rules["root"] = "free" + "".join(f" {json.dumps(s)} free" for s in self.sentinels)
        rules["free"] = self._free_class() + "*"
        return "".join(f"{name} ::= {body}\n" for name, body in rules.items())

    def _free_class(self) -> str:
        """A character of free text, as a class both regex and GBNF read alike."""
        return "[^" + self.forbidden.replace("\n", r"\n") + "]"


def _owed_rule(owed: Sequence[str]) -> str:
    """The name of the grammar rule that places the sentinels `owed`, in any order."""
    return "owed-" + "".join(s[1] for s in owed)


def _add_owed_rules(owed: tuple[str, ...], rules: dict[str, str]) -> None:
    """Add the rule placing `owed` in any order, and those it refers to, unless already there."""
    if not owed or _owed_rule(owed) in rules:
        return
    rests = [(sentinel, tuple(s for s in owed if s != sentinel)) for sentinel in owed]
    rules[_owed_rule(owed)] = " | ".join(
        f"{json.dumps(sentinel)} free" + (f" {_owed_rule(rest)}" if rest else "") for sentinel, rest in rests
    )
    for _, rest in rests:
        _add_owed_rules(rest, rules)
