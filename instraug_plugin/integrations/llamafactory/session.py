"""The state of one training run with `instraug_*` keys: the session, the epoch in shared memory, and
the one holder (`ACTIVE`) through which LLaMA-Factory's patched data loader finds the running session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instraug_plugin.core.placeholders import DEFAULT_SPEC, PlaceholderSpec
from instraug_plugin.core.pool import Pool
from instraug_plugin.core.sampling import InstructionRewriter
from instraug_plugin.integrations.epoch_state import EpochState
from instraug_plugin.integrations.llamafactory.config import InstrAugConfig

if TYPE_CHECKING:
    from datasets import Dataset

INDEX_COLUMN = "_instraug_index"  # the row's index in the training split: the draw depends on it
TASK_COLUMN = "_instraug_task"  # the row's task (`instraug_task_column`), added while aligning


@dataclass
class Session:
    """Everything one `run_exp` call with `instraug_*` keys needs."""

    config: InstrAugConfig
    rewriter: InstructionRewriter
    state: EpochState = field(default_factory=EpochState)
    train_dataset: Dataset | None = None
    output_dir: str = "."
    fallbacks: int = 0
    pretrain: dict[str, Any] = field(default_factory=dict)  # coverage, skipped rows, warnings (stats records)
    pool_version: int = 0  # the live refresh this process's `rewriter.pool` holds (`EpochState.pool_version`)

    def __post_init__(self) -> None:
        self.base_records = list(self.rewriter.pool.records)  # the configured pools; live refreshes add to them


def start_session(config: InstrAugConfig, default_seed: int) -> Session:
    """Load the pool(s) once and build the rewriter; the hot path never reads files."""
    spec = PlaceholderSpec(extra_patterns=config.placeholder_regex) if config.placeholder_regex else DEFAULT_SPEC
    pool = Pool.load(*map(Path, config.pool), scope=config.scope) if config.pool else Pool([])
    seed = default_seed if config.seed is None else config.seed
    epsilon, task_epsilon = config.task_epsilons()
    return Session(config, InstructionRewriter(pool, epsilon, seed, spec, task_epsilon))


def live_pool_dir(output_dir: str) -> Path:
    """Where live mode writes the paraphrases of this rank's latest refresh for its DataLoader workers."""
    return Path(output_dir) / "instraug_live" / f"current-rank{os.environ.get('RANK', '0')}"


class ActiveSession:
    """The session of the `run_exp` call in progress in this process, if any: set only by `running`."""

    def __init__(self) -> None:
        self._session: Session | None = None

    @property
    def session(self) -> Session | None:
        return self._session

    @contextmanager
    def running(self, session: Session) -> Iterator[Session]:
        """Make `session` the active one for the duration of the block (one training run)."""
        previous, self._session = self._session, session
        try:
            yield session
        finally:
            self._session = previous


ACTIVE = ActiveSession()
