"""Our `instraug_*` schema, argument splitting, the startup hook's process filter, unsupported settings."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.integrations.llamafactory.config import parse_config, split_args
from instraug_plugin.integrations.llamafactory.startup import _is_llamafactory_process

POOL = str(Path(__file__).resolve().parents[1] / "dataset_info" / "instraug_demo" / "pool")


def test_full_config_parses(tmp_path: Path) -> None:
    rewriter = tmp_path / "rewriter"
    rewriter.mkdir()
    config = parse_config({
        "instraug_mode": "live", "instraug_pool": [POOL], "instraug_epsilon": 0, "instraug_seed": 3,
        "instraug_turns": "all", "instraug_task_column": "task", "instraug_placeholder_regex": r"\[\d+\]",
        "instraug_live_model": str(rewriter), "instraug_live_quantization_bit": None, "instraug_live_batch_size": 4,
        "instraug_live_refresh_every": 2, "instraug_live_strategy": "multi_temperature",
        "instraug_live_max_new_tokens": 32, "instraug_live_keep_loaded": True, "instraug_log": False,
    })
    assert config.mode == "live" and config.pool == (POOL,) and config.epsilon == 0.0
    assert config.placeholder_regex == (r"\[\d+\]",) and config.live_quantization_bit is None
    assert config.live_model == str(rewriter) and config.live_keep_loaded and config.live_refresh_every == 2
    assert parse_config({"instraug_pool": f"{POOL}, {POOL}"}).pool == (POOL, POOL)


def test_typo_names_the_key_and_suggests_the_fix() -> None:
    with pytest.raises(InstrAugError, match=r"unknown key 'instraug_epsilom' \(did you mean 'instraug_epsilon'\?\)"):
        parse_config({"instraug_epsilom": 0.3})


@pytest.mark.parametrize(("key", "value", "message"), [
    ("instraug_mode", "pooled", "instraug_mode: expected off | pool | live"),
    ("instraug_epsilon", 1.5, r"instraug_epsilon: expected a number in \[0.0, 1.0\]"),
    ("instraug_epsilon", "half", "instraug_epsilon"),
    ("instraug_seed", -1, "instraug_seed: expected an integer >= 0"),
    ("instraug_turns", "last", "instraug_turns"),
    ("instraug_log", "yes", "instraug_log: expected true or false"),
    ("instraug_live_quantization_bit", 3, "instraug_live_quantization_bit: expected 4, 8 or null"),
    ("instraug_live_batch_size", 0, "instraug_live_batch_size"),
    ("instraug_live_model", "", "instraug_live_model: expected a non-empty string"),
    ("instraug_task_column", 3, "instraug_task_column"),
    ("instraug_placeholder_regex", "([", "placeholder regex"),
    ("instraug_pool", "/nonexistent/pool", "instraug_pool: /nonexistent/pool does not exist"),
])
def test_bad_values_name_the_key(key: str, value: object, message: str) -> None:
    raw = {"instraug_pool": POOL, key: value}
    with pytest.raises(InstrAugError, match=message) as info:
        parse_config(raw)
    assert "\n" not in str(info.value)


def test_live_model_must_be_smollm2_or_an_existing_path(tmp_path: Path) -> None:
    base = {"instraug_mode": "live", "instraug_pool": POOL, "instraug_live_quantization_bit": None}
    with pytest.raises(InstrAugError, match=re.escape("instraug_live_model: expected smollm2 | qwen2.5-coder-1.5b or an existing local "
                                                      "model path, got '/nonexistent/rewriter'")) as info:
        parse_config({**base, "instraug_live_model": "/nonexistent/rewriter"})
    assert "\n" not in str(info.value)
    assert parse_config({**base, "instraug_live_model": "smollm2"}).live_model == "smollm2"
    assert parse_config({**base, "instraug_live_model": str(tmp_path)}).live_model == str(tmp_path)
    # Only live mode loads the rewriter: pool mode does not check the (unused) live keys.
    assert parse_config({"instraug_pool": POOL, "instraug_live_model": "/nonexistent/rewriter"}).mode == "pool"


def test_live_quantization_without_bitsandbytes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    base = {"instraug_mode": "live", "instraug_pool": POOL, "instraug_live_model": "smollm2"}
    with pytest.raises(InstrAugError, match=r"^instraug_live_quantization_bit: 8-bit loading needs bitsandbytes") as info:
        parse_config({**base, "instraug_live_quantization_bit": 8})
    assert "\n" not in str(info.value)
    with pytest.raises(InstrAugError, match="instraug_live_quantization_bit: 4-bit"):
        parse_config(base)  # the default is 4-bit
    assert parse_config({**base, "instraug_live_quantization_bit": None}).live_quantization_bit is None
    assert parse_config({"instraug_pool": POOL, "instraug_live_quantization_bit": 8}).mode == "pool"


def test_strategies_come_from_the_torch_free_pipeline() -> None:
    from instraug_plugin import settings
    from instraug_plugin.generation import pipeline

    assert settings.STRATEGIES is pipeline.STRATEGIES
    code = ("import sys, instraug_plugin.settings, instraug_plugin.integrations.llamafactory.config; "
            "print('torch' in sys.modules, 'transformers' in sys.modules, 'llamafactory' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


def test_pool_mode_needs_a_pool() -> None:
    with pytest.raises(InstrAugError, match="instraug_pool: required"):
        parse_config({"instraug_mode": "pool"})
    assert parse_config({"instraug_mode": "off"}).active is False


def test_split_args_leaves_llamafactory_args_alone() -> None:
    args = {"stage": "sft", "seed": 1}
    config, rest = split_args(args)
    assert config is None and rest is args
    config, rest = split_args({**args, "instraug_pool": POOL, "instraug_epsilon": 0.2})
    assert rest == args and config is not None and config.epsilon == 0.2
    config, rest = split_args(["--stage", "sft", f"--instraug_pool={POOL}", "--instraug_epsilon", "0.1"])
    assert rest == ["--stage", "sft"] and config is not None and config.epsilon == 0.1


@pytest.mark.parametrize(("argv0", "expected"), [
    ("/venv/bin/llamafactory-cli", True),
    ("/venv/bin/lmf", True),
    ("/venv/lib/python3.11/site-packages/llamafactory/launcher.py", True),
    ("/venv/bin/python", False),
    ("-c", False),
    ("/venv/bin/pytest", False),
    ("", False),
])
def test_startup_hook_acts_only_for_llamafactory(argv0: str, expected: bool) -> None:
    assert _is_llamafactory_process(argv0) is expected


def test_other_python_processes_are_untouched() -> None:
    code = ("import sys; print(any(type(f).__name__ == '_PostImportFinder' for f in sys.meta_path),"
            " 'llamafactory' in sys.modules, 'instraug_plugin.integrations.llamafactory.patches' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


@pytest.mark.parametrize(("data", "stage", "message"), [
    ({"packing": True}, "sft", "packing: incompatible"),
    ({"streaming": True}, "sft", "streaming: incompatible"),
    ({"tokenized_path": "/tmp/tok"}, "sft", "tokenized_path: incompatible"),
    ({}, "dpo", "stage: sft only"),
])
def test_unsupported_settings_are_rejected(data: dict, stage: str, message: str) -> None:
    from instraug_plugin.integrations.llamafactory.pretrain import check_supported

    with pytest.raises(InstrAugError, match=message):
        check_supported(SimpleNamespace(**data), stage)


@pytest.mark.parametrize(("version", "val_size", "refused"), [
    ("0.9.3", 0.1, True), ("0.9.3.dev0", 10, True), ("0.9.4", 0.0, False), ("0.9.4", 0.1, False), ("0.9.5", 0.1, False),
    ("0.10.0", 0.2, False),
])
def test_val_size_is_refused_before_llamafactory_0_9_4(monkeypatch: pytest.MonkeyPatch, version: str,
                                                        val_size: float, refused: bool) -> None:
    import llamafactory

    from instraug_plugin.integrations.llamafactory.pretrain import check_supported

    monkeypatch.setattr(llamafactory, "__version__", version)
    data = SimpleNamespace(val_size=val_size)
    if not refused:
        check_supported(data, "sft")
        return
    with pytest.raises(InstrAugError, match=rf"^val_size: incompatible with instraug_mode on LLaMA-Factory {version[:5]}") as info:
        check_supported(data, "sft")
    assert "\n" not in str(info.value)
