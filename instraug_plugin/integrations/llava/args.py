"""The `--instraug_*` arguments of a LLaVA training command, split off before LLaVA's parser sees the rest.

LLaVA parses its command line with `HfArgumentParser`, which rejects unknown options, so ours are
removed first and validated against the one schema of `instraug_plugin.settings` (the keys and
one-line errors of the LLaMA-Factory integration). Values are read as YAML scalars, as HfArgumentParser
users write them (`--instraug_epsilon 0.3`, `--instraug_log_samples True`); a bare `--instraug_x`
flag means true. Torch-free.
"""

from __future__ import annotations

from typing import Any

import yaml

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.settings import PREFIX, InstrAugConfig, parse_config


def _value(text: str) -> Any:
    """A command-line value as YAML reads it ("0.3" → 0.3, "True" → True, "null" → None), else the text."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def split_argv(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """(`instraug_*` key → value, the other arguments in order) from `--key value` / `--key=value` style argv."""
    ours: dict[str, Any] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg[2:] if arg.startswith("--") else ""
        if name.startswith(PREFIX):
            if "=" in name:
                name, text = name.split("=", 1)
                ours[name] = _value(text)
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                ours[name] = _value(argv[i + 1])
                i += 1
            else:
                ours[name] = True
        else:
            rest.append(arg)
        i += 1
    return ours, rest


def parse_argv(argv: list[str]) -> tuple[InstrAugConfig | None, list[str]]:
    """(our validated config, or None when no `--instraug_*` argument was given; LLaVA's arguments).

    InstrAugError, one line naming each bad key (did-you-mean for a typo), on a bad key or value.
    """
    ours, rest = split_argv(argv)
    if not ours:
        return None, rest
    config = parse_config(ours)
    if config.mode == "live":
        raise InstrAugError(
            "instraug_mode: live is not available with LLaVA's train script (LLaVA's transformers 4.37 cannot run "
            "the live rewriter); pregen a pool (instraug-plugin pregen) and use --instraug_mode pool"
        )
    if config.evaluation is not None:
        raise InstrAugError("instraug_eval_set: the epoch-end robustness evaluation is not available with LLaVA's "
                            "train script (it renders prompts with LLaMA-Factory templates and generates in the main "
                            "process only, which LLaVA's ZeRO-3 recipes cannot do)")
    return config, rest
