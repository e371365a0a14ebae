"""The data hook for LLaVA's own `train()`: human turns reworded per epoch inside `LazySupervisedDataset`.

LLaVA builds every training sample on access (`LazySupervisedDataset.__getitem__`: image,
`preprocess_multimodal`, `preprocess`). `installed()` points two names `train()` looks up in
`llava.train.train` at ours: the data module wraps LLaVA's dataset so that each sample's human turns
are reworded for the current epoch before LLaVA's own `__getitem__` runs on the row (answers,
`<image>` and everything else untouched), and a trainer subclass adds the callback that publishes
the epoch and logs per-epoch counts.
The draw is a pure function of (seed, epoch, row index, turn), so DataLoader workers and ranks agree.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from llava import conversation as conversation_lib
from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.train import train as llava_train
from transformers import TrainerCallback

from instraug_plugin.core.coverage import Coverage, coverage_verdict, summarize
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.placeholders import DEFAULT_SPEC, PlaceholderSpec
from instraug_plugin.core.pool import Pool
from instraug_plugin.core.rows import RowChecker, row_problem
from instraug_plugin.core.sampling import Decision, InstructionRewriter, rewrite_messages
from instraug_plugin.integrations.epoch_state import (
    STATS_FILE,
    EpochState,
    append_samples,
    label_digest,
    log_epoch,
)
from instraug_plugin.settings import InstrAugConfig

CONVERSATIONS, ROLE, CONTENT, HUMAN = "conversations", "from", "value", "human"


def human_texts(row: dict[str, Any], all_turns: bool) -> list[str]:
    """The row's human turns (only the first unless `all_turns`)."""
    texts = [m.get(CONTENT) for m in row[CONVERSATIONS] if isinstance(m, dict) and m.get(ROLE) == HUMAN]
    texts = [t for t in texts if isinstance(t, str)]
    return texts if all_turns else texts[:1]


@dataclass
class Session:
    """One training run with rewriting: the rewriter, the rows it indexes and where it writes."""

    config: InstrAugConfig
    rewriter: InstructionRewriter
    state: EpochState = field(default_factory=EpochState)
    rows: Sequence[dict[str, Any]] = ()  # the training rows, indexed as LLaVA's dataset indexes them
    output_dir: Path = Path(".")
    pretrain: dict[str, Any] = field(default_factory=dict)  # coverage, skipped rows, warnings (stats records)

    @classmethod
    def start(cls, config: InstrAugConfig) -> Session:
        """Load the pool(s) once; the hot path never reads files. The seed is bound with the trainer."""
        spec = PlaceholderSpec(extra_patterns=config.placeholder_regex) if config.placeholder_regex else DEFAULT_SPEC
        pool = Pool.load(*map(Path, config.pool), scope=config.scope)
        epsilon, task_epsilon = config.task_epsilons()
        return cls(config, InstructionRewriter(pool, epsilon, config.seed or 0, spec, task_epsilon))

    def bind(self, training_args: Any) -> None:
        """Take the seed (`--instraug_seed`, else LLaVA's `--seed`) and output directory of the run."""
        if self.config.seed is None:
            self.rewriter.seed = int(training_args.seed)
        self.output_dir = Path(training_args.output_dir)

    def task(self, row: dict[str, Any]) -> str | None:
        column = self.config.task_column
        value = row.get(column) if column else None
        return None if value is None else str(value)

    def rewrite(self, row: dict[str, Any], index: int, epoch: int) -> tuple[dict[str, Any], Decision]:
        """The row to train on in `epoch` (a new dict when reworded; the input is never modified)."""
        messages, decision = rewrite_messages(
            self.rewriter, row[CONVERSATIONS], task=self.task(row), epoch=epoch, index=index,
            all_turns=self.config.turns == "all", role=ROLE, content=CONTENT, user=HUMAN,
        )
        return ({**row, CONVERSATIONS: messages} if decision == "rewritten" else row), decision

    def epoch_counts(self, epoch: int) -> Counter[str]:
        """Decisions for every training row in `epoch` (pure function of seed, epoch and index)."""
        counts: Counter[str] = Counter({"rewritten": 0, "original": 0, "no_entry": 0})
        for index, row in enumerate(self.rows):
            counts[self.rewrite(row, index, epoch)[1]] += 1
        return counts

    def check_rows(self, rows: list[Any], data_args: Any) -> list[dict[str, Any]]:
        """Invalid rows and pool coverage, before training starts; the rows to train on.

        A row LLaVA cannot train on (no human turn with text; with a vision tower, a `<image>` count
        that differs from the row's images, or a missing image file) is an error naming it, or with
        `--instraug_skip_invalid True` dropped and counted. No pool paraphrase for any training
        instruction is an error (pool mode, epsilon < 1); coverage below `core.coverage.LOW_COVERAGE` a warning.
        """
        if conversation_lib.default_conversation.sep_style == conversation_lib.SeparatorStyle.PLAIN:
            raise InstrAugError("instraug_mode: LLaVA's --version plain (feature-alignment pretraining) trains on "
                                "<image> alone and drops the instruction text; use a chat version such as v1")
        where = data_args.data_path
        multimodal = bool(data_args.is_multimodal)
        media_root = Path(data_args.image_folder) if multimodal and data_args.image_folder else None
        checker = RowChecker(self.config.skip_invalid, hint="--instraug_skip_invalid True")
        keep = []
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or not isinstance(row.get(CONVERSATIONS), list):
                raise InstrAugError(f"{where}: row {i}: expected an object with a {CONVERSATIONS!r} list")
            texts = [m.get(CONTENT) for m in row[CONVERSATIONS] if isinstance(m, dict)]
            media = {"images": row.get("image")} if multimodal else {}
            if checker.ok(f"{where}: row {i}", row_problem(human_texts(row, True), texts, media, media_root)):
                keep.append(row)
        if not keep:
            raise InstrAugError(f"instraug_skip_invalid: every training row of {where} is invalid ({checker.summary()})")
        column = self.config.task_column
        if column and not any(column in row for row in keep):
            raise InstrAugError(f"instraug_task_column: no training row of {where} has a key {column!r}")
        self.rows = keep
        coverage = Coverage()
        for row in keep:
            for text in human_texts(row, self.config.turns == "all"):
                coverage.add(self.task(row), text, self.rewriter)
        warnings = coverage_verdict(coverage, pools=self.config.pool, mode=self.config.mode, epsilon=self.config.lowest_epsilon())
        self.pretrain["pool_coverage"] = coverage.record()
        if checker.total:
            self.pretrain["invalid_rows_skipped"] = dict(checker.skipped)
        if warnings:
            self.pretrain["warnings"] = warnings
        if os.environ.get("RANK", "0") == "0":  # every rank checks; the first one reports
            print(summarize(coverage, dict(checker.skipped)), file=sys.stderr, flush=True)
            for warning in warnings:
                print(f"instraug: warning: {warning}", file=sys.stderr, flush=True)
        return keep


class _WithRow(Sequence[dict[str, Any]]):
    """The dataset's rows with row `index` replaced (what LLaVA's `__getitem__` reads for one sample)."""

    def __init__(self, rows: Sequence[dict[str, Any]], index: int, row: dict[str, Any]):
        self.rows, self.index, self.row = rows, index, row

    def __getitem__(self, i: Any) -> Any:
        return self.row if i == self.index else self.rows[i]

    def __len__(self) -> int:
        return len(self.rows)


def sample_record(epoch: int, index: int, decision: Decision, row: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """What the model actually saw for one sample (`--instraug_log_samples`)."""
    return {
        "epoch": epoch,
        "index": index,
        "decision": decision,
        "user_turns": human_texts(row, True),
        "images": int("image" in row),  # LLaVA-1.5 rows name one image file
        "image_tokens": int((item["input_ids"] == IMAGE_TOKEN_INDEX).sum()),
        "label_sha": label_digest(t for t in item["labels"].tolist() if t != IGNORE_INDEX),
    }


class AugmentedDataset(torch.utils.data.Dataset):
    """LLaVA's `LazySupervisedDataset`, its rows checked once, each sample's human turns worded for the
    current epoch; LLaVA's own `__getitem__` builds the sample from the reworded row."""

    def __init__(self, dataset: Any, session: Session, data_args: Any):
        self.dataset = dataset
        self.session = session
        dataset.list_data_dict = session.check_rows(dataset.list_data_dict, data_args)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def lengths(self) -> list[int]:
        return self.dataset.lengths

    @property
    def modality_lengths(self) -> list[int]:  # LLaVATrainer's --group_by_modality_length sampler
        return self.dataset.modality_lengths

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        session = self.session
        epoch = session.state.epoch
        row, decision = session.rewrite(self.dataset.list_data_dict[i], i, epoch)
        view = copy.copy(self.dataset)  # the wrapped dataset itself is left as it was
        view.list_data_dict = _WithRow(self.dataset.list_data_dict, i, row)
        item = view[i]
        if session.config.log_samples and session.state.training:
            append_samples(session.output_dir, [sample_record(epoch, i, decision, row, item)])
        return item


class InstrAugCallback(TrainerCallback):
    """Publishes the epoch to the dataset (every rank's main process, before the epoch's DataLoader
    workers start) and records per-epoch counts in `log_history` and `instraug_stats.jsonl`."""

    def __init__(self, session: Session):
        self.session = session

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 0 and state.is_world_process_zero:  # a fresh run, not a resumed one
            (Path(args.output_dir) / STATS_FILE).unlink(missing_ok=True)

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        session = self.session
        epoch = math.floor((state.epoch or 0.0) + 1e-6)
        session.state.epoch = epoch
        session.state.training = True
        if not session.config.log or not state.is_world_process_zero:
            return
        record = log_epoch(state, args.output_dir, epoch, session.epoch_counts(epoch),
                           details={"pool_size": len(session.rewriter.pool)}, pretrain=session.pretrain)
        print(f"instraug: epoch {epoch}: {record['rewritten']} of {record['samples']} samples reworded, "
              f"{record['kept_original']} kept their wording, {record['no_pool_entry']} have no pool entry",
              file=sys.stderr, flush=True)


SESSION: Session | None = None  # the training run in this process (`installed`)


def _make_supervised_data_module(tokenizer: Any, data_args: Any) -> dict[str, Any]:
    """LLaVA's data module with its training dataset wrapped for the current session."""
    assert SESSION is not None  # only called by LLaVA's train() inside `installed`
    module = _ORIGINALS["make_supervised_data_module"](tokenizer=tokenizer, data_args=data_args)
    return {**module, "train_dataset": AugmentedDataset(module["train_dataset"], SESSION, data_args)}


class InstrAugLLaVATrainer(llava_train.LLaVATrainer):
    """LLaVA's trainer with the InstrAug callback of the current session."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        assert SESSION is not None  # only built by LLaVA's train() inside `installed`
        SESSION.bind(self.args)
        self.add_callback(InstrAugCallback(SESSION))


# The names LLaVA's train() looks up in llava.train.train. LLaVATrainer's own methods name their class in
# llava.train.llava_trainer (`super(LLaVATrainer, self)`), which stays untouched, so the subclass is safe.
_PATCHES = {"make_supervised_data_module": _make_supervised_data_module, "LLaVATrainer": InstrAugLLaVATrainer}
_ORIGINALS = {name: getattr(llava_train, name) for name in _PATCHES}


@contextlib.contextmanager
def installed(session: Session) -> Iterator[None]:
    """Within the block, LLaVA's `train()` builds the InstrAug dataset and trainer for `session`."""
    global SESSION
    SESSION = session
    for name, value in _PATCHES.items():
        setattr(llava_train, name, value)
    try:
        yield
    finally:
        SESSION = None
        for name, value in _ORIGINALS.items():
            setattr(llava_train, name, value)


def run(config: InstrAugConfig | None, argv: list[str], attn_implementation: str | None = None) -> None:
    """LLaVA's `train()` on `argv` (LLaVA's own arguments), with rewriting as `config` asks (None: unchanged)."""
    sys.argv = [sys.argv[0], *argv]
    if config is None or not config.active:
        llava_train.train(attn_implementation=attn_implementation)
        return
    with installed(Session.start(config)):
        llava_train.train(attn_implementation=attn_implementation)
