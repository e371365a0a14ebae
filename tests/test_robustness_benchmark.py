"""The scenes benchmark, pool instantiation over it, the robustness script's statistics, and its smoke run."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import ModuleType

import pytest
from benchmark_scripts import load_benchmark

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
    return load_benchmark("robustness_effect")


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
    variants = {task: {kind: [f"{kind}/{i}" for i in range(5)] for kind in ("original", "heldout")} for task in tasks}
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
    assert "**Target (pool b) NOT MET.**" in md and "meets the 80% criterion" in md


def test_presets_keep_every_arm_on_the_same_steps() -> None:
    script = _script()
    args = script.parse_args(["--preset", "cpu", "--arms", "a,b,c,q,qc,o,h,d"])
    assert args.seeds >= 5 and args.test_per_task >= 40 and script.parse_args([]).arms == ["a", "q", "o"]
    configs = {arm: script.train_config(args, Path("m"), Path("b"), Path("o"), 0, arm,
                                        None if arm in script.OFFLINE_ARMS else Path(f"pool_{arm}"),
                                        f"d_{arm}" if arm in script.OFFLINE_ARMS else "d") for arm in args.arms}
    assert {c["max_steps"] for c in configs.values()} == {args.steps}
    assert configs["a"]["instraug_epsilon"] == 1.0
    for arm in ("b", "q", "o", "h", "d"):
        assert configs[arm]["instraug_epsilon"] == args.epsilon and configs[arm]["instraug_pool"] == f"pool_{arm}"
    for arm in ("c", "qc"):
        assert "instraug_mode" not in configs[arm] and configs[arm]["dataset"] == f"d_{arm}"
    assert configs["d"]["instraug_adaptive"] is True and "instraug_adaptive" not in configs["h"]


@pytest.mark.parametrize(("text", "arms"), [("abc", ["a", "b", "c"]), ("o,a,q", ["a", "q", "o"]),
                                            ("a,qc,q", ["a", "q", "qc"]), ("a, h ,d", ["a", "h", "d"])])
def test_arms_parse_in_a_fixed_order(text: str, arms: list[str]) -> None:
    assert _script().parse_args(["--arms", text]).arms == arms


@pytest.mark.parametrize("text", ["", "a,x", "a,a", "aqc"])
def test_arms_refused(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _script().parse_args(["--arms", text])
    assert "--arms" in capsys.readouterr().err


def test_hold_back_arm_trains_on_what_the_online_loop_trains_on(tmp_path: Path) -> None:
    """Arm h: the online pool minus the development wordings the online loop (d) holds back at that seed."""
    from instraug_plugin.core.devsplit import split_dev
    from instraug_plugin.core.pool import read_records, scoped_records

    script = _script()
    pool = POOLS / "positions_train_qwen"
    for seed in (0, 3):
        out = script.held_back_pool(pool, seed, tmp_path / f"h{seed}")
        expected = split_dev(scoped_records(pool), 0.2, seed)
        assert [r.id for r in read_records(out)] == [r.id for r in expected.train.records]
        assert expected.dev.records and not {r.id for r in expected.dev.records} & {r.id for r in read_records(out)}


def test_pool_summary_counts_paraphrases_per_training_template() -> None:
    script = _script()
    train, _ = scene_templates("positions")
    hand = script.pool_summary(POOLS / "positions_train_hand", train)
    assert hand["paraphrases"] == 200 and hand["per_template"] == "10 / 10 / 10" and hand["new_word_share"] > 0.5
    v2 = script.pool_summary(COMMITTED_POOL, train)
    assert v2["per_template"].startswith("0 / ")  # a template without a paraphrase counts as 0


def test_power_figures_for_a_paired_difference() -> None:
    """Per-seed paired differences, their SD, and the seeds projected for +-4 points."""
    script = _script()
    original = {f"original/{i}": 1.0 for i in range(5)}
    def heldout(k: int) -> dict[str, float]:
        return {**original, **{f"heldout/{i}": float(i < k) for i in range(5)}}
    a = _arm(script, [heldout(2), heldout(2), heldout(2)])
    o = _arm(script, [heldout(5), heldout(2), heldout(4)])  # per seed +60, 0, +40 points
    stats = script.two_level_bootstrap({"a": a, "o": o}, n_resamples=200)
    power = script.power({"a": a, "o": o}, stats, n_resamples=200)["o-a"]
    assert power["per_seed_heldout_acc"] == [60.0, 0.0, 40.0]
    assert power["seed_sd"] == pytest.approx(30.55, abs=0.01)
    assert power["half_width_instances_only"] == 0  # every instance scores alike: only seeds vary
    assert power["half_width"] > 4 and power["seeds_for_target"] > 3
    assert power["seeds_for_target"] == math.ceil(3 * (power["half_width"] / 4) ** 2)


def test_verdict_reports_the_product_promise() -> None:
    """With q, qc and o: q-a above 0, Sensitivity down >= 30%, q-qc not below 0, (q-a)/(o-a) >= 0.8."""
    script = _script()
    original = {f"original/{i}": 1.0 for i in range(5)}
    def heldout(k: int) -> dict[str, float]:
        return {**original, **{f"heldout/{i}": float(i < k) for i in range(5)}}
    arms = {"a": _arm(script, [heldout(2)] * 2), "q": _arm(script, [heldout(4)] * 2),
            "qc": _arm(script, [heldout(4)] * 2), "o": _arm(script, [heldout(5)] * 2)}
    check = script.verdict(script.two_level_bootstrap(arms, n_resamples=20))
    promise = check["promise"]
    assert promise["share_of_upper_bound"] == pytest.approx(40 / 60) and not promise["share_target_met"]
    assert promise["heldout_gain_target_met"] and promise["on_the_fly_target_met"] and not check["target_met"]
    arms["o"] = arms["q"]
    assert script.verdict(script.two_level_bootstrap(arms, n_resamples=20))["target_met"]


def test_online_arm_steers_on_its_own_instances_without_test_wordings(tmp_path: Path) -> None:
    """Arm d: the template pool with the online loop, scored on a development file of its own draw that
    carries the original templates only (the test wordings never reach training)."""
    script = _script()
    args = script.parse_args(["--preset", "cpu", "--arms", "abd"])
    config = script.train_config(args, Path("m"), tmp_path, Path("o"), 1, "d", Path("tpl"), "d")
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


@pytest.mark.parametrize(("content", "message"), [
    ("{", r"not a JSON file"),
    ('["a"]', r"expected a JSON object"),
    ('{"nope": ["Say it."]}', r"unknown task\(s\) nope \(known: scene_count"),
    ('{"scene_count": []}', r"scene_count: expected a non-empty list of non-empty strings"),
    ('{"scene_count": ["  "]}', r"scene_count: expected a non-empty list"),
    ('{"first_shape": ["Which {shape} leads?"]}', r"first_shape: .* has a placeholder the task's instances do not fill"),
])
def test_extra_heldout_file_is_checked(content: str, message: str, bench: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "extra.json"
    path.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        _script().load_extra_heldout(path, bench)
    assert str(path) in str(exit_info.value) and re.search(message, str(exit_info.value))


def test_extra_heldout_file_is_read(bench: Path, tmp_path: Path) -> None:
    path = tmp_path / "extra.json"
    path.write_text(json.dumps({"scene_count": ["How many, all told?"], "first_shape": ["Opening form?", "Lead form?"]}))
    assert _script().load_extra_heldout(path, bench) == {"scene_count": ["How many, all told?"],
                                                         "first_shape": ["Opening form?", "Lead form?"]}


@pytest.mark.slow
def test_smoke_run_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The smallest configuration: 1 seed, a few steps and instances, arms a, b, c, real training and eval;
    then --resume --extra-heldout scores the kept models on other wordings without training again."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    script = _script()
    summary = script.main(["--preset", "smoke", "--work", str(tmp_path), "--bootstrap", "20", "--arms", "abc",
                           "--keep-models"])
    assert set(summary["stats"]["arms"]) == {"a", "b", "c"}
    assert set(summary["stats"]["differences"]) == {"b-a", "c-a", "b-c"}
    for name in ("robustness_effect.md", "robustness_effect.json", "robustness_effect.png",
                 "robustness_effect_wordings.png"):
        assert (tmp_path / name).is_file()
    built = json.loads((tmp_path / "bench" / "instraug_scenes_train_c_s0.json").read_text())
    assert summary["args"]["task_set"] == "positions"
    original = json.loads((tmp_path / "bench" / "train.json").read_text())
    assert len(built) == len(original)
    assert any(b["messages"][0]["content"] != o["messages"][0]["content"] for b, o in zip(built, original))
    stats = [json.loads(line) for line in (tmp_path / "train" / "b_s0" / "instraug_stats.jsonl").read_text().splitlines()]
    assert stats
    for arm in "abc":
        predictions = (tmp_path / "eval" / f"{arm}_s0" / "predictions.jsonl").read_text().splitlines()
        assert len(predictions) == 2 * len(TASKS) * 10
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"scene_count": ["Shapes, total?", "Count them all."], "last_shape": ["Closing form?"]}))
    trained = {p: p.stat().st_mtime for p in (tmp_path / "train").rglob("*.safetensors")}
    again = script.main(["--preset", "smoke", "--work", str(tmp_path), "--bootstrap", "20", "--arms", "abc",
                         "--resume", "--extra-heldout", str(extra)])
    assert {p: p.stat().st_mtime for p in (tmp_path / "train").rglob("*.safetensors")} == trained  # no retraining
    assert set(again["extra_heldout"]["stats"]["arms"]) == {"a", "b", "c"}
    rows = [json.loads(line) for line in (tmp_path / "eval_extra" / "b_s0" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 + 2 * 1  # 2 test instances per task x (2 + 1) wordings
    assert {r["variant"] for r in rows} == {"heldout/0", "heldout/1"}
    assert (tmp_path / "robustness_effect_extra_wordings.png").is_file()
    assert "## Extra held-out wordings" in (tmp_path / "robustness_effect.md").read_text()


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
    summary = script.main(["--preset", "smoke", "--work", str(tmp_path), "--resume", "--bootstrap", "20", "--arms", "abc"])
    assert not (tmp_path / "train").exists()
    assert summary["stats"]["differences"]["b-a"]["heldout_acc"]["estimate"] == pytest.approx(20)
    assert summary["stats"]["arms"]["b"]["heldout_sens"]["estimate"] == 0
