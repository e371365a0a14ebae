"""Text scenes of the shapes benchmark, pool instantiation over them, and the robustness script's tables."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest

from instraug_plugin.core.pool import Pool, PoolRecord, write_pool
from instraug_plugin.core.sampling import InstructionRewriter
from instraug_plugin.evaluation.evalset import load_eval_set
from instraug_plugin.evaluation.report import ScoredItem
from instraug_plugin.evaluation.shapes import (
    TASK_METRICS,
    TASKS,
    benchmark_templates,
    describe_objects,
    describe_words,
    draw_example,
    instantiate_pool,
    make_benchmark,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def text_bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A text-scene benchmark: 6 training and 3 test instances per task, no images."""
    out = tmp_path_factory.mktemp("text_bench")
    make_benchmark(out, seed=3, train_per_task=6, test_per_task=3, text_scenes=True)
    return out


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("robustness_effect", ROOT / "benchmarks" / "robustness_effect.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_describe_objects_reading_order_and_articles() -> None:
    placed = [("square", "orange", 8), ("circle", "red", 0), ("triangle", "blue", 4)]
    assert describe_objects(placed) == (
        "Picture: a red circle (top left), a blue triangle (center), an orange square (bottom right).")


def test_describe_words() -> None:
    assert describe_words(["cat"], "blue") == 'Picture: the word "CAT" written in blue.'
    assert describe_words(["cat", "sun"], "red") == 'Picture: the words "CAT SUN" written in red.'


@pytest.mark.parametrize("index", range(8))
def test_scene_agrees_with_answers(index: int) -> None:
    count = draw_example("shape_count", 0, "test", index)
    kind = count.fields["shapes"][:-1]
    assert len(re.findall(rf"\b{kind} \(", count.scene)) == int(count.answers[0])
    color = draw_example("shape_color", 0, "test", index)
    assert f"{color.answers[0]} {color.fields['shape']} (" in color.scene
    position = draw_example("shape_position", 0, "test", index)
    assert f"{position.answers[0]} ({position.fields['position']})" in position.scene
    words = draw_example("text_read", 0, "test", index)
    assert f'"{words.answers[0].upper()}"' in words.scene
    choice = draw_example("color_choice", 0, "test", index)
    picked = choice.options[ord(choice.answers[0]) - ord("A")]
    assert f"{picked} {choice.fields['shape']} (" in choice.scene


def test_text_benchmark_rows_and_eval_set(text_bench: Path) -> None:
    assert not (text_bench / "images").exists()
    info = json.loads((text_bench / "dataset_info.json").read_text())
    assert info["instraug_shapes_train"]["columns"] == {"messages": "messages"}
    train, _ = benchmark_templates()
    rows = json.loads((text_bench / "train.json").read_text())
    assert len(rows) == 6 * len(TASKS)
    for row in rows:
        fields = json.loads(row["fields"])
        user = row["messages"][0]["content"]
        assert "<image>" not in user and row["template"] in train[row["task"]]
        assert user.startswith(fields["scene"] + "\n") and fields["scene"].startswith("Picture: ")
    data = load_eval_set(text_bench / "eval.json", variants="both")
    items = data.items()
    assert len(items) == 3 * len(TASKS) * 10
    for item in items:
        assert not item.instance.images and "<image>" not in item.prompt
        assert item.prompt.startswith(item.instance.fields["scene"] + "\n")


def test_instantiate_pool_keeps_scene_and_rewrites_rows(text_bench: Path, tmp_path: Path) -> None:
    train, _ = benchmark_templates()
    records = []
    for task, templates in train.items():
        for template in templates:
            records.append(PoolRecord(task, template, template, template))
            records.append(PoolRecord(task, template, template, "Paraphrased: " + template, "single", round=1))
    write_pool(tmp_path / "templates", records, {})
    pool = Pool.load(instantiate_pool(tmp_path / "templates", text_bench, tmp_path / "pool"))
    rewriter = InstructionRewriter(pool, epsilon=0.0, seed=0)
    for index, row in enumerate(json.loads((text_bench / "train.json").read_text())):
        user = row["messages"][0]["content"]
        scene = json.loads(row["fields"])["scene"]
        text, decision = rewriter.rewrite(user, task=row["task"], epoch=0, index=index)
        assert decision == "rewritten" and text.startswith(scene + "\nParaphrased: ")


def test_split_by_kind_and_markdown_table(tmp_path: Path) -> None:
    script = _script()
    predictions = tmp_path / "predictions.jsonl"
    rows = []
    for task in TASK_METRICS:
        for kind, score in (("original", 1.0), ("heldout", 0.5)):
            for v in range(2):
                rows.append(ScoredItem(task, f"{kind}/{v}", f"{task}/0", "x", ("x",), score if v else 1.0))
    predictions.write_text("\n".join(json.dumps(r.__dict__) for r in rows) + "\n")
    reports = script.split_by_kind(predictions, TASK_METRICS, "bench", "m")
    assert reports["original"].overall["mean"] == 100.0
    assert reports["heldout"].overall["mean"] == 75.0
    assert reports["heldout"].overall["sensitivity"] == pytest.approx(25 / 75)
    table = script.markdown_table({"a": reports, "b": reports})
    lines = table.splitlines()
    assert len(lines) == 2 + len(TASK_METRICS) + 1
    assert lines[-1] == "| **overall** |" + " **100.0** | **75.0** | **0.333** |" * 2
