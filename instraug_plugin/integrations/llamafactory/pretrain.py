"""Checks before training starts: the config file, the environment, LLaMA-Factory's settings, the rows.

- `check_config_file`: a training config's `instraug_*` keys, before LLaMA-Factory is imported;
- `check_environment`: LLaMA-Factory switches to training paths that never rewrite (`UNSUPPORTED_ENV`);
- `check_supported`: data settings that cannot work with per-epoch rewriting;
- `check_before_training`: the training split's rows and pool coverage.

The row checks run once in `_get_preprocessed_dataset` on LLaMA-Factory's aligned rows (`_prompt`, `_response`,
`_images`, `_videos`, `_audios`), after the rows LLaMA-Factory itself drops are gone:

- rows it could not train on (`core.rows`: no user turn with text, a media placeholder count that
  differs from the row's media, a missing media file) are an error naming the row, or with
  `instraug_skip_invalid: true` are dropped and counted by kind;
- pool coverage: the share of distinct training instructions (per task with `instraug_task_column`)
  that have at least one paraphrase in the pool. No coverage at all is an error naming the pool and
  the first unmatched instruction (pool mode, epsilon < 1: training would never see a paraphrase);
  coverage below `LOW_COVERAGE` is a warning on stderr and in `instraug_stats.jsonl`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from instraug_plugin.core.configfile import read_mapping_file
from instraug_plugin.core.coverage import Coverage, coverage_verdict, summarize
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.rows import RowChecker, row_problem
from instraug_plugin.core.sampling import InstructionRewriter
from instraug_plugin.integrations.llamafactory.config import PREFIX, InstrAugConfig, split_args
from instraug_plugin.integrations.llamafactory.session import TASK_COLUMN, Session

MEDIA_COLUMNS = {"images": "_images", "videos": "_videos", "audios": "_audios"}
SPLIT_BEFORE_PREPROCESS = (0, 9, 4)  # from this release on, val_size splits the raw rows before preprocessing
# LLaMA-Factory's switches to training paths the plugin does not augment: each would train unaugmented
UNSUPPORTED_ENV = {
    "USE_RAY": "Ray workers are not supported with instraug_mode (use torchrun)",
    "USE_V1": "LLaMA-Factory's v1 trainer reads data through its own DataEngine, which instraug_mode does not rewrite",
    "USE_MCA": "LLaMA-Factory's Megatron-Core (mcore_adapter) trainer is not supported with instraug_mode",
    "USE_MEGATRON_BRIDGE": "Megatron Bridge exports the training data once, before training, so it is never rewritten",
}


def check_config_file(path: Path, overrides: Sequence[str] = ()) -> InstrAugConfig | None:
    """Parse a training config and validate its `instraug_*` keys (after `instraug_x=value` command-line
    overrides, LLaMA-Factory's syntax) before LLaMA-Factory is imported; None without such keys.
    InstrAugError naming the file and line (or the key) on a problem."""
    data = read_mapping_file(path, "training config", "training arguments")
    for override in overrides:
        key, equals, value = override.partition("=")
        if key.startswith(PREFIX) and equals:
            try:
                data[key] = yaml.safe_load(value)
            except yaml.YAMLError:
                raise InstrAugError(f"{key}: cannot read the command-line value {value!r}") from None
    return split_args(data)[0]  # raises on a bad instraug_* key or value


def env_enabled(name: str) -> bool:
    """A LLaMA-Factory switch as LLaMA-Factory reads it (`extras.misc.is_env_enabled`): true, y or 1, any case."""
    return os.environ.get(name, "0").lower() in ("true", "y", "1")


def refusal(name: str) -> InstrAugError:
    """The one-line error for the LLaMA-Factory switch `name` (a key of `UNSUPPORTED_ENV`)."""
    return InstrAugError(f"{name}: {UNSUPPORTED_ENV[name]}; unset {name} or set instraug_mode: off")


def check_environment() -> None:
    """Refuse the LLaMA-Factory switches (`UNSUPPORTED_ENV`) under which augmentation would silently not happen."""
    for name in UNSUPPORTED_ENV:
        if env_enabled(name):
            raise refusal(name)


def llamafactory_version() -> tuple[int, ...] | None:
    """LLaMA-Factory's (major, minor, patch), or None when it cannot be read."""
    try:
        import llamafactory  # optional: this module is also used before LLaMA-Factory is imported
    except ImportError:
        return None
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", str(getattr(llamafactory, "__version__", "")))
    if match is None:
        return None
    return tuple(int(part or 0) for part in match.groups())


def check_supported(data_args: Any, stage: str) -> None:
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
            "upgrade LLaMA-Factory to >= 0.9.4"
        )


def _user_texts(messages: Sequence[dict[str, Any]], all_turns: bool) -> list[str]:
    texts = [m.get("content") for m in messages if m.get("role") == "user"]
    texts = [t for t in texts if isinstance(t, str)]
    return texts if all_turns else texts[:1]


def check_training_rows(
    dataset: Any, rewriter: InstructionRewriter, *, all_turns: bool, skip_invalid: bool, check_media: bool,
    media_root: Path, where: str,
) -> tuple[list[int] | None, dict[str, int], Coverage]:
    """One pass over the aligned rows: (indices to keep or None for all, skipped rows by kind, coverage).

    `check_media`: the template is multimodal, so placeholder counts must match the media (a text
    template's plugin treats `<image>` as text); `where` names the datasets in error messages.
    """
    columns = [c for c in ("_prompt", "_response", TASK_COLUMN, *MEDIA_COLUMNS.values()) if c in dataset.column_names]
    checker = RowChecker(skip_invalid, hint="instraug_skip_invalid: true")
    keep: list[int] = []
    coverage = Coverage()
    index = 0
    for batch in dataset.with_format(None).select_columns(columns).iter(batch_size=1000):
        tasks = batch.get(TASK_COLUMN) or [None] * len(batch["_prompt"])
        for i, (prompt, task) in enumerate(zip(batch["_prompt"], tasks)):
            messages = list(prompt) + list(batch["_response"][i] or [])
            media = {kind: batch[column][i] for kind, column in MEDIA_COLUMNS.items() if column in batch}
            problem = row_problem(_user_texts(prompt, True), [m.get("content") for m in messages],
                                  media if check_media else {}, media_root)
            if checker.ok(f"{where}: training row {index}", problem):
                keep.append(index)
                for text in _user_texts(prompt, all_turns):
                    coverage.add(task, text, rewriter)
            index += 1
    return (None if len(keep) == index else keep), dict(checker.skipped), coverage


def _names(datasets: Any) -> str:
    """LLaMA-Factory's `dataset` argument (a list after parsing, else as given) for messages."""
    return ",".join(map(str, datasets)) if isinstance(datasets, list | tuple) else str(datasets)


def check_before_training(session: Session, dataset: Any, data_args: Any, template: Any) -> Any:
    """Invalid rows and pool coverage of LLaMA-Factory's aligned training split; the rows to train on."""
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
    warnings = coverage_verdict(coverage, pools=config.pool, mode=config.mode, epsilon=config.lowest_epsilon())
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
