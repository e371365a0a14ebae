"""The online loop (`instraug_adaptive`): development wordings held back from the pool, the development set,
per-task epsilon in shared memory, and a real 2-rank `llamafactory-cli train` steered by it."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from instraug_plugin.core.devsplit import held_back_count, split_dev
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.plan import Rule, report_signals
from instraug_plugin.core.pool import Pool, PoolRecord, normalize, write_pool
from instraug_plugin.core.sampling import InstructionRewriter, rewrite_messages
from instraug_plugin.evaluation.devset import development_set
from instraug_plugin.evaluation.evalset import EVAL_FORMAT, load_eval_set
from instraug_plugin.integrations.epoch_state import EpochState, SharedEpsilons, log_epoch
from instraug_plugin.settings import parse_config

BIN = Path(sys.executable).parent
OPENERS = ("Please answer: ", "Quick question: ", "Read the list. ", "One word only. ")


def pool_records(templates: dict[str, list[str]], openers: tuple[str, ...] = OPENERS) -> list[PoolRecord]:
    """Each template as a seed with one paraphrase per opener ("Please answer: " + template)."""
    records = []
    for task, seeds in templates.items():
        for k, seed in enumerate(seeds):
            records.append(PoolRecord(task, f"{task}/{k}", seed, seed, kind="template"))
            records += [PoolRecord(task, f"{task}/{k}", seed, opener + seed, "single", round=1, parent=seed,
                                   kind="template") for opener in openers]
    return records


def dev_texts(pool: Pool) -> set[str]:
    return {normalize(r.text) for r in pool.records}


def paraphrase_texts(pool: Pool) -> set[str]:
    return {normalize(r.text) for r in pool.records if not r.is_seed}


# --- the hold-back ---------------------------------------------------------------------------------------------

TEMPLATES = {"count": [f"How many shapes are in row {i}?" for i in range(5)],
             "color": [f"Which color has shape {i}?" for i in range(3)]}


def test_a_share_of_each_tasks_paraphrases_is_held_back_deterministically() -> None:
    records = pool_records(TEMPLATES)
    train, dev = split_dev(records, 0.2, seed=7)
    per_task = Counter(r.task for r in dev.records)
    assert per_task == {"count": round(0.2 * 20), "color": round(0.2 * 12)}  # 20 and 12 paraphrases
    assert all(not r.is_seed for r in dev.records)
    assert not dev_texts(dev) & paraphrase_texts(train)  # disjoint
    assert len(train.records) + len(dev.records) == len(records)
    again = split_dev(list(reversed(records)), 0.2, seed=7)
    assert dev_texts(again.dev) == dev_texts(dev)  # a function of (seed, task, text), not of order
    others = [dev_texts(split_dev(records, 0.2, seed=s).dev) for s in range(8, 12)]
    assert any(texts != dev_texts(dev) for texts in others)  # the seed chooses
    # the development wordings are kept per (task, seed instruction): exactly the held-back paraphrases
    for task, seeds in TEMPLATES.items():
        for seed in seeds:
            everything = {OPENERS[i] + seed for i in range(4)}
            assert set(dev.variants(seed, task)) | set(train.variants(seed, task)) == everything
            assert not set(dev.variants(seed, task)) & set(train.variants(seed, task))


@pytest.mark.parametrize(("candidates", "share", "held"), [
    (0, 0.5, 0), (1, 0.9, 0), (2, 0.01, 1), (2, 0.9, 1), (10, 0.2, 2), (10, 0.9, 9), (3, 0.5, 2), (40, 0.01, 1)])
def test_at_least_one_and_never_all(candidates: int, share: float, held: int) -> None:
    assert held_back_count(candidates, share) == held
    records = [PoolRecord("t", "t/0", "Seed?", "Seed?")] + [
        PoolRecord("t", "t/0", "Seed?", f"Paraphrase {i}?", "single") for i in range(candidates)]
    train, dev = split_dev(records, share, seed=0)
    assert len(dev.records) == held and len(paraphrase_texts(train)) == candidates - held


def test_seeds_instance_paraphrases_and_seed_wordings_are_never_held_back() -> None:
    records = [PoolRecord("t", "t/0", "Name the shape.", "Name the shape."),
               PoolRecord("t", "t/1", "Say the shape.", "Say the shape."),
               PoolRecord("t", "t/0", "Name the shape.", "Say the shape.", "single"),  # another seed's own wording
               PoolRecord("t", "t/2", "Is 3 > 2?", "Is 3 bigger than 2?", "single", kind="instance"),
               PoolRecord("t", "t/0", "Name the shape.", "Tell me the shape.", "single"),
               PoolRecord("t", "t/0", "Name the shape.", "What shape is it?", "single")]
    held = set()
    for seed in range(20):
        dev = split_dev(records, 0.9, seed).dev
        assert len(dev.records) == 1  # of the two candidates, never both
        held.add(dev.records[0].text)
    assert held == {"Tell me the shape.", "What shape is it?"}


def test_the_training_rewriter_never_draws_a_development_wording() -> None:
    train, dev = split_dev(pool_records(TEMPLATES), 0.3, seed=1)
    rewriter = InstructionRewriter(train, epsilon=0.0, seed=1)
    drawn = {rewriter.rewrite(f"Scene: two rows.\n{seed}", task=task, epoch=e, index=i)[0].split("\n", 1)[1]
             for task, seeds in TEMPLATES.items() for seed in seeds for e in range(3) for i in range(40)}
    assert len(drawn) == len(paraphrase_texts(train)) and not {normalize(t) for t in drawn} & dev_texts(dev)


# --- the development set ---------------------------------------------------------------------------------------

def write_eval_set(path: Path, tasks: dict[str, dict[str, Any]], instances: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"format": EVAL_FORMAT, "name": "dev-test", "tasks": tasks, "instances": instances}))
    return path


def test_development_set_uses_original_templates_and_held_back_wordings_never_test_wordings(tmp_path: Path) -> None:
    seeds = {"first": ["What is the first shape?", "Name the first shape."], "plain": ["Describe it."],
             "unpooled": ["What is the last shape?"]}
    records = pool_records({"first": seeds["first"], "plain": seeds["plain"]})
    test_wording = "Quick question: What is the first shape?"  # also a pool paraphrase: must never steer
    records.append(PoolRecord("first", "first/0", "What is the first shape?", "Placeholders {changed}?", "single"))
    instances = [{"id": f"{task}/{i}", "task": task, "fields": {"scene": f"Scene {i}: a red circle."},
                  "answers": ["circle"]} for task in seeds for i in range(2)]
    path = write_eval_set(tmp_path / "eval.json", {
        "first": {"metric": "exact_match", "original": ["{scene}\n" + s for s in seeds["first"]],
                  "heldout": ["{scene}\n" + test_wording]},
        "plain": {"metric": "exact_match", "original": seeds["plain"], "heldout": ["Tell me about it."]},
        "unpooled": {"metric": "exact_match", "original": ["{scene}\n" + seeds["unpooled"][0]], "heldout": []},
    }, instances)
    eval_set = load_eval_set(path, variants="both")
    everything = [r for r in records if not r.is_seed]
    dev_set = development_set(eval_set, Pool(everything))  # every paraphrase held back: see which ones are used
    assert set(dev_set.tasks) == {"first", "plain"}  # no development wording: left out (keeps the global epsilon)
    assert {i.task for i in dev_set.instances} == {"first", "plain"} and len(dev_set.instances) == 4
    first = dev_set.tasks["first"].variants
    assert [first[f"original/{i}"] for i in range(2)] == ["{scene}\n" + s for s in seeds["first"]]
    dev_wordings = [t for v, t in first.items() if v.startswith("heldout/")]
    expected = [f"{{scene}}\n{o}{s}" for s in seeds["first"] for o in OPENERS if o + s != test_wording]
    assert dev_wordings == expected  # the context prefix kept; the test wording and a changed placeholder left out
    assert [t for v, t in dev_set.tasks["plain"].variants.items() if v.startswith("heldout/")] == [
        o + "Describe it." for o in OPENERS]
    rendered = [item.prompt for item in dev_set.items() if item.instance.id == "first/1"]
    assert f"Scene 1: a red circle.\n{OPENERS[0]}What is the first shape?" in rendered
    assert not any(test_wording in prompt for prompt in (item.prompt for item in dev_set.items()))
    dev_file = tmp_path / "dev.json"
    dev_file.write_text(json.dumps(dev_set.to_json()))
    assert load_eval_set(dev_file, variants="both") == dev_set  # written in the eval-set format, read back whole


# --- per-task epsilon in shared memory -------------------------------------------------------------------------

def _read_after_publish(shared: SharedEpsilons, published: Any, out: Any) -> None:
    published.wait(30)
    out.put(dict(shared))


def test_published_epsilons_reach_a_process_forked_before() -> None:
    shared = SharedEpsilons(["count", "color"], 0.5)
    assert dict(shared) == {"color": 0.5, "count": 0.5} and shared.get("absent") is None
    context = multiprocessing.get_context("fork")  # DataLoader workers: forked, possibly for the whole run
    published, out = context.Event(), context.SimpleQueue()
    worker = context.Process(target=_read_after_publish, args=(shared, published, out))
    worker.start()
    shared.publish({"count": 0.125})
    published.set()
    seen = out.get()
    worker.join(30)
    assert seen == {"color": 0.5, "count": 0.125}


def test_the_rewriter_reads_the_shared_value_at_every_draw() -> None:
    shared = SharedEpsilons(["count"], 1.0)
    rewriter = InstructionRewriter(Pool(pool_records(TEMPLATES)), 1.0, 0, task_epsilon=shared)
    seed = TEMPLATES["count"][0]
    assert {rewriter.rewrite(seed, task="count", epoch=0, index=i)[1] for i in range(50)} == {"original"}
    shared.publish({"count": 0.0})
    assert {rewriter.rewrite(seed, task="count", epoch=0, index=i)[1] for i in range(50)} == {"rewritten"}
    assert rewriter.rewrite(TEMPLATES["color"][0], task="color", epoch=0, index=0)[1] == "original"  # not steered


def test_log_epoch_writes_each_tasks_epsilon_to_history_and_the_stats_line(tmp_path: Path) -> None:
    from transformers import TrainerState

    state = TrainerState()
    record = log_epoch(state, tmp_path, 1, {"rewritten": 3, "original": 1, "no_entry": 0},
                       details={"dev_epoch": 1, "dev_signals": {"count": {"pdr": 0.2}}}, pretrain={},
                       task_epsilon=SharedEpsilons(["count"], 0.25))
    assert record["task_epsilon"] == {"count": 0.25} and record["dev_signals"] == {"count": {"pdr": 0.2}}
    assert state.log_history[-1]["instraug/epsilon/count"] == 0.25 and "instraug/dev_signals" not in state.log_history[-1]
    assert json.loads((tmp_path / "instraug_stats.jsonl").read_text()) == record


# --- settings and session --------------------------------------------------------------------------------------

@pytest.fixture()
def pool_dir(tmp_path: Path) -> Path:
    write_pool(tmp_path / "pool", pool_records(TEMPLATES), {})
    return tmp_path / "pool"


@pytest.fixture()
def eval_file(tmp_path: Path) -> Path:
    return write_eval_set(tmp_path / "eval.json", {
        "count": {"metric": "exact_match", "original": ["{scene}\n" + TEMPLATES["count"][0]], "heldout": ["Count."]},
        "other": {"metric": "exact_match", "original": ["Something else?"]},
    }, [{"id": f"{t}/0", "task": t, "fields": {"scene": "Two rows."}, "answers": ["2"]} for t in ("count", "other")])


@pytest.mark.parametrize(("extra", "message"), [
    ({"instraug_eval_set": None}, "instraug_adaptive: needs instraug_eval_set"),
    ({"instraug_mode": "live", "instraug_live_quantization_bit": None}, "instraug_adaptive: needs instraug_mode pool"),
    ({"instraug_epsilon": {"count": 0.3}}, "instraug_adaptive: needs instraug_epsilon as one number"),
    ({"instraug_epsilon_floor": 0.6}, "instraug_epsilon_floor: 0.6 is above instraug_epsilon 0.5"),
    ({"instraug_eval_variants": "heldout"}, "instraug_eval_variants: not with instraug_adaptive"),
])
def test_adaptive_settings_fail_in_one_line(pool_dir: Path, eval_file: Path, extra: dict, message: str) -> None:
    raw = {"instraug_pool": str(pool_dir), "instraug_adaptive": True, "instraug_eval_set": str(eval_file), **extra}
    with pytest.raises(InstrAugError) as info:
        parse_config({k: v for k, v in raw.items() if v is not None})
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_an_adaptive_session_trains_without_the_development_wordings(pool_dir: Path, eval_file: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from instraug_plugin.integrations.llamafactory.session import start_session

    config = parse_config({"instraug_pool": str(pool_dir), "instraug_adaptive": True, "instraug_dev_share": 0.5,
                           "instraug_eval_set": str(eval_file), "instraug_seed": 4})
    session = start_session(config, default_seed=42)
    expected_train, expected_dev = split_dev(pool_records(TEMPLATES), 0.5, seed=4)
    assert [r.text for r in session.rewriter.pool.records] == [r.text for r in expected_train.records]
    assert session.dev_set is not None and list(session.dev_set.tasks) == ["count"]
    wordings = [t for v, t in session.dev_set.tasks["count"].variants.items() if v.startswith("heldout/")]
    assert wordings == ["{scene}\n" + t for t in expected_dev.variants(TEMPLATES["count"][0], "count")] and wordings
    assert session.rewriter.task_epsilon is session.state.task_epsilon
    assert dict(session.state.task_epsilon) == {"count": 0.5}
    assert "no development wording for task(s) other" in capsys.readouterr().err


def test_an_adaptive_run_without_any_development_wording_fails_in_one_line(pool_dir: Path, tmp_path: Path) -> None:
    from instraug_plugin.integrations.llamafactory.session import start_session

    path = write_eval_set(tmp_path / "other.json", {"other": {"metric": "exact_match", "original": ["Else?"]}},
                          [{"id": "o/0", "task": "other", "answers": ["x"]}])
    config = parse_config({"instraug_pool": str(pool_dir), "instraug_adaptive": True, "instraug_eval_set": str(path)})
    with pytest.raises(InstrAugError, match=r"^instraug_adaptive: no original template of .*other\.json has a "
                                            r"development wording .*pool tasks: color, count$"):
        start_session(config, default_seed=0)


def test_a_resumed_run_restores_the_last_steered_epsilons(pool_dir: Path, eval_file: Path) -> None:
    from transformers import TrainerState

    from instraug_plugin.integrations.llamafactory.callbacks import AdaptiveCallback, session_callbacks
    from instraug_plugin.integrations.llamafactory.session import start_session

    config = parse_config({"instraug_pool": str(pool_dir), "instraug_adaptive": True, "instraug_eval_set": str(eval_file)})
    session = start_session(config, default_seed=0)
    callback = session_callbacks(session, {"model_name_or_path": "m", "template": "llava"})[-1]
    assert isinstance(callback, AdaptiveCallback)
    state = TrainerState(global_step=6, log_history=[
        {"instraug_dev/count/next_epsilon": 0.3, "instraug_dev/count/pdr": 0.1, "epoch": 1.0},
        {"loss": 1.0, "epoch": 1.5},
        {"instraug_dev/count/next_epsilon": 0.2, "instraug_dev/count/pdr": 0.2, "instraug_dev/count/weakness": 0.6,
         "epoch": 2.0},
        {"loss": 0.5, "epoch": 2.5}])
    callback.on_train_begin(None, state, None)
    assert dict(session.state.task_epsilon) == {"count": 0.2} and session.dev_epoch == 2
    assert session.dev_signals == {"count": {"pdr": 0.2, "sensitivity": None, "weakness": 0.6}}


def test_epoch_state_without_the_online_loop_has_no_task_epsilon() -> None:
    assert EpochState().task_epsilon is None


# --- a real training run ---------------------------------------------------------------------------------------

WORDS = ["cat", "dog", "sun", "box", "map", "cup"]
QUESTIONS = {  # a constant answer per task: the model must tell the tasks apart by their wording
    "color": ("blue", ["What color is the sky?", "Name the color of the sky.", "Which color does the sky have?",
                       "Give the color of the sky.", "Tell me the sky's color."]),
    "animal": ("dog", ["Which animal barks?", "Name the animal that barks.", "What animal says woof?",
                       "Give the barking animal.", "Tell me which animal barks."]),
    "number": ("eight", ["How many legs does a spider have?", "Count the legs of a spider.",
                         "What is the number of spider legs?", "Give the leg count of a spider.",
                         "Tell me how many legs a spider has."]),
}
SEED, EPSILON = 3, 0.5


def make_words_data(root: Path, train_per_task: int = 16, test_per_task: int = 3) -> None:
    """Training rows "Words: ...\\n<question>" (sharegpt, task column), the pool, an evaluation set whose
    held-out (test) wordings are none of the pool's."""
    rng = random.Random(0)
    rows, instances = [], []
    for task, (answer, templates) in QUESTIONS.items():
        for i in range(train_per_task):
            scene = "Words: " + " ".join(rng.sample(WORDS, 3))
            rows.append({"messages": [{"role": "user", "content": f"{scene}\n{templates[i % 5]}"},
                                      {"role": "assistant", "content": answer}], "task": task})
        instances += [{"id": f"{task}/{i}", "task": task, "fields": {"scene": "Words: " + " ".join(rng.sample(WORDS, 3))},
                       "answers": [answer]} for i in range(test_per_task)]
    (root / "train.json").write_text(json.dumps(rows))
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    (root / "dataset_info.json").write_text(json.dumps(
        {"words": {"file_name": "train.json", "formatting": "sharegpt", "columns": {"messages": "messages"}, "tags": tags}}))
    tasks = {task: {"metric": "exact_match", "original": ["{scene}\n" + t for t in templates],
                    "heldout": ["{scene}\nReply briefly: " + t.lower() for t in templates[:2]]}
             for task, (_, templates) in QUESTIONS.items()}
    write_eval_set(root / "eval.json", tasks, instances)
    write_pool(root / "pool", pool_records({task: templates for task, (_, templates) in QUESTIONS.items()}), {})


def logged_samples(out: Path) -> list[dict[str, Any]]:
    """Every logged training sample, with the rank whose DataLoader worker drew it."""
    return [{"rank": f.name.split("-")[0], **json.loads(line)}
            for f in sorted((out / "instraug_samples").glob("*.jsonl")) for line in f.open()]


@pytest.mark.slow
def test_two_rank_training_steers_each_tasks_epsilon_by_the_development_wordings(
        tmp_path: Path, tiny_llava: Path, offline_env: dict[str, str]) -> None:
    """`instraug_adaptive: true` in a real `llamafactory-cli train` (2 CPU ranks, a persistent DataLoader worker
    each, 2 epochs): epoch 2's per-task epsilon is the rule's value from the development signals logged after
    epoch 1, every rank's workers draw with it, and no development wording is ever trained on."""
    data = tmp_path / "data"
    data.mkdir()
    make_words_data(data)
    out = tmp_path / "run"
    config = dict(model_name_or_path=str(tiny_llava), stage="sft", do_train=True, finetuning_type="full",
                  template="llava", dataset="words", dataset_dir=str(data), cutoff_len=128, output_dir=str(out),
                  num_train_epochs=2, per_device_train_batch_size=2, learning_rate=0.02, lr_scheduler_type="constant",
                  dataloader_num_workers=1, dataloader_persistent_workers=True, save_strategy="no", report_to="none",
                  bf16=False, fp16=False, logging_steps=1, overwrite_output_dir=True,
                  instraug_pool=str(data / "pool"), instraug_epsilon=EPSILON, instraug_seed=SEED,
                  instraug_task_column="task", instraug_adaptive=True, instraug_log_samples=True,
                  instraug_eval_set=str(data / "eval.json"), instraug_eval_max_new_tokens=3)
    (tmp_path / "train.yaml").write_text(json.dumps(config))  # JSON is YAML
    env = {**offline_env, "FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2",
           "PATH": f"{BIN}{os.pathsep}{offline_env.get('PATH', '')}"}
    proc = subprocess.run([str(BIN / "llamafactory-cli"), "train", str(tmp_path / "train.yaml")], check=False,
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # The rule's value from the logged development signals, and a change it predicts (not a vacuous one).
    stats = [json.loads(line) for line in (out / "instraug_stats.jsonl").open()]
    assert [s["epoch"] for s in stats] == [0, 1]
    assert stats[0]["task_epsilon"] == dict.fromkeys(QUESTIONS, EPSILON) and stats[0]["dev_epoch"] is None
    assert stats[1]["dev_epoch"] == 1
    signals = stats[1]["dev_signals"]
    report = json.loads((out / "instraug_dev" / "epoch-1" / "report.json").read_text())
    assert {t: (s["pdr"], s["sensitivity"]) for t, s in signals.items()} == report_signals(report)
    rule = Rule(EPSILON, 0.05, 2.0)
    steered = []
    for task, signal in signals.items():
        weakness = rule.weakness(signal["pdr"], signal["sensitivity"])
        assert signal["weakness"] == (None if weakness is None else pytest.approx(weakness))
        assert stats[1]["task_epsilon"][task] == pytest.approx(rule.task_epsilon(weakness), abs=1e-6)
        if weakness:
            assert stats[1]["task_epsilon"][task] < stats[0]["task_epsilon"][task]  # weaker: fewer originals
            steered.append(task)
        else:
            assert stats[1]["task_epsilon"][task] == stats[0]["task_epsilon"][task]
    assert steered, f"no task had a development signal: {signals}"
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    logged = [{t: h[f"instraug/epsilon/{t}"] for t in QUESTIONS} for h in history if "instraug/epsilon/color" in h]
    assert logged == [s["task_epsilon"] for s in stats]
    assert [h["epoch"] for h in history if "instraug_dev/mean" in h] == [1.0]  # none after the last epoch

    # The development wordings: the held-back pool paraphrases of the original templates, none a test wording.
    records = pool_records({task: templates for task, (_, templates) in QUESTIONS.items()})
    train_pool, dev_pool = split_dev(records, 0.2, SEED)
    dev_set = load_eval_set(out / "instraug_dev" / "dev_set.json", variants="both")
    assert dev_set == development_set(load_eval_set(data / "eval.json", variants="both"), dev_pool)
    wordings = {t.removeprefix("{scene}\n") for spec in dev_set.tasks.values()
                for v, t in spec.variants.items() if v.startswith("heldout/")}
    assert len(wordings) == 3 * 4  # 20 paraphrases per task, 4 held back
    tests = {t for spec in load_eval_set(data / "eval.json", variants="heldout").tasks.values()
             for t in spec.variants.values()}
    assert not {normalize("{scene}\n" + w) for w in wordings} & {normalize(t) for t in tests}

    # Every rank's worker drew epoch 2 with the steered epsilons, and no development wording was trained on.
    rows = json.loads((data / "train.json").read_text())
    samples = logged_samples(out)
    assert {s["rank"] for s in samples} == {"rank0", "rank1"}
    assert {(s["epoch"], s["index"]) for s in samples} == {(e, i) for e in (0, 1) for i in range(len(rows))}
    stale = InstructionRewriter(train_pool, EPSILON, SEED, task_epsilon=stats[0]["task_epsilon"])
    differs_from_stale: Counter[str] = Counter()
    counts: dict[int, Counter[str]] = defaultdict(Counter)
    for sample in samples:
        row = rows[sample["index"]]
        rewriter = InstructionRewriter(train_pool, EPSILON, SEED, task_epsilon=stats[sample["epoch"]]["task_epsilon"])
        replay = dict(task=row["task"], epoch=sample["epoch"], index=sample["index"], all_turns=False)
        messages, decision = rewrite_messages(rewriter, row["messages"][:1], **replay)
        assert (sample["user_turns"], sample["decision"]) == ([messages[0]["content"]], decision)
        counts[sample["epoch"]][decision] += 1
        if rewrite_messages(stale, row["messages"][:1], **replay)[1] != decision:
            differs_from_stale[sample["rank"]] += 1  # only in epoch 2, where the epsilons differ
        assert not any(w in sample["user_turns"][0] for w in wordings), sample
    assert set(differs_from_stale) == {"rank0", "rank1"}, "a rank drew epoch 2 with the global epsilon"
    for s in stats:  # the logged counts are those of the epsilons in force
        assert (s["rewritten"], s["kept_original"]) == (counts[s["epoch"]]["rewritten"], counts[s["epoch"]]["original"])
    drawn = Counter(sample["decision"] for sample in samples)
    assert drawn["rewritten"] > 0 and drawn["no_entry"] == 0
