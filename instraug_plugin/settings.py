"""The schema of every `instraug_*` key (training and evaluation), shared by the training integrations.

`parse_config` validates a mapping of full key names (as written in a YAML file or as `--instraug_x`
arguments) into an `InstrAugConfig`; any problem raises InstrAugError as one line naming each bad key.
Types, choices and bounds are declared on the fields (strict: a bool is not an integer, "1" is not a
number); validators carry only the rules that are not declarative. Torch-free and LLaMA-Factory-free.
"""

from __future__ import annotations

import difflib
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from instraug_plugin.backends.embedded import DEFAULT_MODEL, EMBEDDED  # torch-free
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.filters import DEFAULT_MIN_FIDELITY
from instraug_plugin.core.placeholders import PlaceholderSpec
from instraug_plugin.core.plan import DEFAULT_FLOOR, DEFAULT_STRENGTH, Rule, load_plan
from instraug_plugin.core.pool import SCOPES
from instraug_plugin.evaluation.evalset import VARIANT_CHOICES, EvalSet, load_eval_set
from instraug_plugin.generation.pipeline import STRATEGIES  # torch-free (checked by a test)

PREFIX = "instraug_"
EVAL_PREFIX = "instraug_eval_"
EVAL_GROUP = EVAL_PREFIX + "*"  # where the `instraug_eval_*` keys are gathered; no key can be spelled so
LIVE_MODELS = tuple(EMBEDDED)  # built-in rewriter names; anything else must be a local model path


def _as_tuple(value: Any) -> Any:
    """One string, a list of strings or null as a tuple; anything else is left for the type check."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value) if isinstance(value, list) else value


def _yaml_off(value: Any) -> Any:
    """YAML 1.1 reads an unquoted `off` as false: `instraug_mode: off` means "off"."""
    return "off" if value is False else value


def _split_commas(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(part.strip() for item in items for part in item.split(",") if part.strip())


Probability = Annotated[float, Field(ge=0.0, le=1.0)]
ANY_TASK = "*"  # in an `instraug_epsilon` map: the value for tasks not listed
Strings = Annotated[tuple[Annotated[str, StringConstraints(min_length=1)], ...], BeforeValidator(_as_tuple)]
CommaSeparated = Annotated[Strings, AfterValidator(_split_commas)]  # "a, b" names two entries


class EvalCallbackSettings(BaseModel):
    """The `instraug_eval_*` keys: the robustness evaluator run at epoch end during training."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True,
                              alias_generator=lambda name: EVAL_PREFIX + name)

    set: str = Field(min_length=1,
                     description=f"path of an evaluation set, needed when any {EVAL_PREFIX}* key is given")
    variants: Literal[VARIANT_CHOICES] = "both"
    tasks: CommaSeparated = ()
    max_instances: int | None = Field(50, ge=1)
    batch_size: int = Field(8, ge=1)
    max_new_tokens: int = Field(16, ge=1)
    every_n_epochs: int = Field(1, ge=1)
    save_reports: bool = True

    def load_set(self, variants: str | None = None) -> EvalSet:
        """The evaluation set these settings select (validated; one-line errors); `variants` overrides theirs."""
        return load_eval_set(Path(self.set), variants=variants or self.variants, tasks=self.tasks or None,
                             max_instances_per_task=self.max_instances)


class InstrAugConfig(BaseModel):
    """The `instraug_*` keys: field `x` is key `instraug_x`; `evaluation` gathers the `instraug_eval_*` keys."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, alias_generator=lambda name: PREFIX + name)

    mode: Annotated[Literal["off", "pool", "live"], BeforeValidator(_yaml_off)] = "pool"
    pool: CommaSeparated = Field((), validate_default=True)
    epsilon: Probability | dict[Annotated[str, StringConstraints(min_length=1)], Probability] = Field(
        0.5, json_schema_extra={"expected": "a number in [0.0, 1.0] or a {task: number in [0, 1]} map ('*': other tasks)"})
    plan: str | None = Field(None, min_length=1)
    adaptive: bool = False
    dev_share: float = Field(0.2, ge=0.01, le=0.9)
    epsilon_floor: float = Field(DEFAULT_FLOOR, ge=0.0, le=1.0)
    adaptive_strength: float = Field(DEFAULT_STRENGTH, ge=0.0, le=100.0)
    seed: int | None = Field(None, ge=0)
    turns: Literal["first", "all"] = "first"
    scope: Literal[SCOPES] = "template"
    task_column: str | None = Field(None, min_length=1)
    placeholder_regex: Strings = ()
    log: bool = True
    log_samples: bool = False
    skip_invalid: bool = False
    live_model: str = Field(DEFAULT_MODEL, min_length=1, validate_default=True)
    live_quantization_bit: Literal[4, 8] | None = Field(4, validate_default=True)
    live_batch_size: int = Field(8, ge=1)
    live_refresh_every: int = Field(1, ge=1)
    live_keep_loaded: bool = False
    live_strategy: Literal[STRATEGIES] = "single"
    live_num_samples: int = Field(2, ge=1)
    live_temperature: float = Field(0.7, ge=0.0, le=2.0)
    live_max_new_tokens: int = Field(48, ge=1)
    live_max_seeds: int | None = Field(None, ge=1)
    live_min_fidelity: float = Field(DEFAULT_MIN_FIDELITY, ge=0.0, le=1.0)
    evaluation: EvalCallbackSettings | None = Field(None, alias=EVAL_GROUP)

    @property
    def active(self) -> bool:
        return self.mode != "off"

    def task_epsilons(self) -> tuple[float, dict[str, float]]:
        """(epsilon for tasks not listed, {task: epsilon}) from `instraug_plan`, an `instraug_epsilon` map or
        the number (then no task is listed)."""
        if self.plan is not None:
            plan = load_plan(Path(self.plan))
            return plan.rule.epsilon, plan.epsilons()
        if isinstance(self.epsilon, dict):
            rest = {task: value for task, value in self.epsilon.items() if task != ANY_TASK}
            return self.epsilon.get(ANY_TASK, EPSILON_DEFAULT), rest
        return self.epsilon, {}

    def lowest_epsilon(self) -> float:
        """The smallest epsilon any task trains with (1 means no task ever sees a paraphrase); with
        `instraug_adaptive`, the floor the online loop may lower a task to."""
        default, by_task = self.task_epsilons()
        lowest = min([default, *by_task.values()])
        return min(lowest, self.epsilon_floor) if self.adaptive else lowest

    def adaptive_rule(self) -> Rule:
        """The online loop's rule (`instraug_adaptive`): the global epsilon, the floor and the strength."""
        assert isinstance(self.epsilon, float)  # checked by `_adaptive_needs`
        return Rule(self.epsilon, self.epsilon_floor, self.adaptive_strength)

    @model_validator(mode="before")
    @classmethod
    def _gather_eval_keys(cls, data: Any) -> Any:
        """Move the `instraug_eval_*` keys under `evaluation`; given alone, they leave rewriting off."""
        if not isinstance(data, Mapping):
            return data
        evaluation = {key: value for key, value in data.items() if str(key).startswith(EVAL_PREFIX)}
        rest = {key: value for key, value in data.items() if key not in evaluation}
        if evaluation and not rest:
            rest[PREFIX + "mode"] = "off"
        return {**rest, EVAL_GROUP: evaluation} if evaluation else rest

    @field_validator("pool")
    @classmethod
    def _pools_given_and_exist(cls, pool: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if not pool and info.data.get("mode") == "pool":
            raise ValueError(f"required when {PREFIX}mode is pool (a pool directory or pool.jsonl)")
        for path in pool:
            if not Path(path).exists():
                raise ValueError(f"{path} does not exist")
        return pool

    @field_validator("plan")
    @classmethod
    def _plan_loads(cls, plan: str | None) -> str | None:
        if plan is not None:
            try:
                load_plan(Path(plan))
            except InstrAugError as exc:
                raise ValueError(str(exc)) from None
        return plan

    @model_validator(mode="after")
    def _one_epsilon_source(self) -> InstrAugConfig:
        given = self.model_fields_set
        if self.plan is not None and "epsilon" in given:
            raise ValueError(f"{PREFIX}epsilon: not with {PREFIX}plan (the plan sets every task's epsilon)")
        if self.adaptive:
            if self.evaluation is None:
                raise ValueError(f"{PREFIX}adaptive: needs {EVAL_PREFIX}set (the instances the development wordings are scored on)")
            if self.mode != "pool":
                raise ValueError(f"{PREFIX}adaptive: needs {PREFIX}mode pool (the development wordings are held back from the pool)")
            if self.plan is not None or not isinstance(self.epsilon, float):
                raise ValueError(f"{PREFIX}adaptive: needs {PREFIX}epsilon as one number (the most any task gets), "
                                 f"not a map or {PREFIX}plan")
            if "variants" in self.evaluation.model_fields_set:
                raise ValueError(f"{EVAL_PREFIX}variants: not with {PREFIX}adaptive (it scores the original and the "
                                 "development wordings, never the held-out test wordings)")
        if isinstance(self.epsilon, float) and self.adaptive and self.epsilon_floor > self.epsilon:
            raise ValueError(f"{PREFIX}epsilon_floor: {self.epsilon_floor} is above {PREFIX}epsilon {self.epsilon}")
        return self

    @field_validator("placeholder_regex")
    @classmethod
    def _regexes_compile(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        try:
            PlaceholderSpec(extra_patterns=patterns)
        except InstrAugError as exc:
            raise ValueError(str(exc)) from None
        return patterns

    @field_validator("live_model")
    @classmethod
    def _live_model_loadable(cls, model: str, info: ValidationInfo) -> str:
        """Only live mode loads the rewriter: other modes leave the (unused) live keys unchecked."""
        if info.data.get("mode") == "live" and model not in LIVE_MODELS and not Path(model).exists():
            raise ValueError(f"expected {' | '.join(LIVE_MODELS)} or an existing local model path, got {model!r}")
        return model

    @field_validator("live_quantization_bit")
    @classmethod
    def _bitsandbytes_installed(cls, bits: int | None, info: ValidationInfo) -> int | None:
        if info.data.get("mode") == "live" and bits is not None and importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError(
                f"{bits}-bit loading needs bitsandbytes, which is not installed (pip install 'instraug-plugin[quant]', "
                f"or set {PREFIX}live_quantization_bit: null)"
            )
        return bits


EPSILON_DEFAULT = InstrAugConfig.model_fields["epsilon"].default


FIELDS: dict[str, FieldInfo] = {
    field.alias: field
    for model in (InstrAugConfig, EvalCallbackSettings)
    for field in model.model_fields.values()
    if field.alias and field.alias != EVAL_GROUP
}
KEYS = tuple(FIELDS)  # every key of the schema, full names


def parse_config(raw: Mapping[str, Any]) -> InstrAugConfig:
    """Validate `instraug_*` keys (full names) into a config; InstrAugError names every bad key, on one line."""
    try:
        return InstrAugConfig.model_validate(raw)
    except ValidationError as exc:
        errors = sorted(exc.errors(), key=lambda error: error["type"] != "extra_forbidden")  # typos first
        messages = dict.fromkeys(_message(error, raw) for error in errors)  # a union's members repeat one message
        raise InstrAugError("; ".join(messages)) from None


def _message(error: ErrorDetails, raw: Mapping[str, Any]) -> str:
    loc = error["loc"]
    if not loc:
        return str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
    if error["type"] == "extra_forbidden":
        key = str(loc[-1])
        close = difflib.get_close_matches(key, KEYS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(KEYS))}"
        return f"unknown key {key!r} ({hint})"
    key = _key(loc)
    if error["type"] == "missing":
        return f"{key}: required ({FIELDS[key].description})"
    if error["type"] == "value_error":
        return f"{key}: {error['ctx']['error']}"
    return f"{key}: expected {_expected(FIELDS[key])}, got {raw.get(key, error['input'])!r}"


def _key(loc: tuple[int | str, ...]) -> str:
    """The full key an error location names (a validated default is located by its field name)."""
    model, name = (EvalCallbackSettings, loc[1]) if loc[0] == EVAL_GROUP else (InstrAugConfig, loc[0])
    field = model.model_fields.get(str(name))
    return field.alias if field is not None and field.alias else str(name)


def _expected(field: FieldInfo) -> str:
    """What a field accepts, in words, from its declared type and bounds."""
    if isinstance(field.json_schema_extra, dict) and "expected" in field.json_schema_extra:
        return str(field.json_schema_extra["expected"])
    annotation, args = field.annotation, get_args(field.annotation)
    nullable = type(None) in args
    if nullable:
        annotation = next(arg for arg in args if arg is not type(None))
    if get_origin(annotation) is Literal:
        choices = [str(choice) for choice in get_args(annotation)]
    else:
        choices = [_kind(annotation, field.metadata)]
    if nullable:  # an enumeration with null reads as a list: "4, 8 or null"
        return f"{', '.join(choices)} or null"
    return " | ".join(choices)


def _kind(annotation: Any, metadata: list[Any]) -> str:
    low = next((bound.ge for bound in metadata if hasattr(bound, "ge")), None)
    high = next((bound.le for bound in metadata if hasattr(bound, "le")), None)
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "an integer" + (f" >= {low}" if low is not None else "")
    if annotation is float:
        return f"a number in [{low}, {high}]" if low is not None and high is not None else "a number"
    if annotation is str:
        return "a non-empty string" if any(getattr(m, "min_length", 0) for m in metadata) else "a string"
    if get_origin(annotation) is tuple:
        return "a string or a list of strings"
    raise TypeError(f"no description for {annotation!r}")  # a new field type needs words here


def _value(text: str) -> Any:
    """A command-line value as YAML reads it ("0.3" → 0.3, "True" → True, "null" → None), else the text."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def split_argv(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """(`instraug_*` key → value, the other arguments in order) from `--key value` / `--key=value` style
    argv, as every training stack's command line writes them. Values are read as YAML scalars
    (`0.3`, `True`, `null`); a bare `--instraug_x` flag means true."""
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
