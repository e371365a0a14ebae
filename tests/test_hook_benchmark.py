"""The hook benchmark's step-time report: overhead against each run's own compute time."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hook_overhead", ROOT / "benchmarks" / "hook_overhead.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["hook_overhead"] = module
    spec.loader.exec_module(module)
    return module


def _run(compute_ms: float, between_ms: float, steps: int = 50) -> dict[str, float]:
    return {"seconds_per_step": (compute_ms + between_ms) / 1000, "compute_median_ms": compute_ms,
            "between_steps_mean_ms": between_ms, "step_over_compute": (compute_ms + between_ms) / compute_ms,
            "tokens_per_step": 100.0}


def test_a_run_slowed_by_the_machine_is_measured_against_its_own_compute(bench: ModuleType) -> None:
    # Round 1: the pool-on run happened while the machine was 30% slower; round 2: 20% faster.
    # In both, pool on spends 2 ms more between steps of a 100 ms step (at pool-off speed).
    runs = {
        "pool_off": [_run(100.0, 5.0), _run(100.0, 5.0)],
        "pool_on": [_run(130.0, 1.3 * 7.0), _run(80.0, 0.8 * 7.0)],
        "pool_on_original": [_run(100.0, 5.0), _run(100.0, 5.0)],
    }
    report = bench.train_step_report(runs)
    assert report["pool_on_overhead_percent_per_round"] == [1.9, 1.9]  # 107 / 105 - 1
    assert report["pool_on_plain_step_time_change_percent_per_round"] == [32.48, -18.48]
    assert report["pool_on_compute_change_percent_per_round"] == [30.0, -20.0]
    assert report["pool_on_original_overhead_percent_median_of_rounds"] == 0.0
    json.dumps(report)  # written as the benchmark's JSON
