"""Instance-level instructions: kinds, content protection, the answer check, and scope in pools/build/hook."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from instraug_plugin.backends.base import GenerationRequest
from instraug_plugin.build import build_dataset
from instraug_plugin.core.cache import GenerationCache
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.filters import FilterConfig
from instraug_plugin.core.instances import INSTANCE, TEMPLATE, answer_changes, classify, content_spec
from instraug_plugin.core.placeholders import DEFAULT_SPEC
from instraug_plugin.core.pool import Pool, PoolRecord, scoped_records, write_pool
from instraug_plugin.core.requests import question_kind, task_shape_change
from instraug_plugin.generation.pipeline import PregenConfig, run_pregen
from instraug_plugin.generation.prompts import load_meta_prompts
from instraug_plugin.inputs import load_seed_set
from instraug_plugin.inputs.base import SeedInstruction
from instraug_plugin.integrations.llamafactory.config import parse_config
from instraug_plugin.stats import compute_stats, render_markdown

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "benchmarks" / "data" / "lf_demo"
SPEC = content_spec()


@pytest.mark.parametrize(("text", "spans"), [
    ("Transform the following sentence using a synonym: The car sped quickly.", ["The car sped quickly."]),
    ("Produce a list of the top 5 NHL players in 2021.", ["5 NHL", "2021"]),
    ("Add 3 examples to the following sentence.", ["3 examples"]),  # a moved number would count something else
    ("Output 1 for true, 2 for false.", ["1", "2"]),  # no stop word is glued to a number
    ("Create an effective 140 character twitter post", ["140 character"]),
    ('Select the incorrect definition for the word "timid"', ['"timid"']),
    ("Generate an opening sentence for a poem on the theme of 'loneliness'.", ["'loneliness'"]),
    ("Explain why it's important to follow copyright laws", []),
    ("Explain what `len(x)` does in Python.", ["`len(x)`", "Python"]),
    ("Determine the volume of a cube with sides 4 cm long.", ["4 cm"]),
    ("Give three examples of renewable energy.", ["three examples"]),
    ("Resolve the following problem: 9 - 2 x 3", ["9 - 2 x 3"]),
    ("Describe a process of making crepes.", []),
    ("Identify the incorrect phrase in the following sentences:", []),  # the material is in `input`
    ("Rewrite this sentence without changing the meaning:\n\"Online learning works.\"", ['"Online learning works."']),
    ("I met John Smith in Paris. Then we left.", ["John Smith", "Paris"]),
    ("翻译以下句子：我爱北京", ["我爱北京"]),
    ("列出三个中国城市", ["三"]),
    ("《红楼梦》的作者是谁？", ["《红楼梦》"]),
    ("<image>Who are they?", ["<image>"]),
])
def test_content_spans(text: str, spans: list[str]) -> None:
    assert SPEC.protected_spans(text) == spans


def test_user_patterns_come_first_and_a_protect_group_narrows_the_span() -> None:
    spec = content_spec((r"\[(?P<protect>\d+, \d+)\]",))
    assert spec.protected_spans("Describe region [10, 20] of 3 images.") == ["10, 20", "3 images"]


def test_classify_by_rows_and_fields() -> None:
    assert classify("Answer the question {question}", 1, DEFAULT_SPEC) == TEMPLATE
    assert classify("<image>Who are they?", 1, DEFAULT_SPEC) == INSTANCE  # a media token is no field
    assert classify("<image>Who are they?", 2, DEFAULT_SPEC) == TEMPLATE
    assert classify("Describe a process of making crepes.", 1, DEFAULT_SPEC) == INSTANCE


@pytest.mark.parametrize(("seed", "paraphrase", "reason"), [
    ("Give an example of a job that a computer can do better than a human being.",
     "Give an example of a job that a human can do better than a computer.", "comparison"),
    ("Why is he on the ground?", "Why is he not on the ground?", None),  # negation: every kind, task_shape
    ("Explain the differences between birds and mammals", "Describe how birds and mammals differ", None),
    ("Rewrite the sentence without changing its meaning.", "Reword the sentence without altering its meaning.", None),
    ("Which animal is bigger than a cat?", "Name an animal that is bigger than a cat.", None),
    ("Why is he on the ground?", "What is he doing on the ground?", "question_word"),
    ("Why is he on the ground?", "Explain the reason he is on the ground.", None),
    ("Who is he?", "What is he?", "question_word"),
    ("How many slices are left?", "Count the slices that are left.", None),
])
def test_answer_changes(seed: str, paraphrase: str, reason: str | None) -> None:
    assert answer_changes(seed, paraphrase) == reason


def test_kinds_of_llamafactory_demo_data(tmp_path: Path) -> None:
    alpaca = load_seed_set(DEMO, dataset="alpaca_en_demo_sample")
    assert len(alpaca.seeds) == 60 and {s.kind for s in alpaca.seeds} == {INSTANCE}
    mllm = load_seed_set(DEMO, dataset="mllm_demo", all_turns=True)
    assert len(mllm.seeds) == 12 and {s.kind for s in mllm.seeds} == {INSTANCE}
    assert mllm.seeds[0].text == "<image>Who are they?"
    bare = load_seed_set(DEMO, dataset="mllm_demo", all_turns=True, strip_media=True).seeds
    assert [s.text for s in bare[:2]] == ["Who are they?", "What are they doing?"]  # as the hook looks them up
    rows = [{"instruction": "Summarize the text.", "input": f"text {i}", "output": "x"} for i in range(3)]
    rows.append({"instruction": "Write a haiku about rain.", "input": "", "output": "x"})
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"d": {"file_name": "d.json"}}))
    kinds = {s.text: s.kind for s in load_seed_set(tmp_path, dataset="d").seeds}
    assert kinds == {"Summarize the text.": TEMPLATE, "Write a haiku about rain.": INSTANCE}
    assert {s.kind for s in load_seed_set(tmp_path, dataset="d", kind="template").seeds} == {TEMPLATE}
    with pytest.raises(InstrAugError, match="instruction kind"):
        load_seed_set(tmp_path, dataset="d", kind="rows")


class ScriptedBackend:
    """Replies fixed per masked instruction: what a rewriter may return for an instance-level request."""

    name = "scripted"
    model_id = "scripted"
    supports_constraints = False

    def __init__(self, replies: dict[str, list[str]]):
        self.replies = replies
        self.seen: list[str] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        out = []
        for r in requests:
            masked = r.messages[-1][1].split("\n", 1)[1].split(": ", 1)[1]
            self.seen.append(masked)
            out.append(self.replies[masked][r.sample_index % len(self.replies[masked])])
        return out

    def close(self) -> None:
        pass


def test_pregen_protects_content_and_checks_answers(tmp_path: Path) -> None:
    seed = SeedInstruction("default", "default/0", 'Change the verb "sped" to a synonym in: The car sped quickly past 3 trees.',
                INSTANCE)
    masked = 'Change the verb {A} to a synonym in: The car sped quickly past {B}.'  # "3 trees": number + what it counts
    replies = {masked: [
        'Replace the verb {A} with a synonym in: The car sped quickly past {B}.',  # kept
        'Replace the verb {A} with an antonym in: The car sped quickly past {B}.',  # contrast flipped
        'Replace the verb with a synonym in: The car sped quickly past {B}.',  # quoted word dropped
        "Don't change the verb {A} in: The car sped quickly past {B}.",  # negation added
    ]}
    backend = ScriptedBackend(replies)
    config = PregenConfig(samples_per_prompt=4, filters=FilterConfig(min_fidelity=0, instance_min_fidelity=0))
    result = run_pregen([seed], backend, load_meta_prompts(1, 0), config, GenerationCache(tmp_path / "c.jsonl"))
    assert set(backend.seen) == {masked}  # the rewriter never saw the protected content
    kept = [r for r in result.records if not r.is_seed]
    assert [r.text for r in kept] == ['Replace the verb "sped" with a synonym in: The car sped quickly past 3 trees.']
    assert kept[0].kind == INSTANCE and result.records[0].kind == INSTANCE
    counts = result.counts
    filters = counts["filters"]
    assert filters["task_shape"] == {"rejected": 2, "reasons": {"contrast": 1, "negation": 1}}
    assert filters["placeholders"]["rejected"] == 1
    assert counts["kinds"] == {INSTANCE: {"seeds": 1, "generated": 4, "candidates": 4, "kept": 1}}
    assert counts["answer_check"]["rules"] == ["task_shape", "answer"]
    stats = compute_stats(result.records, {"kinds": counts["kinds"]})
    assert [(y.language, y.seeds, y.generated, y.kept) for y in stats.kinds] == [(INSTANCE, 1, 4, 1)]
    assert "| instance | 1 | 4 | 1 | 25.0% | 1.00 |" in render_markdown(stats, title="t")


def _pool(tmp_path: Path, checked: bool | None) -> Path:
    records = [
        PoolRecord("t", "t/0", "Summarize the text.", "Summarize the text.", kind=TEMPLATE),
        PoolRecord("t", "t/0", "Summarize the text.", "Give a summary of the text.", "single", kind=TEMPLATE),
        PoolRecord("t", "t/1", "Write a haiku about rain.", "Write a haiku about rain.", kind=INSTANCE),
        PoolRecord("t", "t/1", "Write a haiku about rain.", "Compose a haiku on rain.", "single", kind=INSTANCE),
    ]
    manifest = {} if checked is None else {"answer_check": {"rules": {}} if checked else None}
    write_pool(tmp_path / "pool", records, manifest)
    return tmp_path / "pool"


@pytest.mark.parametrize(("checked", "scope", "instance_kept"), [
    (True, "all", True), (True, "template", False), (False, "template", False), (None, "template", False),
])
def test_scoped_records(tmp_path: Path, checked: bool | None, scope: str, instance_kept: bool) -> None:
    pool = Pool.load(_pool(tmp_path, checked), scope=scope)
    assert pool.variants("Summarize the text.") == ["Give a summary of the text."]
    assert pool.variants("Write a haiku about rain.") == (["Compose a haiku on rain."] if instance_kept else [])


def test_scope_all_needs_the_answer_check(tmp_path: Path) -> None:
    with pytest.raises(InstrAugError, match=r"scope all: .*pool.jsonl has 1 instance-level paraphrase"):
        scoped_records(_pool(tmp_path, False), "all")


def test_build_scope_template_keeps_instance_rows(tmp_path: Path) -> None:
    pool = _pool(tmp_path, True)
    rows = [{"instruction": "Summarize the text.", "input": "a", "output": "x"},
            {"instruction": "Write a haiku about rain.", "input": "", "output": "y"}]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"d": {"file_name": "d.json"}}))
    for scope, haiku in (("template", "Write a haiku about rain."), ("all", "Compose a haiku on rain.")):
        summary = build_dataset(dataset=tmp_path / "dataset_info.json", name="d", pools=[pool], epsilon=0.0,
                                output_name=f"d_{scope}", scope=scope)
        out = json.loads(Path(summary["file"]).read_text())
        assert [r["instruction"] for r in out] == ["Give a summary of the text.", haiku]


def test_hook_key_instraug_scope(tmp_path: Path) -> None:
    pool = _pool(tmp_path, True)
    config = parse_config({"instraug_pool": str(pool), "instraug_scope": "template"})
    assert config.scope == "template"
    with pytest.raises(InstrAugError, match=r"instraug_scope.*template"):
        parse_config({"instraug_pool": str(pool), "instraug_scope": "rows"})
    assert parse_config({"instraug_pool": str(pool)}).scope == "template"  # instance rows only when asked


@pytest.mark.slow
def test_smollm2_keeps_quotes_and_numbers_verbatim(tmp_path: Path, smollm2_backend) -> None:
    rows = json.loads((DEMO / "alpaca_en_demo_sample.json").read_text())
    seeds = [SeedInstruction("default", f"default/{i}", r["instruction"], INSTANCE) for i, r in enumerate(rows)
             if re.search(r'["\'`]|\d', r["instruction"])]
    assert len(seeds) >= 15
    config = PregenConfig(batch_size=16)
    result = run_pregen(seeds, smollm2_backend, load_meta_prompts(3, 0), config, GenerationCache(tmp_path / "c.jsonl"))
    kept = [r for r in result.records if not r.is_seed]
    assert kept, "the real rewriter kept no paraphrase of an instance-level instruction"
    for record in kept:
        for span in re.findall(r'"[^"]+"|\'[^\']+\'|`[^`]+`|\d+', record.seed):
            if span.startswith("'") and SPEC.protected_spans(record.seed).count(span) == 0:
                continue  # an apostrophe inside a word, not a quote
            assert record.text.count(span) == record.seed.count(span), (record.seed, record.text, span)


@pytest.mark.parametrize(("seed", "paraphrase", "reason"), [
    ("What kind of disaster happens in the image? If no disaster happens, select not disaster.{options_str}",
     "What kind of disaster does the image have? If no disaster happens, select disaster. {options_str}", "negation"),
    ("Why is he on the ground?", "Why is he not on the ground?", "negation"),
    ("他为什么在地上？", "他为什么不在地上？", "negation"),
    ("List the advantages of solar power.", "List the drawbacks of solar power.", "contrast"),
    ("Generate a sentence with a synonym of happy.", "Generate a sentence with an antonym of happy.", "contrast"),
    ("What is the man holding in his left hand?", "What is the man holding in his right hand?", "contrast"),
    ("What color is the first shape?", "What color is the second shape?", "contrast"),
    ("列出太阳能的优点", "列出太阳能的缺点", "contrast"),
    ('Can the content of the image support "{text}"?{options_str}',
     'What does the content of the image support "{text}"?{options_str}', "question_kind"),
    ("What kind of disaster is in the image?{options_str}", "Select whether the image shows a disaster.{options_str}",
     "question_kind"),
    ("There is some text on the image. Answer {question} based on the text in image.",
     "What is the text? {question} is the image.", "placeholder_role"),
    ('Find the region in image that "{text}" describes.', 'Describe the region in image that "{text}" describes.',
     "grounding"),
    # faithful rewordings pass
    ('Find the region in image that "{text}" describes.', 'Identify the region in image that {text} describes.', None),
    ("Given a triangle, find out its perimeter.", "Determine the perimeter of the triangle.", None),  # no locating
    ("Is the traffic light red or green?", "What color is the traffic light?", None),  # a choice, as a wh-question
    ('Does "{text}" describe the image? {options}', "Is {text} a description of the image? {options}", None),
    ("{region} is a region in image. Describe it.", "Describe {region}, a region in the image.", None),
    ("Look at the image and tell me what is the content.", "Describe what the image shows.", None),
    ("请描述这张图片。", "请说明这张图片的内容。", None),
])
def test_task_shape_change(seed: str, paraphrase: str, reason: str | None) -> None:
    assert task_shape_change(seed, paraphrase) == reason


def test_question_kind() -> None:
    assert [question_kind(t) for t in ("Is the cat black?", "Question: What is shown?", "Decide if {text} fits.",
                                       "Describe the image.", "{A}? Then answer.")] == ["polar", "wh", "polar", None, None]


def _answer_script():
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("answer_check", ROOT / "benchmarks" / "answer_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_answer_labels_cover_the_three_sources() -> None:
    script = _answer_script()
    rows, held = script.load_labels(), script.load_labels(script.VALIDATION)
    assert len(rows) >= 100 and {r["source"] for r in rows} == {"alpaca", "mllm", "llava"}
    assert len(held) >= 100 and not {r["seed"] for r in held} & {r["seed"] for r in rows}
    for row in rows + held:
        assert isinstance(row["answer_ok"], bool) and row["seed"] != row["paraphrase"]
        assert row["answer_ok"] or row["note"]


def test_answer_threshold_rule_by_hand() -> None:
    script = _answer_script()
    rows = [{"seed": s, "answer_ok": ok} for s, ok in [("a", True), ("a", False), ("b", True), ("c", True)]]
    scores, rules = [0.9, 0.8, 0.95, 0.6], [True, True, True, False]
    point = script.point(rows, scores, rules, 0.85)
    assert (point.kept, point.correct_share, point.correct_kept, point.per_instruction) == (2, 1.0, 0.6667, 0.667)
    assert script.choose_threshold(rows, scores, rules, 0.95).threshold == 0.81  # lowest reaching 95% right


@pytest.mark.slow
def test_answer_check_reproduces_the_published_figures() -> None:
    script = _answer_script()
    published = json.loads((ROOT / "benchmarks" / "results" / "answer_check.json").read_text())
    from instraug_plugin.core.filters import DEFAULT_INSTANCE_MIN_FIDELITY

    assert published["default"]["threshold"] == published["chosen"]["threshold"] == DEFAULT_INSTANCE_MIN_FIDELITY
    for rows, figures in ((script.load_labels(), published), (script.load_labels(script.VALIDATION),
                                                             published["validation"])):
        result = script.evaluate(rows, script.score_pairs("minilm", rows), 0.95, DEFAULT_INSTANCE_MIN_FIDELITY)
        for key in ("no_check", "rules_only", "default"):
            assert result[key] == pytest.approx(figures[key], abs=1e-4), key
    assert published["default"]["correct_share"] >= 0.95  # on the labels it was chosen on; validation: README


@pytest.mark.parametrize(("scope", "expected"), [
    ("template", {("Describe the image.", TEMPLATE)}),
    ("all", {("Describe the image.", TEMPLATE), ("Why is he on the ground?", INSTANCE)}),
])
def test_live_mode_classifies_training_instructions(scope: str, expected: set[tuple[str, str]]) -> None:
    from datasets import Dataset

    from instraug_plugin.integrations.llamafactory.live import LiveRefresher
    from instraug_plugin.integrations.llamafactory.session import INDEX_COLUMN, start_session

    session = start_session(parse_config({"instraug_mode": "live", "instraug_scope": scope}), 42)
    prompts = [[{"role": "user", "content": text}] for text in
               ("<image>Describe the image.", "Describe the image.<image>", "<image>\nWhy is he on the ground?")]
    session.train_dataset = Dataset.from_dict({"_prompt": prompts, INDEX_COLUMN: [0, 1, 2]})
    assert {(seed.text, seed.kind) for seed in LiveRefresher(session).seeds()} == expected


@pytest.mark.slow
@pytest.mark.parametrize(("dataset", "extra", "seeds"), [
    ("mllm_demo", ["--all-turns"], 12),
    ("alpaca_en_demo_sample", ["--limit", "8"], 8),
])
def test_pregen_on_llamafactory_demo_data_reports_kinds(tmp_path: Path, dataset: str, extra: list[str],
                                                        seeds: int) -> None:
    import subprocess
    import sys

    out = tmp_path / "pool"
    command = [sys.executable, "-m", "instraug_plugin", "pregen", str(DEMO / "dataset_info.json"), "--dataset", dataset,
               "--out", str(out), "--direct-prompts", "2", "--guided-prompts", "0", *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"by kind: instance {seeds} seeds" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kinds"]["instance"]["seeds"] == seeds and manifest["kinds"]["instance"]["generated"] == 2 * seeds
    assert manifest["answer_check"]["instance_min_fidelity"] == 0.88
    records = [json.loads(line) for line in (out / "pool.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in records} == {INSTANCE} and not any(r["seed"].startswith("<image>") for r in records)
    stats = subprocess.run([sys.executable, "-m", "instraug_plugin", "stats", str(out), "--no-embeddings"],
                           capture_output=True, text=True, timeout=300)
    assert stats.returncode == 0, stats.stderr[-2000:]
    assert "yield per kind" in stats.stdout and "instance=" in stats.stdout


def test_reasons_are_counted_once_per_rejected_candidate_with_a_judge() -> None:
    from instraug_plugin.core.filters import Candidate, FilterChain

    class Judge:
        name = "ones"

        def score(self, pairs):
            return [1.0] * len(pairs)

    chain = FilterChain(FilterConfig(min_fidelity=0.5), judge=Judge())
    seed = "What color is the first shape?"
    verdicts = chain.select([Candidate(t, seed, seed, "t/0", "t") for t in
                             ("What color is the last shape?", "Which colour does the first shape have?")])
    assert verdicts == [False, True]
    assert chain.rejected["task_shape"] == 1 and chain.reasons("task_shape") == {"reasons": {"contrast": 1}}


def test_instance_seeds_are_scored_by_their_own_judge_and_threshold() -> None:
    from instraug_plugin.core.filters import Candidate, FilterChain

    class Judge:
        def __init__(self, name: str, value: float):
            self.name, self.value, self.pairs = name, value, []

        def score(self, pairs):
            self.pairs += pairs
            return [self.value] * len(pairs)

    templates, instances = Judge("templates", 0.6), Judge("instances", 0.85)
    chain = FilterChain(FilterConfig(min_fidelity=0.5, instance_min_fidelity=0.9), judge=templates,
                        instance_judge=instances)
    template = Candidate("Give the colour of the first shape.", "What color is the first shape?",
                         "What color is the first shape?", "t/0", "t")
    instance = Candidate("Who is this person?", "Who is he?", "Who is he?", "i/0", "i", kind=INSTANCE)
    assert chain.select([template, instance]) == [True, False]  # 0.6 >= 0.5; 0.85 < 0.9
    assert len(templates.pairs) == 1 and len(instances.pairs) == 1
    assert chain.fidelity_summary()["instance_judge"] == "instances"


def test_build_cli_scope_all_needs_the_answer_check(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from instraug_plugin.cli import app

    rows = [{"instruction": "Write a haiku about rain.", "input": "", "output": "y"}]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"d": {"file_name": "d.json"}}))
    unchecked = _pool(tmp_path / "unchecked", False)
    result = CliRunner().invoke(app, ["build", str(tmp_path / "dataset_info.json"), "--name", "d", "--pool",
                                      str(unchecked), "--scope", "all", "--epsilon", "0"])
    assert result.exit_code != 0 and "scope all" in str(result.exception or result.output)
    checked = _pool(tmp_path / "checked", True)
    result = CliRunner().invoke(app, ["build", str(tmp_path / "dataset_info.json"), "--name", "d", "--pool",
                                      str(checked), "--scope", "all", "--epsilon", "0", "--output-name", "d_all"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "d_all.json").read_text())[0]["instruction"] == "Compose a haiku on rain."
