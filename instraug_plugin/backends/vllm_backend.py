"""vLLM rewriter (offline `LLM` API, one GPU or tensor-parallel): continuous batching, per-request
seeds, placeholder safety by construction through a structured-outputs regex (derived from the
request's `core.constraint.PlaceholderConstraint`).

Each pipeline batch goes to `LLM.chat` in one call and vLLM schedules it itself, so give pregen a
large `--batch-size` (hundreds) with this backend; the batch only sets how often the cache is
written. Every request carries its own seed (derived from its cache key), so a reply does not depend
on which batch or worker it ran in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from instraug_plugin.backends.base import GenerationRequest
from instraug_plugin.backends.conversion import model_id, resolve_model_path
from instraug_plugin.backends.embedded import DEFAULT_MODEL
from instraug_plugin.core.errors import InstrAugError, first_line
from instraug_plugin.core.replies import STOP, Reply


def sampling_options(request: GenerationRequest, model_id: str) -> dict[str, Any]:
    """vLLM `SamplingParams` arguments for one request, with the constraint as a regex (or None)."""
    sampling = request.temperature > 0
    constraint = request.constraint
    return {
        "n": 1,
        "temperature": request.temperature if sampling else 0.0,
        "top_p": request.top_p if sampling else 1.0,
        "max_tokens": request.max_new_tokens,
        "seed": request.sampling_seed(model_id),
        "regex": constraint.to_regex() if constraint else None,
    }


class VLLMBackend:
    """A causal LM served by vLLM in this process (`model`: local path, or `smollm2`).

    `quantization_bits=4` loads bitsandbytes 4-bit weights in flight; `gpu_memory_utilization`
    bounds vLLM's share of the GPU (lower it next to a trainer).
    """

    name = "vllm"
    supports_constraints = True

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        quantization_bits: int | None = None,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int = 2048,
        tensor_parallel_size: int = 1,
    ):
        try:
            from vllm import LLM
        except ImportError:
            raise InstrAugError("the vllm backend needs vLLM on a CUDA machine: pip install 'instraug-plugin[vllm]'") from None
        if quantization_bits not in (None, 4):
            raise InstrAugError(f"the vllm backend quantizes with bitsandbytes 4-bit only, got {quantization_bits} bits")
        path = resolve_model_path(model)
        self.max_model_len = max_model_len
        self.model_id = model_id(model) + ("@bnb4" if quantization_bits else "")
        try:
            self.llm = LLM(
                model=str(path), dtype="auto", quantization="bitsandbytes" if quantization_bits else None,
                gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                tensor_parallel_size=tensor_parallel_size, seed=0,
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise InstrAugError(f"vLLM cannot load rewriter model {path}: {first_line(exc)}") from None

    @property
    def context_length(self) -> int:
        """The engine's `max_model_len` (prompt + reply)."""
        return self.max_model_len

    def prompt_tokens(self, messages: Sequence[tuple[str, str]]) -> int:
        """Length in tokens of a chat prompt, rendered with the model's chat template."""
        tokenizer = self.llm.get_tokenizer()
        text = tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in messages], tokenize=False,
                                             add_generation_prompt=True)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """One `Reply` per request, in order, with vLLM's finish reason (`length`: cut off by `max_tokens`)."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        params = []
        for request in requests:
            options = sampling_options(request, self.model_id)
            regex = options.pop("regex")
            params.append(SamplingParams(
                **options, structured_outputs=StructuredOutputsParams(regex=regex) if regex else None,
            ))
        conversations = [[{"role": role, "content": content} for role, content in r.messages] for r in requests]
        outputs = self.llm.chat(conversations, params, use_tqdm=False)
        return [Reply(output.outputs[0].text, output.outputs[0].finish_reason or STOP) for output in outputs]

    def close(self) -> None:
        import torch

        del self.llm
        torch.cuda.empty_cache()
