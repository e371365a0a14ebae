"""Backends by name. Each entry lazily imports its module, so the core never imports torch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from instraug_plugin.backends.base import RewriterBackend
from instraug_plugin.core.errors import InstrAugError


def _transformers(**options: Any) -> RewriterBackend:
    from instraug_plugin.backends.transformers_backend import TransformersBackend

    return TransformersBackend(**options)


BACKENDS: dict[str, Callable[..., RewriterBackend]] = {"transformers": _transformers}


def create_backend(name: str, **options: Any) -> RewriterBackend:
    """Instantiate backend `name` with its options (model, device, quantization_bits, batch_size...)."""
    if name not in BACKENDS:
        raise InstrAugError(f"unknown backend {name!r}; available: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name](**options)
