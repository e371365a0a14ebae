"""Dataset formats: one object per row layout (alpaca, sharegpt, openai, LLaVA json); see `base`."""

from instraug_plugin.formats.base import DatasetFormat, RawSeeds
from instraug_plugin.formats.entry import DATASET_INFO, dataset_entry
from instraug_plugin.formats.files import load_rows
from instraug_plugin.formats.llava import LlavaFormat
from instraug_plugin.formats.registry import DATASET_FORMATS, get_dataset_format, register_dataset_format

__all__ = [
    "DATASET_FORMATS",
    "DATASET_INFO",
    "DatasetFormat",
    "LlavaFormat",
    "RawSeeds",
    "dataset_entry",
    "get_dataset_format",
    "load_rows",
    "register_dataset_format",
]
