"""Guards against LLaMA-Factory paths and releases the plugin cannot augment: the USE_V1, USE_MCA,
USE_MEGATRON_BRIDGE (and USE_RAY) switches stop a run with `instraug_*` keys in one line before
training, and the LLaMA-Factory functions the patches rely on are checked when they are installed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from instraug_plugin.cli import main
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.integrations.llamafactory.pretrain import UNSUPPORTED_ENV, env_enabled

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEMO_POOL = REPO / "dataset_info" / "instraug_demo" / "pool"
SWITCHES = ("USE_V1", "USE_MCA", "USE_MEGATRON_BRIDGE")  # the v1 trainer and the Megatron paths


@pytest.fixture(autouse=True)
def no_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in UNSUPPORTED_ENV:
        monkeypatch.delenv(name, raising=False)


def train_yaml(tmp: Path, extra: str = "") -> Path:
    path = tmp / "train.yaml"
    path.write_text(f"stage: sft\ninstraug_pool: {DEMO_POOL}\n{extra}", encoding="utf-8")
    return path


def refusal_line(name: str) -> str:
    return f"{name}: {UNSUPPORTED_ENV[name]}; unset {name} or set instraug_mode: off"


def test_switches_are_read_exactly_as_llamafactory_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """LLaMA-Factory reads USE_V1 (cli.py), USE_MCA and USE_MEGATRON_BRIDGE (hparams/parser.py,
    launcher.py) with `extras.misc.is_env_enabled`: the guard must fire exactly when they switch."""
    from llamafactory.extras.misc import is_env_enabled

    assert set(SWITCHES) | {"USE_RAY"} == set(UNSUPPORTED_ENV)
    for value in ("1", "true", "True", "TRUE", "y", "Y", "0", "false", "no", "yes", "on", "t", "", " 1", "2"):
        monkeypatch.setenv("USE_MCA", value)
        assert env_enabled("USE_MCA") is is_env_enabled("USE_MCA"), value
    monkeypatch.delenv("USE_MCA")
    assert env_enabled("USE_MCA") is is_env_enabled("USE_MCA") is False


@pytest.mark.parametrize("name", [*SWITCHES, "USE_RAY"])
@pytest.mark.parametrize("value", ["1", "true", "Y"])
def test_cli_train_refuses_a_switch_before_llamafactory_starts(name: str, value: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as info:
        main(["train", str(train_yaml(tmp_path))])
    assert info.value.code == 2
    assert capsys.readouterr().err == f"error: {refusal_line(name)}\n"


def test_cli_train_overrides_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`instraug_x=value` overrides are read as LLaMA-Factory reads them, before the switch check."""
    monkeypatch.setenv("USE_MCA", "1")
    with pytest.raises(SystemExit) as info:
        main(["train", str(train_yaml(tmp_path, "instraug_mode: 'off'\n")), "instraug_mode=pool"])
    assert info.value.code == 2 and capsys.readouterr().err == f"error: {refusal_line('USE_MCA')}\n"
    with pytest.raises(SystemExit) as info:
        main(["train", str(train_yaml(tmp_path)), "instraug_epsilon=2"])
    assert info.value.code == 2 and ("instraug_epsilon: expected a number in [0.0, 1.0] or a {task: number in [0, 1]} "
                                     "map ('*': other tasks), got 2") in capsys.readouterr().err


@pytest.mark.parametrize("name", SWITCHES)
def test_patched_run_exp_refuses_a_switch(name: str, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The torchrun ranks and `llamafactory-cli` (startup hook) path: the wrapped real `run_exp`."""
    from llamafactory.train import tuner

    from instraug_plugin.integrations.llamafactory.patches import _patched_run_exp

    monkeypatch.setenv(name, "1")
    with pytest.raises(SystemExit) as info:
        _patched_run_exp(tuner.run_exp)({"stage": "sft", "instraug_pool": str(DEMO_POOL)})
    assert info.value.code == 2
    assert capsys.readouterr().err == f"instraug: error: {refusal_line(name)}\n"


def test_a_switch_does_not_refuse_a_run_without_augmentation(monkeypatch: pytest.MonkeyPatch) -> None:
    """`instraug_mode: off` (or no `instraug_*` key): LLaMA-Factory's own path, our keys removed."""
    from instraug_plugin.integrations.llamafactory.patches import _patched_run_exp

    calls: list[tuple[Any, Any]] = []
    run_exp = _patched_run_exp(lambda args, callbacks: calls.append((args, callbacks)))
    for name in SWITCHES:
        monkeypatch.setenv(name, "1")
    run_exp({"stage": "sft", "instraug_mode": "off"})
    run_exp({"stage": "sft"}, ["cb"])
    assert calls == [({"stage": "sft"}, []), ({"stage": "sft"}, ["cb"])]


def test_v1_launcher_refuses_instraug_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Under USE_V1, `llamafactory-cli` runs `llamafactory.v1.launcher.launch`, never the patched tuner."""
    from llamafactory.v1 import launcher

    from instraug_plugin.integrations.llamafactory.patches import _active_config, patch_v1_launcher

    monkeypatch.setattr(launcher, "launch", launcher.launch)  # restored after the test
    patch_v1_launcher(launcher)
    patch_v1_launcher(launcher)  # idempotent
    assert launcher.launch.__wrapped__.__module__ == "llamafactory.v1.launcher"
    config = train_yaml(tmp_path)
    monkeypatch.setattr(sys, "argv", ["llamafactory-cli", "sft", str(config)])
    with pytest.raises(SystemExit) as info:
        launcher.launch()
    assert info.value.code == 2 and capsys.readouterr().err == f"instraug: error: {refusal_line('USE_V1')}\n"
    monkeypatch.setattr(sys, "argv", ["llamafactory-cli", "help"])  # not a training command: LLaMA-Factory's own
    launcher.launch()
    assert "llamafactory-cli sft -h" in capsys.readouterr().out
    assert _active_config(["lmf", "train", str(config), "instraug_mode='off'"]) is None
    assert _active_config(["lmf", "train", "--stage", "sft", "--instraug_pool", str(DEMO_POOL)]) is not None
    (tmp_path / "plain.yaml").write_text("stage: sft\n")
    assert _active_config(["lmf", "train", str(tmp_path / "plain.yaml")]) is None


@pytest.mark.slow
def test_llamafactory_cli_with_use_v1_fails_in_one_line(tmp_path: Path, offline_env: dict[str, str]) -> None:
    """The real `USE_V1=1 llamafactory-cli train` through the startup hook: one line, exit 2, nothing trained."""
    config = train_yaml(tmp_path, f"model_name_or_path: {tmp_path / 'none'}\noutput_dir: {tmp_path / 'out'}\n")
    result = subprocess.run([str(BIN / "llamafactory-cli"), "train", str(config)], capture_output=True, text=True,
                            env={**offline_env, "USE_V1": "1"}, cwd=tmp_path, timeout=600, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == f"instraug: error: {refusal_line('USE_V1')}"
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_the_installed_llamafactory_has_what_the_patches_rely_on() -> None:
    from instraug_plugin.integrations.llamafactory.patches import RELIES_ON, RELIES_ON_V1, check_llamafactory

    check_llamafactory(RELIES_ON)
    check_llamafactory(RELIES_ON_V1)
    names = {f"{module}.{name}" for module, name, _ in RELIES_ON}
    assert {"llamafactory.train.tuner.run_exp", "llamafactory.data.loader._get_preprocessed_dataset",
            "llamafactory.data.loader.align_dataset", "llamafactory.data.loader._get_dataset_processor"} <= names


def _changed_preprocess(dataset: Any, data_args: Any, training_args: Any, stage: str, template: Any, tokenizer: Any,
                        mm_processor: Any = None, is_eval: bool = False) -> Any:
    """A future `_get_preprocessed_dataset` whose `processor` parameter was renamed."""


@pytest.mark.parametrize(("owner", "name", "replacement", "message"), [
    ("llamafactory.data.loader", "_get_preprocessed_dataset", _changed_preprocess,
     r"changed llamafactory\.data\.loader\._get_preprocessed_dataset: instraug-plugin expects its parameters to "
     r"start with \(dataset, data_args, training_args, stage, template, tokenizer, processor, is_eval\), found "
     r"\(dataset, data_args, training_args, stage, template, tokenizer, mm_processor, is_eval\)"),
    ("llamafactory.train.tuner", "run_exp", lambda config, callbacks=None: None,
     r"changed llamafactory\.train\.tuner\.run_exp: .* start with \(args, callbacks\), found \(config, callbacks\)"),
    ("llamafactory.data.loader", "_get_dataset_processor", None,
     r"has no llamafactory\.data\.loader\._get_dataset_processor, which instraug-plugin patches"),
    ("llamafactory.data.processor:SupervisedDatasetProcessor", "preprocess_dataset", lambda self, batch, cache: {},
     r"changed llamafactory\.data\.processor\.SupervisedDatasetProcessor\.preprocess_dataset: .* found "
     r"\(self, batch, cache\)"),
])
def test_a_changed_llamafactory_stops_install_in_one_line(owner: str, name: str, replacement: Any, message: str,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    import llamafactory
    from llamafactory.train import tuner

    from instraug_plugin.integrations.llamafactory import startup
    from instraug_plugin.integrations.llamafactory.patches import patch_tuner

    module_name, _, class_name = owner.partition(":")  # "module" or "module:Class"
    target = importlib.import_module(module_name)
    target = getattr(target, class_name) if class_name else target
    if replacement is None:
        monkeypatch.delattr(target, name)
    else:
        monkeypatch.setattr(target, name, replacement)
    was_patched = getattr(tuner.run_exp, "__instraug_patched__", False)
    with pytest.raises(InstrAugError) as info:
        patch_tuner(tuner)
    text = str(info.value)
    assert re.match(rf"LLaMA-Factory {re.escape(llamafactory.__version__)} {message}", text), text
    assert text.endswith("use a LLaMA-Factory release it supports (0.9.x)") and "\n" not in text
    assert getattr(tuner.run_exp, "__instraug_patched__", False) is was_patched  # nothing half-patched
    with pytest.raises(SystemExit) as exit_info:  # the startup hook's path: one stderr line, exit 2
        startup._patch(tuner, startup.TARGET)
    assert exit_info.value.code == 2 and capsys.readouterr().err == f"instraug: error: {text}\n"
