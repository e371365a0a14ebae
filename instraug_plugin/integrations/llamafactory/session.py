"""The state of one training run with `instraug_*` keys: the session, the epoch in shared memory, and
the one holder (`ACTIVE`) through which LLaMA-Factory's patched data loader finds the running session."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instraug_plugin.core.devsplit import split_dev
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.placeholders import DEFAULT_SPEC, PlaceholderSpec
from instraug_plugin.core.pool import Pool, PoolRecord, scoped_records
from instraug_plugin.core.sampling import InstructionRewriter
from instraug_plugin.evaluation.devset import development_set
from instraug_plugin.evaluation.evalset import EvalSet
from instraug_plugin.integrations.epoch_state import EpochState, SharedEpsilons
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
    dev_set: EvalSet | None = None  # `instraug_adaptive`: the development set steering `state.task_epsilon`
    dev_epoch: int | None = None  # the epoch after which the development set was last evaluated
    dev_signals: dict[str, dict[str, float | None]] = field(default_factory=dict)  # its pdr, sensitivity, weakness

    def __post_init__(self) -> None:
        self.base_records = list(self.rewriter.pool.records)  # the configured pools; live refreshes add to them


def start_session(config: InstrAugConfig, default_seed: int) -> Session:
    """Load the pool(s) once and build the rewriter; the hot path never reads files."""
    spec = PlaceholderSpec(extra_patterns=config.placeholder_regex) if config.placeholder_regex else DEFAULT_SPEC
    records = [record for path in config.pool for record in scoped_records(Path(path), config.scope)]
    seed = default_seed if config.seed is None else config.seed
    epsilon, task_epsilon = config.task_epsilons()
    if config.adaptive:
        return _adaptive_session(config, records, seed, spec)
    return Session(config, InstructionRewriter(Pool(records), epsilon, seed, spec, task_epsilon))


def _adaptive_session(config: InstrAugConfig, records: list[PoolRecord], seed: int, spec: PlaceholderSpec) -> Session:
    """`instraug_adaptive`: hold the development wordings back from training's pool, build the development
    set, and start every task it steers at `instraug_epsilon` in shared memory."""
    settings = config.evaluation
    assert settings is not None and isinstance(config.epsilon, float)  # checked by the settings
    train, dev = split_dev(records, config.dev_share, seed)
    eval_set = settings.load_set(variants="both")  # both kinds: the test wordings must be known to be left out
    dev_set = development_set(eval_set, dev, spec)
    if not dev_set.tasks:
        raise InstrAugError(
            f"instraug_adaptive: no original template of {settings.set} has a development wording (a held-back "
            f"paraphrase in the pool, same task name); pool tasks: {', '.join(sorted({r.task for r in records}))}")
    unsteered = sorted(set(eval_set.tasks) - set(dev_set.tasks))
    if unsteered and os.environ.get("RANK", "0") == "0":
        print(f"instraug: warning: instraug_adaptive: no development wording for task(s) {', '.join(unsteered)}; "
              "they train with instraug_epsilon", file=sys.stderr, flush=True)
    shared = SharedEpsilons(dev_set.tasks, config.epsilon)
    return Session(config, InstructionRewriter(train, config.epsilon, seed, spec, shared), EpochState(shared),
                   dev_set=dev_set)


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
