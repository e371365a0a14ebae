"""The declarative schema of every `instraug_*` key and its one-line errors."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.integrations.llamafactory.config import split_args
from instraug_plugin.settings import KEYS, EvalCallbackSettings, InstrAugConfig, parse_config

POOL = str(Path(__file__).resolve().parents[1] / "dataset_info" / "instraug_demo" / "pool")
BASE = {"instraug_pool": POOL, "instraug_eval_set": "eval.json"}

EPSILON_EXPECTED = "expected a number in [0.0, 1.0] or a {task: number in [0, 1]} map ('*': other tasks)"
# (key, bad value, the whole error): a wrong type and, where the key has one, a value out of bounds.
BAD_VALUES = [
    ("instraug_mode", "pooled", "instraug_mode: expected off | pool | live, got 'pooled'"),
    ("instraug_pool", 3, "instraug_pool: expected a string or a list of strings, got 3"),
    ("instraug_pool", [POOL, ""], f"instraug_pool: expected a string or a list of strings, got [{POOL!r}, '']"),
    ("instraug_epsilon", "0.5", f"instraug_epsilon: {EPSILON_EXPECTED}, got '0.5'"),
    ("instraug_epsilon", True, f"instraug_epsilon: {EPSILON_EXPECTED}, got True"),
    ("instraug_epsilon", 1.5, f"instraug_epsilon: {EPSILON_EXPECTED}, got 1.5"),
    ("instraug_epsilon", {"vqa": 1.5}, f"instraug_epsilon: {EPSILON_EXPECTED}, got {{'vqa': 1.5}}"),
    ("instraug_epsilon", {"": 0.5}, f"instraug_epsilon: {EPSILON_EXPECTED}, got {{'': 0.5}}"),
    ("instraug_plan", 3, "instraug_plan: expected a non-empty string or null, got 3"),
    ("instraug_plan", "missing-plan.json", "instraug_plan: file not found: missing-plan.json"),
    ("instraug_adaptive", "yes", "instraug_adaptive: expected true or false, got 'yes'"),
    ("instraug_dev_share", 0.0, "instraug_dev_share: expected a number in [0.01, 0.9], got 0.0"),
    ("instraug_dev_share", 1, "instraug_dev_share: expected a number in [0.01, 0.9], got 1"),
    ("instraug_epsilon_floor", -0.1, "instraug_epsilon_floor: expected a number in [0.0, 1.0], got -0.1"),
    ("instraug_adaptive_strength", "2", "instraug_adaptive_strength: expected a number in [0.0, 100.0], got '2'"),
    ("instraug_seed", 1.0, "instraug_seed: expected an integer >= 0 or null, got 1.0"),
    ("instraug_seed", True, "instraug_seed: expected an integer >= 0 or null, got True"),
    ("instraug_seed", -1, "instraug_seed: expected an integer >= 0 or null, got -1"),
    ("instraug_turns", "last", "instraug_turns: expected first | all, got 'last'"),
    ("instraug_scope", "rows", "instraug_scope: expected template | all, got 'rows'"),
    ("instraug_task_column", 3, "instraug_task_column: expected a non-empty string or null, got 3"),
    ("instraug_task_column", "", "instraug_task_column: expected a non-empty string or null, got ''"),
    ("instraug_placeholder_regex", {"a": 1}, "instraug_placeholder_regex: expected a string or a list of strings, "
                                             "got {'a': 1}"),
    ("instraug_log", "yes", "instraug_log: expected true or false, got 'yes'"),
    ("instraug_log_samples", 1, "instraug_log_samples: expected true or false, got 1"),
    ("instraug_skip_invalid", "true", "instraug_skip_invalid: expected true or false, got 'true'"),
    ("instraug_live_model", 3, "instraug_live_model: expected a non-empty string, got 3"),
    ("instraug_live_model", "", "instraug_live_model: expected a non-empty string, got ''"),
    ("instraug_live_quantization_bit", True, "instraug_live_quantization_bit: expected 4, 8 or null, got True"),
    ("instraug_live_quantization_bit", 16, "instraug_live_quantization_bit: expected 4, 8 or null, got 16"),
    ("instraug_live_batch_size", 0, "instraug_live_batch_size: expected an integer >= 1, got 0"),
    ("instraug_live_refresh_every", "2", "instraug_live_refresh_every: expected an integer >= 1, got '2'"),
    ("instraug_live_keep_loaded", "no", "instraug_live_keep_loaded: expected true or false, got 'no'"),
    ("instraug_live_strategy", "best", "instraug_live_strategy: expected single | multi_temperature | iterative, "
                                       "got 'best'"),
    ("instraug_live_num_samples", 0, "instraug_live_num_samples: expected an integer >= 1, got 0"),
    ("instraug_live_temperature", 2.5, "instraug_live_temperature: expected a number in [0.0, 2.0], got 2.5"),
    ("instraug_live_max_new_tokens", 4.0, "instraug_live_max_new_tokens: expected an integer >= 1, got 4.0"),
    ("instraug_live_max_seeds", 0, "instraug_live_max_seeds: expected an integer >= 1 or null, got 0"),
    ("instraug_live_min_fidelity", -0.1, "instraug_live_min_fidelity: expected a number in [0.0, 1.0], got -0.1"),
    ("instraug_eval_set", 3, "instraug_eval_set: expected a non-empty string, got 3"),
    ("instraug_eval_set", "", "instraug_eval_set: expected a non-empty string, got ''"),
    ("instraug_eval_variants", "all", "instraug_eval_variants: expected original | heldout | both, got 'all'"),
    ("instraug_eval_tasks", 3, "instraug_eval_tasks: expected a string or a list of strings, got 3"),
    ("instraug_eval_max_instances", 0, "instraug_eval_max_instances: expected an integer >= 1 or null, got 0"),
    ("instraug_eval_batch_size", True, "instraug_eval_batch_size: expected an integer >= 1, got True"),
    ("instraug_eval_max_new_tokens", 0, "instraug_eval_max_new_tokens: expected an integer >= 1, got 0"),
    ("instraug_eval_every_n_epochs", 0.5, "instraug_eval_every_n_epochs: expected an integer >= 1, got 0.5"),
    ("instraug_eval_save_reports", "yes", "instraug_eval_save_reports: expected true or false, got 'yes'"),
]


def test_every_key_of_the_schema_has_a_bad_value_case() -> None:
    assert {key for key, _, _ in BAD_VALUES} == set(KEYS)
    fields = [*InstrAugConfig.model_fields, *EvalCallbackSettings.model_fields]
    assert len(KEYS) == len(fields) - 1  # every field but the group of instraug_eval_* keys is a key


@pytest.mark.parametrize(("key", "value", "message"), BAD_VALUES)
def test_a_bad_value_is_one_line_naming_the_key(key: str, value: object, message: str) -> None:
    with pytest.raises(InstrAugError) as info:
        parse_config({**BASE, key: value})
    assert str(info.value) == message


def test_declared_types_accept_what_they_should() -> None:
    config = parse_config({**BASE, "instraug_epsilon": 1, "instraug_seed": None, "instraug_task_column": None,
                           "instraug_live_quantization_bit": None, "instraug_live_max_seeds": None,
                           "instraug_placeholder_regex": [r"\d+", "a,b"], "instraug_eval_max_instances": None,
                           "instraug_eval_tasks": ["shape_count", "text_read, shape_color"]})
    assert config.epsilon == 1.0 and isinstance(config.epsilon, float) and config.seed is None
    assert config.placeholder_regex == (r"\d+", "a,b")  # a regex may hold a comma: no splitting
    assert config.evaluation is not None and config.evaluation.max_instances is None
    assert config.evaluation.tasks == ("shape_count", "text_read", "shape_color")
    assert parse_config({"instraug_mode": "off", "instraug_pool": None}).pool == ()


@pytest.mark.parametrize(("key", "suggestion"), [
    ("instraug_epsilom", "instraug_epsilon"),
    ("instraug_live_modle", "instraug_live_model"),
    ("instraug_eval_variant", "instraug_eval_variants"),
    ("instraug_eval_*", "instraug_eval_set"),  # where the eval keys are gathered is no key
])
def test_unknown_key_suggests_the_closest_key(key: str, suggestion: str) -> None:
    with pytest.raises(InstrAugError) as info:
        parse_config({**BASE, key: 1})
    assert str(info.value) == f"unknown key {key!r} (did you mean {suggestion!r}?)"


def test_unknown_key_without_a_close_match_lists_the_schema_keys() -> None:
    with pytest.raises(InstrAugError) as info:
        parse_config({**BASE, "mode": "off"})  # the field name is not the key
    assert str(info.value) == f"unknown key 'mode' (known keys: {', '.join(sorted(KEYS))})"


def test_missing_eval_set_is_required_by_any_eval_key() -> None:
    with pytest.raises(InstrAugError) as info:
        parse_config({"instraug_eval_batch_size": 4})
    assert str(info.value) == ("instraug_eval_set: required (path of an evaluation set, needed when any "
                               "instraug_eval_* key is given)")


def test_several_errors_share_one_line_typos_first() -> None:
    with pytest.raises(InstrAugError) as info:
        parse_config({"instraug_seed": -1, "instraug_pol": POOL})
    assert str(info.value) == ("unknown key 'instraug_pol' (did you mean 'instraug_pool'?); "
                               "instraug_pool: required when instraug_mode is pool (a pool directory or pool.jsonl); "
                               "instraug_seed: expected an integer >= 0 or null, got -1")


def test_eval_keys_alone_leave_rewriting_off() -> None:
    config = parse_config({"instraug_eval_set": "eval.json"})
    assert config.mode == "off" and not config.active and config.evaluation is not None
    assert config.evaluation.set == "eval.json" and config.evaluation.variants == "both"
    assert parse_config({"instraug_eval_set": "eval.json", "instraug_pool": POOL}).mode == "pool"
    with pytest.raises(InstrAugError, match=r"^instraug_pool: required"):
        parse_config({"instraug_eval_set": "eval.json", "instraug_epsilon": 0.2})  # any other key: pool mode


def test_command_line_arguments_use_the_same_schema() -> None:
    config, rest = split_args(["--stage", "sft", "--instraug_eval_set", "eval.json", "--instraug_eval_tasks=a,b"])
    assert rest == ["--stage", "sft"] and config is not None and config.mode == "off"
    assert config.evaluation is not None and config.evaluation.tasks == ("a", "b")
    with pytest.raises(InstrAugError, match=re.escape("instraug_eval_batch_size: expected an integer >= 1, got '8x'")):
        split_args(["--instraug_eval_set", "e.json", "--instraug_eval_batch_size", "8x"])


def test_config_is_frozen_and_survives_pickling() -> None:
    config = parse_config({**BASE, "instraug_epsilon": 0.25})
    assert pickle.loads(pickle.dumps(config)) == config
    with pytest.raises(ValueError, match="frozen"):
        config.epsilon = 0.3  # type: ignore[misc]


def test_unquoted_yaml_off_means_mode_off():
    """YAML reads `instraug_mode: off` as false; the user meant the mode "off" (a real YAML load, no quoting)."""
    import yaml

    raw = yaml.safe_load("instraug_mode: off\n")
    assert raw == {"instraug_mode": False}
    assert parse_config(raw).mode == "off"
    with pytest.raises(InstrAugError, match=r"^instraug_mode: expected off \| pool \| live, got True$"):
        parse_config(yaml.safe_load("instraug_mode: on\n"))
