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
  batched-mask-generate  `batched-mask` decoded by transformers' `generate`: differs from `reference`
                     only in batching (isolates batching)
  llamacpp           the same requests through llama.cpp (`--backend llamacpp`: the GGUF file as
                     is, --batch-size sequences per decode, shared prompt prefix prefilled once),
                     placeholder-safe by construction with the constraint's GBNF grammar
  llamacpp-mask      `llamacpp` in mask-then-filter mode

Prints generations/s, kept paraphrases/s (after every filter, the meaning filters included),
placeholder yield (generations whose placeholders survive / generations) and kept yield (kept /
generations), the filters' share of the arm's time (the fidelity judge's batched scoring is most of
it), and **faithful kept/s**: kept/s times the share of kept paraphrases that are faithful in that
placeholder mode on the hand-labeled set (`benchmarks/results/fidelity_judge.json`, at the default
filters). With `--repeats N` every arm runs N times (arms interleaved, the order rotated each round)
and each figure is the median with its range. Each ratio compares two arms that differ in one thing,
is computed within each round (the arms of a round ran back to back) and reported as the median
over rounds with its range:
  batching            batched-mask-generate vs reference (batch size only), generations/s
  decoder (mask)      batched-mask vs batched-mask-generate (shared-prefix decoder only), generations/s
  decoder             batched vs batched-generate (shared-prefix decoder only, constrained), generations/s
  constraint          batched vs batched-mask (constrained vs mask-then-filter only), generations/s
  whole pipeline      batched vs reference (everything), kept paraphrases/s
  engine              llamacpp vs batched, llamacpp-mask vs batched-mask (the engine only), kept/s
A short warm-up generation runs first. Both engines run with the same number of threads
(`torch.get_num_threads()`, i.e. OMP_NUM_THREADS; llama.cpp's `n_threads` is set to it).

Peak memory per arm: both engines live in this one process, so an arm's figure is its engine's
resident model (the RSS increase when that backend loaded, measured once) plus the arm's working
peak (VmHWM, reset through /proc/self/clear_refs before the arm, minus the RSS at its start).

    python benchmarks/pregen_throughput.py --seeds 8 --batch-size 40 --repeats 3 --json benchmarks/results/pregen_throughput_cpu.json
    python benchmarks/pregen_throughput.py --arms batched,batched-mask --repeats 3 --json benchmarks/results/pregen_modes_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from instraug_plugin.backends.decoding import shared_prefixes
from instraug_plugin.backends.llamacpp_backend import LlamaCppBackend
from instraug_plugin.backends.transformers_backend import TransformersBackend
from instraug_plugin.core.cache import GenerationCache
from instraug_plugin.core.filters import DEFAULT_FIDELITY_JUDGE
from instraug_plugin.core.instances import content_spec
from instraug_plugin.core.placeholders import DEFAULT_SPEC, PlaceholderSpec
from instraug_plugin.generation.pipeline import PregenConfig, build_jobs, run_pregen
from instraug_plugin.generation.prompts import load_meta_prompts
from instraug_plugin.inputs import load_seeds
from instraug_plugin.judges import load_judge
from instraug_plugin.procmem import memory_mib, reset_peak_memory
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
    jobs = build_jobs([(seed, seed.text) for seed in seeds], prompts, config, {"template": PlaceholderSpec(), "instance": content_spec()}, 1)
    messages = [job.request.messages for job in jobs]
    texts = [backend.tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in m], tokenize=False,
                                                   add_generation_prompt=True) for m in messages]
    tokens = backend.tokenizer(texts, add_special_tokens=False)["input_ids"]
    groups, shared = shared_prefixes(tokens, [m[:-1] for m in messages])
    return {"prompt_tokens_mean": round(statistics.mean(map(len, tokens)), 1),
            "shared_prefix_tokens_mean": round(statistics.mean(shared[g] for g in groups), 1)}


def loaded(make):
    """`make()`'s result and the RSS increase (MiB) it caused."""
    before = memory_mib("VmRSS")
    backend = make()
    return backend, memory_mib("VmRSS") - before


def run_arm(name, seeds, backend, prompts, config, batch_size_for_backend, judge, tokenizer, model_mib):
    backend.batch_size = batch_size_for_backend
    if isinstance(backend, TransformersBackend):
        backend.decoder = "generate" if name in ("reference", "batched-generate", "batched-mask-generate") else "shared-prefix"
    start_rss = memory_mib("VmRSS")
    reset_peak_memory()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        if name == "reference":  # one seed at a time, one meta-prompt at a time: batches of 2 samples
            counts = {"generated": 0, "kept": 0, "placeholders": 0}
            for seed in seeds:
                result = run_pregen([seed], backend, prompts, config, GenerationCache(Path(tmp) / f"{seed.seed_id.replace('/', '_')}.jsonl"), judge=judge)
                counts["generated"] += result.counts["generated"]
                counts["kept"] += result.counts["kept"]
                counts["placeholders"] += result.counts["filters"]["placeholders"]["rejected"] + result.counts["filters"]["extraction"]["rejected"]
        else:
            result = run_pregen(seeds, backend, prompts, config, GenerationCache(Path(tmp) / "c.jsonl"), judge=judge)
            counts = {
                "generated": result.counts["generated"], "kept": result.counts["kept"],
                "placeholders": result.counts["filters"]["placeholders"]["rejected"] + result.counts["filters"]["extraction"]["rejected"],
                "filter_seconds": result.counts["filter_seconds"],
                "fidelity_rejected": result.counts["filters"].get("fidelity", {}).get("rejected", 0),
            }
        seconds = time.perf_counter() - started
        working_mib = memory_mib("VmHWM") - start_rss
        replies = [row["text"] for cache in Path(tmp).glob("*.jsonl") for row in map(json.loads, cache.open())]
    generated = counts["generated"]
    reply_tokens = [len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in replies]
    return {
        "arm": name, "engine": backend.name, "seconds": round(seconds, 1), "generated": generated, "kept": counts["kept"],
        "peak_memory_mib": round(model_mib + working_mib, 1), "working_peak_mib": round(working_mib, 1),
        "mean_reply_tokens": round(statistics.mean(reply_tokens), 1),
        "generations_per_s": round(generated / seconds, 3), "kept_per_s": round(counts["kept"] / seconds, 3),
        "placeholder_yield": round((generated - counts["placeholders"]) / generated, 3),
        "kept_yield": round(counts["kept"] / generated, 3),
        "filter_share": round(counts.get("filter_seconds", 0.0) / seconds, 4),
        "fidelity_rejected": counts.get("fidelity_rejected", 0),
        "faithful_kept_per_s": round(counts["kept"] * FAITHFUL_SHARE[config.placeholder_mode] / seconds, 3),
    }


def faithful_share() -> dict[str, float]:
    """Share of kept paraphrases that are faithful per placeholder mode, on the labeled set (default filters)."""
    published = json.loads((Path(__file__).parent / "results" / "fidelity_judge.json").read_text())
    judge = published["judges"][DEFAULT_FIDELITY_JUDGE]
    return {mode: point["precision"] for mode, point in judge["per_mode"].items()}


FAITHFUL_SHARE = faithful_share()
ARMS = ("reference", "batched", "batched-mask", "batched-generate", "batched-mask-generate", "llamacpp", "llamacpp-mask")
LLAMACPP_ARMS = ("llamacpp", "llamacpp-mask")
# (name, numerator arm, denominator arm, figure): each pair differs in one thing (see the docstring)
RATIOS = (
    ("batching", "batched-mask-generate", "reference", "generations_per_s"),
    ("decoder_mask", "batched-mask", "batched-mask-generate", "generations_per_s"),
    ("decoder", "batched", "batched-generate", "generations_per_s"),
    ("constraint", "batched", "batched-mask", "generations_per_s"),
    ("whole_pipeline_kept", "batched", "reference", "kept_per_s"),
    ("mask_vs_constrained_faithful_kept", "batched-mask", "batched", "faithful_kept_per_s"),
    ("engine_kept", "llamacpp", "batched", "kept_per_s"),
    ("engine_mask_kept", "llamacpp-mask", "batched-mask", "kept_per_s"),
    ("engine_generations", "llamacpp", "batched", "generations_per_s"),
    ("engine_mask_generations", "llamacpp-mask", "batched-mask", "generations_per_s"),
)


def median_row(runs: list[dict]) -> dict:
    """Each numeric figure's median over runs, with its [min, max] range."""
    row = {"arm": runs[0]["arm"], "runs": len(runs)}
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and key != "arm":
            values = [r[key] for r in runs]
            row[key] = round(statistics.median(values), 4)
            row[key + "_range"] = [min(values), max(values)]
    return row


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
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {', '.join(ARMS)}")
    parser.add_argument("--repeats", type=int, default=1, help="runs per arm (medians and ranges when > 1)")
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    args = parser.parse_args()

    seeds = pick_seeds(args.seeds)
    prompts = load_meta_prompts(args.direct_prompts, args.guided_prompts)
    arms = [a.strip() for a in args.arms.split(",")]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"unknown arms {unknown}; choose from {', '.join(ARMS)}")
    judge = load_judge(DEFAULT_FIDELITY_JUDGE, device=args.device)  # loaded once, outside the timings
    backend, transformers_mib = loaded(lambda: TransformersBackend(
        args.model, device=args.device, quantization_bits=args.quantization_bits, dtype=args.dtype))
    _ = backend.sentinel_vocabulary  # token tables built once, outside the timings
    engines = {"transformers": (backend, transformers_mib)}
    if any(arm in LLAMACPP_ARMS for arm in arms):
        engines["llamacpp"] = loaded(lambda: LlamaCppBackend(args.model, batch_size=args.batch_size, threads=torch.get_num_threads()))
    warmup = PregenConfig(batch_size=2, max_new_tokens=4)
    for engine, _ in engines.values():
        run_pregen(seeds[:1], engine, prompts[:1], warmup, GenerationCache(Path(tempfile.mkdtemp()) / "warmup.jsonl"), judge=judge)
    configs = {
        "reference": (PregenConfig(placeholder_mode="mask", batch_size=2), 2),
        "batched": (PregenConfig(placeholder_mode="constrained", batch_size=args.batch_size), args.batch_size),
        "batched-mask": (PregenConfig(placeholder_mode="mask", batch_size=args.batch_size), args.batch_size),
        "batched-generate": (PregenConfig(placeholder_mode="constrained", batch_size=args.batch_size), args.batch_size),
        "batched-mask-generate": (PregenConfig(placeholder_mode="mask", batch_size=args.batch_size), args.batch_size),
    }
    configs["llamacpp"], configs["llamacpp-mask"] = configs["batched"], configs["batched-mask"]
    runs: dict[str, list[dict]] = {arm: [] for arm in arms}
    for repeat in range(args.repeats):
        for arm in arms[repeat % len(arms):] + arms[: repeat % len(arms)]:  # rotate the order each round
            engine, model_mib = engines["llamacpp" if arm in LLAMACPP_ARMS else "transformers"]
            runs[arm].append(run_arm(arm, seeds, engine, prompts, *configs[arm], judge, backend.tokenizer, model_mib))
    rows = [median_row(runs[arm]) if args.repeats > 1 else runs[arm][0] for arm in arms]

    ratios = {}
    for name, a, b, key in RATIOS:
        if a in runs and b in runs:  # per round, then the median over rounds
            per_round = [round(x[key] / y[key], 3) for x, y in zip(runs[a], runs[b]) if y[key] > 0]
            if not per_round:  # the denominator arm kept nothing in every round
                continue
            ratios[name] = {"arms": [a, b], "figure": key, "median": round(statistics.median(per_round), 2),
                            "range": [min(per_round), max(per_round)], "rounds": per_round}

    summary = {
        "model": backend.model_id, "device": str(backend.model.device), "dtype": str(backend.model.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(), "seeds": len(seeds), "repeats": args.repeats,
        "model_resident_mib": {name: round(mib, 1) for name, (_, mib) in engines.items()},
        "meta_prompts": len(prompts), "batch_size": args.batch_size, "faithful_share_by_mode": FAITHFUL_SHARE,
        **prompt_shape(seeds, backend, prompts, PregenConfig()), "arms": rows, "runs": runs, "ratios": ratios,
    }
    print(f"{'arm':<22} {'sec':>7} {'gen':>5} {'kept':>5} {'gen/s':>7} {'kept/s':>7} {'faithful/s':>10} {'ph-yield':>8} "
          f"{'kept-yield':>10} {'filters':>7} {'peak MiB':>8}")
    for r in rows:
        print(f"{r['arm']:<22} {r['seconds']:>7} {r['generated']:>5} {r['kept']:>5} {r['generations_per_s']:>7} "
              f"{r['kept_per_s']:>7} {r['faithful_kept_per_s']:>10} {r['placeholder_yield']:>8.0%} {r['kept_yield']:>10.0%} "
              f"{r['filter_share']:>7.1%} {r['peak_memory_mib']:>8}")
    print(f"prompt tokens per request {summary['prompt_tokens_mean']}, shared by its meta-prompt's rows "
          f"{summary['shared_prefix_tokens_mean']}; mean reply tokens per arm: "
          + ", ".join(f"{r['arm']} {r['mean_reply_tokens']}" for r in rows))
    for name, ratio in ratios.items():
        a, b = ratio["arms"]
        print(f"{name} ({a} vs {b}, {ratio['figure']}): {ratio['median']}x, rounds {ratio['range'][0]}-{ratio['range'][1]}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
