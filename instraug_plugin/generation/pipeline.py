"""The pregen pipeline: seeds → masked meta-prompts → batched cached generation → extract, restore,
filter → pool records.

Strategies (InstrAug): `single` (one temperature), `multi_temperature` (a list of temperatures,
merged), `iterative` (N rounds, each fed with the previous round's *filtered* outputs; length is
compared with the parent, placeholders with the root seed).

Placeholder modes: `mask` (default; the paper's mask-then-filter: unconstrained sampling, the
placeholder filter rejects what broke) and `constrained` (the backend must emit every sentinel
exactly once: safe by construction, but a weak rewriter then often forces them into nonsense).
Either way no kept paraphrase changes a placeholder.

Per-task budgets (`pregen --plan`, `core.plan`): a task with budget b asks b times as many samples
per meta-prompt and temperature in the first round (sample indices continue where budget 1 stops,
so budget 1 asks exactly the requests of a run without a plan and cached replies stay valid); later
iterative rounds grow with the kept outputs they rephrase.

A reply the backend cut off at its token budget is rejected as `truncated` before extraction and
filtering (constrained decoding could not finish it, so a missing placeholder is not a `placeholders`
reject).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from instraug_plugin.backends.base import GenerationRequest, RewriterBackend, generate_batches
from instraug_plugin.core.cache import GenerationCache
from instraug_plugin.core.errors import InstrAugError, describe, redact
from instraug_plugin.core.extract import extract_items, extract_reply
from instraug_plugin.core.filters import Candidate, FidelityJudge, FilterChain, FilterConfig, text_units
from instraug_plugin.core.instances import INSTANCE, TEMPLATE, content_spec
from instraug_plugin.core.language import language_of
from instraug_plugin.core.placeholders import MaskedText, PlaceholderSpec
from instraug_plugin.core.pool import POOL_FORMAT, SEED_STRATEGY, PoolRecord, check_pool_output, write_pool
from instraug_plugin.core.replies import is_truncated
from instraug_plugin.generation.prompts import MetaPrompt, prompts_for
from instraug_plugin.inputs.base import SeedInstruction
from instraug_plugin.judges import load_judge

STRATEGIES = ("single", "multi_temperature", "iterative")
PLACEHOLDER_MODES = ("constrained", "mask")
MULTI_TEMPERATURES = tuple(round(0.5 + 0.05 * i, 2) for i in range(11))
MAX_TEMPERATURE = 5.0  # sampling temperatures above this are noise, and a typo more often than a choice
EXTRACTION = "extraction"
TRUNCATED = "truncated"
CACHE_FILE = "cache.jsonl"


@dataclass(frozen=True)
class PregenConfig:
    """How paraphrases are generated and filtered (recorded in the pool manifest)."""

    strategy: str = "single"
    temperature: float = 0.6
    temperatures: tuple[float, ...] = MULTI_TEMPERATURES
    rounds: int = 2
    top_p: float = 0.9
    samples_per_prompt: int = 1
    placeholder_mode: str = "mask"  # more faithful kept paraphrases than constrained (README, labeled set)
    batch_size: int = 32
    max_new_tokens: int | None = None
    min_per_seed: int = 0  # top-up: seeds with fewer kept paraphrases are asked again (0: off)
    top_up_rounds: int = 2  # at most this many top-up passes
    filters: FilterConfig = field(default_factory=FilterConfig)
    extra_placeholders: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InstrAugError(f"strategy must be one of {', '.join(STRATEGIES)}; got {self.strategy!r}")
        if self.placeholder_mode not in PLACEHOLDER_MODES:
            raise InstrAugError(f"placeholder mode must be one of {', '.join(PLACEHOLDER_MODES)}; got {self.placeholder_mode!r}")
        if self.rounds < 1 or self.samples_per_prompt < 1 or self.batch_size < 1:
            raise InstrAugError("rounds, samples per prompt and batch size must be at least 1")
        if self.min_per_seed < 0 or self.top_up_rounds < 0:
            raise InstrAugError(f"--min-per-seed and --top-up-rounds must be >= 0; got {self.min_per_seed}, {self.top_up_rounds}")
        if not self.filters.length_low < self.filters.length_high:
            raise InstrAugError("length window: low must be below high")
        if not 0 <= self.filters.min_fidelity <= 1:
            raise InstrAugError(f"--min-fidelity must be in [0, 1] (0 turns the filter off); got {self.filters.min_fidelity}")
        if not 0 <= self.filters.instance_min_fidelity <= 1:
            raise InstrAugError(f"--instance-min-fidelity must be in [0, 1]; got {self.filters.instance_min_fidelity}")
        for temperature in (self.temperature, *self.temperatures):
            if not (math.isfinite(temperature) and 0 <= temperature <= MAX_TEMPERATURE):
                raise InstrAugError(f"--temperature/--temperatures: expected a number in [0, {MAX_TEMPERATURE:g}], got {temperature}")
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise InstrAugError(f"--top-p: expected a number in (0, 1], got {self.top_p}")
        if not (math.isfinite(self.filters.length_low) and math.isfinite(self.filters.length_high)
                and self.filters.length_low >= 0):
            raise InstrAugError(f"--length-window: expected finite numbers >= 0, got {self.filters.length_low},{self.filters.length_high}")
        if not (math.isfinite(self.filters.length_slack) and self.filters.length_slack >= 0):
            raise InstrAugError(f"--length-slack: expected a finite number >= 0, got {self.filters.length_slack}")
        if not 0 <= self.filters.near_duplicate_threshold <= 1:
            raise InstrAugError(f"--near-duplicate: expected a number in [0, 1], got {self.filters.near_duplicate_threshold}")

    @property
    def sampling_temperatures(self) -> tuple[float, ...]:
        return self.temperatures if self.strategy == "multi_temperature" else (self.temperature,)

    @property
    def n_rounds(self) -> int:
        return self.rounds if self.strategy == "iterative" else 1


@dataclass(frozen=True)
class _Job:
    seed: SeedInstruction
    parent: str
    masked: MaskedText
    meta_prompt: MetaPrompt
    round: int
    request: GenerationRequest


@dataclass
class PregenResult:
    """Pool records (seeds first, then kept paraphrases) and the counts for the manifest."""

    records: list[PoolRecord]
    counts: dict[str, object]


ProgressCallback = Callable[[int, int], None]


def _max_new_tokens(masked: MaskedText, config: PregenConfig, count: int = 1) -> int:
    """Enough tokens for `count` of the longest paraphrase the length filter can keep, bucketed by 16.

    ~1.5 tokens a word (CJK: a character) and 3 per sentinel, 4 per list number; a reply past this
    bound is rejected anyway, so a model that starts repeating itself stops early instead of holding
    up its whole batch.
    """
    if config.max_new_tokens:
        return config.max_new_tokens
    words = max(text_units(masked.text) - len(masked.originals), 1)
    longest = max(words * config.filters.length_high, words + config.filters.length_slack)
    bound = count * (1.5 * longest + 3 * len(masked.originals) + 4) + 8
    return int(16 * -(-bound // 16))


def _batch_key(request: GenerationRequest) -> tuple:
    """Requests that batch well sit next to each other: same sampling, same earlier turns (one
    meta-prompt: a long shared prompt prefix a backend can prefill once), similar lengths."""
    return (request.temperature, request.top_p, request.messages[:-1], request.max_new_tokens,
            sum(len(content) for _, content in request.messages))


def generate_cached(
    backend: RewriterBackend,
    requests: Sequence[GenerationRequest],
    cache: GenerationCache,
    batch_size: int,
    on_batch: ProgressCallback | None = None,
) -> tuple[list[str], int]:
    """Replies for `requests`, generating only batches not fully cached; returns (replies, cache hits).

    Batches are formed from the full request list before looking at the cache, so an interrupted
    run that resumes generates exactly the same batches (and, with per-batch seeding, replies).
    """
    model_id = backend.model_id
    order = sorted(range(len(requests)), key=lambda i: _batch_key(requests[i]))
    keys = [r.cache_key(model_id) for r in requests]
    chunks = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    pending = [chunk for chunk in chunks if not all(keys[i] in cache for i in chunk)]
    hits = sum(len(chunk) for chunk in chunks) - sum(len(chunk) for chunk in pending)
    done = len(order) - sum(len(chunk) for chunk in pending)
    if on_batch and done:
        on_batch(done, len(order))
    batches = [[requests[i] for i in chunk] for chunk in pending]
    try:
        for index, replies in generate_batches(backend, batches):
            cache.put_many((keys[i], text) for i, text in zip(pending[index], replies))
            done += len(pending[index])
            if on_batch:
                on_batch(done, len(order))
    except InstrAugError:
        raise
    except Exception as exc:
        raise InstrAugError(
            f"rewriter {model_id} failed on a batch ({redact(describe(exc))}); finished batches are cached, rerun to resume"
        ) from exc
    return [reply if (reply := cache.get(k)) is not None else "" for k in keys], hits  # an empty reply keeps its finish reason


def check_context(backend: RewriterBackend, jobs: Sequence[_Job]) -> None:
    """Fail in one line, before generating, if a seed's prompt plus its reply budget exceeds the
    model's context (the seed is named). Only the longest request of each seed is tokenized.

    Backends that cannot tell (no `context_length` / `prompt_tokens`: openai, ray) are not checked;
    an OpenAI-compatible server rejects such a request itself, which fails the run in one line.
    """
    limit = getattr(backend, "context_length", None)
    count = getattr(backend, "prompt_tokens", None)
    if limit is None or count is None:
        return
    longest: dict[str, _Job] = {}
    for job in jobs:
        size = sum(len(content) for _, content in job.request.messages) + job.request.max_new_tokens
        best = longest.get(job.seed.seed_id)
        if best is None or size > sum(len(c) for _, c in best.request.messages) + best.request.max_new_tokens:
            longest[job.seed.seed_id] = job
    for job in longest.values():
        prompt = count(job.request.messages)
        if prompt + job.request.max_new_tokens > limit:
            words = " ".join(job.parent.split()[:8])
            raise InstrAugError(
                f"seed {job.seed.seed_id} ({words!r}...): prompt of {prompt} tokens + reply budget of "
                f"{job.request.max_new_tokens} exceeds the {limit}-token context of {backend.model_id}; "
                "shorten or remove this seed"
            )


def run_pregen(
    seeds: Sequence[SeedInstruction],
    backend: RewriterBackend,
    meta_prompts: Sequence[MetaPrompt],
    config: PregenConfig,
    cache: GenerationCache,
    on_batch: ProgressCallback | None = None,
    judge: FidelityJudge | None = None,
    budgets: Mapping[str, int] | None = None,
) -> PregenResult:
    """Generate, filter and collect paraphrases for `seeds` (deterministic given the cache state).

    The fidelity filter uses `judge`, else the one `config.filters` names (loaded here); it is off
    when `config.filters.min_fidelity` is 0. `budgets` multiplies a task's first-round samples
    (tasks not in it: 1).
    """
    if config.placeholder_mode == "constrained" and not backend.supports_constraints:
        hint = " (or --structured-outputs for a vLLM server)" if backend.name == "openai" else ""
        raise InstrAugError(
            f"backend {backend.name} cannot decode with constraints; rerun with --placeholder-mode mask{hint}"
        )
    if config.placeholder_mode == "constrained" and any(m.count > 1 for m in meta_prompts):
        raise InstrAugError("--placeholder-mode constrained decodes one paraphrase per reply; the varied meta-prompts ask "
                            "for a list (checked by the placeholder filter): use --placeholder-mode mask or --varied-prompts 0")
    specs = {TEMPLATE: PlaceholderSpec(extra_patterns=config.extra_placeholders),
             INSTANCE: content_spec(config.extra_placeholders)}
    spec = specs[TEMPLATE]
    filters = config.filters
    judged = filters.min_fidelity > 0 or (
        filters.answer and filters.instance_min_fidelity > 0 and any(s.kind == INSTANCE for s in seeds))
    if judge is None and judged:
        judge = load_judge(filters.fidelity_judge)
    instance_judge = None
    instance_name = filters.instance_fidelity_judge
    if judged and instance_name and instance_name != filters.fidelity_judge and any(s.kind == INSTANCE for s in seeds):
        instance_judge = load_judge(instance_name)
    chain = FilterChain(filters, spec, judge if judged else None, instance_judge)
    records = [PoolRecord(task=s.task, seed_id=s.seed_id, seed=s.text, text=s.text, kind=s.kind) for s in seeds]
    for seed in seeds:
        chain.add_seed(seed.seed_id, seed.text)
    parents: list[tuple[SeedInstruction, str]] = []
    no_free_text = too_many_placeholders = 0
    for seed in seeds:
        try:
            masked = specs[seed.kind].mask(seed.text, source=seed.seed_id)
        except InstrAugError:  # more placeholders than sentinel letters: kept as a seed, not rephrased
            too_many_placeholders += 1
            continue
        if masked.has_free_text():
            parents.append((seed, seed.text))
        else:
            no_free_text += 1
    generated = truncated = extraction_failed = hits = candidates = 0
    filter_seconds = 0.0
    generated_per_seed: Counter[str] = Counter()
    candidates_per_seed: Counter[str] = Counter()
    candidates_per_kind: Counter[str] = Counter()
    generated_per_kind: Counter[str] = Counter()
    generated_per_task: Counter[str] = Counter()
    started = time.perf_counter()
    rephrasable = list(parents)
    kept_per_seed: Counter[str] = Counter()
    top_ups = config.top_up_rounds if config.min_per_seed else 0
    for round_index in range(1, config.n_rounds + top_ups + 1):
        if round_index <= config.n_rounds:
            jobs = build_jobs(parents, meta_prompts, config, specs, round_index, budgets if round_index == 1 else None)
        else:  # top-up: one more sample per meta-prompt for the seeds still short of min_per_seed
            short = [(seed, text) for seed, text in rephrasable if kept_per_seed[seed.seed_id] < config.min_per_seed]
            if not short:
                break
            jobs = build_jobs(short, meta_prompts, config, specs, 1, budgets, top_up=round_index - config.n_rounds)
        check_context(backend, jobs)  # every prompt fits the model's context before any generation
        replies, round_hits = generate_cached(backend, [j.request for j in jobs], cache, config.batch_size, on_batch)
        generated += len(jobs)
        generated_per_seed.update(job.seed.text for job in jobs)
        generated_per_kind.update(job.seed.kind for job in jobs)
        generated_per_task.update(job.seed.task for job in jobs)
        hits += round_hits
        parents = []
        restored_jobs: list[tuple[_Job, Candidate]] = []
        for job, reply in zip(jobs, replies):
            if is_truncated(reply):
                truncated += 1
                continue
            multiline = "\n" in job.parent
            if job.meta_prompt.count > 1:
                items = extract_items(reply, multiline=multiline)
            else:
                items = [item] if (item := extract_reply(reply, multiline=multiline)) is not None else []
            if not items:
                extraction_failed += 1
                continue
            candidates += len(items)
            candidates_per_seed[job.seed.text] += len(items)
            candidates_per_kind[job.seed.kind] += len(items)
            for masked in items:
                restored = job.masked.restore(masked)
                if restored is None:
                    chain.rejected["placeholders"] += 1
                    continue
                restored_jobs.append((job, Candidate(restored, job.parent, job.seed.text, job.seed.seed_id, job.seed.task,
                                                     job.seed.kind, specs[job.seed.kind])))
        judge_started = time.perf_counter()
        verdicts = chain.select([candidate for _, candidate in restored_jobs])
        filter_seconds += time.perf_counter() - judge_started
        for (job, candidate), kept in zip(restored_jobs, verdicts):
            if not kept:
                continue
            restored = candidate.text
            records.append(
                PoolRecord(
                    task=job.seed.task, seed_id=job.seed.seed_id, seed=job.seed.text, text=restored,
                    strategy=config.strategy, temperature=job.request.temperature, round=job.round,
                    parent=job.parent, meta_prompt=job.meta_prompt.name, backend=backend.name,
                    model=backend.model_id, fidelity=chain.fidelity_score(candidate), kind=job.seed.kind,
                )
            )
            parents.append((job.seed, restored))
            kept_per_seed[job.seed.seed_id] += 1
    kept = len(records) - len(seeds)
    per_task: dict[str, dict[str, int]] = {}
    per_language: dict[str, dict[str, int]] = {}
    per_kind: dict[str, dict[str, int]] = {}
    for record in records:
        entry = per_task.setdefault(record.task, {"seeds": 0, "paraphrases": 0, "generated": 0})
        entry["seeds" if record.strategy == SEED_STRATEGY else "paraphrases"] += 1
        column = "seeds" if record.strategy == SEED_STRATEGY else "kept"
        language = per_language.setdefault(language_of(record.seed, spec), {"seeds": 0, "generated": 0, "candidates": 0, "kept": 0})
        language[column] += 1
        per_kind.setdefault(record.kind or TEMPLATE, {"seeds": 0, "generated": 0, "candidates": 0, "kept": 0})[column] += 1
    for task, n in generated_per_task.items():
        per_task[task]["generated"] = n
    for seed_text, n in generated_per_seed.items():
        per_language[language_of(seed_text, spec)]["generated"] += n
    for seed_text, n in candidates_per_seed.items():
        per_language[language_of(seed_text, spec)]["candidates"] += n
    for seed_kind, n in generated_per_kind.items():
        per_kind[seed_kind]["generated"] += n
    for seed_kind, n in candidates_per_kind.items():
        per_kind[seed_kind]["candidates"] += n
    return PregenResult(
        records,
        {
            "seeds": len(seeds),
            "seeds_without_free_text": no_free_text,
            "seeds_with_too_many_placeholders": too_many_placeholders,
            "generated": generated,
            "candidates": candidates,
            "cache_hits": hits,
            "kept": kept,
            "yield": round(kept / candidates, 4) if candidates else 0.0,  # kept / paraphrases extracted
            "filters": {TRUNCATED: {"rejected": truncated}, EXTRACTION: {"rejected": extraction_failed}}
            | {name: {"rejected": n} | chain.reasons(name) for name, n in chain.rejected.items()},
            "fidelity": chain.fidelity_summary(),
            "tasks": per_task,
            "languages": per_language,
            "kinds": per_kind,
            "answer_check": answer_check(filters, chain) if per_kind.get(INSTANCE) else None,
            "generation_seconds": round(time.perf_counter() - started - filter_seconds, 2),
            "filter_seconds": round(filter_seconds, 2),
        },
    )


def answer_check(filters: FilterConfig, chain: FilterChain) -> dict[str, object] | None:
    """What the instance-level paraphrases passed (None: not checked), for the manifest; the training
    hook and `build` augment instance-level rows only from pools that record it."""
    if not filters.answer:
        return None
    return {"rules": [name for name in ("task_shape", "answer") if name in chain.rejected],
            "judge": (chain.fidelity.instance_judge or chain.fidelity.judge).name if chain.fidelity else None,
            "instance_min_fidelity": filters.instance_min_fidelity if chain.fidelity else None}


def build_jobs(
    parents: Sequence[tuple[SeedInstruction, str]],
    meta_prompts: Sequence[MetaPrompt],
    config: PregenConfig,
    specs: dict[str, PlaceholderSpec],
    round_index: int,
    budgets: Mapping[str, int] | None = None,
    top_up: int | None = None,
) -> list[_Job]:
    """One job per (parent, meta-prompt, temperature, sample): what a round asks the rewriter; each seed
    is masked with the spec of its kind (`specs`: template / instance). A seed's task budget
    (`budgets`, default 1) multiplies its samples. Top-up pass `top_up` (1, 2, ...) asks one sample
    more, numbered after the first round's, so each pass sends new requests and caches them apart."""
    jobs = []
    for seed, parent in parents:
        samples = config.samples_per_prompt * (budgets or {}).get(seed.task, 1)
        sample_indices = range(samples) if top_up is None else range(samples + top_up - 1, samples + top_up)
        masked = specs[seed.kind].mask(parent, source=seed.seed_id)
        constrained = config.placeholder_mode == "constrained"
        required = tuple(masked.sentinels) if constrained else ()
        single_line = constrained and "\n" not in parent
        for meta_prompt in prompts_for(meta_prompts, language_of(parent, specs[seed.kind])):
            messages = meta_prompt.messages(masked.text)
            for temperature in config.sampling_temperatures:
                for sample_index in sample_indices:
                    request = GenerationRequest(
                        messages=messages, temperature=temperature, top_p=config.top_p,
                        max_new_tokens=_max_new_tokens(masked, config, meta_prompt.count), sample_index=sample_index,
                        required_spans=required, single_line=single_line,
                    )
                    jobs.append(_Job(seed, parent, masked, meta_prompt, round_index, request))
    return jobs


def manifest(config: PregenConfig, backend: RewriterBackend, result: PregenResult, **extra: object) -> dict:
    """The manifest written next to the pool."""
    return {
        "format": POOL_FORMAT,
        "config": asdict(config),
        "backend": backend.name,
        "model": backend.model_id,
        **result.counts,
        **extra,
    }


def pregen_to_directory(
    seeds: Sequence[SeedInstruction],
    backend: RewriterBackend,
    meta_prompts: Sequence[MetaPrompt],
    config: PregenConfig,
    out_dir: Path,
    on_batch: ProgressCallback | None = None,
    judge: FidelityJudge | None = None,
    budgets: Mapping[str, int] | None = None,
    **manifest_extra: object,
) -> PregenResult:
    """Run pregen with the cache `out_dir/cache.jsonl` (resumable) and write the pool there."""
    started = time.perf_counter()
    check_pool_output(out_dir)
    cache = GenerationCache(out_dir / CACHE_FILE)
    result = run_pregen(seeds, backend, meta_prompts, config, cache, on_batch, judge, budgets)
    result.counts["total_seconds"] = round(time.perf_counter() - started, 2)
    write_pool(out_dir, result.records, manifest(config, backend, result, **manifest_extra))
    return result
