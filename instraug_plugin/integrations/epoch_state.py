"""What every training integration shares across epochs (torch-free, stdlib only): the epoch in
shared memory for DataLoader workers, and the per-epoch log of rewrite decisions."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

STATS_FILE = "instraug_stats.jsonl"
SAMPLES_DIR = "instraug_samples"  # `instraug_log_samples`: what the model saw, one file per process


class EpochState:
    """The epoch a training callback publishes in each rank's main process, in shared memory:
    DataLoader workers, forked for each epoch or persistent across epochs, read the current value at
    every fetch (HF's Trainer calls `on_epoch_begin` before it starts the epoch's iterator). Live
    mode also bumps `pool_version` after each refresh, so workers reload the pool it wrote."""

    def __init__(self) -> None:
        self._epoch = multiprocessing.RawValue("q", 0)
        self._training = multiprocessing.RawValue("b", 0)
        self._pool_version = multiprocessing.RawValue("q", 0)

    @property
    def pool_version(self) -> int:
        """How many times live mode has published a refreshed pool (`live_pool_dir`)."""
        return self._pool_version.value

    def publish_pool(self) -> None:
        """Tell every DataLoader worker, persistent ones included, to load the refreshed pool."""
        self._pool_version.value += 1

    @property
    def epoch(self) -> int:
        return self._epoch.value

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._epoch.value = value

    @property
    def training(self) -> bool:
        return bool(self._training.value)

    @training.setter
    def training(self, value: bool) -> None:
        self._training.value = int(value)


def log_epoch(trainer_state: Any, output_dir: str | Path, epoch: int, counts: Mapping[str, int], *,
              details: Mapping[str, Any], pretrain: Mapping[str, Any]) -> dict[str, Any]:
    """Record one epoch's rewrite decisions (`counts`: rewritten / original / no_entry) with `details`
    and the pre-training checks: a line in `output_dir/instraug_stats.jsonl` and scalars in the
    trainer's `log_history` (`instraug/...`). Returns the record."""
    record = {
        "epoch": epoch,
        "step": trainer_state.global_step,
        "samples": sum(counts.values()),
        "rewritten": counts["rewritten"],
        "kept_original": counts["original"],
        "no_pool_entry": counts["no_entry"],
        **details,
        **pretrain,
    }
    history = {f"instraug/{k}": v for k, v in record.items() if k not in pretrain}
    if "pool_coverage" in pretrain:  # the share only: log history values stay scalars
        history["instraug/pool_coverage"] = pretrain["pool_coverage"]["share"]
    trainer_state.log_history.append(history | {"epoch": epoch})
    path = Path(output_dir) / STATS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    return record


def label_digest(labels: Iterable[int]) -> str:
    """A short digest of a sample's trained label ids (ignored positions already removed)."""
    return hashlib.sha1(json.dumps(list(labels)).encode()).hexdigest()[:16]


def append_samples(output_dir: str | Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Append sample records, one JSON line each, to this process's file under `output_dir/instraug_samples`."""
    directory = Path(output_dir) / SAMPLES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"rank{os.environ.get('RANK', '0')}-pid{os.getpid()}.jsonl"
    with path.open("a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
