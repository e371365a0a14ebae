"""NucleusSampler draws from exactly the temperature + top-p distribution transformers samples from."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import TemperatureLogitsWarper, TopPLogitsWarper

from instraug_plugin.backends.nucleus import CANDIDATES, NucleusSampler


def _reference_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """transformers' own warpers, as its sampler applies them."""
    ids = torch.zeros(logits.shape[0], 1, dtype=torch.long)
    warped = TopPLogitsWarper(top_p)(ids, TemperatureLogitsWarper(temperature)(ids, logits.clone()))
    return torch.softmax(warped, dim=-1)


def _empirical(sampler: NucleusSampler, logits: torch.Tensor, draws: int) -> torch.Tensor:
    counts = torch.zeros_like(logits)
    batch = logits.repeat(draws, 1)
    out = sampler(torch.zeros(draws, 1, dtype=torch.long), batch.clone())
    assert torch.isfinite(out).sum(-1).eq(1).all(), "exactly one finite logit per row"
    chosen = out.argmax(-1)
    counts[0].index_add_(0, chosen, torch.ones(draws))
    return counts / draws


@pytest.mark.parametrize(("vocab", "scale", "top_p"), [(5000, 3.0, 0.9), (1500, 0.05, 0.9), (600, 1.0, 0.5)])
def test_matches_transformers_top_p(vocab: int, scale: float, top_p: float) -> None:
    """Peaked logits (nucleus inside the candidates) and flat ones (wider: the full-sort path)."""
    torch.manual_seed(0)
    logits = torch.randn(1, vocab) * scale
    temperature = 0.7
    expected = _reference_probs(logits, temperature, top_p)
    nucleus_size = int((expected > 0).sum())
    if scale < 0.1:
        assert nucleus_size > CANDIDATES  # exercises the fallback
    observed = _empirical(NucleusSampler(temperature, top_p), logits, 20000)
    assert set(observed[0].nonzero().flatten().tolist()) <= set(expected[0].nonzero().flatten().tolist())
    total_variation = 0.5 * (observed - expected).abs().sum().item()
    # sampling noise of 20k draws over the nucleus: ~sqrt(size / draws)
    assert total_variation < 0.6 * math.sqrt(nucleus_size / 20000) + 0.02, total_variation


def test_keeps_tokens_banned_by_earlier_processors_banned() -> None:
    logits = torch.zeros(4, 1000)
    logits[:, 10:] = -math.inf  # e.g. the sentinel processor forcing one of ten tokens
    out = NucleusSampler(1.0, 0.95)(torch.zeros(4, 1, dtype=torch.long), logits)
    assert (out.argmax(-1) < 10).all()


def test_zero_temperature_is_rejected() -> None:
    with pytest.raises(ValueError):
        NucleusSampler(0.0, 0.9)
