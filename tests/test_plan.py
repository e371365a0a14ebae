"""The rule from measured wording robustness to per-task epsilon and budget, on hand-made reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.placeholders import DEFAULT_SPEC
from instraug_plugin.core.plan import Plan, Rule, TaskPlan, load_plan, plan_from_signals, report_signals
from instraug_plugin.core.pool import Pool, PoolRecord
from instraug_plugin.core.sampling import InstructionRewriter

RULE = Rule(epsilon=0.5, floor=0.1, strength=2.0, max_budget=4)


def report(**tasks: tuple[float | None, float | None]) -> dict:
    """A report JSON as `instraug-plugin eval` writes it, reduced to what the rule reads."""
    return {"tasks": [{"task": name, "pdr": pdr, "sensitivity": sens, "mean": 50.0} for name, (pdr, sens) in tasks.items()]}


def test_epsilon_falls_and_budget_rises_with_the_weakness_signal() -> None:
    signals = [0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 3.0]
    plan = plan_from_signals(RULE, report_signals(report(**{f"t{i}": (s, 0.0) for i, s in enumerate(signals)})))
    epsilons = [plan.epsilon_for(f"t{i}") for i in range(len(signals))]
    budgets = [plan.budget_for(f"t{i}") for i in range(len(signals))]
    assert epsilons == sorted(epsilons, reverse=True) and epsilons[0] == 0.5 and epsilons[-1] == 0.1
    assert budgets == sorted(budgets) and budgets[0] == 1 and budgets[-1] == 4
    assert epsilons[3] == pytest.approx(0.5 - 0.4 * 0.2)  # signal 0.1, strength 2: weakness 0.2


def test_the_larger_of_drop_and_sensitivity_counts() -> None:
    plan = plan_from_signals(RULE, report_signals(report(a=(0.05, 0.2), b=(0.2, 0.05), c=(-0.3, 0.0))))
    assert plan.epsilon_for("a") == plan.epsilon_for("b") == pytest.approx(0.5 - 0.4 * 0.4)
    assert plan.epsilon_for("c") == 0.5  # better under new wordings than the originals: no weakness


def test_bounds_hold_for_any_signal_and_missing_tasks_keep_the_global_epsilon() -> None:
    plan = plan_from_signals(RULE, report_signals(report(huge=(50.0, 9.0), none=(None, None), nan=(float("nan"), None))))
    assert plan.epsilon_for("huge") == 0.1 and plan.budget_for("huge") == 4
    assert plan.epsilon_for("none") == 0.5 and plan.budget_for("none") == 1  # no signal (all wordings scored 0)
    assert plan.epsilon_for("nan") == 0.5
    assert plan.epsilon_for("absent") == 0.5 and plan.budget_for("absent") == 1 and plan.epsilon_for(None) == 0.5
    strict = plan_from_signals(Rule(0.3, 0.3), report_signals(report(huge=(1.0, 1.0))))
    assert strict.epsilon_for("huge") == 0.3  # floor == epsilon: the plan cannot lower it


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"epsilon": 1.2}, "epsilon must be in [0, 1]"),
    ({"epsilon": 0.3, "floor": 0.4}, "epsilon floor must be in [0, epsilon=0.3]"),
    ({"epsilon": 0.3, "strength": -1.0}, "strength must be a finite number >= 0"),
    ({"epsilon": 0.3, "max_budget": 0}, "max budget must be >= 1"),
])
def test_bad_rules_fail_in_one_line(kwargs: dict, message: str) -> None:
    with pytest.raises(InstrAugError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Rule(**kwargs)


def test_a_plan_file_round_trips_and_bad_files_fail_naming_the_file(tmp_path: Path) -> None:
    plan = plan_from_signals(RULE, report_signals(report(a=(0.1, 0.0), b=(None, None))), source="eval/report.json")
    path = plan.save(tmp_path / "plan.json")
    assert load_plan(path) == plan
    data = json.loads(path.read_text())
    data["tasks"]["a"]["epsilon"] = 0.9  # above the plan's own epsilon
    path.write_text(json.dumps(data))
    with pytest.raises(InstrAugError, match=r"plan\.json: bad plan \(task 'a': epsilon 0\.9"):
        load_plan(path)
    path.write_text(json.dumps({"format": "instraug-eval/1"}))
    with pytest.raises(InstrAugError, match=r"plan\.json: not a plan file"):
        load_plan(path)
    with pytest.raises(InstrAugError, match=r"not an evaluation report"):
        report_signals({"overall": {}})


def test_the_rewriter_draws_with_each_tasks_epsilon() -> None:
    """Rows of a fragile task keep the original wording less often; the task comes from the row or the pool."""
    records = [PoolRecord(task, f"{task}/0", seed, f"{seed} Variant {i}.", "single")
               for task, seed in (("count", "How many shapes?"), ("color", "Which color?")) for i in range(3)]
    plan = Plan(RULE, {"count": TaskPlan(0.1, 4)})
    rewriter = InstructionRewriter(Pool(records), 0.5, 7, DEFAULT_SPEC, plan.epsilons())

    def kept(text: str, task: str | None) -> float:
        decisions = [rewriter.rewrite(text, task=task, epoch=0, index=i)[1] for i in range(4000)]
        return decisions.count("original") / len(decisions)

    assert kept("How many shapes?", "count") == pytest.approx(0.1, abs=0.02)
    assert kept("How many shapes?", None) == pytest.approx(0.1, abs=0.02)  # the pool names the task
    assert kept("Which color?", None) == pytest.approx(0.5, abs=0.03)  # not in the plan: the global epsilon


def test_an_instruction_after_context_lines_is_found_and_the_context_kept() -> None:
    records = [PoolRecord("first", "first/0", "What is the first shape?", "Name the first shape.", "single")]
    rewriter = InstructionRewriter(Pool(records), 0.0, 0)
    text = "Scene: a red circle and a blue square.\nWhat is the first shape?"
    new, decision = rewriter.rewrite(text, task=None, epoch=0, index=0)
    assert decision == "rewritten" and new == "Scene: a red circle and a blue square.\nName the first shape."
    assert rewriter.rewrite("<image>\n{scene}\nWhat is the first shape?", task="first", epoch=0, index=0)[0] == \
        "<image>\n{scene}\nName the first shape."
