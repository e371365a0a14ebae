"""The `--instraug_*` arguments of a LLaVA training command, split off before LLaVA's parser sees the rest.

LLaVA parses its command line with `HfArgumentParser`, which rejects unknown options, so ours are
removed first and validated against the one schema of `instraug_plugin.settings` (the keys and
one-line errors of the LLaMA-Factory integration). Values are read as YAML scalars, as HfArgumentParser
users write them (`--instraug_epsilon 0.3`, `--instraug_log_samples True`); a bare `--instraug_x`
flag means true. Torch-free.
"""

from __future__ import annotations

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.settings import InstrAugConfig, parse_config, split_argv


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
