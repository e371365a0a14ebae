"""The offline loop: `plan` from an eval report, `pregen --plan`, `build --plan`, `instraug_plan:` in training.

Fast tests run the real CLI in-process on hand-made reports and the shipped demo data; the slow one
runs the whole loop: a report -> `plan` -> `pregen --plan` (real SmolLM2) -> real `llamafactory-cli
train` on a tiny LLaVA with `instraug_plan`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from instraug_plugin.cli import main
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.placeholders import DEFAULT_SPEC
from instraug_plugin.core.plan import Plan, Rule, TaskPlan, load_plan
from instraug_plugin.core.pool import PoolRecord, read_manifest, read_records, write_pool
from instraug_plugin.core.sampling import unit_draw
from instraug_plugin.generation.pipeline import PregenConfig, build_jobs
from instraug_plugin.generation.prompts import load_meta_prompts
from instraug_plugin.inputs.base import SeedInstruction
from instraug_plugin.settings import parse_config

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEMO_POOL = REPO / "dataset_info" / "instraug_demo" / "pool"


def run_cli(args: list[Any], capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """(stdout, stderr) of a successful `instraug-plugin ARGS`, run in this process."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    assert exit_info.value.code == 0, captured.err
    return captured.out, captured.err


def write_report(folder: Path, **tasks: tuple[float | None, float | None]) -> Path:
    """An eval output folder whose report.json has these (pdr, sensitivity) per task."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"task": task, "pdr": pdr, "sensitivity": sens, "mean": 60.0} for task, (pdr, sens) in tasks.items()]
    (folder / "report.json").write_text(json.dumps({"name": "hand-made", "tasks": rows}))
    return folder


def test_plan_lists_every_pool_task_with_the_rules_epsilon_and_budget(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    report = write_report(tmp_path / "eval", colors=(0.3, 0.1), shapes=(-0.2, 0.05), renamed=(0.5, 0.5))
    counting = tmp_path / "counting"
    write_pool(counting, [PoolRecord("counting", "counting/0", "How many?", "How many?", "seed")], {})
    out, err = run_cli(["plan", "--report", report, "--pool", DEMO_POOL, "--pool", counting,
                        "--out", tmp_path / "plan.json"], capsys)
    plan = load_plan(tmp_path / "plan.json")
    assert plan.rule == Rule(0.5, 0.05, 2.0, 4) and plan.source == str((report / "report.json").resolve())
    assert plan.tasks["colors"] == TaskPlan(pytest.approx(0.5 - 0.45 * 0.6), 3, 0.6, 0.3, 0.1)  # weakness 2 x 0.3
    assert plan.tasks["shapes"] == TaskPlan(pytest.approx(0.5 - 0.45 * 0.1), 1, 0.1, -0.2, 0.05)  # the spread counts
    assert plan.tasks["counting"] == TaskPlan(0.5, 1)  # a pool task the report lacks: global epsilon, budget 1
    assert plan.tasks["renamed"].epsilon == 0.05 and plan.tasks["renamed"].budget == 4  # kept, with a warning
    assert err.splitlines() == ["warning: report task(s) renamed are not tasks of the pool; their plan entries "
                                "apply only to rows that name them"]
    table = out.splitlines()
    assert table[0].split() == ["task", "pdr", "sensitivity", "weakness", "epsilon", "budget"]
    assert table[1].split() == ["colors", "0.300", "0.100", "0.600", "0.230", "3"]
    assert table[2].split() == ["counting", "-", "-", "-", "0.500", "1"]
    assert table[5].startswith(f"wrote {tmp_path / 'plan.json'}: 4 tasks")

    run_cli(["plan", "--report", report / "report.json", "--epsilon", 0.8, "--floor", 0.2, "--strength", 4,
             "--max-budget", 2, "--out", tmp_path / "strict.json"], capsys)
    strict = load_plan(tmp_path / "strict.json")
    assert set(strict.tasks) == {"colors", "shapes", "renamed"}  # without --pool: the report's tasks
    assert strict.tasks["colors"] == TaskPlan(0.2, 2, 1.0, 0.3, 0.1)  # weakness 4 x 0.3, capped at 1
    assert strict.tasks["shapes"] == TaskPlan(pytest.approx(0.8 - 0.6 * 0.2), 1, 0.2, -0.2, 0.05)
    assert all(0.2 <= t.epsilon <= 0.8 and 1 <= t.budget <= 2 for t in strict.tasks.values())


def test_pregen_budgets_multiply_a_tasks_first_round_samples_and_budget_one_asks_the_same_requests() -> None:
    seeds = [SeedInstruction("weak", "weak/0", "What color is the shape?"),
             SeedInstruction("strong", "strong/0", "Which shape is drawn in the picture?")]
    prompts = load_meta_prompts(2, 0)
    config = PregenConfig(strategy="multi_temperature", temperatures=(0.5, 0.9), samples_per_prompt=2)
    specs = {"template": DEFAULT_SPEC, "instance": DEFAULT_SPEC}
    parents = [(seed, seed.text) for seed in seeds]

    def keys(jobs: list, task: str) -> list[str]:
        return [job.request.cache_key("m") for job in jobs if job.seed.task == task]

    plain = build_jobs(parents, prompts, config, specs, 1)
    planned = build_jobs(parents, prompts, config, specs, 1, {"weak": 3, "strong": 1})
    assert len(keys(plain, "weak")) == len(keys(plain, "strong")) == 2 * 2 * 2  # prompts x temperatures x samples
    assert len(keys(planned, "weak")) == 3 * len(keys(plain, "weak")) == len(set(keys(planned, "weak")))
    assert set(keys(plain, "weak")) < set(keys(planned, "weak"))  # a plain run's cached replies are reused
    assert keys(planned, "strong") == keys(plain, "strong")  # budget 1: exactly the requests without a plan


def test_pregen_notes_plan_budgets_no_seed_can_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Seeds without --task-column are all task 'default': the plan's budget for 'colors' would be lost. The
    note comes before generation (here against a port nothing listens on, which then fails in one line)."""
    plan = Plan(Rule(0.9, 0.1), {"colors": TaskPlan(0.1, 4), "shapes": TaskPlan(0.9, 1)}).save(tmp_path / "plan.json")
    with pytest.raises(SystemExit) as exit_info:
        main(["pregen", str(REPO / "dataset_info" / "dataset_info.json"), "--dataset", "instraug_demo", "--plan",
              str(plan), "--backend", "openai", "--model", "m", "--api-base", "http://127.0.0.1:9/v1",
              "--max-retries", "0", "--min-fidelity", "0", "--out", str(tmp_path / "pool")])
    err = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 2 and err[1].startswith("error: http://127.0.0.1:9/v1"), err
    assert err[0] == (f"note: --plan {plan}: no seed has task(s) colors (seed tasks: default); their budgets are "
                      "unused (rows name their task with --task-column)")


def test_build_plan_rewrites_each_task_as_often_as_its_epsilon_says(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """200 copies of the demo rows; the task of each instruction comes from the pool (no task column)."""
    data = tmp_path / "data"
    shutil.copytree(REPO / "dataset_info", data)
    plan = Plan(Rule(0.9, 0.1), {"colors": TaskPlan(0.1, 4), "shapes": TaskPlan(0.9, 1)}).save(tmp_path / "plan.json")
    out, _ = run_cli(["build", data / "dataset_info.json", "--name", "instraug_demo", "--pool", DEMO_POOL,
                      "--plan", plan, "--copies", 200, "--output-dir", tmp_path / "out"], capsys)
    source = json.loads((data / "instraug_demo" / "demo.json").read_text())
    built = json.loads((tmp_path / "out" / "instraug_demo_instraug.json").read_text())
    covered = {"What color is the shape in the image?", "Which shape is drawn in the picture?",
               "Describe this image briefly."}
    changed: dict[str, list[bool]] = {"colors": [], "shapes": []}
    for i, row in enumerate(built):
        original = source[i // 200]
        text = original["messages"][0]["content"]
        if text.split(">", 1)[1].strip() in covered:
            changed[original["task"]].append(row["messages"][0]["content"] != text)
    assert len(changed["colors"]) == 600 and len(changed["shapes"]) == 800
    assert sum(changed["colors"]) / 600 == pytest.approx(0.9, abs=0.04)  # 1 - epsilon, sd 0.012
    assert sum(changed["shapes"]) / 800 == pytest.approx(0.1, abs=0.035)  # sd 0.011
    entry = json.loads((tmp_path / "out" / "dataset_info.json").read_text())["instraug_demo_instraug"]
    assert entry["instraug_build"]["plan"] == str(plan) and entry["instraug_build"]["epsilon"] == 0.9
    assert entry["instraug_build"]["task_epsilon"] == {"colors": 0.1, "shapes": 0.9}
    assert "wrote 1800 rows" in out


def test_instraug_epsilon_map_and_instraug_plan_give_each_tasks_epsilon(tmp_path: Path) -> None:
    pool = {"instraug_pool": str(DEMO_POOL)}
    number = parse_config({**pool, "instraug_epsilon": 0.3})
    assert number.task_epsilons() == (0.3, {}) and number.lowest_epsilon() == 0.3
    mapped = parse_config({**pool, "instraug_epsilon": {"colors": 0.1, "*": 0.7}})
    assert mapped.task_epsilons() == (0.7, {"colors": 0.1}) and mapped.lowest_epsilon() == 0.1
    assert parse_config({**pool, "instraug_epsilon": {"colors": 0.9}}).task_epsilons() == (0.5, {"colors": 0.9})
    plan = Plan(Rule(0.8, 0.2), {"colors": TaskPlan(0.2, 4), "shapes": TaskPlan(0.8, 1)}).save(tmp_path / "plan.json")
    planned = parse_config({**pool, "instraug_plan": str(plan)})
    assert planned.task_epsilons() == (0.8, {"colors": 0.2, "shapes": 0.8}) and planned.lowest_epsilon() == 0.2
    with pytest.raises(InstrAugError) as both:
        parse_config({**pool, "instraug_plan": str(plan), "instraug_epsilon": 0.5})
    assert str(both.value) == "instraug_epsilon: not with instraug_plan (the plan sets every task's epsilon)"
    (tmp_path / "report.json").write_text(json.dumps({"tasks": []}))
    with pytest.raises(InstrAugError) as not_a_plan:
        parse_config({**pool, "instraug_plan": str(tmp_path / "report.json")})
    assert str(not_a_plan.value) == (f"instraug_plan: {tmp_path / 'report.json'}: not a plan file (format None, "
                                     "expected 'instraug-plan/1')")


# ---------------------------------------------------------------- the whole loop (slow)


def scored_report(folder: Path) -> Path:
    """A real report.json (the evaluator's own aggregation and writer) over the demo tasks, from hand-made
    scores: `colors` drops from 100 to 40 under held-out wordings, `shapes` scores 100 under every wording."""
    from instraug_plugin.evaluation.report import ScoredItem, summarize, write_report

    items = [ScoredItem(task, variant, f"{task}/{i}", "x", ("x",), score)
             for task, drop in (("colors", 0.6), ("shapes", 0.0)) for i in range(10)
             for variant, score in (("original/0", 1.0), ("heldout/0", float(i >= 10 * drop)),
                                    ("heldout/1", float(i >= 10 * drop)))]
    report = summarize(items, {"colors": "exact_match", "shapes": "exact_match"}, name="demo", model="hand-made",
                       variants="both", n_resamples=50)
    write_report(report, folder, items)
    return folder


def run(*args: Any, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd, timeout=900,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_plan_then_pregen_then_training_follows_the_plan(tmp_path: Path, tiny_llava: Path,
                                                          offline_env: dict[str, str]) -> None:
    data = tmp_path / "data"
    shutil.copytree(REPO / "dataset_info", data)
    cli = BIN / "instraug-plugin"
    report = scored_report(tmp_path / "eval")
    run(cli, "plan", "--report", report, "--pool", data / "instraug_demo" / "pool", "--epsilon", 0.9, "--floor", 0.1,
        "--out", tmp_path / "plan.json", env=offline_env, cwd=tmp_path)
    plan = load_plan(tmp_path / "plan.json")
    assert (plan.tasks["colors"].epsilon, plan.tasks["colors"].budget) == (0.1, 4)  # drop 0.6: weakness 1
    assert (plan.tasks["shapes"].epsilon, plan.tasks["shapes"].budget) == (0.9, 1)  # no drop, no spread

    pregen = [cli, "pregen", data / "dataset_info.json", "--dataset", "instraug_demo", "--task-column", "task",
              "--limit", 2, "--plan", tmp_path / "plan.json", "--direct-prompts", 2, "--guided-prompts", 0,
              "--strategy", "iterative", "--rounds", 2, "--device", "cpu", "--batch-size", 16]
    result = run(*pregen, "--out", tmp_path / "pool", env=offline_env, cwd=tmp_path)
    manifest = read_manifest(tmp_path / "pool")
    first_round = Counter(r.task for r in read_records(tmp_path / "pool") if r.round == 1)
    assert first_round["colors"] > 0 and first_round["shapes"] > 0, first_round
    # Round 1: 2 meta-prompts x budget; round 2 rephrases each kept round-1 output with the 2 meta-prompts.
    generated = {task: manifest["tasks"][task]["generated"] for task in ("colors", "shapes")}
    assert generated == {"colors": 2 * 4 + 2 * first_round["colors"], "shapes": 2 * 1 + 2 * first_round["shapes"]}
    assert manifest["plan"] == {"path": str(tmp_path / "plan.json"), "budgets": {"colors": 4, "shapes": 1}}
    assert manifest["options"]["plan"] == str(tmp_path / "plan.json")
    assert "by task: colors (budget 4)" in result.stdout

    # A rerun from the manifest asks the same requests: with the first run's cache, every reply is a hit.
    (tmp_path / "rerun").mkdir()
    shutil.copy(tmp_path / "pool" / "cache.jsonl", tmp_path / "rerun" / "cache.jsonl")
    run(cli, "pregen", "--config", tmp_path / "pool" / "manifest.json", "--out", tmp_path / "rerun",
        env=offline_env, cwd=tmp_path)
    assert read_manifest(tmp_path / "rerun")["cache_hits"] == manifest["generated"] == sum(generated.values())
    assert (tmp_path / "rerun" / "pool.jsonl").read_text() == (tmp_path / "pool" / "pool.jsonl").read_text()

    config = yaml.safe_load((REPO / "examples" / "tiny_llava_cpu_pool.yaml").read_text())
    del config["instraug_epsilon"]
    config.update(model_name_or_path=str(tiny_llava), dataset_dir=str(data), output_dir=str(tmp_path / "run"),
                  instraug_pool=str(tmp_path / "pool"), instraug_plan=str(tmp_path / "plan.json"),
                  num_train_epochs=4.0, instraug_log_samples=True)
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    run(BIN / "llamafactory-cli", "train", tmp_path / "train.yaml", env=offline_env, cwd=tmp_path)
    assert json.loads((tmp_path / "run" / "trainer_state.json").read_text())["epoch"] == 4.0

    rows = json.loads((data / "instraug_demo" / "demo.json").read_text())
    paraphrases = {r.text for r in read_records(tmp_path / "pool") if not r.is_seed}
    samples = [json.loads(line) for f in (tmp_path / "run" / "instraug_samples").glob("*.jsonl") for line in f.open()]
    assert len(samples) == 4 * len(rows)
    decisions: dict[str, list[str]] = {"colors": [], "shapes": []}
    for sample in samples:
        task = rows[sample["index"]]["task"]
        if sample["decision"] == "no_entry":
            continue
        decisions[task].append(sample["decision"])
        # Each draw used its task's epsilon (the user turn is message 0).
        kept_original = unit_draw(config["instraug_seed"], sample["epoch"], sample["index"], 0) < plan.epsilon_for(task)
        assert (sample["decision"] == "original") == kept_original, sample
        if sample["decision"] == "rewritten":
            assert sample["user_turns"][0].removeprefix("<image>").strip() in paraphrases
    assert len(decisions["colors"]) == 12 and len(decisions["shapes"]) == 8  # 3 and 2 covered rows, 4 epochs
    share = {task: d.count("rewritten") / len(d) for task, d in decisions.items()}
    assert share["colors"] >= 0.7 and share["shapes"] <= 0.25, share  # 1 - epsilon: 0.9 and 0.1
