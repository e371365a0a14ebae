"""`instraug-plugin build`: write an augmented copy of a dataset (MIns+ style) and its dataset_info entry.

Same instances as the source; each instance's instruction is drawn once per copy with the same
epsilon sampling as the training hook (original with probability epsilon, else a pool paraphrase),
keyed by (seed, copy, row, turn). Answers, system prompts, images and placeholders are kept.
Input: a LLaMA-Factory `dataset_info.json` (or its directory) plus a dataset name, or a LLaVA json.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.placeholders import DEFAULT_SPEC, PlaceholderSpec
from instraug_plugin.core.pool import Pool
from instraug_plugin.core.sampling import Decision, InstructionRewriter

LLAVA_ENTRY = {"formatting": "sharegpt", "columns": {"messages": "conversations", "images": "image"}}


@dataclass(frozen=True)
class Source:
    """A dataset file, its dataset_info entry and the directory relative media paths start from."""

    path: Path
    entry: dict[str, Any]
    root: Path


def resolve_source(dataset: Path, name: str | None) -> Source:
    """Find the data file and entry from `dataset_info.json` + name, or treat `dataset` as a LLaVA json."""
    info_path = dataset / "dataset_info.json" if dataset.is_dir() else dataset
    if info_path.name == "dataset_info.json":
        if not info_path.is_file():
            raise InstrAugError(f"dataset_info.json not found: {info_path}")
        if name is None:
            raise InstrAugError(f"{info_path}: --name is required to pick a dataset")
        info = _read_json(info_path)
        if not isinstance(info, dict) or name not in info:
            raise InstrAugError(f"{info_path}: no dataset named {name!r}")
        entry = info[name]
        if "file_name" not in entry:
            raise InstrAugError(f"{info_path}: dataset {name!r} has no file_name (hub datasets are not supported)")
        return Source(info_path.parent / entry["file_name"], entry, info_path.parent)
    if not dataset.is_file():
        raise InstrAugError(f"dataset file not found: {dataset}")
    return Source(dataset, {"file_name": dataset.name, **copy.deepcopy(LLAVA_ENTRY)}, dataset.parent)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InstrAugError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a .json (list) or .jsonl file."""
    if path.suffix == ".jsonl":
        rows = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise InstrAugError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
    else:
        rows = _read_json(path)
    if not isinstance(rows, list):
        raise InstrAugError(f"{path}: expected a list of rows")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InstrAugError(f"{path}: row {i} is not a JSON object")
    return rows


def _rewrite_row(row: dict[str, Any], entry: dict[str, Any], rewriter: InstructionRewriter, *, task: str | None,
                 epoch: int, index: int, all_turns: bool, source: str) -> tuple[dict[str, Any], Decision]:
    """A copy of `row` with its instruction(s) rewritten."""
    columns = entry.get("columns", {})
    out = copy.deepcopy(row)
    if entry.get("formatting", "alpaca") == "alpaca":
        column = columns.get("prompt", "instruction")
        if not isinstance(row.get(column), str):
            raise InstrAugError(f"{source}: row {index} has no string column {column!r}")
        out[column], decision = rewriter.rewrite(row[column], task=task, epoch=epoch, index=index)
        return out, decision
    tags = entry.get("tags", {})
    messages_key = columns.get("messages", "conversations")
    role_tag, content_tag = tags.get("role_tag", "from"), tags.get("content_tag", "value")
    user_tag = tags.get("user_tag", "human")
    messages = out.get(messages_key)
    if not isinstance(messages, list):
        raise InstrAugError(f"{source}: row {index} has no list column {messages_key!r}")
    decisions: list[Decision] = []
    for turn, message in enumerate(messages):
        if not isinstance(message, dict) or message.get(role_tag) != user_tag:
            continue
        if not isinstance(message.get(content_tag), str):
            raise InstrAugError(f"{source}: row {index} turn {turn} has no string {content_tag!r}")
        message[content_tag], decision = rewriter.rewrite(
            message[content_tag], task=task, epoch=epoch, index=index, turn=turn
        )
        decisions.append(decision)
        if not all_turns:
            break
    if "rewritten" in decisions:
        return out, "rewritten"
    return out, "original" if "original" in decisions else "no_entry"


def _absolute_media(row: dict[str, Any], entry: dict[str, Any], media_dir: Path) -> None:
    """Make relative image/video/audio paths absolute (the output lives in another directory)."""
    for kind in ("images", "videos", "audios"):
        column = entry.get("columns", {}).get(kind)
        value = row.get(column) if column else None
        if isinstance(value, str):
            row[column] = str((media_dir / value).resolve()) if (media_dir / value).exists() else value
        elif isinstance(value, list):
            row[column] = [str((media_dir / v).resolve()) if isinstance(v, str) and (media_dir / v).exists() else v
                           for v in value]


def build_dataset(
    *, dataset: Path, name: str | None, pools: list[Path], output_dir: Path | None = None,
    output_name: str | None = None, epsilon: float = 0.5, seed: int = 42, copies: int = 1,
    all_turns: bool = False, task_column: str | None = None, placeholder_regex: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Write `<output_name>.json` and its entry in `<output_dir>/dataset_info.json`; return a summary.

    `output_dir` defaults to the dataset_info.json directory (LLaMA-Factory's `dataset_dir`, where
    relative media paths start) or the LLaVA json's directory.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise InstrAugError(f"--epsilon: expected a number in [0, 1], got {epsilon}")
    if copies < 1:
        raise InstrAugError(f"--copies: expected an integer >= 1, got {copies}")
    source = resolve_source(dataset, name)
    rows = read_rows(source.path)
    spec = PlaceholderSpec(extra_patterns=placeholder_regex) if placeholder_regex else DEFAULT_SPEC
    rewriter = InstructionRewriter(Pool.load(*pools), epsilon, seed, spec)
    output_dir = output_dir or source.root
    output_name = output_name or f"{name or source.path.stem}_instraug"
    out_rows: list[dict[str, Any]] = []
    counts: Counter[str] = Counter({"rewritten": 0, "original": 0, "no_entry": 0})
    moved = output_dir.resolve() != source.root.resolve()
    for index, row in enumerate(rows):
        task = None
        if task_column is not None:
            if task_column not in row:
                raise InstrAugError(f"{source.path}: row {index} has no task column {task_column!r}")
            task = str(row[task_column])
        for k in range(copies):
            new, decision = _rewrite_row(row, source.entry, rewriter, task=task, epoch=k, index=index,
                                         all_turns=all_turns, source=str(source.path))
            if moved:
                _absolute_media(new, source.entry, source.root)
            out_rows.append(new)
            counts[decision] += 1
    output_dir.mkdir(parents=True, exist_ok=True)
    data_path = output_dir / f"{output_name}.json"
    data_path.write_text(json.dumps(out_rows, ensure_ascii=False, indent=1), encoding="utf-8")
    info_path = output_dir / "dataset_info.json"
    info = _read_json(info_path) if info_path.is_file() else {}
    info[output_name] = {**copy.deepcopy(source.entry), "file_name": data_path.name}
    info_path.write_text(json.dumps(info, ensure_ascii=False, indent=2), encoding="utf-8")
    return {"dataset": output_name, "file": str(data_path), "dataset_info": str(info_path),
            "instances": len(rows), "rows": len(out_rows), **counts}
