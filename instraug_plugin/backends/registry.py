"""Backends by name. Each entry lazily imports its module, so the core never imports torch."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from instraug_plugin.backends.base import RewriterBackend
from instraug_plugin.core.errors import InstrAugError

# The pipeline's own options: a backend that does not take one (it does not batch) never sees it.
PIPELINE_OPTIONS = frozenset({"batch_size"})


def _transformers() -> type[RewriterBackend]:
    from instraug_plugin.backends.transformers_backend import TransformersBackend

    return TransformersBackend


def _openai() -> type[RewriterBackend]:
    from instraug_plugin.backends.openai_backend import OpenAIBackend

    return OpenAIBackend


def _vllm() -> type[RewriterBackend]:
    from instraug_plugin.backends.vllm_backend import VLLMBackend

    return VLLMBackend


def _llamacpp() -> type[RewriterBackend]:
    from instraug_plugin.backends.llamacpp_backend import LlamaCppBackend

    return LlamaCppBackend


BACKENDS: dict[str, Callable[[], type[RewriterBackend]]] = {
    "transformers": _transformers, "openai": _openai, "vllm": _vllm, "llamacpp": _llamacpp,
}


def create_backend(name: str, **options: Any) -> RewriterBackend:
    """Instantiate backend `name` with its options (model, device, quantization_bits, api_base...).

    An option the backend does not take is an error naming it, except the pipeline's own options.
    """
    if name not in BACKENDS:
        raise InstrAugError(f"unknown backend {name!r}; available: {', '.join(sorted(BACKENDS))}")
    backend_class = BACKENDS[name]()
    accepted = inspect.signature(backend_class).parameters
    unsupported = [key for key in options if key not in accepted and key not in PIPELINE_OPTIONS]
    if unsupported:
        flags = ", ".join("--" + key.replace("_", "-") for key in unsupported)
        raise InstrAugError(f"{flags} {'does' if len(unsupported) == 1 else 'do'} not apply to the {name} backend")
    return backend_class(**{key: value for key, value in options.items() if key in accepted})
