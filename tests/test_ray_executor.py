"""`pregen --executor ray`: real Ray actors serving the real SmolLM2 rewriter, against the local executor.

One local Ray instance (2 CPUs) serves the module; each CLI run joins it with `--ray-address` and
starts 2 one-CPU actors. Ray sets a one-CPU actor's OMP_NUM_THREADS to 1, so the local run gets
OMP_NUM_THREADS=1 too: both sides sample the same seeded batches with the same torch thread count,
the one setting through which CPU floating point could differ between them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.generation.pipeline import PregenConfig, pregen_to_directory
from instraug_plugin.generation.prompts import load_meta_prompts
from instraug_plugin.generation.ray_executor import RayExecutor
from instraug_plugin.inputs import load_seeds
from instraug_plugin.resources import bundled_templates_file

CLI = [sys.executable, "-m", "instraug_plugin", "pregen"]
BATCH_SIZE = 3
# 6 seeds x 2 meta-prompts = 12 requests = 4 batches of 3: both workers serve batches.
PREGEN_ARGS = [
    str(bundled_templates_file()), "--tasks", "image_caption,GC", "--limit", "6",
    "--direct-prompts", "1", "--guided-prompts", "1", "--batch-size", str(BATCH_SIZE), "--device", "cpu",
]


def _pregen(out: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *PREGEN_ARGS, "--out", str(out), *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def ray_cluster(offline_env: dict[str, str]) -> Iterator[tuple[list[str], dict[str, str]]]:
    """A local Ray instance for this module: the pregen arguments and environment that join it.

    Started without OMP_NUM_THREADS, so Ray sets 1 in each one-CPU actor. Ray enables token
    authentication (RAY_AUTH_MODE) in the process that starts it; the CLI joins with the same mode.
    """
    import ray

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("OMP_NUM_THREADS", raising=False)
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False)
    address = ray.get_runtime_context().gcs_address
    auth = {"RAY_AUTH_MODE": os.environ["RAY_AUTH_MODE"]} if "RAY_AUTH_MODE" in os.environ else {}
    yield (
        ["--executor", "ray", "--ray-address", address, "--ray-workers", "2", "--ray-cpus-per-worker", "1"],
        {**offline_env, **auth},
    )
    ray.shutdown()


@pytest.fixture(scope="module")
def local_pool(tmp_path_factory: pytest.TempPathFactory, offline_env: dict[str, str]) -> Path:
    """The reference: the same pregen with the local executor, at one torch thread."""
    out = tmp_path_factory.mktemp("local")
    done = _pregen(out, {**offline_env, "OMP_NUM_THREADS": "1"}, "--executor", "local")
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "manifest.json").read_text())["executor"] == "local"
    return out


def _cache_lines(pool_dir: Path) -> list[str]:
    return (pool_dir / "cache.jsonl").read_text(encoding="utf-8").splitlines()


@pytest.mark.slow
def test_ray_pool_is_byte_identical_to_local(tmp_path: Path, local_pool: Path, ray_cluster) -> None:
    args, env = ray_cluster
    done = _pregen(tmp_path, env, *args)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["executor"] == "ray" and manifest["generated"] == 4 * BATCH_SIZE and manifest["cache_hits"] == 0
    assert (tmp_path / "pool.jsonl").read_bytes() == (local_pool / "pool.jsonl").read_bytes()
    assert sorted(_cache_lines(tmp_path)) == sorted(_cache_lines(local_pool))


@pytest.mark.slow
def test_ray_resume_generates_only_missing_batches(tmp_path: Path, local_pool: Path, ray_cluster) -> None:
    args, env = ray_cluster
    # The cache keeps the first finished batch and one reply of the second, as a killed run leaves it.
    (tmp_path / "cache.jsonl").write_text("\n".join(_cache_lines(local_pool)[: BATCH_SIZE + 1]) + "\n", encoding="utf-8")
    done = _pregen(tmp_path, env, *args)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "manifest.json").read_text())["cache_hits"] == BATCH_SIZE
    assert (tmp_path / "pool.jsonl").read_bytes() == (local_pool / "pool.jsonl").read_bytes()
    assert sorted(_cache_lines(tmp_path)) == sorted(_cache_lines(local_pool))


@pytest.mark.slow
def test_worker_that_cannot_load_its_model_is_one_line_error(tmp_path: Path, ray_cluster) -> None:
    args, env = ray_cluster
    missing = tmp_path / "no-such-model"
    done = _pregen(tmp_path / "pool", env, *args, "--model", str(missing))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: ray worker 1 of 2 could not start the transformers backend: rewriter model path does not exist: {missing}"
    )
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "pool").exists()


@pytest.mark.slow
def test_actor_death_mid_run_is_one_line_error_after_caching_finished_batches(tmp_path: Path, ray_cluster) -> None:
    import ray

    seeds = load_seeds(bundled_templates_file(), tasks=["image_caption", "GC"])[:6]
    options = {"model": "smollm2", "device": "cpu", "batch_size": BATCH_SIZE}
    executor = RayExecutor("transformers", options, num_workers=2, num_cpus_per_worker=1)

    def kill_workers(done: int, total: int) -> None:  # as a node loss would, once a batch is cached
        for worker in executor._workers:
            ray.kill(worker)

    try:
        with pytest.raises(InstrAugError) as failure:
            pregen_to_directory(seeds, executor, load_meta_prompts(1, 1), PregenConfig(batch_size=BATCH_SIZE), tmp_path, kill_workers)
    finally:
        executor.close()
    message = str(failure.value)
    assert "\n" not in message and "ActorDiedError" in message and "killed by `ray.kill`" in message
    assert re.match(r"ray worker [12] of 2 failed on a batch \(finished batches are cached, rerun to resume\)", message)
    cached = len(_cache_lines(tmp_path))  # the batch that triggered the kill, or both that had finished
    assert cached in (BATCH_SIZE, 2 * BATCH_SIZE) and not (tmp_path / "pool.jsonl").exists()
    assert ray.is_initialized()  # the module's Ray instance: joined, not owned, so left running


@pytest.mark.parametrize(
    ("prelude", "args", "message"),
    [
        ("", ["--executor", "dask"], "error: --executor must be local or ray; got 'dask'"),
        ("sys.modules['ray'] = None", ["--executor", "ray"], "error: --executor ray needs Ray: pip install 'instraug-plugin[ray]'"),
    ],
)
def test_executor_errors_are_one_line(tmp_path: Path, offline_env, prelude: str, args: list[str], message: str) -> None:
    code = f"import sys\n{prelude}\nfrom instraug_plugin.cli import main\nmain()"
    done = subprocess.run(
        [sys.executable, "-c", code, "pregen", *PREGEN_ARGS, "--out", str(tmp_path), *args],
        env=offline_env, capture_output=True, text=True, timeout=120,
    )
    assert (done.returncode, done.stderr.strip()) == (2, message)
