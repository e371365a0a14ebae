"""LLaMA-Factory datasets: a named local-file entry of a `dataset_info.json`, read by the dataset
format of its `formatting` (`instraug_plugin.formats`: alpaca, sharegpt, openai)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from instraug_plugin.core.errors import InstrAugError, brief
from instraug_plugin.formats import DATASET_INFO, RawSeeds, dataset_entry, get_dataset_format, load_rows
from instraug_plugin.inputs.base import ReadOptions, SeedReader


class LlamaFactoryReader(SeedReader):
    """A named dataset of a `dataset_info.json`; `file_name` is relative to that file's directory."""

    name = "llamafactory"

    @classmethod
    def matches(cls, path: Path, document: Any, options: ReadOptions) -> bool:
        if options.dataset is not None or path.name == DATASET_INFO:
            return True
        return (
            isinstance(document, dict)
            and bool(document)
            and all(isinstance(v, dict) for v in document.values())
        )

    def read(self, path: Path, document: Any, options: ReadOptions) -> RawSeeds:
        if not isinstance(document, dict):
            raise InstrAugError(f"{path}: expected a JSON object of dataset entries")
        if options.dataset is None:
            raise InstrAugError(f"{path}: name the dataset to read (known: {brief(sorted(document))})")
        entry = dataset_entry(document, options.dataset, str(path))
        dataset_format = get_dataset_format(entry, f"{path}:{options.dataset}")
        rows = load_rows(path.parent / str(entry["file_name"]))
        # Relative media paths start at the dataset_info.json directory (LLaMA-Factory's default media_dir).
        return dataset_format.read_seeds(rows, task_column=options.task_column, all_turns=options.all_turns,
                                         skip_invalid=options.skip_invalid, media_root=options.media_dir or path.parent)
