"""The data hook: keep the SFT training split aligned and tokenize it lazily after rewriting.

LLaMA-Factory tokenizes once with a cached `dataset.map`; for the training split we instead add
an index column and `with_transform(rewrite -> LLaMA-Factory's own processor)`, so each epoch sees
the wording drawn for (seed, epoch, index). Evaluation splits and other stages are untouched.
`install()` patches `llamafactory.data.loader` and wraps `run_exp`; both are idempotent.
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.placeholders import DEFAULT_SPEC, PlaceholderSpec
from instraug_plugin.core.pool import Pool, read_records
from instraug_plugin.core.sampling import InstructionRewriter, rewrite_messages
from instraug_plugin.integrations.llamafactory.config import InstrAugConfig, split_args
from instraug_plugin.integrations.llamafactory.encode_cache import with_encode_cache
from instraug_plugin.integrations.llamafactory.media_cache import MediaExpansionCache
from instraug_plugin.integrations.llamafactory.pretrain import (
    TASK_COLUMN,
    check_training_rows,
    coverage_verdict,
    summarize,
)

if TYPE_CHECKING:
    from datasets import Dataset

INDEX_COLUMN = "_instraug_index"
STATS_FILE = "instraug_stats.jsonl"
SAMPLES_DIR = "instraug_samples"
IGNORE_INDEX = -100


class EpochState:
    """The epoch the callback publishes in each rank's main process, in shared memory: DataLoader
    workers, forked for each epoch or persistent across epochs, read the current value at every
    fetch (the trainer calls `on_epoch_begin` before it starts the epoch's iterator). Live mode also
    bumps `pool_version` after each refresh, so workers reload the pool it wrote."""

    def __init__(self) -> None:
        self._epoch = multiprocessing.RawValue("q", 0)
        self._training = multiprocessing.RawValue("b", 0)
        self._pool_version = multiprocessing.RawValue("q", 0)

    @property
    def pool_version(self) -> int:
        """How many times live mode has published a refreshed pool (`live_pool_dir`)."""
        return self._pool_version.value

    def publish_pool(self) -> None:
        """Tell every DataLoader worker, persistent ones included, to load the refreshed pool."""
        self._pool_version.value += 1

    @property
    def epoch(self) -> int:
        return self._epoch.value

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._epoch.value = value

    @property
    def training(self) -> bool:
        return bool(self._training.value)

    @training.setter
    def training(self, value: bool) -> None:
        self._training.value = int(value)


@dataclass
class Session:
    """Everything one `run_exp` call with `instraug_*` keys needs."""

    config: InstrAugConfig
    rewriter: InstructionRewriter
    state: EpochState = field(default_factory=EpochState)
    train_dataset: Dataset | None = None
    output_dir: str = "."
    fallbacks: int = 0
    pretrain: dict[str, Any] = field(default_factory=dict)  # coverage, skipped rows, warnings (stats records)
    pool_version: int = 0  # the live refresh this process's `rewriter.pool` holds (`EpochState.pool_version`)

    def __post_init__(self) -> None:
        self.base_records = list(self.rewriter.pool.records)  # the configured pools; live refreshes add to them


SESSION: Session | None = None


def start_session(config: InstrAugConfig, default_seed: int) -> Session:
    """Load the pool(s) once and build the rewriter; the hot path never reads files."""
    spec = PlaceholderSpec(extra_patterns=config.placeholder_regex) if config.placeholder_regex else DEFAULT_SPEC
    pool = Pool.load(*map(Path, config.pool), scope=config.scope) if config.pool else Pool([])
    seed = default_seed if config.seed is None else config.seed
    return Session(config, InstructionRewriter(pool, config.epsilon, seed, spec))


def live_pool_dir(output_dir: str) -> Path:
    """Where live mode writes the paraphrases of this rank's latest refresh for its DataLoader workers."""
    return Path(output_dir) / "instraug_live" / f"current-rank{os.environ.get('RANK', '0')}"


class LazyTransform:
    """`with_transform` callable: rewrite a batch of aligned rows, then tokenize it with LLaMA-Factory."""

    def __init__(self, session: Session, processor: Any, image_token_id: int | None):
        self.rewriter = session.rewriter
        self.all_turns = session.config.turns == "all"
        self.state = session.state
        self.processor = with_encode_cache(processor)  # LLaMA-Factory's own, recurring strings' ids cached
        self.image_token_id = image_token_id
        self.sample_dir = Path(session.output_dir) / SAMPLES_DIR if session.config.log_samples else None
        self.session = session
        self.live_pool = live_pool_dir(session.output_dir) if session.config.mode == "live" else None

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        epoch = self.state.epoch
        if self.live_pool is not None and self.state.pool_version != self.session.pool_version:
            # live mode refreshed the pool in the main process: a DataLoader worker's copy is stale (once per refresh)
            self.session.pool_version = self.state.pool_version
            self.rewriter.pool = Pool(self.session.base_records + list(read_records(self.live_pool)))
        tasks = batch.get(TASK_COLUMN) or [None] * len(batch[INDEX_COLUMN])
        prompts, decisions = [], []
        for messages, task, index in zip(batch["_prompt"], tasks, batch[INDEX_COLUMN]):
            new, decision = rewrite_messages(
                self.rewriter, messages, task=task, epoch=epoch, index=index, all_turns=self.all_turns
            )
            prompts.append(new)
            decisions.append(decision)
        out = self.processor.preprocess_dataset({**batch, "_prompt": prompts})
        if len(out["input_ids"]) != len(prompts):
            raise InstrAugError("LLaMA-Factory dropped a training row after rewriting; please report this")
        if self.sample_dir is not None and self.state.training:
            self._log(batch, prompts, decisions, out, epoch)
        return out

    def _log(self, batch: dict[str, list[Any]], prompts: list[Any], decisions: list[str], out: dict[str, Any],
             epoch: int) -> None:
        """Append what the model actually saw, one line per sample, to a per-process file."""
        assert self.sample_dir is not None
        self.sample_dir.mkdir(parents=True, exist_ok=True)
        path = self.sample_dir / f"rank{os.environ.get('RANK', '0')}-pid{os.getpid()}.jsonl"
        with path.open("a", encoding="utf-8") as fh:
            for i, index in enumerate(batch[INDEX_COLUMN]):
                labels = [t for t in out["labels"][i] if t != IGNORE_INDEX]
                row = {
                    "epoch": epoch,
                    "index": index,
                    "decision": decisions[i],
                    "user_turns": [m["content"] for m in prompts[i] if m.get("role") == "user"],
                    "images": len(batch["_images"][i] or []),
                    "image_tokens": out["input_ids"][i].count(self.image_token_id) if self.image_token_id else 0,
                    "label_sha": hashlib.sha1(json.dumps(labels).encode()).hexdigest()[:16],
                }
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def epoch_stats(session: Session, epoch: int) -> Counter[str]:
    """Decisions for every training sample in `epoch` (pure function of seed, epoch and index)."""
    dataset = session.train_dataset
    counts: Counter[str] = Counter({"rewritten": 0, "original": 0, "no_entry": 0})
    if dataset is None:
        return counts
    columns = [c for c in ("_prompt", TASK_COLUMN, INDEX_COLUMN) if c in dataset.column_names]
    for batch in dataset.with_format(None).select_columns(columns).iter(batch_size=1000):
        tasks = batch.get(TASK_COLUMN) or [None] * len(batch[INDEX_COLUMN])
        for messages, task, index in zip(batch["_prompt"], tasks, batch[INDEX_COLUMN]):
            _, decision = rewrite_messages(
                session.rewriter, messages, task=task, epoch=epoch, index=index,
                all_turns=session.config.turns == "all",
            )
            counts[decision] += 1
    return counts


def _check_supported(data_args: Any, training_args: Any, stage: str) -> None:
    """Reject settings that cannot work with per-epoch rewriting, before any training starts."""
    if stage != "sft":
        raise InstrAugError(f"instraug_mode: on-the-fly rewriting supports stage: sft only, not {stage!r}")
    for name, reason in (
        ("packing", "packed sequences are built once, before training"),
        ("streaming", "an IterableDataset cannot be re-tokenized per epoch"),
        ("tokenized_path", "a pre-tokenized dataset has no instruction text left to rewrite"),
    ):
        if getattr(data_args, name, None):
            raise InstrAugError(f"{name}: incompatible with instraug_mode ({reason}); remove it or set instraug_mode: off")
    val_size = getattr(data_args, "val_size", 0) or 0
    version = llamafactory_version()
    if val_size > 0 and version is not None and version < SPLIT_BEFORE_PREPROCESS:
        raise InstrAugError(
            f"val_size: incompatible with instraug_mode on LLaMA-Factory {'.'.join(map(str, version))} (the eval "
            "split would be carved from the rewritten training data); use eval_dataset, set val_size: 0, or "
            "upgrade LLaMA-Factory to >= 0.9.5"
        )


def media_placeholders() -> dict[str, str]:
    """LLaMA-Factory's media placeholders (its IMAGE/VIDEO/AUDIO_PLACEHOLDER environment overrides included)."""
    from llamafactory.extras import constants

    return {"image": constants.IMAGE_PLACEHOLDER, "video": constants.VIDEO_PLACEHOLDER,
            "audio": constants.AUDIO_PLACEHOLDER}


SPLIT_BEFORE_PREPROCESS = (0, 9, 5)  # from this release on, val_size splits the raw rows before preprocessing


def llamafactory_version() -> tuple[int, ...] | None:
    """LLaMA-Factory's (major, minor, patch), or None when it cannot be read."""
    try:
        import llamafactory
    except ImportError:
        return None
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", str(getattr(llamafactory, "__version__", "")))
    if match is None:
        return None
    return tuple(int(part or 0) for part in match.groups())


def _patched_align(original: Any) -> Any:
    @functools.wraps(original)
    def align_dataset(dataset: Any, dataset_attr: Any, data_args: Any, training_args: Any) -> Any:
        session = SESSION
        column = session.config.task_column if session else None
        if column is None or data_args.streaming:
            return original(dataset, dataset_attr, data_args, training_args)
        tasks = [None if t is None else str(t) for t in dataset[column]] if column in dataset.column_names else None
        aligned = original(dataset, dataset_attr, data_args, training_args)
        return aligned.add_column(TASK_COLUMN, tasks or [None] * len(aligned))

    return align_dataset


def _patched_preprocess(original: Any) -> Any:
    @functools.wraps(original)
    def _get_preprocessed_dataset(dataset: Any, data_args: Any, training_args: Any, stage: str, template: Any,
                                  tokenizer: Any, processor: Any = None, is_eval: bool = False, **kwargs: Any) -> Any:
        session = SESSION
        if session is None or is_eval or dataset is None:
            return original(dataset, data_args, training_args, stage, template, tokenizer, processor, is_eval, **kwargs)
        _check_supported(data_args, training_args, stage)
        from llamafactory.data import loader

        dataset_processor = loader._get_dataset_processor(data_args, stage, template, tokenizer, processor)
        column = session.config.task_column
        if column and (TASK_COLUMN not in dataset.column_names or not any(dataset[TASK_COLUMN])):
            raise InstrAugError(f"instraug_task_column: no training dataset has a column {column!r}")
        # The processor silently drops malformed rows; drop them here once so the lazy transform never does.
        dataset = dataset.filter(lambda p, r: len(p) % 2 == 1 and len(r) == 1, input_columns=["_prompt", "_response"])
        dataset = _check_before_training(session, dataset, data_args, template)
        dataset = dataset.add_column(INDEX_COLUMN, list(range(len(dataset))))
        session.train_dataset = dataset
        session.output_dir = training_args.output_dir
        image_token = getattr(template.mm_plugin, "image_token", None)
        image_token_id = tokenizer.convert_tokens_to_ids(image_token) if image_token else None
        media = MediaExpansionCache.install(template.mm_plugin, media_placeholders())
        media.prime(dataset, processor, data_args.preprocessing_num_workers, not data_args.overwrite_cache)
        lazy = dataset.with_transform(LazyTransform(session, dataset_processor, image_token_id))
        if training_args.should_log and kwargs.get("print_example", True):  # newer releases add that flag
            print("training example (instraug: tokenized lazily, wording varies per epoch):")
            dataset_processor.print_data_example(lazy[0])
        return lazy

    return _get_preprocessed_dataset


def _names(datasets: Any) -> str:
    """LLaMA-Factory's `dataset` argument (a list after parsing, else as given) for messages."""
    return ",".join(map(str, datasets)) if isinstance(datasets, list | tuple) else str(datasets)


def _check_before_training(session: Session, dataset: Any, data_args: Any, template: Any) -> Any:
    """Invalid rows and pool coverage (`pretrain`), before training starts; the rows to train on."""
    config = session.config
    plugin = template.mm_plugin
    keep, skipped, coverage = check_training_rows(
        dataset, session.rewriter, all_turns=config.turns == "all", skip_invalid=config.skip_invalid,
        check_media=any(getattr(plugin, f"{kind}_token", None) for kind in ("image", "video", "audio")),
        media_root=Path(data_args.media_dir or data_args.dataset_dir),
        where=f"dataset {_names(data_args.dataset)}",
    )
    if keep is not None:
        if not keep:
            counts = ", ".join(f"{n} {kind}" for kind, n in skipped.items())
            raise InstrAugError(f"instraug_skip_invalid: every training row of dataset {_names(data_args.dataset)} "
                                f"is invalid ({counts})")
        dataset = dataset.select(keep)
    warnings = coverage_verdict(coverage, pools=config.pool, mode=config.mode, epsilon=config.epsilon)
    if os.environ.get("RANK", "0") == "0":  # every rank checks; the first one reports
        print(summarize(coverage, skipped), file=sys.stderr, flush=True)
        for warning in warnings:
            print(f"instraug: warning: {warning}", file=sys.stderr, flush=True)
    session.pretrain = {"pool_coverage": coverage.record()}
    if skipped:
        session.pretrain["invalid_rows_skipped"] = skipped
    if warnings:
        session.pretrain["warnings"] = warnings
    return dataset


def _eval_callbacks(config: InstrAugConfig, rest: Any) -> list[Any]:
    """The epoch-end robustness evaluator, when `instraug_eval_*` keys ask for it."""
    if config.evaluation is None:
        return []
    if not isinstance(rest, dict) or "model_name_or_path" not in rest or "template" not in rest:
        raise InstrAugError("instraug_eval_set: needs model_name_or_path and template in the same YAML")
    from instraug_plugin.evaluation.callback import InstrAugEvalCallback

    return [InstrAugEvalCallback(config.evaluation, model_name_or_path=rest["model_name_or_path"], template=rest["template"])]


def _patched_run_exp(original: Any) -> Any:
    @functools.wraps(original)
    def run_exp(args: Any = None, callbacks: Any = None) -> Any:
        global SESSION
        from llamafactory.hparams import read_args

        try:
            config, rest = split_args(read_args(args))
            if config is None:
                return original(args, callbacks)
            callbacks = [*(callbacks or []), *_eval_callbacks(config, rest)]
            if not config.active:
                return original(rest, callbacks)
            if os.environ.get("USE_RAY", "0").lower() in ("true", "y", "1"):
                raise InstrAugError("USE_RAY: Ray workers are not supported with instraug_mode; use torchrun")
            from instraug_plugin.integrations.llamafactory.callback import InstrAugCallback

            default_seed = rest.get("seed", 42) if isinstance(rest, dict) else 42
            SESSION = start_session(config, int(default_seed))
            return original(rest, [*callbacks, InstrAugCallback(SESSION)])
        except InstrAugError as exc:
            print(f"instraug: error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        finally:
            SESSION = None

    run_exp.__instraug_patched__ = True  # type: ignore[attr-defined]
    return run_exp


def patch_tuner(tuner: Any) -> None:
    """Wrap `llamafactory.train.tuner.run_exp` and patch the data loader (idempotent)."""
    if not getattr(tuner.run_exp, "__instraug_patched__", False):
        tuner.run_exp = _patched_run_exp(tuner.run_exp)
    from llamafactory.data import loader

    if not hasattr(loader, "__instraug_patched__"):
        loader._get_preprocessed_dataset = _patched_preprocess(loader._get_preprocessed_dataset)
        loader.align_dataset = _patched_align(loader.align_dataset)
        loader.__instraug_patched__ = True  # type: ignore[attr-defined]


def install() -> None:
    """Import LLaMA-Factory's tuner and patch it now (the explicit, no-startup-hook path)."""
    from llamafactory.train import tuner

    patch_tuner(tuner)


def check_config_file(path: Path) -> None:
    """Parse a training config and validate its `instraug_*` keys before LLaMA-Factory is imported;
    InstrAugError naming the file and line (or the key) on a problem."""
    import yaml

    if path.suffix not in (".yaml", ".yml", ".json"):
        raise InstrAugError(f"{path}: expected a .yaml, .yml or .json training config")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except UnicodeDecodeError:
        raise InstrAugError(f"{path}: not a UTF-8 text file") from None
    except json.JSONDecodeError as exc:
        raise InstrAugError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise InstrAugError(f"{path}: not valid YAML ({problem}{where})") from None
    if not isinstance(data, dict):
        raise InstrAugError(f"{path}: expected a mapping of training arguments, got {type(data).__name__}")
    split_args(data)  # raises on a bad instraug_* key or value


def launch_train(config: str, overrides: list[str]) -> None:
    """`llamafactory-cli train config [overrides]` with the plugin patched in explicitly.

    Multi-process runs re-launch torchrun on our own entry script instead of LLaMA-Factory's
    `launcher.py`, so every rank is patched without a startup hook.
    """
    if not Path(config).is_file():
        raise InstrAugError(f"config file not found: {config}")
    check_config_file(Path(config))
    install()
    from llamafactory import launcher

    from instraug_plugin.integrations.llamafactory import torchrun_entry

    launcher.__file__ = torchrun_entry.__file__  # launch() formats its torchrun command from __file__
    sys.argv = ["llamafactory-cli", "train", config, *overrides]
    launcher.launch()
