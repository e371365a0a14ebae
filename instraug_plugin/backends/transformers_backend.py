"""Hugging Face transformers rewriter: batched chat generation on CPU or GPU, bitsandbytes on request."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from itertools import groupby

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList
from transformers.utils import logging as hf_logging

from instraug_plugin.backends.base import GenerationRequest
from instraug_plugin.backends.constraints import SentinelLogitsProcessor, SentinelVocabulary
from instraug_plugin.backends.conversion import model_id, resolve_model_path
from instraug_plugin.backends.decoding import decode
from instraug_plugin.backends.embedded import DEFAULT_MODEL
from instraug_plugin.backends.nucleus import NucleusSampler
from instraug_plugin.core.errors import InstrAugError, first_line
from instraug_plugin.core.replies import LENGTH, STOP, Reply


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


DECODERS = ("shared-prefix", "generate")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, device: str, quantized: bool) -> torch.dtype:
    """`auto`: bfloat16 on CUDA, and on CPUs with AMX bfloat16 units (unless quantized), else float32."""
    if name != "auto":
        if name not in DTYPES:
            raise InstrAugError(f"dtype must be auto or one of {', '.join(DTYPES)}; got {name!r}")
        return DTYPES[name]
    if device.startswith("cuda"):
        return torch.bfloat16
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return torch.bfloat16 if amx and not quantized else torch.float32


class TransformersBackend:
    """A causal LM from a local path (or `smollm2`, the embedded default).

    `device` is a torch device string; with quantization the model is placed with
    `device_map={"": device}` (one copy per process, never "auto"). Requests with the same sampling
    parameters are batched `batch_size` at a time and sampled with a seed derived from the batch's
    cache keys, so the same batch always yields the same replies. `decoder` picks the decoding
    loop: `shared-prefix` (`backends.decoding`: one prefill per shared prompt prefix, per-row
    budgets, finished rows leave the batch, top-p by `NucleusSampler`) or `generate`
    (transformers' own `generate` and top-p sampler, left-padded batches of one token budget).
    """

    name = "transformers"
    supports_constraints = True

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        device: str | None = None,
        quantization_bits: int | None = None,
        batch_size: int = 32,
        dtype: str = "auto",
        decoder: str = "shared-prefix",
    ):
        if decoder not in DECODERS:
            raise InstrAugError(f"decoder must be one of {', '.join(DECODERS)}; got {decoder!r}")
        path = resolve_model_path(model)
        self.model_id = model_id(model)
        self.batch_size = batch_size
        self.decoder = decoder
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise InstrAugError(f"device {self.device}: CUDA is not available on this machine (use --device cpu)")
        quant = _quantization_config(quantization_bits)
        if quant is not None:
            self.model_id += f"@bnb{quantization_bits}"
        torch_dtype = resolve_dtype(dtype, self.device, quant is not None)
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a "Loading weights" bar per load: noise on pregen's stderr
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(
                path, quantization_config=quant, dtype=torch_dtype, device_map={"": self.device},
            )
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise InstrAugError(f"cannot load rewriter model {path}: {first_line(exc)}") from None
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.eval()
        self._sentinels: SentinelVocabulary | None = None

    @property
    def context_length(self) -> int | None:
        """Tokens the model attends to (prompt + reply): its configured maximum positions."""
        limits = [getattr(self.model.config, "max_position_embeddings", None), self.tokenizer.model_max_length]
        limits = [n for n in limits if isinstance(n, int) and 0 < n < 10**8]  # tokenizers use 1e30 for "unset"
        return min(limits) if limits else None

    def prompt_tokens(self, messages: Sequence[tuple[str, str]]) -> int:
        """Length in tokens of a chat prompt, rendered as `generate` renders it."""
        text = self.tokenizer.apply_chat_template(
            [{"role": role, "content": content} for role, content in messages], tokenize=False,
            add_generation_prompt=True,
        )
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def sentinel_vocabulary(self) -> SentinelVocabulary:
        if self._sentinels is None:
            self._sentinels = SentinelVocabulary(self.tokenizer)
        return self._sentinels

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """One `Reply` per request, in order: `length` when it spent its budget without end-of-sequence."""
        replies: dict[int, Reply] = {}
        for _, group in groupby(sorted(enumerate(requests), key=self._batch_key), key=self._batch_key):
            group = list(group)
            for start in range(0, len(group), self.batch_size):
                chunk = group[start : start + self.batch_size]
                for (i, _), text in zip(chunk, self._generate_batch([r for _, r in chunk])):
                    replies[i] = text
        return [replies[i] for i in range(len(requests))]

    def _batch_key(self, item: tuple[int, GenerationRequest]) -> tuple[float, ...]:
        """Requests one batch can hold: the same sampling (and, for `generate`, one token budget)."""
        request = item[1]
        if self.decoder == "generate":
            return request.temperature, request.top_p, request.max_new_tokens
        return request.temperature, request.top_p

    @torch.inference_mode()
    def _generate_batch(self, batch: list[GenerationRequest]) -> list[Reply]:
        first = batch[0]
        prompts = [
            self.tokenizer.apply_chat_template(
                [{"role": role, "content": content} for role, content in r.messages],
                tokenize=False, add_generation_prompt=True,
            )
            for r in batch
        ]
        processors = LogitsProcessorList()
        constraints = [r.constraint for r in batch]
        if any(c is not None for c in constraints):
            processors.append(
                SentinelLogitsProcessor(self.sentinel_vocabulary, constraints, [r.max_new_tokens for r in batch])
            )
        seed = hashlib.sha256("".join(r.cache_key(self.model_id) for r in batch).encode()).digest()
        devices = [self.model.device] if self.model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # a co-located trainer's RNG stream stays untouched
            torch.manual_seed(int.from_bytes(seed[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF)
            if self.decoder == "generate":
                new_tokens = self._generate_with_transformers(prompts, processors, first)
            else:
                if first.temperature > 0:
                    processors.append(NucleusSampler(first.temperature, first.top_p))
                new_tokens = decode(
                    self.model,
                    self.tokenizer(prompts, add_special_tokens=False)["input_ids"],
                    [r.messages[:-1] for r in batch],
                    [r.max_new_tokens for r in batch],
                    processors,
                    eos_id=self.tokenizer.eos_token_id,
                    pad_id=self.tokenizer.pad_token_id,
                )
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        eos = self.tokenizer.eos_token_id
        return [Reply(text, STOP if eos in tokens else LENGTH) for text, tokens in zip(texts, new_tokens)]

    def _generate_with_transformers(
        self, prompts: list[str], processors: LogitsProcessorList, first: GenerationRequest
    ) -> list[list[int]]:
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        inputs = inputs.to(self.model.device)
        sampling = first.temperature > 0
        output = self.model.generate(
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
        return output[:, inputs["input_ids"].shape[1] :].tolist()

    def close(self) -> None:
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
