"""Shared fixtures (keep small: add fixtures only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def offline_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for subprocesses: no hub access, a throwaway HF_HOME."""
    home = tmp_path_factory.mktemp("hf_home")
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(home), "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "DISABLE_VERSION_CHECK": "1"}


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~6M-parameter LLaVA built offline (tests/tiny_llava.py), once per test session."""
    from tiny_llava import build_tiny_llava  # tests/ is on sys.path (rootdir conftest)

    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


@pytest.fixture(scope="session")
def smollm2_backend():
    """The real embedded rewriter (SmolLM2-135M-Instruct, CPU, float32 so replies can be compared
    token for token across decoders), loaded once per test session."""
    from instraug_plugin.backends.transformers_backend import TransformersBackend

    return TransformersBackend("smollm2", device="cpu", batch_size=16, dtype="float32")


@pytest.fixture(scope="session", autouse=True)
def smollm2_converted() -> Path:
    """The embedded rewriter's one-time GGUF conversion, done before any test runs: otherwise the first test
    to load it (whichever that is when files run in parallel) also sees the conversion's progress bars."""
    from instraug_plugin.backends.conversion import ensure_converted
    from instraug_plugin.backends.embedded import SMOLLM2

    return ensure_converted(SMOLLM2)
