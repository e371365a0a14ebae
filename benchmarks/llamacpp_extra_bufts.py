"""Does turning off llama.cpp's extra buffer types (the AMX crash workaround) cost speed on a CPU without AMX?

On CPUs with AMX llama.cpp 0.3.36 crashes in its AMX matrix multiply (upstream issue 20824) unless
`use_extra_bufts` is off; elsewhere the extra buffer types hold weights repacked for the CPU's AVX2/AVX-512
kernels. `LlamaCppBackend` turns them off on every CPU, by this measurement. Arms: the same model, requests and seeds loaded with the extra buffer
types on and off; `--repeats` rounds, arms interleaved (order alternated), each figure the median with
[min, max], the ratio off/on computed within each round.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/llamacpp_extra_bufts.py --model qwen2.5-coder-1.5b --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from instraug_plugin.backends.base import GenerationRequest
from instraug_plugin.backends.llamacpp_backend import LlamaCppBackend
from instraug_plugin.generation.prompts import default_counts, load_meta_prompts

SEEDS = ["How many shapes are in the scene?", "Describe the content of {A} in the image.",
         "Select the region containing \"{A}\". {B}", "What is the text in the given region {A}?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args()
    if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():  # as transformers_backend.resolve_dtype asks
        parser.error("this CPU has AMX: the 'on' arm would crash (that is what the workaround is for)")
    prompts = load_meta_prompts(*default_counts("varied"))
    requests = [GenerationRequest(p.messages(seed), 0.9, max_new_tokens=args.max_new_tokens)
                for seed in SEEDS for p in prompts if p.language == "en"]
    arms = {name: LlamaCppBackend(args.model, batch_size=len(requests), threads=args.threads, extra_buffer_types=extra)
            for name, extra in (("on", True), ("off", False))}
    for backend in arms.values():
        backend.generate(requests[:1])  # warm-up
    seconds: dict[str, list[float]] = {"on": [], "off": []}
    tokens: dict[str, list[int]] = {"on": [], "off": []}
    for repeat in range(args.repeats):
        for name in (("on", "off") if repeat % 2 == 0 else ("off", "on")):
            started = time.perf_counter()
            replies = arms[name].generate(requests)
            seconds[name].append(time.perf_counter() - started)
            tokens[name].append(sum(len(arms[name].tokenize(r)) for r in replies))
    rates = {name: [t / s for t, s in zip(tokens[name], seconds[name])] for name in arms}
    ratio = [off / on for off, on in zip(rates["off"], rates["on"])]
    result = {name: {"tokens_per_s": round(statistics.median(r), 2), "range": [round(min(r), 2), round(max(r), 2)]}
              for name, r in rates.items()}
    result["off_vs_on"] = {"median": round(statistics.median(ratio), 3), "range": [round(min(ratio), 3), round(max(ratio), 3)]}
    result |= {"model": args.model, "threads": args.threads, "requests": len(requests), "repeats": args.repeats}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
