"""Dataset formats by dataset_info.json `formatting`, as LLaMA-Factory's `DATASET_CONVERTERS` holds its converters.

A LLaVA json is not a `formatting` (LLaMA-Factory reads it as sharegpt): its format, `llava.LlavaFormat`,
is picked by the file rather than by an entry.
"""

from __future__ import annotations

from typing import Any

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.formats.alpaca import AlpacaFormat
from instraug_plugin.formats.base import DatasetFormat
from instraug_plugin.formats.openai import OpenAIFormat
from instraug_plugin.formats.sharegpt import SharegptFormat

DATASET_FORMATS: dict[str, type[DatasetFormat]] = {
    "alpaca": AlpacaFormat,
    "sharegpt": SharegptFormat,
    "openai": OpenAIFormat,
}


def register_dataset_format(name: str, dataset_format: type[DatasetFormat]) -> None:
    """Register a new `formatting` (LLaMA-Factory needs a converter of that name to train on it)."""
    if name in DATASET_FORMATS:
        raise ValueError(f"Dataset format {name} already exists.")
    DATASET_FORMATS[name] = dataset_format


def get_dataset_format(entry: dict[str, Any], where: str) -> DatasetFormat:
    """The format object for a dataset_info.json entry (`formatting`, default alpaca); `where` names the entry."""
    formatting = entry.get("formatting", "alpaca")
    if not isinstance(formatting, str) or formatting not in DATASET_FORMATS:
        raise InstrAugError(
            f"{where}: unsupported formatting {formatting!r} (supported: {', '.join(DATASET_FORMATS)})"
        )
    return DATASET_FORMATS[formatting](entry, where)
