"""The shared-prefix decoder against transformers' own `generate`, with the real SmolLM2."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace

import pytest
import torch

from instraug_plugin.backends.base import GenerationRequest
from instraug_plugin.backends.decoding import shared_prefixes
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.generation.prompts import load_meta_prompts

MASKED = [
    "Describe {A} in the image.",
    "Which region among {B} matches {A}? Answer with one of them. {C}",
    "{A} and {B}: compare the two objects and say which one is larger.",
    "What is written on the sign?",
]


def test_shared_prefixes_group_by_key_and_leave_every_row_a_token() -> None:
    prompts = [[1, 2, 3, 4, 5], [1, 2, 3, 9], [1, 2, 3, 4, 5], [7, 8], [1, 2, 3, 4]]
    groups, lengths = shared_prefixes(prompts, ["a", "a", "b", "c", "b"])
    assert groups == [0, 0, 1, 2, 1]
    assert lengths == [3, 3, 1]  # a: common [1,2,3]; b: [1,2,3,4] capped at len-1; c: a lone row


def _requests(temperature: float) -> list[GenerationRequest]:
    """Rows of three meta-prompts (three prefix groups), prompts of different lengths."""
    return [
        GenerationRequest(p.messages(m), temperature=temperature, max_new_tokens=40, sample_index=0)
        for p in load_meta_prompts(2, 1) for m in MASKED
    ]


@pytest.mark.slow
def test_greedy_replies_match_transformers_generate(smollm2_backend) -> None:
    """Same tokens as `generate` with its left-padded full prefill, batch by batch (float32)."""
    requests = _requests(0.0)
    budgets = [8, 40, 17, 40, 25, 3, 40, 12, 40, 40, 5, 33]
    requests = [replace(r, max_new_tokens=n) for r, n in zip(requests, budgets)]
    assert smollm2_backend.model.dtype == torch.float32
    smollm2_backend.decoder = "generate"
    try:
        expected = smollm2_backend.generate(requests)
    finally:
        smollm2_backend.decoder = "shared-prefix"
    replies = smollm2_backend.generate(requests)
    assert replies == expected
    tokens = [len(smollm2_backend.tokenizer(r, add_special_tokens=False)["input_ids"]) for r in replies]
    assert all(n <= budget for n, budget in zip(tokens, budgets))
    assert len(set(tokens)) > 3  # rows finished at different steps: the batch shrank several times


@pytest.mark.slow
def test_constraints_follow_rows_as_the_batch_shrinks(smollm2_backend) -> None:
    """Sampled, constrained rows with budgets from 6 to 48 tokens in one batch: every reply keeps
    its own placeholders exactly once however many rows left before it."""
    requests = [
        replace(r, required_spans=tuple(re.findall(r"\{[A-Z]\}", MASKED[i % len(MASKED)])), single_line=True,
                temperature=0.9, max_new_tokens=(6, 48, 12, 30)[i % 4], sample_index=i)
        for i, r in enumerate(_requests(0.9) * 2)
    ]
    replies = smollm2_backend.generate(requests)
    for request, reply in zip(requests, replies):
        assert Counter(re.findall(r"\{[A-Z]\}", reply)) == Counter(request.required_spans), reply
        assert "\n" not in reply.strip()
    assert smollm2_backend.generate(requests) == replies  # the same batch samples the same replies


def test_dtype_auto_and_bad_names() -> None:
    from instraug_plugin.backends.transformers_backend import resolve_dtype

    assert resolve_dtype("auto", "cuda:0", quantized=True) == torch.bfloat16
    assert resolve_dtype("auto", "cpu", quantized=True) == torch.float32  # bnb's CPU kernels compute in float32
    assert resolve_dtype("float16", "cpu", quantized=False) == torch.float16
    with pytest.raises(InstrAugError, match="dtype must be auto or one of"):
        resolve_dtype("fp8", "cpu", quantized=False)
