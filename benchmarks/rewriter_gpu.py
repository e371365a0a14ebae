"""Rewriter throughput per backend on one machine, next to the decode memory-bandwidth bound.

Arms (same model, seeds, meta-prompts, sampling and filters; each a fresh cache):
  transformers       batched, bf16 on CUDA (fp32 on CPU), constrained placeholders
  transformers-bnb4  the same with bitsandbytes 4-bit weights
  vllm               vLLM offline engine, constrained through a structured-outputs regex (CUDA only)

For each arm: paraphrases (generations) per second, kept paraphrases per second, generated tokens
per second. The bound: a decode step reads every weight once, so one sequence cannot exceed
bandwidth / weight bytes tokens per second; with batch B it is B times that while weights dominate
the bytes read. Bandwidth is measured (a device-to-device copy), not looked up. Then, on CUDA, the
peak memory of a 4-bit rewriter next to a LoRA training step of the same-size model.

    python benchmarks/rewriter_gpu.py --seeds 64 --batch-size 256 --json benchmarks/results/gpu.json
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from instraug_plugin.backends.registry import create_backend
from instraug_plugin.core.cache import GenerationCache
from instraug_plugin.generation.pipeline import PregenConfig, run_pregen
from instraug_plugin.generation.prompts import load_meta_prompts

try:
    from pregen_throughput import pick_seeds  # run from the repository root or benchmarks/
except ImportError:
    from benchmarks.pregen_throughput import pick_seeds


def copy_bandwidth(device: str, megabytes: int = 1024) -> float:
    """Bytes per second of a large tensor copy (read + write) on `device`."""
    src = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(2):
        dst.copy_(src)
    _sync(device)
    started = time.perf_counter()
    rounds = 10
    for _ in range(rounds):
        dst.copy_(src)
    _sync(device)
    return 2 * src.numel() * rounds / (time.perf_counter() - started)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def weight_bytes(backend: Any) -> int:
    model = getattr(backend, "model", None)
    if model is None:  # vLLM keeps the weights in its engine; use the transformers arm's figure
        return 0
    return sum(p.numel() * p.element_size() for p in model.parameters())


def run_arm(name: str, backend_name: str, options: dict[str, Any], seeds: list, prompts: list,
            config: PregenConfig) -> dict[str, Any]:
    if backend_name == "transformers":
        options = {**options, "batch_size": config.batch_size}
    backend = create_backend(backend_name, **options)
    tokenizer = getattr(backend, "tokenizer", None)
    try:
        run_pregen(seeds[:1], backend, prompts[:1], PregenConfig(batch_size=2, max_new_tokens=8),
                   GenerationCache(Path(tempfile.mkdtemp()) / "warmup.jsonl"))
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        with tempfile.TemporaryDirectory() as tmp:
            cache = GenerationCache(Path(tmp) / "cache.jsonl")
            started = time.perf_counter()
            result = run_pregen(seeds, backend, prompts, config, cache)
            seconds = time.perf_counter() - started
            replies = [line for line in (Path(tmp) / "cache.jsonl").read_text().splitlines() if line]
        if tokenizer is None:
            from transformers import AutoTokenizer

            from instraug_plugin.backends.conversion import resolve_model_path

            tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(options.get("model", "smollm2")))
        tokens = sum(len(tokenizer(json.loads(r)["text"], add_special_tokens=False)["input_ids"]) for r in replies)
        row = {
            "arm": name, "seconds": round(seconds, 2), "generated": result.counts["generated"],
            "kept": result.counts["kept"], "paraphrases_per_s": round(result.counts["generated"] / seconds, 2),
            "kept_per_s": round(result.counts["kept"] / seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
            "weight_bytes": weight_bytes(backend),
        }
        if torch.cuda.is_available():
            row["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return row
    finally:
        backend.close()
        del backend
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def colocated_memory(model: str) -> dict[str, float]:
    """Peak GPU memory: a LoRA training step alone, the 4-bit rewriter alone, and both in one process."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from instraug_plugin.backends.base import GenerationRequest
    from instraug_plugin.backends.conversion import resolve_model_path

    def train_step(policy) -> None:
        batch = torch.randint(0, 1000, (8, 512), device="cuda")
        loss = policy(input_ids=batch, labels=batch).loss
        loss.backward()

    def peak(fn) -> float:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)

    policy = AutoModelForCausalLM.from_pretrained(resolve_model_path(model), dtype=torch.bfloat16).to("cuda")
    policy = get_peft_model(policy, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    train_alone = peak(lambda: train_step(policy))
    policy.zero_grad(set_to_none=True)
    rewriter = create_backend("transformers", model=model, quantization_bits=4, device="cuda", batch_size=64)
    request = GenerationRequest((("user", "Rephrase: describe the image {A}."),), 0.7, max_new_tokens=48,
                                required_spans=("{A}",), single_line=True)
    rewriter_alone = peak(lambda: rewriter.generate([request] * 64))
    both = peak(lambda: (train_step(policy), rewriter.generate([request] * 64)))
    rewriter.close()
    return {"lora_step_peak_mib": train_alone, "rewriter_bnb4_generate_peak_mib": rewriter_alone,
            "colocated_peak_mib": both}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--arms", default="transformers,transformers-bnb4,vllm")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    seeds = pick_seeds(args.seeds)
    prompts = load_meta_prompts(5, 5)
    config = PregenConfig(batch_size=args.batch_size)
    arms = {
        "transformers": ("transformers", {"model": args.model, "device": args.device}),
        "transformers-bnb4": ("transformers", {"model": args.model, "device": args.device, "quantization_bits": 4}),
        "vllm": ("vllm", {"model": args.model}),
    }
    rows = []
    for name in args.arms.split(","):
        if name == "vllm" and not args.device.startswith("cuda"):
            print("vllm: skipped (needs CUDA)")
            continue
        rows.append(run_arm(name, *arms[name], seeds, prompts, config))
        print(json.dumps(rows[-1]))
    bandwidth = copy_bandwidth(args.device)
    summary: dict[str, Any] = {"model": args.model, "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
                               "seeds": len(seeds), "meta_prompts": len(prompts), "batch_size": args.batch_size,
                               "copy_bandwidth_gb_s": round(bandwidth / 1e9, 1), "arms": rows}
    reference_bytes = next((r["weight_bytes"] for r in rows if r["weight_bytes"]), 0)
    for row in rows:
        bytes_per_step = row["weight_bytes"] or reference_bytes
        if bytes_per_step:
            bound = bandwidth / bytes_per_step * args.batch_size
            row["decode_bound_tokens_per_s"] = round(bound, 1)
            row["fraction_of_bound"] = round(row["tokens_per_s"] / bound, 4)
    if args.device.startswith("cuda"):
        summary["colocated"] = colocated_memory(args.model)
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
