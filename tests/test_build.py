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
    ({"name": "nope"}, "no dataset named 'nope'"),
    ({"name": None}, "--name is required"),
    ({"name": "instraug_demo", "epsilon": 1.5}, "--epsilon"),
    ({"name": "instraug_demo", "task_column": "missing"}, "row 0 has no task column 'missing'"),
])
def test_build_errors_name_the_problem(data_dir: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(InstrAugError, match=message):
        build_dataset(dataset=data_dir, pools=[data_dir / "instraug_demo" / "pool"], **kwargs)


def test_build_bad_row_is_named(data_dir: Path) -> None:
    bad = data_dir / "bad.json"
    bad.write_text(json.dumps([{"conversations": []}, {"conversations": "oops"}]))
    with pytest.raises(InstrAugError, match="row 1 has no list column 'conversations'"):
        build_dataset(dataset=bad, name=None, pools=[data_dir / "instraug_demo" / "pool"])
