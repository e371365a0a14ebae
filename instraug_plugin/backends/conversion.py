"""Embedded GGUF rewriters as transformers checkpoints: converted once into the cache.

transformers reads a GGUF file (`gguf_file=`, dequantized); the result is saved to
`$INSTRAUG_CACHE/<model id>-transformers<major>` and later loads read that directory (SmolLM2:
~1.5 s instead of ~25 s).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from pathlib import Path

from instraug_plugin.backends.embedded import EmbeddedModel, cache_root, embedded_model
from instraug_plugin.core.errors import InstrAugError

_CONVERTED_MARKER = "instraug-converted.ok"


def ensure_converted(model: EmbeddedModel) -> Path:
    """Convert the model's GGUF to a transformers checkpoint once per transformers major version (a
    tokenizer saved by transformers 5 does not load in 4); return its directory."""
    major = importlib.metadata.version("transformers").split(".")[0]
    target = cache_root() / f"{model.model_id}-transformers{major}"
    if (target / _CONVERTED_MARKER).is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = model.gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    # Both embedded models use ChatML: turns end with <|im_end|> (SmolLM2's GGUF names <|im_start|> as eos).
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    loaded.generation_config.eos_token_id = tokenizer.eos_token_id
    loaded.generation_config.pad_token_id = tokenizer.pad_token_id
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    tokenizer.save_pretrained(tmp)
    loaded.save_pretrained(tmp)
    (tmp / _CONVERTED_MARKER).write_text(model.file_name)
    if (target / _CONVERTED_MARKER).is_file():  # another process (rank) finished first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
        return target
    if target.exists():  # a partial copy without the marker
        shutil.rmtree(target, ignore_errors=True)
    try:
        tmp.rename(target)
    except OSError:  # lost a race to a concurrent rename; that copy is complete
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(model: str) -> str:
    """An embedded model's name → its converted local checkpoint; any other value must be an existing path."""
    if (embedded := embedded_model(model)) is not None:
        return str(ensure_converted(embedded))
    if not Path(model).exists():
        raise InstrAugError(f"rewriter model path does not exist: {model}")
    return model


def model_id(model: str) -> str:
    """The id recorded in pool records and cache keys: an embedded model's id, else what was given."""
    embedded = embedded_model(model)
    return embedded.model_id if embedded is not None else model
