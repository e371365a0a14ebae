"""`instraug-plugin build`: augmented copies of the bundled demo dataset (real files, real CLI)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from instraug_plugin.build import build_dataset
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.placeholders import DEFAULT_SPEC

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "dataset_info", tmp_path / "data")
    return tmp_path / "data"


def _user_turns(row: dict) -> list[str]:
    return [m["content"] for m in row["messages"] if m["role"] == "user"]


def test_build_from_dataset_info_keeps_instances_answers_images_and_placeholders(data_dir: Path) -> None:
    pool = data_dir / "instraug_demo" / "pool"
    summary = build_dataset(dataset=data_dir, name="instraug_demo", pools=[pool], epsilon=0.3, seed=1, copies=3,
                            task_column="task")
    source = json.loads((data_dir / "instraug_demo" / "demo.json").read_text())
    built = json.loads(Path(summary["file"]).read_text())
    assert len(built) == 3 * len(source) == summary["rows"]
    assert summary["rewritten"] > 0 and summary["no_entry"] > 0
    for i, row in enumerate(built):
        original = source[i // 3]
        assert row["images"] == original["images"]
        assert [m for m in row["messages"] if m["role"] == "assistant"] == \
            [m for m in original["messages"] if m["role"] == "assistant"]
        for new, old in zip(_user_turns(row), _user_turns(original)):
            assert DEFAULT_SPEC.same_placeholders(old, new)
    assert any(_user_turns(r) != _user_turns(source[i // 3]) for i, r in enumerate(built))
    info = json.loads((data_dir / "dataset_info.json").read_text())
    assert info["instraug_demo_instraug"]["file_name"] == "instraug_demo_instraug.json"
    assert info["instraug_demo_instraug"]["columns"] == info["instraug_demo"]["columns"]


def test_build_is_deterministic_and_epsilon_one_is_the_baseline(data_dir: Path, tmp_path: Path) -> None:
    pool = data_dir / "instraug_demo" / "pool"
    args = {"dataset": data_dir, "name": "instraug_demo", "pools": [pool], "seed": 5}
    first = Path(build_dataset(**args, output_dir=tmp_path / "a")["file"]).read_text()
    second = Path(build_dataset(**args, output_dir=tmp_path / "b")["file"]).read_text()
    assert first == second
    baseline = build_dataset(**args, epsilon=1.0, output_dir=tmp_path / "c")
    assert baseline["rewritten"] == 0
    # Written elsewhere: relative image paths become absolute paths to the same files.
    rows = json.loads(Path(baseline["file"]).read_text())
    assert all(Path(p).is_absolute() and Path(p).is_file() for r in rows for p in r["images"])


def test_build_cli_from_llava_json(data_dir: Path, tmp_path: Path) -> None:
    llava = data_dir / "instraug_demo" / "demo_llava.json"
    out = subprocess.run(
        [str(Path(sys.executable).with_name("instraug-plugin")), "build", str(llava), "--pool", str(data_dir / "instraug_demo" / "pool"),
         "--epsilon", "0", "--all-turns", "--output-dir", str(tmp_path / "out"), "--output-name", "demo_aug"],
        check=False, capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "rewritten" in out.stdout
    rows = json.loads((tmp_path / "out" / "demo_aug.json").read_text())
    source = json.loads(llava.read_text())
    changed = sum(r["conversations"][0]["value"] != s["conversations"][0]["value"] for r, s in zip(rows, source))
    assert changed >= len(source) // 2
    assert all(r["conversations"][0]["value"].count("<image>") == 1 for r in rows)
    info = json.loads((tmp_path / "out" / "dataset_info.json").read_text())
    assert info["demo_aug"]["columns"] == {"messages": "conversations", "images": "image"}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": "nope"}, r"unknown dataset 'nope' \(known: "),
    ({"name": None}, "--name is required"),
    ({"name": "instraug_demo", "epsilon": 1.5}, "--epsilon"),
    ({"name": "instraug_demo", "task_column": "missing"}, r"demo\.json:row 0: no value in task column 'missing'"),
])
def test_build_errors_name_the_problem(data_dir: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(InstrAugError, match=message):
        build_dataset(dataset=data_dir, pools=[data_dir / "instraug_demo" / "pool"], **kwargs)


def test_build_bad_row_is_named(data_dir: Path) -> None:
    bad = data_dir / "bad.json"
    ok = [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}]
    bad.write_text(json.dumps([{"conversations": ok}, {"conversations": "oops"}]))
    with pytest.raises(InstrAugError, match=r"bad\.json:row 1: column 'conversations' is not a list of messages"):
        build_dataset(dataset=bad, name=None, pools=[data_dir / "instraug_demo" / "pool"])


# ---------------------------------------------------------------- alpaca rows with `input`

ALPACA = [
    {"instruction": "Translate to French.", "input": "Good morning.", "output": "Bonjour.", "history": []},
    {"instruction": "Translate to French.", "input": "Thank you.", "output": "Merci."},
    {"instruction": "Name a color.", "input": "", "output": "Red.",
     "history": [["Translate to French.", "Traduire en français."]]},
]
PARAPHRASES = {"Translate to French.": ["Render this in French.", "Give the French version."],
               "Name a color.": ["Say one color."]}


def _alpaca_dir(tmp_path: Path) -> Path:
    """An alpaca dataset and a pool made from the seeds our reader extracts (as pregen would)."""
    from instraug_plugin.core.pool import Pool, PoolRecord, write_pool
    from instraug_plugin.inputs import load_seeds

    data = tmp_path / "alpaca"
    data.mkdir()
    (data / "rows.json").write_text(json.dumps(ALPACA))
    (data / "dataset_info.json").write_text(json.dumps({"al": {"file_name": "rows.json",
                                                                "columns": {"prompt": "instruction", "query": "input",
                                                                            "response": "output",
                                                                            "history": "history"}}}))
    seeds = load_seeds(data / "dataset_info.json", dataset="al")
    assert [s.text for s in seeds] == ["Translate to French.", "Name a color."]  # one seed per instruction
    records = [PoolRecord(s.task, s.seed_id, s.text, s.text) for s in seeds]
    records += [PoolRecord(s.task, s.seed_id, s.text, p, strategy="single") for s in seeds for p in PARAPHRASES[s.text]]
    write_pool(data / "pool", records, {})
    assert len(Pool.load(data / "pool")) == 5
    return data


def test_build_alpaca_rewrites_the_instruction_and_keeps_input_and_answer(tmp_path: Path) -> None:
    data = _alpaca_dir(tmp_path)
    summary = build_dataset(dataset=data, name="al", pools=[data / "pool"], epsilon=0.0, seed=2, copies=2)
    assert summary["rewritten"] == 6 and summary["no_entry"] == 0
    built = json.loads(Path(summary["file"]).read_text())
    for i, row in enumerate(built):
        source = ALPACA[i // 2]
        assert (row["input"], row["output"]) == (source["input"], source["output"])
        if source.get("history"):  # the first user turn is history[0]'s prompt: only it changes
            assert row["instruction"] == source["instruction"]
            assert row["history"][0][0] in PARAPHRASES["Translate to French."]
            assert row["history"][0][1] == source["history"][0][1]
        else:
            assert row["instruction"] in PARAPHRASES[source["instruction"]]
            assert row.get("history") == source.get("history")
    info = json.loads((data / "dataset_info.json").read_text())
    assert info["al_instraug"]["columns"] == info["al"]["columns"]


def test_build_alpaca_all_turns_rewrites_history_prompts(tmp_path: Path) -> None:
    data = _alpaca_dir(tmp_path)
    summary = build_dataset(dataset=data, name="al", pools=[data / "pool"], epsilon=0.0, seed=2, all_turns=True)
    row = json.loads(Path(summary["file"]).read_text())[2]
    assert row["history"][0][0] in PARAPHRASES["Translate to French."]
    assert row["history"][0][1] == "Traduire en français."
    assert row["instruction"] in PARAPHRASES["Name a color."] and row["output"] == "Red."


def test_build_alpaca_same_turn_as_the_training_hook(tmp_path: Path) -> None:
    """build and the hook share `rewrite_messages`: LLaMA-Factory's joined turn gets the same wording."""
    from instraug_plugin.core.pool import Pool
    from instraug_plugin.core.sampling import InstructionRewriter, rewrite_messages

    data = _alpaca_dir(tmp_path)
    built = json.loads(Path(build_dataset(dataset=data, name="al", pools=[data / "pool"], epsilon=0.0,
                                          seed=9)["file"]).read_text())
    rewriter = InstructionRewriter(Pool.load(data / "pool"), 0.0, 9)
    for index, (row, new) in enumerate(zip(ALPACA, built)):
        turn = {"role": "user", "content": "\n".join(p for p in (row["instruction"], row["input"]) if p)}
        messages = [m for q, a in row.get("history", []) for m in ({"role": "user", "content": q},
                                                                  {"role": "assistant", "content": a})] + [turn]
        hooked, _ = rewrite_messages(rewriter, messages, task=None, epoch=0, index=index, all_turns=False)
        if not row.get("history"):
            assert hooked[-1]["content"] == "\n".join(p for p in (new["instruction"], new["input"]) if p)


@pytest.mark.parametrize(("info", "message"), [
    ({"al": {"file_name": "missing.json"}}, r"^dataset file not found: .*missing\.json$"),
    ({"al": ["rows.json"]}, r"dataset_info\.json:al: entry must be an object, got list$"),
    ({"al": {"file_name": "rows.json", "columns": "instruction"}}, r"'columns' must be an object$"),
    ({"al": {"file_name": "rows.json", "formatting": "parquet"}}, r"unsupported formatting 'parquet'"),
])
def test_build_bad_dataset_info_is_one_line(tmp_path: Path, info: dict, message: str) -> None:
    (tmp_path / "rows.json").write_text(json.dumps(ALPACA))
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(InstrAugError, match=message) as exc:
        build_dataset(dataset=tmp_path, name="al", pools=[REPO / "dataset_info" / "instraug_demo" / "pool"])
    assert "\n" not in str(exc.value)


def test_build_refuses_to_overwrite_its_source(data_dir: Path) -> None:
    llava = data_dir / "instraug_demo" / "demo_llava.json"
    before = llava.read_text()
    pool = data_dir / "instraug_demo" / "pool"
    with pytest.raises(InstrAugError, match=r"demo_llava\.json: is the source data of"):
        build_dataset(dataset=llava, name=None, pools=[pool], output_name="demo_llava")
    with pytest.raises(InstrAugError, match=r"is the source data of .*dataset_info\.json:instraug_demo"):
        build_dataset(dataset=data_dir, name="instraug_demo", pools=[pool], output_dir=data_dir / "instraug_demo",
                      output_name="demo")
    with pytest.raises(InstrAugError, match=r"would overwrite dataset_info\.json"):
        build_dataset(dataset=data_dir, name="instraug_demo", pools=[pool], output_name="dataset_info")
    assert llava.read_text() == before
