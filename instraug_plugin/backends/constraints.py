"""Constrained decoding that emits every placeholder sentinel exactly once before the end.

A transformers LogitsProcessor that steps each row's `core.constraint.PlaceholderConstraint` (the
specification the vLLM regex and the llama.cpp grammar are derived from too) with the text of every
sampled token, and allows only the tokens the constraint accepts next:

* in free text: no token holding a character free text may not contain (a brace; a newline on a
  single-line row), except a bare "open" token (`{` or ` {`) while some sentinel is still owed;
  end-of-sequence is banned while any is owed and its probability moves to the open token (a reply
  that wants to end places its placeholder instead of rambling on); when the remaining budget of new
  tokens only just fits the owed sentinels, the open token is forced;
* after the open token: only the letter of a sentinel that may come next;
* after the letter: only `}`.

So every finished reply contains each owed sentinel exactly once, wherever the model chose to put
it: placeholder safety by construction instead of generate-then-filter. Single-line rows cannot
start a new line: the probability of a newline goes to end-of-sequence (or, while a placeholder is
owed, to the open token), so the reply ends where the model would have started commentary. Rows
without a constraint (None) are left alone.

The processor runs before temperature and top-p (transformers applies custom processors first), so
banned tokens are never sampled and allowed ones keep their relative probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from instraug_plugin.core.constraint import FREE, OPENED, ConstraintState, PlaceholderConstraint
from instraug_plugin.core.placeholders import SENTINEL_LETTERS

TOKENS_PER_SENTINEL = 3


class SentinelVocabulary:
    """Token texts and the token ids the processor needs, computed once per tokenizer."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.texts: list[str] = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        texts = self.texts
        # " {" first: the wish to end a reply that still owes a placeholder goes to this token.
        self.open_ids = sorted((i for i, t in enumerate(texts) if t in ("{", " {")), key=lambda i: texts[i] != " {")
        self.newline_ids = torch.tensor([i for i, t in enumerate(texts) if "\n" in t])
        close = [i for i, t in enumerate(texts) if t == "}"]
        if not self.open_ids or not close:
            raise ValueError("tokenizer has no single-token '{' / '}': constrained decoding unavailable")
        self.close_id = close[0]
        self.letter_ids: dict[str, int] = {}
        for letter in SENTINEL_LETTERS:
            ids = tokenizer.encode(letter, add_special_tokens=False)
            if len(ids) != 1:
                raise ValueError(f"sentinel letter {letter!r} is not a single token")
            self.letter_ids[letter] = ids[0]
        # eos first: generation stops on it. The other special end tokens (pad, <|endoftext|>) would
        # not stop generation, so they are always banned and their probability goes to eos.
        self.end_ids = list(dict.fromkeys(i for i in (tokenizer.eos_token_id, tokenizer.pad_token_id) if i is not None))
        self._holding: dict[str, torch.Tensor] = {}

    def ids_holding(self, chars: str) -> torch.Tensor:
        """Ids of the tokens whose text holds any of `chars`."""
        if chars not in self._holding:
            self._holding[chars] = torch.tensor([i for i, t in enumerate(self.texts) if any(c in t for c in chars)])
        return self._holding[chars]


class SentinelLogitsProcessor(LogitsProcessor):
    """Keeps each row inside its constraint: owed sentinels (`{A}`, `{B}`, …) exactly once before EOS."""

    def __init__(
        self,
        vocab: SentinelVocabulary,
        constraints: Sequence[PlaceholderConstraint | None],
        max_new_tokens: Sequence[int],
    ):
        self.vocab = vocab
        self.constraints = list(constraints)
        self.states: list[ConstraintState | None] = [c.start() if c is not None else None for c in self.constraints]
        self.max_new_tokens = list(max_new_tokens)
        self.steps = 0
        self.started = False  # the first call sees only the prompt

    def select_rows(self, rows: Sequence[int]) -> None:
        """Keep only these rows, in this order (the decoder dropped the others from its batch)."""
        self.constraints = [self.constraints[r] for r in rows]
        self.states = [self.states[r] for r in rows]
        self.max_new_tokens = [self.max_new_tokens[r] for r in rows]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.started:
            self.started = True
        else:
            self.steps += 1
            for row, token in enumerate(input_ids[:, -1].tolist()):
                constraint = self.constraints[row]
                if constraint is not None and token not in self.vocab.end_ids:  # pads after a row ended are no text
                    self.states[row] = constraint.advance(self.states[row], self.vocab.texts[token])
        for row, (constraint, state) in enumerate(zip(self.constraints, self.states)):
            if constraint is None:
                continue
            if state.phase == FREE:
                self._free_text(row, constraint, state, scores)
            else:
                allowed = (
                    [self.vocab.letter_ids[s[1]] for s in constraint.next_sentinels(state.owed)]
                    if state.phase == OPENED
                    else [self.vocab.close_id]
                )
                kept = scores[row, allowed].clone()
                scores[row] = -math.inf
                scores[row, allowed] = kept
        return scores

    def _free_text(self, row: int, constraint: PlaceholderConstraint, state: ConstraintState,
                   scores: torch.FloatTensor) -> None:
        """Ban what free text may not hold; move the wish to end to the open token while owing."""
        open_scores = scores[row, self.vocab.open_ids].clone()
        stop = torch.logsumexp(scores[row, self.vocab.end_ids], 0)  # the wish to end here
        if constraint.single_line:  # the wish to start a new line is a wish to end
            stop = torch.logaddexp(stop, torch.logsumexp(scores[row, self.vocab.newline_ids], 0))
        scores[row, self.vocab.ids_holding(constraint.forbidden)] = -math.inf
        scores[row, self.vocab.end_ids] = -math.inf
        if constraint.may_end(state):
            scores[row, self.vocab.end_ids[0]] = stop
            return
        open_scores[0] = torch.logaddexp(open_scores[0], stop)  # ending is not allowed yet: place a sentinel
        if self.max_new_tokens[row] - self.steps <= TOKENS_PER_SENTINEL * len(state.owed):
            scores[row] = -math.inf
        scores[row, self.vocab.open_ids] = open_scores
