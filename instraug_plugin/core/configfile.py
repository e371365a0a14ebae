"""Config files (a YAML or JSON mapping) with one-line errors, and command options read from them
(`pregen --config`): a file of options, or the options a pool manifest recorded (torch-free)."""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.jsonfile import DuplicateKeyError, loads_json
from instraug_plugin.core.pool import POOL_FORMAT

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
OPTIONS_KEY = "options"  # where a pool manifest records every option of the pregen run that wrote it


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a mapping giving a key twice is a DuplicateKeyError (PyYAML keeps the
    last value silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                error = DuplicateKeyError(key)
                error.where = f" (line {key_node.start_mark.line + 1})"  # type: ignore[attr-defined]
                raise error
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_mapping_file(path: Path, kind: str, entries: str) -> dict[str, Any]:
    """The mapping in a .yaml/.yml/.json file; InstrAugError naming the file (and line) otherwise.

    `kind` names the file in messages ("training config"), `entries` what the mapping holds.
    """
    if path.suffix not in CONFIG_SUFFIXES:
        raise InstrAugError(f"{path}: expected a .yaml, .yml or .json {kind}")
    if not path.is_file():
        raise InstrAugError(f"{kind} not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        data = loads_json(text) if path.suffix == ".json" else yaml.load(text, Loader=UniqueKeyLoader)
    except UnicodeDecodeError:
        raise InstrAugError(f"{path}: not a UTF-8 text file") from None
    except DuplicateKeyError as exc:
        raise InstrAugError(f"{path}: {exc}{getattr(exc, 'where', '')}") from None
    except json.JSONDecodeError as exc:
        raise InstrAugError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:  # NaN / Infinity in a .json file
        raise InstrAugError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise InstrAugError(f"{path}: not valid YAML ({problem}{where})") from None
    if not isinstance(data, dict):
        raise InstrAugError(f"{path}: expected a mapping of {entries}, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class OptionsFile:
    """Option values by parameter name, checked against their types; `manifest`: they are the
    options a pool manifest recorded (not a hand-written file)."""

    values: dict[str, Any]
    manifest: bool


def read_options(path: Path, option_types: Mapping[str, Any], command: str) -> OptionsFile:
    """The options in `path` for `command`: keys are parameter names (`min_fidelity`, or with dashes,
    `min-fidelity`), values of the parameter's type (`option_types`: name → type hint). A pool
    manifest (`format: instraug-pool/1`) gives the options it recorded under `options`.

    InstrAugError naming the file and key on an unknown key (with a did-you-mean), a key given twice
    or a value of the wrong type.
    """
    data = read_mapping_file(path, f"{command} config", f"{command} options")
    manifest = data.get("format") == POOL_FORMAT
    if manifest:
        data = data.get(OPTIONS_KEY)
        if not isinstance(data, dict):
            raise InstrAugError(f"{path}: a pool manifest without recorded options (written before pregen recorded "
                                "them); give its options as flags or in a YAML file")
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_") if isinstance(key, str) else key
        if name not in option_types:
            close = difflib.get_close_matches(str(name), list(option_types), n=1)
            hint = (f"did you mean {close[0]!r}?" if close
                    else f"see 'instraug-plugin {command} --help'; option names are written with _ or -")
            raise InstrAugError(f"{path}: unknown option {key!r} ({hint})")
        if name in values:
            raise InstrAugError(f"{path}: option {name!r} given twice")
        values[name] = _checked(path, key, value, option_types[name])
    return OptionsFile(values, manifest)


def _checked(path: Path, key: str, value: Any, hint: Any) -> Any:
    """`value` as the type `hint` takes it (a number for a float, a string or list for a list of strings)."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kinds = typing.get_args(hint) if union else (hint,)
    nullable = type(None) in kinds
    kind = next(k for k in kinds if k is not type(None))
    if value is None and nullable:
        return None
    if kind is bool:
        expected, ok = "true or false", isinstance(value, bool)
    elif kind is int:
        expected, ok = "an integer", isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        expected, ok = "a number", isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind is str:
        expected, ok = "a string", isinstance(value, str)
    elif kind is Path:
        expected, ok = "a path", isinstance(value, str) and value != ""
    elif typing.get_origin(kind) is list and typing.get_args(kind) == (str,):
        value = [value] if isinstance(value, str) else value
        expected, ok = "a list of strings (or one string)", isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:  # every option type of a command read from a file needs a branch above
        raise AssertionError(f"no check for {key}: {hint}")
    if not ok:
        expected += " or null" if nullable else ""
        raise InstrAugError(f"{path}: {key}: expected {expected}, got {'null' if value is None else repr(value)}")
    return value
