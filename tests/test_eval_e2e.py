"""End to end: the shapes benchmark, `instraug-plugin eval` on a tiny LLaVA, the training callback, bad input."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.placeholders import DEFAULT_SPEC
from instraug_plugin.evaluation.evalset import load_eval_set
from instraug_plugin.evaluation.metrics import get_metric
from instraug_plugin.evaluation.shapes import TASKS, benchmark_templates, make_benchmark
from instraug_plugin.settings import parse_config

CLI = [str(Path(sys.executable).parent / "instraug-plugin")]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small benchmark: 4 training and 2 test instances per task."""
    out = tmp_path_factory.mktemp("bench")
    make_benchmark(out, seed=7, train_per_task=4, test_per_task=2)
    return out


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


def test_benchmark_is_deterministic(tmp_path: Path, bench: Path) -> None:
    make_benchmark(tmp_path / "same", seed=7, train_per_task=4, test_per_task=2)
    make_benchmark(tmp_path / "other", seed=8, train_per_task=4, test_per_task=2)
    assert _digest(tmp_path / "same") == _digest(bench)
    assert _digest(tmp_path / "other") != _digest(bench)


def test_benchmark_templates_and_files(bench: Path) -> None:
    train, heldout = benchmark_templates()
    assert set(train) == set(heldout) == set(TASKS)
    for task in TASKS:
        assert len(train[task]) == 5 and len(heldout[task]) >= 5
        assert not {t.casefold() for t in train[task]} & {t.casefold() for t in heldout[task]}
        fields = {frozenset(Counter(DEFAULT_SPEC.protected_spans(t)).items()) for t in train[task] + heldout[task]}
        assert len(fields) == 1, f"{task}: templates disagree on placeholders"
    rows = json.loads((bench / "train.json").read_text())
    assert len(rows) == 4 * len(TASKS)
    for row in rows:
        user = row["messages"][0]["content"]
        assert user.count("<image>") == 1 and (bench / row["images"][0]).is_file()
        assert row["template"] in train[row["task"]]
    info = json.loads((bench / "dataset_info.json").read_text())
    assert info["instraug_shapes_train"]["file_name"] == "train.json"
    data = load_eval_set(bench / "eval.json", variants="heldout")
    assert {t: len(s.variants) for t, s in data.tasks.items()} == {t: len(heldout[t]) for t in TASKS}
    heldout_texts = {t for ts in heldout.values() for t in ts}
    assert not any(row["template"] in heldout_texts for row in rows)
    # Every gold answer scores 1 under its task's own metric (answers and options are consistent).
    for item in data.items():
        metric = get_metric(data.tasks[item.instance.task].metric)
        assert metric(item.instance.answers[0], item.instance.answers, item.instance.options) == 1.0


def _write_set(path: Path, bench: Path, mutate) -> Path:
    data = json.loads((bench / "eval.json").read_text())
    for inst in data["instances"]:
        inst["images"] = [str(bench / p) for p in inst["images"]]
    mutate(data)
    path.write_text(json.dumps(data))
    return path


def _run_cli(args: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "eval", *args], check=False, capture_output=True, text=True, env=env, timeout=timeout)


def _one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0]


def test_bad_input_one_line_errors(tmp_path: Path, bench: Path, tiny_llava: Path, offline_env: dict[str, str]) -> None:
    good = str(bench / "eval.json")
    missing_image = _write_set(tmp_path / "a.json", bench,
                               lambda d: d["instances"][0].update(images=[str(tmp_path / "gone.png")]))
    _one_line_error(_run_cli([str(tiny_llava), "--eval-set", str(missing_image), "--template", "llava"], offline_env),
                    "image not found", "gone.png", "'shape_count/0'")
    unknown_task = _write_set(tmp_path / "b.json", bench, lambda d: d["instances"][1].update(task="shape_size"))
    _one_line_error(_run_cli([str(tiny_llava), "--eval-set", str(unknown_task), "--template", "llava"], offline_env),
                    "unknown task 'shape_size'")
    _one_line_error(_run_cli([str(tiny_llava), "--eval-set", good, "--tasks", "shape_size", "--template", "llava"],
                             offline_env), "unknown task 'shape_size'")
    empty = _write_set(tmp_path / "c.json", bench, lambda d: d["tasks"]["text_read"].update(heldout=[]))
    _one_line_error(_run_cli([str(tiny_llava), "--eval-set", str(empty), "--template", "llava"], offline_env),
                    "text_read", "empty variant list")
    _one_line_error(_run_cli([str(tmp_path / "no_model"), "--eval-set", good, "--template", "llava"], offline_env),
                    "model path does not exist", "no_model")
    _one_line_error(_run_cli([str(tiny_llava), "--eval-set", str(tmp_path / "nothing.json")], offline_env),
                    "evaluation set not found", "nothing.json")
    _one_line_error(_run_cli([str(tiny_llava), "--eval-set", good], offline_env), "--template")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone_base")}))
    _one_line_error(_run_cli([str(adapter), "--eval-set", good, "--template", "llava"], offline_env),
                    "base model of adapter", "gone_base")


@pytest.mark.slow
def test_eval_cli_end_to_end(tmp_path: Path, bench: Path, tiny_llava: Path, offline_env: dict[str, str]) -> None:
    out = tmp_path / "report"
    proc = _run_cli([str(tiny_llava), "--eval-set", str(bench / "eval.json"), "--template", "llava",
                     "--variants", "both", "--batch-size", "16", "--max-new-tokens", "3", "--out", str(out)],
                    offline_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert [t["task"] for t in report["tasks"]] == sorted(TASKS)
    for task in report["tasks"]:
        assert task["n_instances"] == 2 and len(task["variant_scores"]) == 10
        assert task["min"] <= task["mean"] <= task["max"]
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 2 * 10 * len(TASKS)
    assert all(0.0 <= p["score"] <= 1.0 and isinstance(p["prediction"], str) for p in predictions)
    for task in report["tasks"]:  # the report's mean is the mean of the stored per-prediction scores
        scores = [p["score"] for p in predictions if p["instance_id"].startswith(task["task"] + "/")]
        assert task["mean"] == pytest.approx(sum(scores) / len(scores))
    assert "| **overall** |" in (out / "report.md").read_text() and "Sensitivity" in proc.stdout
    assert (out / "report.png").stat().st_size > 1000


def test_scoring_of_hand_known_predictions(bench: Path) -> None:
    """Scores worked out by hand for instance 0 of each task (answers drawn from seed 7), through `score_items`."""
    from instraug_plugin.evaluation.runner import score_items

    data = load_eval_set(bench / "eval.json", variants="original")
    first = {item.instance.task: item for item in reversed(data.items()) if item.instance.id.endswith("/0")}
    assert {t: first[t].instance.answers for t in first} == {
        "shape_count": ("4", "four"), "shape_color": ("purple", "violet"), "shape_position": ("triangle",),
        "text_read": ("box key map",), "color_choice": ("C",),
    }
    assert first["color_choice"].instance.options == ("black", "blue", "purple", "red")
    cases = [
        ("shape_count", "Four.", 1.0), ("shape_count", "4 shapes", 0.0), ("shape_count", "5", 0.0),
        ("shape_color", "Purple", 1.0), ("shape_color", "red", 0.0),
        ("shape_position", "triangle, at the top", 1.0), ("shape_position", "a triangle", 0.0),
        ("text_read", "box key map", 1.0), ("text_read", "box key", 0.8),  # LCS 2: P 1, R 2/3, F1 0.8
        ("text_read", "map key box", 1 / 3),  # LCS 1: P = R = 1/3
        ("color_choice", "(C)", 1.0), ("color_choice", "purple", 1.0), ("color_choice", "The answer is a blue one", 0.0),
    ]
    scored = score_items([first[t] for t, _, _ in cases], [p for _, p, _ in cases], data)
    assert [s.score for s in scored] == pytest.approx([expected for _, _, expected in cases])


@pytest.mark.slow
def test_batched_generation_matches_unbatched(bench: Path, tiny_llava: Path, monkeypatch: pytest.MonkeyPatch,
                                              offline_env: dict[str, str]) -> None:
    for key in ("HF_HUB_OFFLINE", "HF_HOME", "DISABLE_VERSION_CHECK"):
        monkeypatch.setenv(key, offline_env[key])
    from instraug_plugin.evaluation.runner import GenerationSettings
    from instraug_plugin.integrations.llamafactory.generator import Generator, resolve_model

    data = load_eval_set(bench / "eval.json", variants="both", max_instances_per_task=1)
    prompts = [(item.prompt, item.instance.images) for item in data.items()][:12]
    generator = Generator.load(resolve_model(str(tiny_llava), template="llava"), GenerationSettings(1, 5))
    one_by_one = generator.generate(prompts)
    generator.settings = GenerationSettings(12, 5)
    assert generator.generate(prompts) == one_by_one
    assert len(set(one_by_one)) > 1  # prompts and images reach the model


def test_callback_settings_validation(bench: Path) -> None:
    assert parse_config({"instraug_mode": "off"}).evaluation is None
    settings = parse_config({"instraug_eval_set": str(bench / "eval.json"),
                             "instraug_eval_tasks": "shape_count, text_read",
                             "instraug_eval_max_instances": 1}).evaluation
    assert settings is not None and settings.tasks == ("shape_count", "text_read")
    assert len(settings.load_set().items()) == 2 * 10
    with pytest.raises(InstrAugError, match="instraug_eval_variant'"):
        parse_config({"instraug_eval_set": "x", "instraug_eval_variant": "both"})
    with pytest.raises(InstrAugError, match="instraug_eval_set: required"):
        parse_config({"instraug_eval_batch_size": 4})
    with pytest.raises(InstrAugError, match="instraug_eval_batch_size"):
        parse_config({"instraug_eval_set": "x", "instraug_eval_batch_size": 0})


@pytest.mark.slow
def test_callback_logs_during_llamafactory_training(tmp_path: Path, bench: Path, tiny_llava: Path,
                                                     offline_env: dict[str, str]) -> None:
    """`instraug_eval_*` keys alone in the YAML of a real `llamafactory-cli train` run enable the evaluator."""
    out = tmp_path / "run"
    config = dict(model_name_or_path=str(tiny_llava), stage="sft", do_train=True, finetuning_type="lora", lora_rank=4,
                  lora_target="all", template="llava", dataset="instraug_shapes_train", dataset_dir=str(bench),
                  cutoff_len=256, output_dir=str(out), num_train_epochs=2, per_device_train_batch_size=4,
                  learning_rate=1e-3, dataloader_num_workers=0, save_strategy="no", report_to="none",
                  bf16=False, fp16=False, logging_steps=1, overwrite_output_dir=True,
                  instraug_eval_set=str(bench / "eval.json"), instraug_eval_max_instances=1,
                  instraug_eval_max_new_tokens=2, instraug_eval_variants="heldout")
    (tmp_path / "train.yaml").write_text(json.dumps(config))  # JSON is YAML
    cli = str(Path(sys.executable).parent / "llamafactory-cli")
    proc = subprocess.run([cli, "train", str(tmp_path / "train.yaml")],
                          check=False, capture_output=True, text=True, env=offline_env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    evals = [h for h in history if "instraug_eval/mean" in h]
    assert [round(h["epoch"]) for h in evals] == [1, 2]
    assert all(f"instraug_eval/{t}/mean" in evals[0] for t in TASKS)
    assert (out / "instraug_eval" / "epoch-2" / "report.json").is_file()
    assert "instraug_eval epoch 2: mean" in proc.stdout


def test_bad_adapter_config_is_one_line(tmp_path: Path) -> None:
    from instraug_plugin.integrations.llamafactory.generator import resolve_model

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"base_model_name_or_path": ')
    with pytest.raises(InstrAugError, match=r"adapter_config\.json: not valid JSON \(Expecting value") as info:
        resolve_model(str(adapter), template="llava")
    assert "\n" not in str(info.value)
    (adapter / "adapter_config.json").write_text("[1, 2]")
    with pytest.raises(InstrAugError, match=r"adapter_config\.json: expected a JSON object, got list"):
        resolve_model(str(adapter), template="llava")


@pytest.mark.parametrize("error", [KeyError("model_type"), RuntimeError("size mismatch\nfor 2 tensors"),
                                   ImportError("no module named flash_attn")])
def test_any_model_load_error_is_one_line(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    import llamafactory.hparams

    from instraug_plugin.integrations.llamafactory.generator import Generator, ResolvedModel

    def fail(args: object) -> None:
        raise error

    monkeypatch.setattr(llamafactory.hparams, "get_infer_args", fail)
    with pytest.raises(InstrAugError, match=rf"^cannot load model /models/base: {type(error).__name__}") as info:
        Generator.load(ResolvedModel("/models/base", None, "llava"))
    assert "\n" not in str(info.value)
