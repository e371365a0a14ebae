"""Outputs commit whole or not at all (`core.commit`): fault injection on each multi-file writer, SIGTERM
in the middle of a commit, and the folder byte-identical afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from instraug_plugin.build import build_dataset
from instraug_plugin.core import commit
from instraug_plugin.core.commit import commit_files
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.pool import PoolRecord, read_records, write_pool
from instraug_plugin.evaluation.scenes import make_scenes_benchmark
from instraug_plugin.evaluation.shapes import make_benchmark

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "dataset_info"


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) under `root`, hidden ones included."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.fixture
def fail_second_replace(monkeypatch: pytest.MonkeyPatch) -> None:
    """os.replace fails when it would put the second new file into place (after the first is in place)."""
    real = os.replace
    placed: list[str] = []

    def replace(src: str | Path, dst: str | Path) -> None:
        if ".tmp-" in Path(src).name:
            placed.append(str(dst))
            if len(placed) == 2:
                raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(commit.os, "replace", replace)


def test_commit_writes_every_file_and_replaces_old_ones(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("old a")
    commit_files({tmp_path / "a.txt": "new a", tmp_path / "sub" / "b.bin": b"\x00b",
                  tmp_path / "c.jsonl": lambda fh: fh.write("line\n")})
    assert snapshot(tmp_path) == {"a.txt": b"new a", "c.jsonl": b"line\n", "sub": None, "sub/b.bin": b"\x00b"}


def test_commit_failure_restores_the_old_state_and_names_the_file(tmp_path: Path, fail_second_replace: None) -> None:
    (tmp_path / "a.txt").write_text("old a")
    (tmp_path / "b.txt").write_text("old b")
    before = snapshot(tmp_path)
    with pytest.raises(InstrAugError, match=r"b\.txt: cannot write \(No space left on device\); nothing was changed"):
        commit_files({tmp_path / "a.txt": "new a", tmp_path / "b.txt": "new b", tmp_path / "new" / "c.txt": "c"})
    assert snapshot(tmp_path) == before


def test_commit_failure_while_writing_leaves_no_temp_file(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("old a")

    def disk_full(fh: object) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(InstrAugError, match=r"pool\.jsonl: cannot write \(No space left on device\)"):
        commit_files({tmp_path / "a.txt": "new a", tmp_path / "pool.jsonl": disk_full})
    assert snapshot(tmp_path) == {"a.txt": b"old a"}



def test_write_pool_failure_keeps_the_old_pool_and_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "pool"
    old = PoolRecord("t", "t/0", "Name it.", "Name it.")
    write_pool(folder, [old], {"format": "instraug-pool/1", "run": 1})
    before = snapshot(tmp_path)
    real = os.replace

    def replace(src: str | Path, dst: str | Path) -> None:
        if Path(dst).name == "manifest.json" and ".tmp-" in Path(src).name:
            raise PermissionError(13, "Permission denied")
        real(src, dst)

    monkeypatch.setattr(commit.os, "replace", replace)
    new = PoolRecord("t", "t/0", "Name it.", "Say what it is.", "single", round=1)
    with pytest.raises(InstrAugError, match=r"manifest\.json: cannot write \(Permission denied\)"):
        write_pool(folder, [old, new], {"format": "instraug-pool/1", "run": 2})
    assert snapshot(tmp_path) == before
    assert [r.text for r in read_records(folder)] == ["Name it."]


def test_write_pool_refuses_nan_in_the_manifest(tmp_path: Path) -> None:
    with pytest.raises(InstrAugError, match=r"manifest\.json: Out of range float values are not JSON compliant"):
        write_pool(tmp_path / "p", [], {"top_p": float("nan")})
    assert not (tmp_path / "p").exists()


def test_build_failure_leaves_neither_file(tmp_path: Path, fail_second_replace: None) -> None:
    """Issue reproduction: a failing dataset_info.json write left the data file behind, blocking the rerun."""
    out = tmp_path / "out"
    with pytest.raises(InstrAugError, match=r"dataset_info\.json: cannot write"):
        build_dataset(dataset=DEMO, name="instraug_demo", pools=[DEMO / "instraug_demo" / "pool"], output_dir=out,
                      output_name="demo_aug")
    assert not out.exists()


def test_make_benchmark_failure_keeps_the_earlier_benchmark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_benchmark(tmp_path / "b", train_per_task=1, test_per_task=1, image_size=32)
    before = snapshot(tmp_path)
    real = os.replace
    calls = []

    def replace(src: str | Path, dst: str | Path) -> None:
        calls.append(dst)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(commit.os, "replace", replace)
    with pytest.raises(InstrAugError, match="nothing was changed"):
        make_benchmark(tmp_path / "b", train_per_task=2, test_per_task=1, image_size=40, overwrite=True)
    assert snapshot(tmp_path) == before


def test_make_benchmark_overwrite_keeps_a_users_own_image(tmp_path: Path) -> None:
    """Issue reproduction: --overwrite deleted a user's file in images/."""
    bench = tmp_path / "b"
    make_benchmark(bench, train_per_task=2, test_per_task=1, image_size=32)
    (bench / "images" / "train" / "my_photo.png").write_bytes(b"mine")
    own = sorted(p.name for p in (bench / "images" / "train").glob("*-0000[0-9].png"))
    make_benchmark(bench, train_per_task=1, test_per_task=1, image_size=32, overwrite=True)
    assert (bench / "images" / "train" / "my_photo.png").read_bytes() == b"mine"
    left = sorted(p.name for p in (bench / "images" / "train").glob("*-0000[0-9].png"))
    assert left == [name for name in own if name.endswith("-00000.png")]  # the earlier run's extra images went


def test_scenes_benchmark_commits_its_four_files(tmp_path: Path, fail_second_replace: None) -> None:
    with pytest.raises(InstrAugError):
        make_scenes_benchmark(tmp_path / "s", train_per_task=1, test_per_task=1)
    assert snapshot(tmp_path) == {}


def test_sigterm_during_a_commit_leaves_the_old_state_and_no_temp_file(tmp_path: Path) -> None:
    """A writer that streams slowly is killed with SIGTERM half-way: old files intact, nothing left behind."""
    (tmp_path / "a.txt").write_text("old a")
    (tmp_path / "big.jsonl").write_text("old big\n")
    before = snapshot(tmp_path)
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from instraug_plugin.core.commit import commit_files
        root = Path({str(tmp_path)!r})
        def slow(fh):
            for i in range(10_000):
                fh.write("x" * 1000 + "\\n")
                if i == 100:
                    fh.flush()
                    print("writing", flush=True)
                time.sleep(0.001)
        commit_files({{root / "a.txt": "new a", root / "big.jsonl": slow}})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    assert any(".tmp-" in p.name for p in tmp_path.iterdir())  # mid-commit: the temp files exist
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    time.sleep(0.1)
    assert snapshot(tmp_path) == before
