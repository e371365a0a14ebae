"""Run LLaMA-Factory training (the plugin patched in, as `instraug-plugin train` does) and clock
each optimizer step's phases with the trainer's own callbacks.

The trainer fetches a step's batch, then calls `on_step_begin`, runs forward, backward and the
optimizer, then calls `on_step_end` and logs. So `on_step_begin` -> `on_step_end` is the step's
compute, and `on_step_end` -> the next `on_step_begin` is everything else: logging, the next
batch's fetch and collation (where the plugin's work happens), epoch boundaries.

Usage: python benchmarks/step_phases.py CONFIG.yaml OUT.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerCallback


class PhaseClock(TrainerCallback):
    """perf_counter() at every step's begin and end, in the main process."""

    def __init__(self) -> None:
        self.begins: list[float] = []
        self.ends: list[float] = []

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.begins.append(time.perf_counter())

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.ends.append(time.perf_counter())


def main() -> None:
    config, out = Path(sys.argv[1]), Path(sys.argv[2])
    from instraug_plugin.integrations.llamafactory.patches import install

    install()
    from llamafactory.train.tuner import run_exp

    clock = PhaseClock()
    run_exp(yaml.safe_load(config.read_text()), callbacks=[clock])
    out.write_text(json.dumps({"step_begins": clock.begins, "step_ends": clock.ends}))


if __name__ == "__main__":
    main()
