"""Input readers: turn a template file, a LLaMA-Factory dataset or LLaVA data into seed instructions."""

from instraug_plugin.inputs.base import SeedInstruction, SeedReader
from instraug_plugin.inputs.registry import (
    READERS,
    SeedSet,
    get_reader,
    load_seed_set,
    load_seeds,
    register_reader,
)

__all__ = [
    "READERS",
    "SeedInstruction",
    "SeedReader",
    "SeedSet",
    "get_reader",
    "load_seed_set",
    "load_seeds",
    "register_reader",
]
