"""The sentinel state machine on crafted logits, with the real SmolLM2 tokenizer."""

from __future__ import annotations

import math

import pytest
import torch

from instraug_plugin.backends.constraints import SentinelLogitsProcessor, SentinelVocabulary


@pytest.fixture(scope="module")
def vocab() -> tuple[SentinelVocabulary, object]:
    from transformers import AutoTokenizer

    from instraug_plugin.backends.smollm2 import ensure_converted

    tokenizer = AutoTokenizer.from_pretrained(ensure_converted())
    return SentinelVocabulary(tokenizer), tokenizer


def _step(processor: SentinelLogitsProcessor, history: list[list[int]], favourite: list[int], size: int) -> torch.Tensor:
    scores = torch.zeros(len(favourite), size)
    for row, token in enumerate(favourite):
        scores[row, token] = 10.0
    return processor(torch.tensor(history), scores)


def test_wanting_to_stop_while_owing_places_the_placeholder(vocab) -> None:
    v, tok = vocab
    size = len(tok)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    newline = tok.encode("\n", add_special_tokens=False)[0]
    proc = SentinelLogitsProcessor(v, [["{A}"], []], [True, True], max_new_tokens=[40] * 2)
    out = _step(proc, [[5], [5]], [eos, newline], size)
    assert out[0].argmax().item() == v.open_ids[0] and tok.decode([v.open_ids[0]]) == " {"
    assert out[0, eos] == -math.inf and out[0, pad] == -math.inf and out[0, newline] == -math.inf
    # nothing owed, single line: the newline's probability goes to eos; pad never ends a row
    assert out[1].argmax().item() == eos and out[1, newline] == -math.inf and out[1, pad] == -math.inf


def test_open_letter_close_sequence_and_no_second_copy(vocab) -> None:
    v, tok = vocab
    size = len(tok)
    a, b, close = v.letter_ids["A"], v.letter_ids["B"], v.close_id
    proc = SentinelLogitsProcessor(v, [["{A}", "{B}"]], [False], max_new_tokens=[40])
    history = [7]
    _step(proc, [history], [v.open_ids[0]], size)
    history.append(v.open_ids[0])
    out = _step(proc, [history], [b], size)  # after "{": only owed letters
    assert set(torch.nonzero(out[0] > -math.inf).flatten().tolist()) == {a, b}
    history.append(b)
    out = _step(proc, [history], [a], size)  # after the letter: only "}"
    assert torch.nonzero(out[0] > -math.inf).flatten().tolist() == [close]
    history.append(close)
    _step(proc, [history], [v.open_ids[0]], size)
    history.append(v.open_ids[0])
    out = _step(proc, [history], [b], size)  # B was emitted: only A remains
    assert torch.nonzero(out[0] > -math.inf).flatten().tolist() == [a]


def test_budget_forces_owed_placeholders_out(vocab) -> None:
    v, tok = vocab
    proc = SentinelLogitsProcessor(v, [["{A}", "{B}"]], [False], max_new_tokens=[7])
    _step(proc, [[1]], [42], len(tok))  # step 0: prompt seen, budget 7 > 6
    out = _step(proc, [[1, 42]], [42], len(tok))  # budget 6 = 3 tokens x 2 owed: must open now
    assert set(torch.nonzero(out[0] > -math.inf).flatten().tolist()) == set(v.open_ids)
