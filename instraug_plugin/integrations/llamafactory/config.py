"""The `instraug_*` keys of a LLaMA-Factory run, split off before LLaMA-Factory sees the rest.

`split_args` removes our keys so that LLaMA-Factory's own parser never sees them and validates them
against the schema of `instraug_plugin.settings` (a typo or a bad value raises InstrAugError naming
the key); without `instraug_*` keys it returns None and the arguments unchanged (the plugin stays inert).
"""

from __future__ import annotations

from typing import Any

from instraug_plugin.settings import PREFIX, InstrAugConfig, parse_config, split_argv


def split_args(args: dict[str, Any] | list[str]) -> tuple[InstrAugConfig | None, dict[str, Any] | list[str]]:
    """(our config or None if no `instraug_*` key was given, LLaMA-Factory's arguments without ours)."""
    if isinstance(args, dict):
        ours = {k: v for k, v in args.items() if isinstance(k, str) and k.startswith(PREFIX)}
        rest: dict[str, Any] | list[str] = {k: v for k, v in args.items() if k not in ours}
    else:
        ours, rest = split_argv(list(args))
    if not ours:
        return None, args
    return parse_config(ours), rest
