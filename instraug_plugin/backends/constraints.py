"""Constrained decoding that emits every placeholder sentinel exactly once before the end.

A per-row state machine over token ids, applied as a transformers LogitsProcessor:

* FREE: tokens holding `{` or `}` are banned, except a bare "open" token (`{` or ` {`) while some
  sentinel is still owed; end-of-sequence is banned while any is owed and its probability moves
  to the open token (a reply that wants to end places its placeholder instead of rambling on);
  when the remaining budget of new tokens only just fits the owed sentinels, the open token is
  forced.
* OPEN: only the letter of an owed sentinel may follow.
* LETTER: only `}` may follow.

So every finished reply contains each owed sentinel exactly once, wherever the model chose to put
it: placeholder safety by construction instead of generate-then-filter. Rows marked single-line
cannot start a new line: the probability of a newline goes to end-of-sequence (or, while a
placeholder is owed, to the open token), so the reply ends where the model would have started
commentary.

The processor runs before temperature and top-p (transformers applies custom processors first), so
banned tokens are never sampled and allowed ones keep their relative probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor, PreTrainedTokenizerBase

_FREE, _OPEN, _LETTER = 0, 1, 2
TOKENS_PER_SENTINEL = 3


class SentinelVocabulary:
    """Token ids the state machine needs, computed once per tokenizer."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        vocab_size = len(tokenizer)
        texts = tokenizer.batch_decode([[i] for i in range(vocab_size)])
        # " {" first: the wish to end a reply that still owes a placeholder goes to this token.
        self.open_ids = sorted((i for i, t in enumerate(texts) if t in ("{", " {")), key=lambda i: texts[i] != " {")
        self.brace_ids = torch.tensor([i for i, t in enumerate(texts) if "{" in t or "}" in t])
        self.newline_ids = torch.tensor([i for i, t in enumerate(texts) if "\n" in t])
        close = [i for i, t in enumerate(texts) if t == "}"]
        if not self.open_ids or not close:
            raise ValueError("tokenizer has no single-token '{' / '}': constrained decoding unavailable")
        self.close_id = close[0]
        self.letter_ids: dict[str, int] = {}
        for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
            ids = tokenizer.encode(letter, add_special_tokens=False)
            if len(ids) != 1:
                raise ValueError(f"sentinel letter {letter!r} is not a single token")
            self.letter_ids[letter] = ids[0]
        self.letter_by_id = {v: k for k, v in self.letter_ids.items()}
        # eos first: generation stops on it. The other special end tokens (pad, <|endoftext|>) would
        # not stop generation, so they are always banned and their probability goes to eos.
        self.end_ids = list(dict.fromkeys(i for i in (tokenizer.eos_token_id, tokenizer.pad_token_id) if i is not None))


class SentinelLogitsProcessor(LogitsProcessor):
    """Forces each row's owed sentinels (`{A}`, `{B}`, …) to appear exactly once before EOS."""

    def __init__(
        self,
        vocab: SentinelVocabulary,
        owed: Sequence[Sequence[str]],
        single_line: Sequence[bool],
        max_new_tokens: Sequence[int],
    ):
        self.vocab = vocab
        self.single_line = list(single_line)
        self.owed = [{s[1] for s in row} for row in owed]  # "{A}" -> "A"
        self.state = [_FREE] * len(owed)
        self.max_new_tokens = list(max_new_tokens)
        self.steps = 0
        self.started = False  # the first call sees only the prompt

    def select_rows(self, rows: Sequence[int]) -> None:
        """Keep only these rows, in this order (the decoder dropped the others from its batch)."""
        self.single_line = [self.single_line[r] for r in rows]
        self.owed = [self.owed[r] for r in rows]
        self.state = [self.state[r] for r in rows]
        self.max_new_tokens = [self.max_new_tokens[r] for r in rows]

    def _advance(self, row: int, token: int) -> None:
        state = self.state[row]
        if state == _FREE and token in self.vocab.open_ids and self.owed[row]:
            self.state[row] = _OPEN
        elif state == _OPEN:
            self.owed[row].discard(self.vocab.letter_by_id.get(token, ""))
            self.state[row] = _LETTER
        elif state == _LETTER:
            self.state[row] = _FREE

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.started:
            self.started = True
        else:
            self.steps += 1
            for row, token in enumerate(input_ids[:, -1].tolist()):
                self._advance(row, token)
        for row, state in enumerate(self.state):
            owed = self.owed[row]
            budget = self.max_new_tokens[row] - self.steps
            if state == _FREE:
                open_scores = scores[row, self.vocab.open_ids].clone()
                stop = torch.logsumexp(scores[row, self.vocab.end_ids], 0)  # the wish to end here
                if self.single_line[row]:
                    stop = torch.logaddexp(stop, torch.logsumexp(scores[row, self.vocab.newline_ids], 0))
                    scores[row, self.vocab.newline_ids] = -math.inf
                scores[row, self.vocab.brace_ids] = -math.inf
                if owed:  # ending is not allowed yet: that wish places an owed placeholder instead
                    scores[row, self.vocab.end_ids] = -math.inf
                    open_scores[0] = torch.logaddexp(open_scores[0], stop)
                    if budget <= TOKENS_PER_SENTINEL * len(owed):
                        scores[row] = -math.inf
                    scores[row, self.vocab.open_ids] = open_scores
                else:
                    scores[row, self.vocab.end_ids] = -math.inf
                    scores[row, self.vocab.end_ids[0]] = stop
            else:
                allowed = (
                    [self.vocab.letter_ids[letter] for letter in sorted(owed)]
                    if state == _OPEN
                    else [self.vocab.close_id]
                )
                kept = scores[row, allowed].clone()
                scores[row] = -math.inf
                scores[row, allowed] = kept
        return scores
