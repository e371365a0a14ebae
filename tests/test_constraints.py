"""The sentinel state machine on crafted logits, with the real SmolLM2 tokenizer."""

from __future__ import annotations

import math
import random

import pytest
import torch

from instraug_plugin.backends.constraints import SentinelLogitsProcessor, SentinelVocabulary
from instraug_plugin.core.constraint import PlaceholderConstraint


@pytest.fixture(scope="module")
def vocab() -> tuple[SentinelVocabulary, object]:
    from transformers import AutoTokenizer

    from instraug_plugin.backends.conversion import ensure_converted
    from instraug_plugin.backends.embedded import SMOLLM2

    tokenizer = AutoTokenizer.from_pretrained(ensure_converted(SMOLLM2))
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
    proc = SentinelLogitsProcessor(
        v, [PlaceholderConstraint(("{A}",), single_line=True), PlaceholderConstraint((), single_line=True)],
        max_new_tokens=[40] * 2)
    out = _step(proc, [[5], [5]], [eos, newline], size)
    assert out[0].argmax().item() == v.open_ids[0] and tok.decode([v.open_ids[0]]) == " {"
    assert out[0, eos] == -math.inf and out[0, pad] == -math.inf and out[0, newline] == -math.inf
    # nothing owed, single line: the newline's probability goes to eos; pad never ends a row
    assert out[1].argmax().item() == eos and out[1, newline] == -math.inf and out[1, pad] == -math.inf


def test_open_letter_close_sequence_and_no_second_copy(vocab) -> None:
    v, tok = vocab
    size = len(tok)
    a, b, close = v.letter_ids["A"], v.letter_ids["B"], v.close_id
    proc = SentinelLogitsProcessor(v, [PlaceholderConstraint(("{A}", "{B}"))], max_new_tokens=[40])
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
    proc = SentinelLogitsProcessor(v, [PlaceholderConstraint(("{A}", "{B}"))], max_new_tokens=[7])
    _step(proc, [[1]], [42], len(tok))  # step 0: prompt seen, budget 7 > 6
    out = _step(proc, [[1, 42]], [42], len(tok))  # budget 6 = 3 tokens x 2 owed: must open now
    assert set(torch.nonzero(out[0] > -math.inf).flatten().tolist()) == set(v.open_ids)


def _allowed(out: torch.Tensor) -> set[int]:
    return set(torch.nonzero(out[0] > -math.inf).flatten().tolist())


def test_beyond_max_permuted_only_the_next_sentinel_in_seed_order(vocab) -> None:
    v, tok = vocab
    size = len(tok)
    sentinels = tuple(f"{{{c}}}" for c in "ABCDEFG")
    proc = SentinelLogitsProcessor(v, [PlaceholderConstraint(sentinels)], max_new_tokens=[60])
    history = [7]
    for letter in "AB":
        _step(proc, [history], [v.open_ids[0]], size)
        history.append(v.open_ids[0])
        assert _allowed(_step(proc, [history], [v.letter_ids["G"]], size)) == {v.letter_ids[letter]}
        history.append(v.letter_ids[letter])
        _step(proc, [history], [v.close_id], size)
        history.append(v.close_id)


def test_a_row_without_constraint_is_left_alone(vocab) -> None:
    v, tok = vocab
    proc = SentinelLogitsProcessor(v, [PlaceholderConstraint(("{A}",)), None], max_new_tokens=[40, 40])
    scores = torch.randn(2, len(tok))
    out = proc(torch.tensor([[5], [5]]), scores.clone())
    assert torch.equal(out[1], scores[1]) and not torch.equal(out[0], scores[0])


@pytest.mark.parametrize("sentinels", [(), ("{A}",), ("{A}", "{B}", "{C}")], ids=len)
@pytest.mark.parametrize("single_line", [False, True])
def test_processor_allows_exactly_the_token_paths_its_constraint_accepts(vocab, sentinels, single_line) -> None:
    """Token sequences over words, newlines, braces and letters: the processor lets every token through
    and then allows end-of-sequence exactly when the constraint accepts the decoded text."""
    v, tok = vocab
    size = len(tok)
    words = [tok.encode(w, add_special_tokens=False)[0] for w in ("Describe", " the", " region", "?", "\n")]
    alphabet = words + v.open_ids + [v.letter_ids[c] for c in "ABCZ"] + [v.close_id]
    rng = random.Random(f"{sentinels}{single_line}")
    constraint = PlaceholderConstraint(sentinels, single_line)
    verdicts = []
    for _ in range(100):
        tokens: list[int] = []
        for sentinel in (*rng.sample(sentinels, len(sentinels)), None):
            tokens += [rng.choice(alphabet) if rng.random() < 0.2 else rng.choice(words[:4])]
            if sentinel and rng.random() < 0.9:  # sometimes missing
                tokens += [rng.choice(v.open_ids), v.letter_ids[sentinel[1]], v.close_id]
        proc = SentinelLogitsProcessor(v, [constraint], max_new_tokens=[200])
        history, allowed = [1], True
        for token in tokens:
            out = _step(proc, [history], [token], size)
            if out[0, token] == -math.inf:
                allowed = False
                break
            history.append(token)
        if allowed:
            allowed = _step(proc, [history], [tok.eos_token_id], size)[0, tok.eos_token_id] > -math.inf
        accepted = constraint.accepts(tok.decode(tokens))
        assert allowed == accepted, tok.decode(tokens)
        verdicts.append(accepted)
    assert 0 < sum(verdicts) < len(verdicts)
