"""The `instraug_*` keys of a LLaMA-Factory YAML: our own schema, validated before LLaMA-Factory sees the rest.

A typo or a bad value raises InstrAugError naming the key. `split_args` removes our keys so that
LLaMA-Factory's own parser never sees them; without `instraug_*` keys it returns None and the
arguments unchanged (the plugin stays inert).
"""

from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.filters import DEFAULT_MIN_FIDELITY
from instraug_plugin.core.pool import SCOPES
from instraug_plugin.generation.pipeline import STRATEGIES  # torch-free (checked by a test)

if TYPE_CHECKING:
    from instraug_plugin.evaluation.callback import EvalCallbackSettings

PREFIX = "instraug_"
MODES = ("off", "pool", "live")
TURNS = ("first", "all")
LIVE_MODELS = ("smollm2",)  # built-in rewriter names; anything else must be a local model path


@dataclass(frozen=True)
class InstrAugConfig:
    """Validated settings; field `x` is YAML key `instraug_x`."""

    mode: str = "pool"
    pool: tuple[str, ...] = ()
    epsilon: float = 0.5
    seed: int | None = None
    turns: str = "first"
    scope: str = "template"
    task_column: str | None = None
    placeholder_regex: tuple[str, ...] = ()
    log: bool = True
    log_samples: bool = False
    skip_invalid: bool = False
    live_model: str = "smollm2"
    live_quantization_bit: int | None = 4
    live_batch_size: int = 8
    live_refresh_every: int = 1
    live_keep_loaded: bool = False
    live_strategy: str = "single"
    live_num_samples: int = 2
    live_temperature: float = 0.7
    live_max_new_tokens: int = 48
    live_max_seeds: int | None = None
    live_min_fidelity: float = DEFAULT_MIN_FIDELITY
    evaluation: EvalCallbackSettings | None = None  # from the instraug_eval_* keys

    @property
    def active(self) -> bool:
        return self.mode != "off"


KEYS = {PREFIX + f.name: f.name for f in fields(InstrAugConfig) if f.name != "evaluation"}
EVAL_PREFIX = "instraug_eval_"


def _fail(key: str, expected: str, value: Any) -> InstrAugError:
    return InstrAugError(f"{key}: expected {expected}, got {value!r}")


def _as_int(key: str, value: Any, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        raise _fail(key, "an integer" + (f" >= {low}" if low is not None else ""), value)
    return value


def _as_float(key: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _fail(key, f"a number in [{low}, {high}]", value)
    return float(value)


def _as_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, "true or false", value)
    return value


def _as_choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise _fail(key, " | ".join(choices), value)
    return value


def _as_strings(key: str, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) and v for v in items):
        raise _fail(key, "a string or a list of strings", value)
    if key.endswith("pool"):  # a comma-separated string also names several pools
        return tuple(part.strip() for item in items for part in item.split(",") if part.strip())
    return tuple(items)


def parse_config(raw: dict[str, Any]) -> InstrAugConfig:
    """Validate `instraug_*` keys (full names) into a config; InstrAugError names the bad key.

    `instraug_eval_*` keys configure the robustness-evaluation callback; given alone, they leave
    instruction rewriting off.
    """
    from instraug_plugin.evaluation.callback import EvalCallbackSettings

    values: dict[str, Any] = {"evaluation": EvalCallbackSettings.from_keys(raw)}
    if values["evaluation"] is not None and "instraug_mode" not in raw and all(k.startswith(EVAL_PREFIX) for k in raw):
        values["mode"] = "off"
    for key, value in raw.items():
        if key.startswith(EVAL_PREFIX):
            continue
        if key not in KEYS:
            close = difflib.get_close_matches(key, list(KEYS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(sorted(KEYS))})"
            raise InstrAugError(f"unknown key {key!r}{hint}")
        name = KEYS[key]
        if value is None and name in ("seed", "task_column", "live_quantization_bit", "live_max_seeds"):
            values[name] = None
        elif value is None and name in ("pool", "placeholder_regex"):
            values[name] = ()
        elif name == "mode":
            values[name] = _as_choice(key, value, MODES)
        elif name == "turns":
            values[name] = _as_choice(key, value, TURNS)
        elif name == "scope":
            values[name] = _as_choice(key, value, SCOPES)
        elif name == "live_strategy":
            values[name] = _as_choice(key, value, STRATEGIES)
        elif name in ("pool", "placeholder_regex"):
            values[name] = _as_strings(key, value)
        elif name == "epsilon":
            values[name] = _as_float(key, value, 0.0, 1.0)
        elif name == "live_temperature":
            values[name] = _as_float(key, value, 0.0, 2.0)
        elif name == "live_min_fidelity":
            values[name] = _as_float(key, value, 0.0, 1.0)
        elif name == "seed":
            values[name] = _as_int(key, value, 0)
        elif name == "live_quantization_bit":
            if value not in (4, 8):
                raise _fail(key, "4, 8 or null", value)
            values[name] = value
        elif name in ("live_batch_size", "live_refresh_every", "live_num_samples", "live_max_new_tokens",
                      "live_max_seeds"):
            values[name] = _as_int(key, value, 1)
        elif name in ("log", "log_samples", "live_keep_loaded", "skip_invalid"):
            values[name] = _as_bool(key, value)
        elif name in ("task_column", "live_model"):
            if not isinstance(value, str) or not value:
                raise _fail(key, "a non-empty string", value)
            values[name] = value
        else:  # every field of InstrAugConfig needs a branch above
            raise AssertionError(f"no validator for {key}")
    config = InstrAugConfig(**values)
    if config.mode == "pool" and not config.pool:
        raise InstrAugError("instraug_pool: required when instraug_mode is pool (a pool directory or pool.jsonl)")
    for path in config.pool:
        if not Path(path).exists():
            raise InstrAugError(f"instraug_pool: {path} does not exist")
    if config.mode == "live":
        _check_live(config)
    if config.placeholder_regex:
        from instraug_plugin.core.placeholders import PlaceholderSpec

        PlaceholderSpec(extra_patterns=config.placeholder_regex)  # raises on a bad regex
    return config


def _check_live(config: InstrAugConfig) -> None:
    """Fail before training on a live rewriter that cannot load (unknown model, missing bitsandbytes)."""
    if config.live_model not in LIVE_MODELS and not Path(config.live_model).exists():
        raise InstrAugError(
            f"instraug_live_model: expected {' | '.join(LIVE_MODELS)} or an existing local model path, "
            f"got {config.live_model!r}"
        )
    if config.live_quantization_bit is not None and importlib.util.find_spec("bitsandbytes") is None:
        raise InstrAugError(
            f"instraug_live_quantization_bit: {config.live_quantization_bit}-bit loading needs bitsandbytes, which "
            "is not installed (pip install 'instraug-plugin[quant]', or set instraug_live_quantization_bit: null)"
        )


def _split_list(args: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Pull `--instraug_x value` / `--instraug_x=value` out of command-line style arguments."""
    ours: dict[str, Any] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name = arg[2:] if arg.startswith("--") else ""
        if name.startswith(PREFIX):
            if "=" in name:
                name, text = name.split("=", 1)
            elif i + 1 < len(args):
                text, i = args[i + 1], i + 1
            else:
                raise InstrAugError(f"{name}: missing value")
            ours[name] = yaml.safe_load(text)
        else:
            rest.append(arg)
        i += 1
    return ours, rest


def split_args(args: dict[str, Any] | list[str]) -> tuple[InstrAugConfig | None, dict[str, Any] | list[str]]:
    """(our config or None if no `instraug_*` key was given, LLaMA-Factory's arguments without ours)."""
    if isinstance(args, dict):
        ours = {k: v for k, v in args.items() if isinstance(k, str) and k.startswith(PREFIX)}
        rest: dict[str, Any] | list[str] = {k: v for k, v in args.items() if k not in ours}
    else:
        ours, rest = _split_list(list(args))
    if not ours:
        return None, args
    return parse_config(ours), rest
