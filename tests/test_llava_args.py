"""The `--instraug_*` arguments of a LLaVA training command: split off LLaVA's, validated by the one schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.integrations.llava.args import parse_argv
from instraug_plugin.settings import split_argv

POOL = str(Path(__file__).resolve().parents[1] / "dataset_info" / "instraug_demo" / "pool")
LLAVA = ["--model_name_or_path", "lmsys/vicuna-7b-v1.5", "--lora_enable", "True", "--local_rank=0", "--bf16", "True"]


def test_our_arguments_leave_llavas_in_order() -> None:
    argv = [*LLAVA[:2], "--instraug_pool", POOL, *LLAVA[2:4], "--instraug_epsilon=0.3", *LLAVA[4:],
            "--instraug_log_samples"]
    config, rest = parse_argv(argv)
    assert rest == LLAVA
    assert config is not None and config.pool == (POOL,) and config.epsilon == 0.3 and config.log_samples is True
    assert config.mode == "pool" and config.seed is None


def test_values_read_as_hf_argument_parser_users_write_them() -> None:
    ours, _ = split_argv(["--instraug_seed", "-3", "--instraug_log", "False", "--instraug_task_column", "null",
                          "--instraug_placeholder_regex", r"\[\d+\]", "--instraug_turns", "all"])
    assert ours == {"instraug_seed": -3, "instraug_log": False, "instraug_task_column": None,
                    "instraug_placeholder_regex": r"\[\d+\]", "instraug_turns": "all"}
    assert split_argv(["--instraug_pool", "a: [b"]) == ({"instraug_pool": "a: [b"}, [])  # not YAML: the text


def test_without_instraug_arguments_llava_sees_its_arguments_unchanged() -> None:
    assert parse_argv(LLAVA) == (None, LLAVA)


@pytest.mark.parametrize(("argv", "message"), [
    (["--instraug_epsilom", "0.3", "--instraug_pool", POOL],
     "unknown key 'instraug_epsilom' (did you mean 'instraug_epsilon'?)"),
    (["--instraug_pool", POOL, "--instraug_epsilon", "1.5"],
     "instraug_epsilon: expected a number in [0.0, 1.0] or a {task: number in [0, 1]} map ('*': other tasks), got 1.5"),
    (["--instraug_mode", "pool"],
     "instraug_pool: required when instraug_mode is pool (a pool directory or pool.jsonl)"),
    (["--instraug_pool", POOL, "--instraug_seed"], "instraug_seed: expected an integer >= 0 or null, got True"),
    (["--instraug_mode", "live"], "instraug_mode: live is not available with LLaVA's train script"),
    (["--instraug_pool", POOL, "--instraug_eval_set", "eval.json"],
     "instraug_eval_set: the epoch-end robustness evaluation is not available with LLaVA's train script"),
])
def test_bad_arguments_fail_in_one_line_naming_the_key(argv: list[str], message: str) -> None:
    with pytest.raises(InstrAugError) as info:
        parse_argv([*LLAVA, *argv])
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_the_entry_point_reports_a_typo_in_one_line_before_loading_llava() -> None:
    """Runs here without LLaVA installed: the arguments are checked before LLaVA is imported."""
    result = subprocess.run(
        [sys.executable, "-m", "instraug_plugin.integrations.llava.train", *LLAVA, "--instraug_pool", POOL,
         "--instraug_epsilom", "0.3"], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["instraug: error: unknown key 'instraug_epsilom' (did you mean "
                                          "'instraug_epsilon'?)"]
