"""Pregen throughput and yield, measured side by side in one run on one model and one seed set.

Arms (same model, dtype, seeds, meta-prompts, sampling parameters and filters):
  reference          the reference code's shape: a sequential loop over seeds and meta-prompts,
                     batches of 2, mask-then-filter (placeholders masked as {A}, unconstrained
                     sampling), transformers' own `generate` and top-p sampler
  batched            the pipeline: all requests batched (--batch-size) by meta-prompt,
                     placeholder-safe by construction, the shared-prefix decoder (one prefill per
                     meta-prompt prefix, per-row budgets, finished rows leave the batch, top-p by
                     NucleusSampler)
  batched-mask       `batched` in mask-then-filter mode (isolates the yield difference)
  batched-generate   `batched` decoded by transformers' `generate` (isolates the decoder)

Prints generations/s, kept paraphrases/s, placeholder yield (generations whose placeholders survive
/ generations) and kept yield (kept / generations), and three ratios: batched decoding
(batched-mask vs reference, the same placeholder mode), the whole pipeline (batched vs reference,
kept paraphrases/s) and the decoder (batched vs batched-generate). A short warm-up generation runs
first so no arm pays one-time costs.

    python benchmarks/pregen_throughput.py --seeds 8 --batch-size 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from instraug_plugin.backends.decoding import shared_prefixes
from instraug_plugin.backends.transformers_backend import TransformersBackend
from instraug_plugin.core.cache import GenerationCache
from instraug_plugin.core.placeholders import DEFAULT_SPEC, PlaceholderSpec
from instraug_plugin.generation.pipeline import PregenConfig, build_jobs, run_pregen
from instraug_plugin.generation.prompts import load_meta_prompts
from instraug_plugin.inputs import load_seeds
from instraug_plugin.resources import bundled_templates_file


def pick_seeds(n: int):
    """`n` seeds with placeholders and free text, spread over tasks (round-robin)."""
    by_task: dict[str, list] = {}
    for seed in load_seeds(bundled_templates_file()):
        masked = DEFAULT_SPEC.mask(seed.text)
        if masked.originals and masked.has_free_text():
            by_task.setdefault(seed.task, []).append(seed)
    picked, depth = [], 0
    while len(picked) < n:
        picked += [seeds[depth] for seeds in by_task.values() if len(seeds) > depth][: n - len(picked)]
        depth += 1
    return picked


def prompt_shape(seeds, backend, prompts, config) -> dict[str, float]:
    """Mean prompt tokens per request and how many of them its meta-prompt's rows share."""
    jobs = build_jobs([(seed, seed.text) for seed in seeds], prompts, config, PlaceholderSpec(), 1)
    messages = [job.request.messages for job in jobs]
    texts = [backend.tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in m], tokenize=False,
                                                   add_generation_prompt=True) for m in messages]
    tokens = backend.tokenizer(texts, add_special_tokens=False)["input_ids"]
    groups, shared = shared_prefixes(tokens, [m[:-1] for m in messages])
    return {"prompt_tokens_mean": round(statistics.mean(map(len, tokens)), 1),
            "shared_prefix_tokens_mean": round(statistics.mean(shared[g] for g in groups), 1)}


def run_arm(name, seeds, backend, prompts, config, batch_size_for_backend):
    backend.batch_size = batch_size_for_backend
    backend.decoder = "generate" if name in ("reference", "batched-generate") else "shared-prefix"
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        if name == "reference":  # one seed at a time, one meta-prompt at a time: batches of 2 samples
            counts = {"generated": 0, "kept": 0, "placeholders": 0}
            for seed in seeds:
                result = run_pregen([seed], backend, prompts, config, GenerationCache(Path(tmp) / f"{seed.seed_id.replace('/', '_')}.jsonl"))
                counts["generated"] += result.counts["generated"]
                counts["kept"] += result.counts["kept"]
                counts["placeholders"] += result.counts["filters"]["placeholders"]["rejected"] + result.counts["filters"]["extraction"]["rejected"]
        else:
            result = run_pregen(seeds, backend, prompts, config, GenerationCache(Path(tmp) / "c.jsonl"))
            counts = {
                "generated": result.counts["generated"], "kept": result.counts["kept"],
                "placeholders": result.counts["filters"]["placeholders"]["rejected"] + result.counts["filters"]["extraction"]["rejected"],
            }
        seconds = time.perf_counter() - started
        replies = [row["text"] for cache in Path(tmp).glob("*.jsonl") for row in map(json.loads, cache.open())]
    generated = counts["generated"]
    reply_tokens = [len(backend.tokenizer(r, add_special_tokens=False)["input_ids"]) for r in replies]
    return {
        "arm": name, "seconds": round(seconds, 1), "generated": generated, "kept": counts["kept"],
        "mean_reply_tokens": round(statistics.mean(reply_tokens), 1),
        "generations_per_s": round(generated / seconds, 3), "kept_per_s": round(counts["kept"] / seconds, 3),
        "placeholder_yield": round((generated - counts["placeholders"]) / generated, 3),
        "kept_yield": round(counts["kept"] / generated, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=40)
    parser.add_argument("--direct-prompts", type=int, default=5)
    parser.add_argument("--guided-prompts", type=int, default=5)
    parser.add_argument("--device", default=None)
    parser.add_argument("--quantization-bits", type=int, default=None)
    parser.add_argument("--dtype", default="auto", help="auto (bfloat16 on CUDA and AMX CPUs), float32, bfloat16, float16")
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    args = parser.parse_args()

    seeds = pick_seeds(args.seeds)
    prompts = load_meta_prompts(args.direct_prompts, args.guided_prompts)
    backend = TransformersBackend(args.model, device=args.device, quantization_bits=args.quantization_bits, dtype=args.dtype)
    _ = backend.sentinel_vocabulary  # token tables built once, outside the timings
    warmup = PregenConfig(batch_size=2, max_new_tokens=4)
    run_pregen(seeds[:1], backend, prompts[:1], warmup, GenerationCache(Path(tempfile.mkdtemp()) / "warmup.jsonl"))
    rows = [
        run_arm("reference", seeds, backend, prompts, PregenConfig(placeholder_mode="mask", batch_size=2), 2),
        run_arm("batched", seeds, backend, prompts, PregenConfig(batch_size=args.batch_size), args.batch_size),
        run_arm("batched-mask", seeds, backend, prompts, PregenConfig(placeholder_mode="mask", batch_size=args.batch_size), args.batch_size),
        run_arm("batched-generate", seeds, backend, prompts, PregenConfig(batch_size=args.batch_size), args.batch_size),
    ]
    ref, batched, batched_mask, batched_generate = rows
    summary = {
        "model": backend.model_id, "device": str(backend.model.device), "dtype": str(backend.model.dtype).removeprefix("torch."),
        "seeds": len(seeds),
        "meta_prompts": len(prompts), "batch_size": args.batch_size,
        **prompt_shape(seeds, backend, prompts, PregenConfig()), "arms": rows,
        "batching_speedup_generations_per_s": round(batched_mask["generations_per_s"] / ref["generations_per_s"], 2),
        "pipeline_speedup_kept_per_s": round(batched["kept_per_s"] / max(ref["kept_per_s"], 1e-9), 2),
        "decoder_speedup_generations_per_s": round(batched["generations_per_s"] / batched_generate["generations_per_s"], 2),
    }
    print(f"{'arm':<18} {'sec':>7} {'gen':>5} {'kept':>5} {'gen/s':>7} {'kept/s':>7} {'ph-yield':>8} {'kept-yield':>10}")
    for r in rows:
        print(f"{r['arm']:<18} {r['seconds']:>7} {r['generated']:>5} {r['kept']:>5} {r['generations_per_s']:>7} "
              f"{r['kept_per_s']:>7} {r['placeholder_yield']:>8.0%} {r['kept_yield']:>10.0%}")
    print(f"prompt tokens per request {summary['prompt_tokens_mean']}, shared by its meta-prompt's rows "
          f"{summary['shared_prefix_tokens_mean']}; mean reply tokens per arm: "
          + ", ".join(f"{r['arm']} {r['mean_reply_tokens']}" for r in rows))
    print(f"batched decoding, same placeholder mode (batched-mask vs reference): {summary['batching_speedup_generations_per_s']}x generations/s")
    print(f"whole pipeline (batched vs reference): {summary['pipeline_speedup_kept_per_s']}x kept paraphrases/s")
    print(f"shared-prefix decoder (batched vs batched-generate): {summary['decoder_speedup_generations_per_s']}x generations/s")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
