"""`instraug-plugin build`: write an augmented copy of a dataset (MIns+ style) and its dataset_info entry.

Same instances as the source; each instance's instruction is drawn once per copy with the same
epsilon sampling as the training hook (original with probability epsilon, else a pool paraphrase),
keyed by (seed, copy, row, turn); with a plan (`core.plan`) each task's rows use that task's epsilon
(the row's task column, else the pool task of the matched instruction). Answers, system prompts,
images and placeholders are kept.
Input: a LLaMA-Factory `dataset_info.json` (or its directory) plus a dataset name, or a LLaVA json;
its dataset format (`instraug_plugin.formats`) checks, rewrites and writes the rows.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instraug_plugin.core.commit import commit_files
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.jsonfile import read_json
from instraug_plugin.core.placeholders import DEFAULT_SPEC, PlaceholderSpec
from instraug_plugin.core.plan import load_plan
from instraug_plugin.core.pool import Pool
from instraug_plugin.core.rows import ABNORMAL, RowChecker
from instraug_plugin.core.sampling import InstructionRewriter
from instraug_plugin.formats import (
    DATASET_INFO,
    DatasetFormat,
    LlavaFormat,
    dataset_entry,
    get_dataset_format,
    load_rows,
)
from instraug_plugin.formats.base import row_task

# Key of the dataset_info entries `build` writes: only an entry carrying it may be replaced (--overwrite).
BUILD_MARKER = "instraug_build"


@dataclass(frozen=True)
class Source:
    """A dataset file, its dataset format and the directory relative media paths start from."""

    path: Path
    format: DatasetFormat
    root: Path
    where: str = ""  # "dataset_info.json:name" or the LLaVA json, for error messages
    media_root: Path | None = None  # where media files are looked for; None: not checked (LLaVA json)


def resolve_source(dataset: Path, name: str | None) -> Source:
    """Find the data file and format from `dataset_info.json` + name, or treat `dataset` as a LLaVA json.

    Media files are checked relative to the dataset_info.json directory (LLaMA-Factory's default
    `media_dir`); a LLaVA json's image folder is known only at training time, so its files are not.
    """
    info_path = dataset / DATASET_INFO if dataset.is_dir() else dataset
    if info_path.name == DATASET_INFO:
        if not info_path.is_file():
            raise InstrAugError(f"dataset_info.json not found: {info_path}")
        if name is None:
            raise InstrAugError(f"{info_path}: --name is required to pick a dataset")
        entry = dataset_entry(read_json(info_path), name, str(info_path))
        where = f"{info_path}:{name}"
        return Source(info_path.parent / str(entry["file_name"]), get_dataset_format(entry, where), info_path.parent,
                      where, info_path.parent)
    if not dataset.is_file():
        raise InstrAugError(f"dataset file not found: {dataset}")
    return Source(dataset, LlavaFormat(str(dataset)), dataset.parent, str(dataset))


def _check_output(data_path: Path, source: Source) -> None:
    """Refuse to write over the source data (or into a source directory, or over dataset_info.json)."""
    target, data = data_path.resolve(), source.path.resolve()
    if target == data or (source.path.is_dir() and target.is_relative_to(data)):
        raise InstrAugError(
            f"{data_path}: is the source data of {source.where}; choose another --output-name or --output-dir"
        )
    if data_path.name == DATASET_INFO:
        raise InstrAugError(f"--output-name: {data_path.stem!r} would overwrite {DATASET_INFO}")


def _output_info(info_path: Path, output_name: str, data_path: Path, overwrite: bool) -> dict[str, Any]:
    """The output directory's dataset_info.json (or {}), checked before anything is written.

    An existing entry `output_name` is replaced only if `build` wrote it and `overwrite` is set; an
    existing data file only with `overwrite`, and never one that another entry reads.
    """
    info = read_json(info_path) if info_path.exists() else {}
    if not isinstance(info, dict):
        raise InstrAugError(f"{info_path}: expected a JSON object of dataset entries")
    entry = info.get(output_name)
    if entry is not None:
        if not (isinstance(entry, dict) and BUILD_MARKER in entry):
            raise InstrAugError(
                f"{info_path}: entry {output_name!r} exists and was not written by instraug-plugin build; "
                "choose another --output-name (build never replaces an entry it did not create)"
            )
        if not overwrite:
            raise InstrAugError(
                f"{info_path}: entry {output_name!r} exists (an earlier build); pass --overwrite to replace it"
            )
    readers = sorted(name for name, other in info.items() if name != output_name and isinstance(other, dict)
                     and (info_path.parent / str(other.get("file_name", ""))).resolve() == data_path.resolve())
    if readers:
        raise InstrAugError(f"{data_path}: is the data file of entry {readers[0]!r} in {info_path}; "
                            "choose another --output-name")
    if data_path.exists() and not overwrite:
        raise InstrAugError(f"{data_path}: exists; pass --overwrite to replace it, or choose another --output-name")
    return info


def build_dataset(
    *, dataset: Path, name: str | None, pools: list[Path], output_dir: Path | None = None,
    output_name: str | None = None, epsilon: float | None = None, plan: Path | None = None, seed: int = 42,
    copies: int = 1,
    all_turns: bool = False, task_column: str | None = None, placeholder_regex: tuple[str, ...] = (),
    scope: str = "template", overwrite: bool = False, skip_invalid: bool = False, media_dir: Path | None = None,
    keep_abnormal: bool = False,
) -> dict[str, Any]:
    """Write `<output_name>.json` and its entry in `<output_dir>/dataset_info.json`; return a summary.

    `output_dir` defaults to the dataset_info.json directory (LLaMA-Factory's `dataset_dir`, where
    relative media paths start) or the LLaVA json's directory. Nothing is written until every row
    is built; an existing entry or file is replaced only with `overwrite` (an entry only if an
    earlier build wrote it). Rows LLaMA-Factory could not train on (`core.rows`) are an error, or
    with `skip_invalid` are left out and counted by kind in the summary's `invalid`; rows LLaMA-Factory's
    converter would skip at training time (roles out of turn, `abnormal`) are left out and counted there
    too, or with `keep_abnormal` copied unchanged and counted in `abnormal_copied`. Media files are
    looked for in `media_dir` (LLaMA-Factory's `media_dir`), by default the dataset_info.json folder;
    a LLaVA json's are checked only when `media_dir` is given. `scope` (template | all) says
    whether instance-level rows are reworded (`core.pool.scoped_records`). `epsilon` (default 0.5) or
    `plan` (a plan file: every task's epsilon) sets the probability of the original wording.
    """
    if epsilon is not None and plan is not None:
        raise InstrAugError("--epsilon: not with --plan (the plan sets every task's epsilon)")
    if epsilon is not None and not 0.0 <= epsilon <= 1.0:
        raise InstrAugError(f"--epsilon: expected a number in [0, 1], got {epsilon}")
    if copies < 1:
        raise InstrAugError(f"--copies: expected an integer >= 1, got {copies}")
    source = resolve_source(dataset, name)
    if media_dir is not None and not media_dir.is_dir():
        raise InstrAugError(f"--media-dir: {media_dir} is not a directory")
    media_root = media_dir or source.media_root
    output_dir = output_dir or source.root
    output_name = output_name or f"{name or source.path.stem}_instraug"
    if not output_name or "/" in output_name or output_name.startswith("."):
        raise InstrAugError(f"--output-name: expected a plain dataset name, got {output_name!r}")
    if output_dir.exists() and not output_dir.is_dir():
        raise InstrAugError(f"--output-dir: {output_dir} exists and is not a directory")
    data_path = output_dir / f"{output_name}.json"
    _check_output(data_path, source)
    info_path = output_dir / DATASET_INFO
    info = _output_info(info_path, output_name, data_path, overwrite)
    task_epsilon: dict[str, float] = {}
    if plan is not None:
        loaded = load_plan(plan)
        epsilon, task_epsilon = loaded.rule.epsilon, loaded.epsilons()
    elif epsilon is None:
        epsilon = 0.5
    rows = load_rows(source.path)
    spec = PlaceholderSpec(extra_patterns=placeholder_regex) if placeholder_regex else DEFAULT_SPEC
    rewriter = InstructionRewriter(Pool.load(*pools, scope=scope), epsilon, seed, spec, task_epsilon)
    checker = RowChecker(skip_invalid)
    out_rows: list[dict[str, Any]] = []
    counts: Counter[str] = Counter({"rewritten": 0, "original": 0, "no_entry": 0, "abnormal_copied": 0})
    moved = output_dir.resolve() != (media_root or source.root).resolve()
    dataset_format = source.format
    for index, (where, row) in enumerate(rows):
        if not checker.ok(where, dataset_format.problem(row, where, media_root)):
            continue
        accepted = dataset_format.accepts(row, where)
        if not (accepted or keep_abnormal):
            checker.drop(ABNORMAL)
            continue
        task = None if task_column is None or not accepted else row_task(row, task_column, where)
        for k in range(copies):
            if accepted:
                new, decision = dataset_format.rewrite(row, rewriter, task=task, epoch=k, index=index,
                                                       all_turns=all_turns, where=where)
            else:  # --keep-abnormal: copied unchanged (LLaMA-Factory skips it at training time)
                new, decision = copy.deepcopy(row), "abnormal_copied"
            if moved:
                dataset_format.absolute_media(new, media_root or source.root)
            out_rows.append(new)
            counts[decision] += 1
    if not out_rows:
        raise InstrAugError(f"{source.where}: no valid rows to write ({checker.summary() or 'the dataset is empty'})")
    marker = {"source": source.where, "pools": [str(p) for p in pools], "epsilon": epsilon, "seed": seed,
              "copies": copies}
    if plan is not None:
        marker |= {"plan": str(plan), "task_epsilon": task_epsilon}
    data, entry = dataset_format.output(out_rows, data_path.name)
    info[output_name] = {**entry, BUILD_MARKER: marker}
    commit_files({data_path: data, info_path: json.dumps(info, ensure_ascii=False, indent=2, allow_nan=False)})
    return {"dataset": output_name, "file": str(data_path), "dataset_info": str(info_path),
            "instances": len(rows) - checker.total, "rows": len(out_rows), "invalid": dict(checker.skipped),
            **counts}
