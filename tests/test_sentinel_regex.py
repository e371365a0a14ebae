"""The structured-outputs regex (vLLM's constrained mode) accepts exactly the replies that restore."""

from __future__ import annotations

import random
import re

import pytest
from test_placeholders import ALL  # tests/ is on sys.path (rootdir conftest)

from instraug_plugin.backends.base import GenerationRequest
from instraug_plugin.backends.vllm_backend import sampling_options
from instraug_plugin.core.constraint import MAX_PERMUTED, PlaceholderConstraint
from instraug_plugin.core.placeholders import DEFAULT_SPEC

WORDS = ["describe", "the", "picture", "what is", "in", "region", "and", "answer:", "?", ""]


def _reply(rng: random.Random, sentinels: list[str], newline: bool = False) -> str:
    parts = [" ".join(rng.sample(WORDS, 3))]
    for s in sentinels:
        parts += [s, " ".join(rng.sample(WORDS, 2))]
    text = " ".join(parts)
    return text.replace(" ", "\n", 1) if newline else text


@pytest.mark.parametrize("single_line", [True, False])
def test_every_real_template_accepts_any_order_and_rejects_broken_replies(single_line: bool) -> None:
    rng = random.Random(0)
    checked = 0
    for task, index, template in ALL:
        masked = DEFAULT_SPEC.mask(template, source=f"{task}[{index}]")
        sentinels = masked.sentinels
        pattern = re.compile(PlaceholderConstraint(sentinels, single_line).to_regex())
        for _ in range(3):
            order = rng.sample(sentinels, len(sentinels)) if len(sentinels) <= MAX_PERMUTED else sentinels
            reply = _reply(rng, order)
            assert pattern.fullmatch(reply), (template, reply)
            assert masked.restore(reply) is not None
        if sentinels:
            assert not pattern.fullmatch(_reply(rng, sentinels[1:])), "a missing placeholder must not match"
            assert not pattern.fullmatch(_reply(rng, sentinels + sentinels[:1])), "a repeated one must not match"
        assert not pattern.fullmatch(_reply(rng, sentinels) + " {Z}"), "an unknown sentinel must not match"
        assert not pattern.fullmatch(_reply(rng, sentinels) + " {"), "a stray brace must not match"
        assert bool(pattern.fullmatch(_reply(rng, sentinels, newline=True))) is not single_line
        checked += 1
    assert checked == 378


def test_many_placeholders_keep_the_seed_order() -> None:
    sentinels = [f"{{{c}}}" for c in "ABCDEF"]
    pattern = re.compile(PlaceholderConstraint(sentinels, single_line=True).to_regex())
    assert pattern.fullmatch("x {A} {B} {C} {D} {E} {F} y")
    assert not pattern.fullmatch("x {B} {A} {C} {D} {E} {F} y")


def test_sampling_options_carry_constraint_seed_and_stop() -> None:
    constrained = GenerationRequest((("user", "hi {A}"),), 0.7, required_spans=("{A}",), single_line=True)
    options = sampling_options(constrained, "m")
    assert options["regex"] == PlaceholderConstraint(["{A}"], single_line=True).to_regex()
    assert options["seed"] == constrained.sampling_seed("m") != constrained.sampling_seed("other-model")
    assert 0 <= options["seed"] < 2**63
    plain = GenerationRequest((("user", "hi"),), 0.0, single_line=True)
    assert sampling_options(plain, "m")["temperature"] == 0.0
    free = GenerationRequest((("user", "hi"),), 0.5)
    assert sampling_options(free, "m")["regex"] is None
