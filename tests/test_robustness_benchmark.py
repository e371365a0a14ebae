"""The scenes benchmark, pool instantiation over it, the robustness script's statistics, and its smoke run."""

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
from instraug_plugin.evaluation.metrics import exact_match
from instraug_plugin.evaluation.scenes import (
    COLORS,
    SHAPES,
    TASK_METRICS,
    TASK_SETS,
    TASKS,
    TEMPLATE_FILES,
    describe_scene,
    draw_scene_example,
    make_scenes_benchmark,
    scene_templates,
)
from instraug_plugin.evaluation.shapes import instantiate_pool

ROOT = Path(__file__).resolve().parent.parent
POOLS = ROOT / "benchmarks" / "pools"
COMMITTED_POOL = POOLS / "positions_train_v2"


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scenes")
    make_scenes_benchmark(out, seed=3, train_per_task=12, test_per_task=5)
    return out


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("robustness_effect", ROOT / "benchmarks" / "robustness_effect.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _objects(scene: str) -> list[tuple[str, str]]:
    return re.findall(r"a (\w+) (\w+)", scene)


def test_describe_scene() -> None:
    assert describe_scene([("red", "circle")]) == "Scene: a red circle."
    assert describe_scene([("red", "circle"), ("blue", "square"), ("green", "triangle")]) == (
        "Scene: a red circle, a blue square and a green triangle.")


@pytest.mark.parametrize("index", range(20))
def test_positions_answers_agree_with_scene(index: int) -> None:
    count = draw_scene_example("scene_count", 0, "test", index)
    assert count.answers == [str(len(_objects(count.scene)))] and count.answers[0] in {"2", "3"}
    first_color = draw_scene_example("first_color", 0, "test", index)
    assert first_color.answers == [_objects(first_color.scene)[0][0]]
    first = draw_scene_example("first_shape", 0, "test", index)
    assert first.answers == [_objects(first.scene)[0][1]]
    last = draw_scene_example("last_shape", 0, "test", index)
    assert last.answers == [_objects(last.scene)[-1][1]]
    for example in (count, first_color, first, last):
        objects = _objects(example.scene)
        assert len({c for c, _ in objects}) == len({s for _, s in objects}) == len(objects)
        assert all(c in COLORS and s in SHAPES for c, s in objects)


@pytest.mark.parametrize("index", range(20))
def test_lookup_answers_agree_with_scene(index: int) -> None:
    count = draw_scene_example("scene_count", 0, "test", index, "lookup")
    objects = _objects(count.scene)
    assert count.answers == [str(len(objects))] and 2 <= len(objects) <= 4
    color = draw_scene_example("scene_color", 0, "test", index, "lookup")
    assert (color.answers[0], color.fields["shape"]) in _objects(color.scene)
    order = draw_scene_example("scene_order", 0, "test", index, "lookup")
    objects = _objects(order.scene)
    assert order.answers == [objects[0 if order.fields["order"] == "first" else -1][1]]
    exists = draw_scene_example("scene_exists", 0, "test", index, "lookup")
    present = (exists.fields["color"], exists.fields["shape"]) in _objects(exists.scene)
    assert exists.answers == ["yes" if present else "no"]
    for example in (count, color, order, exists):  # distinct shapes and colours: every question is unambiguous
        objects = _objects(example.scene)
        assert len({c for c, _ in objects}) == len({s for _, s in objects}) == len(objects)
        assert all(c in COLORS and s in SHAPES for c, s in objects)


def test_tasks_differ_only_by_instruction() -> None:
    """Same kind of input in every task; answer types: digits, colours, shapes (first vs last: same type)."""
    answers = {task: {draw_scene_example(task, 0, "train", i).answers[0] for i in range(200)} for task in TASKS}
    assert answers["scene_count"] == {"2", "3"}
    assert answers["first_color"] <= set(COLORS) and answers["first_shape"] == answers["last_shape"] == set(SHAPES)
    scenes = {task: {len(_objects(draw_scene_example(task, 0, "train", i).scene)) for i in range(200)} for task in TASKS}
    assert all(sizes == {2, 3} for sizes in scenes.values())
    differ = sum(draw_scene_example("first_shape", 0, "test", i).answers != draw_scene_example("last_shape", 0, "test", i).answers
                 for i in range(40))
    assert differ > 0
    lookup = {task: {draw_scene_example(task, 0, "train", i, "lookup").answers[0] for i in range(200)}
              for task in TASK_SETS["lookup"]}
    assert lookup["scene_exists"] == {"yes", "no"}
    assert set(TASK_METRICS.values()) == {"exact_match"}
    assert exact_match("Red.", ["red"]) == 1.0 and exact_match("red circle", ["red"]) == 0.0


@pytest.mark.parametrize("task_set", list(TASK_SETS))
def test_templates_heldout_disjoint_from_training_and_pool(task_set: str) -> None:
    train, heldout = scene_templates(task_set)
    assert set(train) == set(heldout) == set(TASK_SETS[task_set])
    pool = POOLS / f"{TEMPLATE_FILES[task_set]}_train" / "pool.jsonl"
    pool_texts = {json.loads(line)["text"] for line in pool.read_text().splitlines()}
    for task in TASK_SETS[task_set]:
        assert len(train[task]) == 5 and len(heldout[task]) >= 5
        assert not set(heldout[task]) & set(train[task])
        assert not set(heldout[task]) & pool_texts
        fields = set(re.findall(r"{(\w+)}", " ".join(train[task])))
        for template in heldout[task]:  # held-out wordings use the same fields as the training ones
            assert set(re.findall(r"{(\w+)}", template)) == fields


def test_benchmark_rows_and_eval_set(bench: Path) -> None:
    train, _ = scene_templates()
    rows = json.loads((bench / "train.json").read_text())
    assert len(rows) == 12 * len(TASKS)
    for row in rows:
        fields = json.loads(row["fields"])
        user = row["messages"][0]["content"]
        assert row["template"] in train[row["task"]]
        assert user.startswith(fields["scene"] + "\n") and fields["scene"].startswith("Scene: ")
    data = load_eval_set(bench / "eval.json", variants="both")
    items = data.items()
    assert len(items) == 5 * len(TASKS) * 10
    assert all(item.prompt.startswith(item.instance.fields["scene"] + "\n") for item in items)
    again = bench.parent / "again"
    make_scenes_benchmark(again, seed=3, train_per_task=12, test_per_task=5)
    assert (again / "eval.json").read_text() == (bench / "eval.json").read_text()


def test_committed_pool_instantiates_over_rows(bench: Path, tmp_path: Path) -> None:
    pool = Pool.load(instantiate_pool(COMMITTED_POOL, bench, tmp_path / "pool"))
    rewriter = InstructionRewriter(pool, epsilon=0.0, seed=0)
    rows = json.loads((bench / "train.json").read_text())
    rewritten = 0
    for index, row in enumerate(rows):
        user = row["messages"][0]["content"]
        scene = json.loads(row["fields"])["scene"]
        text, decision = rewriter.rewrite(user, task=row["task"], epoch=0, index=index)
        assert text.startswith(scene + "\n")
        rewritten += decision == "rewritten"
    assert rewritten > len(rows) // 2


def test_instantiate_pool_fills_fields(bench: Path, tmp_path: Path) -> None:
    train, _ = scene_templates()
    records = []
    for task, templates in train.items():
        for template in templates:
            records.append(PoolRecord(task, template, template, template))
            records.append(PoolRecord(task, template, template, "Paraphrased: " + template, "single", round=1))
    write_pool(tmp_path / "templates", records, {})
    pool = Pool.load(instantiate_pool(tmp_path / "templates", bench, tmp_path / "pool"))
    rewriter = InstructionRewriter(pool, epsilon=0.0, seed=0)
    for index, row in enumerate(json.loads((bench / "train.json").read_text())):
        fields = json.loads(row["fields"])
        text, decision = rewriter.rewrite(row["messages"][0]["content"], task=row["task"], epoch=0, index=index)
        assert decision == "rewritten" and text.startswith(fields["scene"] + "\nParaphrased: ")
        assert "{" not in text


def _arm(script: ModuleType, by_seed_scores: list[dict[str, float]]) -> object:
    """An ArmScores over 2 tasks x 4 instances; by_seed_scores maps variant -> score (same for all instances)."""
    tasks = {"t1": ["t1/0", "t1/1", "t1/2", "t1/3"], "t2": ["t2/0", "t2/1", "t2/2", "t2/3"]}
    variants = {kind: [f"{kind}/{i}" for i in range(5)] for kind in ("original", "heldout")}
    by_seed = [{i: dict(scores) for ids in tasks.values() for i in ids} for scores in by_seed_scores]
    return script.ArmScores(by_seed, tasks, variants)


def test_metrics_and_two_level_bootstrap() -> None:
    script = _script()
    original = {f"original/{i}": 1.0 for i in range(5)}
    uneven = {**original, **{f"heldout/{i}": float(i < 2) for i in range(5)}}  # held-out 40%
    even = {**original, **{f"heldout/{i}": 1.0 for i in range(5)}}
    a = _arm(script, [uneven, uneven])
    b = _arm(script, [even, even])
    m = a.metrics([0, 1], a.tasks)
    assert m["original_acc"] == 100 and m["heldout_acc"] == pytest.approx(40)
    assert m["heldout_sens"] == pytest.approx((0.24 ** 0.5) / 0.4)
    stats = script.two_level_bootstrap({"a": a, "b": b}, n_resamples=50)
    assert stats["arms"]["b"]["heldout_sens"]["estimate"] == 0
    diff = stats["differences"]["b-a"]["heldout_acc"]
    assert diff["estimate"] == pytest.approx(60) and diff["low"] == pytest.approx(60)
    check = script.verdict(stats)
    assert check["baseline_masters_originals"] and check["target_met"]
    assert check["sensitivity_relative_drop"] == pytest.approx(1.0)


def test_bootstrap_interval_widens_with_seed_variation() -> None:
    script = _script()
    good = {**{f"original/{i}": 1.0 for i in range(5)}, **{f"heldout/{i}": 1.0 for i in range(5)}}
    bad = {**{f"original/{i}": 0.0 for i in range(5)}, **{f"heldout/{i}": 0.0 for i in range(5)}}
    a = _arm(script, [good, bad, good])
    stats = script.two_level_bootstrap({"a": a}, n_resamples=200)
    acc = stats["arms"]["a"]["heldout_acc"]
    assert acc["estimate"] == pytest.approx(200 / 3) and acc["low"] < 50 < acc["high"]


def test_markdown_report_states_verdict() -> None:
    script = _script()
    original = {f"original/{i}": 1.0 for i in range(5)}
    a = _arm(script, [{**original, **{f"heldout/{i}": float(i < 2) for i in range(5)}}])
    stats = script.two_level_bootstrap({"a": a, "b": a, "c": a}, n_resamples=20)
    per_task = {name: script.per_task_means(a) for name in "abc"}
    md = script.markdown_report(stats, per_task, script.verdict(stats), "setup", {"total": 1.0})
    assert "| b-a |" in md and "| b-c |" in md and "| c-a |" in md
    assert "**Target NOT MET.**" in md and "meets the 80% criterion" in md


def test_presets_keep_every_arm_on_the_same_steps() -> None:
    script = _script()
    args = script.parse_args(["--preset", "cpu"])
    assert args.seeds >= 3 and args.test_per_task >= 40 and args.arms == "abc"
    configs = [script.train_config(args, Path("m"), Path("b"), Path("o"), 0, arm, Path("p"),
                                   "d_mins" if arm == "c" else "d") for arm in "abc"]
    assert {c["max_steps"] for c in configs} == {args.steps}
    assert configs[0]["instraug_epsilon"] == 1.0 and configs[1]["instraug_epsilon"] == args.epsilon
    assert "instraug_mode" not in configs[2] and configs[2]["dataset"] == "d_mins"


def test_online_arm_steers_on_its_own_instances_without_test_wordings(tmp_path: Path) -> None:
    """Arm d: the template pool with the online loop, scored on a development file of its own draw that
    carries the original templates only (the test wordings never reach training)."""
    script = _script()
    args = script.parse_args(["--preset", "cpu", "--arms", "abd"])
    config = script.train_config(args, Path("m"), tmp_path, Path("o"), 1, "d", Path("p"), "d", Path("tpl"))
    assert config["instraug_adaptive"] is True and config["instraug_pool"] == "tpl"
    assert config["instraug_epsilon"] == args.epsilon and config["instraug_seed"] == 1
    assert config["instraug_eval_set"] == str(tmp_path / "dev.json") and config["max_steps"] == args.steps
    make_scenes_benchmark(tmp_path, seed=0, train_per_task=2, test_per_task=script.DEV_PER_TASK)
    dev = json.loads(script.write_dev_set(tmp_path / "dev.json", seed=0, task_set="positions").read_text())
    test = json.loads((tmp_path / "eval.json").read_text())
    assert all(spec["heldout"] == [] for spec in dev["tasks"].values())
    assert {t: s["original"] for t, s in dev["tasks"].items()} == {t: s["original"] for t, s in test["tasks"].items()}
    scenes = {json.dumps(i["fields"], sort_keys=True) for i in test["instances"]}
    assert len(dev["instances"]) == script.DEV_PER_TASK * len(dev["tasks"])
    assert sum(json.dumps(i["fields"], sort_keys=True) in scenes for i in dev["instances"]) < len(dev["instances"]) / 4


@pytest.mark.slow
def test_smoke_run_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The smallest configuration: 1 seed, a few steps and instances, all three arms, real training and eval."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    script = _script()
    summary = script.main(["--preset", "smoke", "--work", str(tmp_path), "--bootstrap", "20"])
    assert set(summary["stats"]["arms"]) == {"a", "b", "c"}
    assert set(summary["stats"]["differences"]) == {"b-a", "c-a", "b-c"}
    for name in ("robustness_effect.md", "robustness_effect.json", "robustness_effect.png"):
        assert (tmp_path / name).is_file()
    built = json.loads((tmp_path / "bench" / "instraug_scenes_train_mins_s0.json").read_text())
    assert summary["args"]["task_set"] == "positions"
    original = json.loads((tmp_path / "bench" / "train.json").read_text())
    assert len(built) == len(original)
    assert any(b["messages"][0]["content"] != o["messages"][0]["content"] for b, o in zip(built, original))
    stats = [json.loads(line) for line in (tmp_path / "train" / "b_s0" / "instraug_stats.jsonl").read_text().splitlines()]
    assert stats
    for arm in "abc":
        predictions = (tmp_path / "eval" / f"{arm}_s0" / "predictions.jsonl").read_text().splitlines()
        assert len(predictions) == 2 * len(TASKS) * 10


def test_resume_reuses_evaluated_arms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--resume: arms/seeds with predictions in --work are not trained again; the report covers them."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    script = _script()
    bench = tmp_path / "probe"
    make_scenes_benchmark(bench, seed=0, train_per_task=8, test_per_task=2)
    instances = json.loads((bench / "eval.json").read_text())["instances"]
    for arm, heldout in (("a", 0.0), ("b", 1.0), ("c", 1.0)):
        out = tmp_path / "eval" / f"{arm}_s0"
        out.mkdir(parents=True)
        rows = [{"task": i["task"], "variant": f"{kind}/{v}", "instance_id": i["id"], "prediction": "x",
                 "answers": i["answers"], "score": 1.0 if kind == "original" or v < 4 or heldout else 0.0}
                for i in instances for kind in ("original", "heldout") for v in range(5)]
        (out / "predictions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    summary = script.main(["--preset", "smoke", "--work", str(tmp_path), "--resume", "--bootstrap", "20"])
    assert not (tmp_path / "train").exists()
    assert summary["stats"]["differences"]["b-a"]["heldout_acc"]["estimate"] == pytest.approx(20)
    assert summary["stats"]["arms"]["b"]["heldout_sens"]["estimate"] == 0
