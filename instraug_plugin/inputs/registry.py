"""Input reader registry (which kind of input a path holds) and the `load_seeds` entry point.

The rows of a dataset are read by its dataset format (`instraug_plugin.formats`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from instraug_plugin.core.errors import InstrAugError, brief
from instraug_plugin.core.instances import KIND_CHOICES, TEMPLATE, classify
from instraug_plugin.core.jsonfile import read_json
from instraug_plugin.core.placeholders import DEFAULT_SPEC
from instraug_plugin.core.pool import normalize
from instraug_plugin.core.sampling import split_edge_media
from instraug_plugin.formats import DATASET_INFO, RawSeeds
from instraug_plugin.inputs.base import ReadOptions, SeedInstruction, SeedReader
from instraug_plugin.inputs.llamafactory import LlamaFactoryReader
from instraug_plugin.inputs.llava import LlavaReader
from instraug_plugin.inputs.templates import TemplateReader

logger = logging.getLogger(__name__)

# Detection tries readers in this order; the first whose `matches` is true reads the input.
READERS: dict[str, type[SeedReader]] = {
    LlamaFactoryReader.name: LlamaFactoryReader,
    TemplateReader.name: TemplateReader,
    LlavaReader.name: LlavaReader,
}


def register_reader(name: str, reader: type[SeedReader]) -> None:
    """Register a new input format (tried after the built-in ones)."""
    if name in READERS:
        raise ValueError(f"Seed reader {name} already exists.")
    READERS[name] = reader


def get_reader(name: str) -> SeedReader:
    """An instance of the reader registered as `name`."""
    if name not in READERS:
        raise InstrAugError(f"unknown input format {name!r} (known: {', '.join(READERS)})")
    return READERS[name]()


@dataclass
class SeedSet:
    """Seeds read from one input, with what was dropped on the way."""

    source: Path
    format: str
    seeds: list[SeedInstruction]
    duplicates: dict[str, int] = field(default_factory=dict)
    skipped_rows: int = 0
    invalid_rows: dict[str, int] = field(default_factory=dict)

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(seed.task for seed in self.seeds))


def _select(raw: RawSeeds, tasks: Sequence[str] | None, source: Path) -> list[str]:
    known = list(raw.tasks)
    if not known:
        raise InstrAugError(f"{source}: no instructions found")
    if tasks is None:
        return known
    selected = list(dict.fromkeys(tasks))
    if not selected:
        raise InstrAugError(f"{source}: the list of tasks to read is empty")
    unknown = [task for task in selected if task not in raw.tasks]
    if unknown:
        raise InstrAugError(
            f"{source}: unknown task(s) {', '.join(map(repr, unknown))} (known: {brief(known)})"
        )
    return selected


def _dedupe(raw: RawSeeds, tasks: list[str], source: Path, kind: str, strip_media: bool) -> tuple[list[SeedInstruction], dict[str, int]]:
    """Validate placeholders, drop seeds equal to an earlier one of the task after `normalize`, and
    give each its kind (`kind` "auto": `core.instances.classify` by how many rows share it).

    With `strip_media` (dataset rows), media tokens at the edges ("<image>\nWhat is ...?") are not part
    of the seed: the rewriter sees the bare request, and the training hook and `build` re-attach the
    row's own media tokens when they look the instruction up (as live mode does)."""
    seeds: list[SeedInstruction] = []
    duplicates: dict[str, int] = {}
    for task in tasks:
        if not raw.tasks[task]:
            raise InstrAugError(f"{source}: task {task!r} has no instructions")
        texts = [(split_edge_media(item.text)[1] or item.text) if strip_media else item.text for item in raw.tasks[task]]
        rows = Counter(normalize(text) for text in texts)
        seen: set[str] = set()
        for item, text in zip(raw.tasks[task], texts):
            DEFAULT_SPEC.parse(item.text, source=item.where)
            key = normalize(text)
            if key in seen:
                duplicates[task] = duplicates.get(task, 0) + 1
                continue
            seed_kind = classify(text, rows[key], DEFAULT_SPEC) if kind == "auto" else kind
            seeds.append(SeedInstruction(task, f"{task}/{len(seen)}", text, seed_kind))
            seen.add(key)
    return seeds, duplicates


def _resolve(source: str | Path) -> Path:
    path = Path(source)
    if path.is_dir():
        info = path / DATASET_INFO
        if not info.is_file():
            raise InstrAugError(f"{path}: directory has no {DATASET_INFO}")
        return info
    return path


def load_seed_set(
    source: str | Path,
    *,
    dataset: str | None = None,
    tasks: list[str] | None = None,
    task_column: str | None = None,
    all_turns: bool = False,
    kind: str = "auto",
    strip_media: bool = False,
    skip_invalid: bool = False,
    media_dir: Path | None = None,
) -> SeedSet:
    """Like `load_seeds`, also reporting the detected format, duplicates per task and skipped rows.

    Dataset rows LLaMA-Factory could not train on (`core.rows`) are an error naming the row, or with
    `skip_invalid` are skipped and counted in `invalid_rows` by kind. Media files are looked for in
    `media_dir`, by default a dataset_info.json's folder (a LLaVA json's only when it is given).
    """
    if kind not in KIND_CHOICES:
        raise InstrAugError(f"instruction kind must be one of {', '.join(KIND_CHOICES)}; got {kind!r}")
    path = _resolve(source)
    document = read_json(path)
    if media_dir is not None and not Path(media_dir).is_dir():
        raise InstrAugError(f"--media-dir: {media_dir} is not a directory")
    options = ReadOptions(dataset=dataset, task_column=task_column, all_turns=all_turns, skip_invalid=skip_invalid,
                          media_dir=None if media_dir is None else Path(media_dir))
    for name, reader in READERS.items():
        if reader.matches(path, document, options):
            raw = reader().read(path, document, options)
            template_file = name == TemplateReader.name
            if kind == "auto" and template_file:
                kind = TEMPLATE  # a template file holds task templates only
            seeds, duplicates = _dedupe(raw, _select(raw, tasks, path), path, kind, strip_media and not template_file)
            return SeedSet(path, name, seeds, duplicates, raw.skipped_rows, raw.invalid_rows)
    raise InstrAugError(
        f"{path}: unrecognized input (expected a template file {{task: [templates]}}, a LLaVA json list, "
        f"or a {DATASET_INFO} with a dataset name)"
    )


def load_seeds(
    source: str | Path,
    *,
    dataset: str | None = None,
    tasks: list[str] | None = None,
    task_column: str | None = None,
    all_turns: bool = False,
    kind: str = "auto",
    strip_media: bool = False,
    skip_invalid: bool = False,
) -> list[SeedInstruction]:
    """Seed instructions from a template file, a LLaMA-Factory dataset or a LLaVA json (format detected).

    `source`: a MultiInstruct-style template JSON, a LLaVA json list, or a `dataset_info.json` (or its
    directory) together with `dataset`. `tasks` selects tasks (input order otherwise); `task_column`
    groups dataset rows by that column (else task "default"); `all_turns` takes every user turn
    instead of the first; `skip_invalid` skips rows LLaMA-Factory could not train on instead of
    failing on the first. Seeds equal after `pool.normalize` are kept once per task; the count dropped
    is logged. `kind`: auto (template files: template; dataset rows: template when 2+ rows of the task
    share the instruction or it has fields, else instance), template or instance. `strip_media`: drop
    media tokens at the edges of dataset instructions (pregen does; see `_dedupe`). Raises
    InstrAugError naming the file, task, key or row at fault.
    """
    seed_set = load_seed_set(
        source, dataset=dataset, tasks=tasks, task_column=task_column, all_turns=all_turns, kind=kind,
        strip_media=strip_media, skip_invalid=skip_invalid,
    )
    if seed_set.duplicates:
        logger.info(
            "%s: dropped %d duplicate seed(s) in %d task(s)",
            seed_set.source,
            sum(seed_set.duplicates.values()),
            len(seed_set.duplicates),
        )
    if seed_set.skipped_rows:
        logger.info(
            "%s: skipped %d row(s) without a usable user instruction", seed_set.source, seed_set.skipped_rows
        )
    return seed_set.seeds
