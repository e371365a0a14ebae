"""Hugging Face transformers rewriter: batched chat generation on CPU or GPU, bitsandbytes on request."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from itertools import groupby

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

from instraug_plugin.backends.base import GenerationRequest
from instraug_plugin.backends.constraints import SentinelLogitsProcessor, SentinelVocabulary
from instraug_plugin.backends.nucleus import NucleusSampler
from instraug_plugin.backends.smollm2 import resolve_model_path
from instraug_plugin.core.errors import InstrAugError


def _quantization_config(bits: int | None):
    if bits is None:
        return None
    if bits not in (4, 8):
        raise InstrAugError(f"quantization bits must be 4 or 8, got {bits}")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise InstrAugError("quantized rewriter needs bitsandbytes: pip install 'instraug-plugin[quant]'") from None
    from transformers import BitsAndBytesConfig

    if bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_available() else torch.float32,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


class TransformersBackend:
    """A causal LM from a local path (or `smollm2`, the embedded default).

    `device` is a torch device string; with quantization the model is placed with
    `device_map={"": device}` (one copy per process, never "auto"). Requests are grouped by
    sampling parameters, left-padded into batches of `batch_size`, and sampled with a seed derived
    from the batch's cache keys, so the same batch always yields the same replies.
    """

    name = "transformers"
    supports_constraints = True

    def __init__(
        self,
        model: str = "smollm2",
        *,
        device: str | None = None,
        quantization_bits: int | None = None,
        batch_size: int = 32,
        dtype: torch.dtype | None = None,
        fast_sampling: bool = True,
    ):
        path = resolve_model_path(model)
        self.model_id = model if model != "smollm2" else "SmolLM2-135M-Instruct"
        self.batch_size = batch_size
        self.fast_sampling = fast_sampling
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise InstrAugError(f"device {self.device}: CUDA is not available on this machine (use --device cpu)")
        quant = _quantization_config(quantization_bits)
        if quant is not None:
            self.model_id += f"@bnb{quantization_bits}"
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(
                path,
                quantization_config=quant,
                dtype=dtype or (torch.bfloat16 if self.device.startswith("cuda") else torch.float32),
                device_map={"": self.device},
            )
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InstrAugError(f"cannot load rewriter model {path}: {reason}") from None
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.eval()
        self._sentinels: SentinelVocabulary | None = None

    @property
    def sentinel_vocabulary(self) -> SentinelVocabulary:
        if self._sentinels is None:
            self._sentinels = SentinelVocabulary(self.tokenizer)
        return self._sentinels

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        replies: dict[int, str] = {}
        indexed = sorted(enumerate(requests), key=lambda p: (p[1].temperature, p[1].top_p, p[1].max_new_tokens))
        for _, group in groupby(indexed, key=lambda p: (p[1].temperature, p[1].top_p, p[1].max_new_tokens)):
            group = list(group)
            for start in range(0, len(group), self.batch_size):
                chunk = group[start : start + self.batch_size]
                for (i, _), text in zip(chunk, self._generate_batch([r for _, r in chunk])):
                    replies[i] = text
        return [replies[i] for i in range(len(requests))]

    @torch.inference_mode()
    def _generate_batch(self, batch: list[GenerationRequest]) -> list[str]:
        first = batch[0]
        prompts = [
            self.tokenizer.apply_chat_template(
                [{"role": role, "content": content} for role, content in r.messages],
                tokenize=False, add_generation_prompt=True,
            )
            for r in batch
        ]
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        inputs = inputs.to(self.model.device)
        processors = LogitsProcessorList()
        if any(r.required_spans or r.single_line for r in batch):
            processors.append(
                SentinelLogitsProcessor(
                    self.sentinel_vocabulary,
                    [r.required_spans for r in batch],
                    [r.single_line for r in batch],
                    first.max_new_tokens,
                )
            )
        sampling = first.temperature > 0
        if sampling and self.fast_sampling:
            processors.append(NucleusSampler(first.temperature, first.top_p))
            sampling = False  # the sampler has drawn the token; generate takes it greedily
        seed = hashlib.sha256("".join(r.cache_key(self.model_id) for r in batch).encode()).digest()
        devices = [self.model.device] if self.model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # a co-located trainer's RNG stream stays untouched
            torch.manual_seed(int.from_bytes(seed[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF)
            output = self._sample(inputs, processors, first, sampling)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    def _sample(self, inputs, processors: LogitsProcessorList, first: GenerationRequest, sampling: bool) -> torch.Tensor:
        return self.model.generate(
            **inputs,
            do_sample=sampling,
            temperature=first.temperature if sampling else None,
            top_p=first.top_p if sampling else None,
            top_k=None,
            max_new_tokens=first.max_new_tokens,
            logits_processor=processors,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )

    def close(self) -> None:
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
