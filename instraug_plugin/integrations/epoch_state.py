"""The epoch in shared memory, for every training integration (torch-free, stdlib only)."""

from __future__ import annotations

import multiprocessing


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
