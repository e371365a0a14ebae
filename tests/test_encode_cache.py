"""The lazy path's encode cache gives exactly LLaMA-Factory's token ids, with bounded memory."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from instraug_plugin.integrations.llamafactory.encode_cache import (
    DEFAULT_SIZE,
    EncodeCache,
    with_encode_cache,
)


@pytest.fixture(scope="module")
def supervised(tiny_llava: Path):
    """LLaMA-Factory's real SFT processor for the tiny LLaVA with the llava template."""
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.data.processor import SupervisedDatasetProcessor
    from llamafactory.hparams import DataArguments
    from transformers import AutoProcessor, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llava)
    data_args = DataArguments(template="llava", cutoff_len=256)
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    return SupervisedDatasetProcessor(template=template, tokenizer=tokenizer,
                                      processor=AutoProcessor.from_pretrained(tiny_llava), data_args=data_args)


def _batch(rows: list[tuple[str, str]], system: str | None = None) -> dict[str, list]:
    return {
        "_prompt": [[{"role": "user", "content": q}] for q, _ in rows],
        "_response": [[{"role": "assistant", "content": a}] for _, a in rows],
        "_system": [system] * len(rows), "_tools": [None] * len(rows),
        "_images": [None] * len(rows), "_videos": [None] * len(rows), "_audios": [None] * len(rows),
    }


@pytest.mark.parametrize("system", [None, "You answer in one word."])
def test_token_ids_equal_llamafactory_and_recurring_strings_skip_the_tokenizer(supervised, system) -> None:
    rows = [(f"Question {i}: which colour is shape {i}?", "Red." if i % 2 else f"A stripe number {i}.")
            for i in range(40)]
    batch = _batch(rows, system)
    cached = with_encode_cache(supervised)
    assert cached.preprocess_dataset(batch) == supervised.preprocess_dataset(batch)
    assert not isinstance(supervised.tokenizer, EncodeCache)  # LLaMA-Factory's own processor is left as it was
    info = cached.tokenizer.cache_info()
    # every sample after the first finds the system prompt; every second one finds "Red."
    assert info.hits >= (len(rows) - 1) + (len(rows) // 2 - 1)
    assert info.misses <= 2 * len(rows) + 2


def test_returns_fresh_lists_and_bypasses_other_arguments(supervised) -> None:
    tokenizer = supervised.tokenizer
    cache = EncodeCache(tokenizer)
    first = cache.encode("What colour is the shape?", add_special_tokens=False)
    first.append(-1)
    assert cache.encode("What colour is the shape?", add_special_tokens=False) == tokenizer.encode(
        "What colour is the shape?", add_special_tokens=False)
    before = cache.cache_info()
    truncated = cache.encode("What colour is the shape?", add_special_tokens=False, truncation=True, max_length=3)
    assert truncated == tokenizer.encode("What colour is the shape?", add_special_tokens=False, truncation=True,
                                         max_length=3)
    assert len(truncated) == 3 and cache.cache_info() == before


def test_memory_is_bounded_and_the_view_pickles(supervised) -> None:
    cache = EncodeCache(supervised.tokenizer)
    for i in range(3 * DEFAULT_SIZE):
        cache.encode(f"distinct string {i}", add_special_tokens=False)
    assert cache.cache_info().currsize == DEFAULT_SIZE
    clone = pickle.loads(pickle.dumps(cache))  # DataLoader workers under the spawn start method
    assert clone.encode("Red.", add_special_tokens=False) == supervised.tokenizer.encode("Red.", add_special_tokens=False)
    assert clone.eos_token_id == supervised.tokenizer.eos_token_id and len(clone) == len(supervised.tokenizer)
