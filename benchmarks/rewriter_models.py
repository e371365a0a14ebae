"""Which embedded rewriter, on which engine, gives a user the most faithful kept paraphrases per minute?

Arms: each embedded model (SmolLM2-135M, Qwen2.5-Coder-1.5B) on each CPU engine (llama.cpp: the GGUF as
shipped; transformers: the GGUF dequantized once to float32), every arm with that model's defaults
(meta-prompts, temperature, mask-then-filter, the default filters and fidelity judge), on the same
seeds. The two arms of one model send the same requests and differ only in the engine; the two
models' arms differ in the model and its defaults (what a user switching `--model` gets).

Per arm: seconds, replies, paraphrases extracted, kept (after every filter, the judge included: the
"faithful by the default judge" count), kept per minute, reply tokens per second (each engine's own
tokenizer), new-word share of the kept paraphrases, and peak memory (the engine's resident model,
measured when it loaded, plus the arm's working peak, VmHWM reset before the arm). `--repeats N`
interleaves the arms (order rotated each round); figures are medians with [min, max], and each ratio
is computed within a round and reported as the median over rounds with its range:
  engine (per model)   llama.cpp vs transformers, same model and requests: kept/min, tokens/s
  model (per engine)   qwen vs smollm2 on one engine, each with its defaults: kept/min

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/rewriter_models.py --seeds 6 --repeats 3 \\
        --json benchmarks/results/rewriter_models_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from pregen_throughput import median_row, pick_seeds

from instraug_plugin.backends.embedded import EMBEDDED
from instraug_plugin.backends.llamacpp_backend import LlamaCppBackend
from instraug_plugin.backends.transformers_backend import TransformersBackend
from instraug_plugin.core.cache import GenerationCache
from instraug_plugin.core.diversity import mean_new_word_share
from instraug_plugin.core.filters import FilterConfig
from instraug_plugin.generation.pipeline import PregenConfig, run_pregen
from instraug_plugin.generation.prompts import default_counts, load_meta_prompts
from instraug_plugin.judges import load_judge
from instraug_plugin.procmem import PhasePeak, memory_mib

ENGINES = ("llamacpp", "transformers")


def load_engine(model: str, engine: str, batch_size: int):
    """The backend and the RSS increase (MiB) its loading caused."""
    before = memory_mib("VmRSS")
    if engine == "llamacpp":
        backend = LlamaCppBackend(model, batch_size=batch_size, threads=torch.get_num_threads())
    else:
        backend = TransformersBackend(model, device="cpu", dtype="float32")
        backend.batch_size = batch_size
    return backend, memory_mib("VmRSS") - before


def reply_tokens(backend, text: str) -> int:
    if isinstance(backend, LlamaCppBackend):
        return len(backend.tokenize(text))
    return len(backend.tokenizer(text, add_special_tokens=False)["input_ids"])


def run_arm(model: str, backend, model_mib: float, seeds, batch_size: int, judge) -> dict:
    embedded = EMBEDDED[model]
    prompts = load_meta_prompts(*default_counts(embedded.meta_prompts))
    config = PregenConfig(temperature=embedded.temperature, batch_size=batch_size,
                          filters=FilterConfig(min_fidelity=embedded.min_fidelity, fidelity_judge=embedded.judge,
                                               instance_fidelity_judge=embedded.instance_judge,
                                               instance_min_fidelity=embedded.instance_min_fidelity))
    peak = PhasePeak()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = run_pregen(seeds, backend, prompts, config, GenerationCache(Path(tmp) / "c.jsonl"), judge=judge)
        seconds = time.perf_counter() - started
        replies = [json.loads(line)["text"] for line in (Path(tmp) / "c.jsonl").open(encoding="utf-8")]
    counts = result.counts
    tokens = sum(reply_tokens(backend, r) for r in replies)
    kept = [(r.seed, r.text) for r in result.records if r.strategy != "seed"]
    return {
        "arm": f"{model}/{backend.name}", "seconds": round(seconds, 1), "replies": counts["generated"],
        "candidates": counts["candidates"], "kept": counts["kept"],
        "kept_per_minute": round(60 * counts["kept"] / seconds, 2), "reply_tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 2), "filter_seconds": counts["filter_seconds"],
        "new_word_share": mean_new_word_share(kept) or 0.0,
        "peak_memory_mib": round(model_mib + peak.mib(), 1),
    }


def ratio(runs: dict[str, list[dict]], a: str, b: str, key: str) -> dict | None:
    per_round = [round(x[key] / y[key], 3) for x, y in zip(runs.get(a, []), runs.get(b, [])) if y[key] > 0]
    if not per_round:
        return None
    return {"arms": [a, b], "figure": key, "median": round(statistics.median(per_round), 2),
            "range": [min(per_round), max(per_round)], "rounds": per_round}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(EMBEDDED))
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    engines = [e for e in args.engines.split(",") if e]
    seeds = pick_seeds(args.seeds)
    by_name = {name: load_judge(name) for name in {EMBEDDED[m].judge for m in models}}  # outside the timings
    judges = {model: by_name[EMBEDDED[model].judge] for model in models}
    loaded = {(m, e): load_engine(m, e, args.batch_size) for m in models for e in engines}
    for (model, _), (backend, _) in loaded.items():  # warm-up: one short generation per engine
        run_pregen(seeds[:1], backend, load_meta_prompts(1, 0, 0), PregenConfig(batch_size=1, max_new_tokens=4),
                   GenerationCache(Path(tempfile.mkdtemp()) / "warmup.jsonl"), judge=judges[model])
    arms = list(loaded)
    runs: dict[str, list[dict]] = {}
    for repeat in range(args.repeats):
        for model, engine in arms[repeat % len(arms):] + arms[: repeat % len(arms)]:
            backend, mib = loaded[(model, engine)]
            row = run_arm(model, backend, mib, seeds, args.batch_size, judges[model])
            runs.setdefault(row["arm"], []).append(row)
            print(json.dumps(row), flush=True)
    rows = [median_row(r) for r in runs.values()]
    ratios = {}
    for model in models:
        for key in ("kept_per_minute", "tokens_per_s"):
            if (found := ratio(runs, f"{model}/llamacpp", f"{model}/transformers", key)) is not None:
                ratios[f"engine {model} {key}"] = found
    for engine in engines:
        if (found := ratio(runs, f"qwen2.5-coder-1.5b/{engine}", f"smollm2/{engine}", "kept_per_minute")) is not None:
            ratios[f"model on {engine} kept_per_minute"] = found
    print(f"{'arm':<34} {'sec':>7} {'replies':>7} {'cands':>6} {'kept':>5} {'kept/min':>9} {'tok/s':>7} {'new-word':>8} {'peak MiB':>9}")
    for r in rows:
        print(f"{r['arm']:<34} {r['seconds']:>7} {r['replies']:>7} {r['candidates']:>6} {r['kept']:>5} "
              f"{r['kept_per_minute']:>9} {r['tokens_per_s']:>7} {r['new_word_share']:>8.3f} {r['peak_memory_mib']:>9}")
    for name, found in ratios.items():
        print(f"{name} ({found['arms'][0]} vs {found['arms'][1]}): {found['median']}x [{found['range'][0]}-{found['range'][1]}]")
    if args.json:
        args.json.write_text(json.dumps({"threads": torch.get_num_threads(), "seeds": [s.text for s in seeds],
                                         "repeats": args.repeats, "arms": rows, "ratios": ratios, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
