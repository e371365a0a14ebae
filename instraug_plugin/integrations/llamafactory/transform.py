"""The lazy training-split transform: rewrite each row's instruction for the current epoch, then tokenize
it with LLaMA-Factory's own processor; and the epoch's decision counts for the stats."""

from __future__ import annotations

from collections import Counter
from typing import Any

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.pool import Pool, read_records
from instraug_plugin.core.sampling import rewrite_messages
from instraug_plugin.integrations.epoch_state import append_samples, label_digest
from instraug_plugin.integrations.llamafactory.encode_cache import with_encode_cache
from instraug_plugin.integrations.llamafactory.session import (
    INDEX_COLUMN,
    TASK_COLUMN,
    Session,
    live_pool_dir,
)

IGNORE_INDEX = -100  # LLaMA-Factory's label of prompt tokens
class LazyTransform:
    """`with_transform` callable: rewrite a batch of aligned rows, then tokenize it with LLaMA-Factory."""

    def __init__(self, session: Session, processor: Any, image_token_id: int | None):
        self.rewriter = session.rewriter
        self.all_turns = session.config.turns == "all"
        self.state = session.state
        self.processor = with_encode_cache(processor)  # LLaMA-Factory's own, recurring strings' ids cached
        self.image_token_id = image_token_id
        self.log_samples = session.config.log_samples
        self.session = session
        self.live_pool = live_pool_dir(session.output_dir) if session.config.mode == "live" else None

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        epoch = self.state.epoch
        if self.live_pool is not None and self.state.pool_version != self.session.pool_version:
            # live mode refreshed the pool in the main process: a DataLoader worker's copy is stale (once per refresh)
            self.session.pool_version = self.state.pool_version
            self.rewriter.pool = Pool(self.session.base_records + list(read_records(self.live_pool)))
        tasks = batch.get(TASK_COLUMN) or [None] * len(batch[INDEX_COLUMN])
        prompts, decisions = [], []
        for messages, task, index in zip(batch["_prompt"], tasks, batch[INDEX_COLUMN]):
            new, decision = rewrite_messages(
                self.rewriter, messages, task=task, epoch=epoch, index=index, all_turns=self.all_turns
            )
            prompts.append(new)
            decisions.append(decision)
        out = self.processor.preprocess_dataset({**batch, "_prompt": prompts})
        if len(out["input_ids"]) != len(prompts):
            raise InstrAugError("LLaMA-Factory dropped a training row after rewriting; please report this")
        if self.log_samples and self.state.training:
            self._log(batch, prompts, decisions, out, epoch)
        return out

    def _log(self, batch: dict[str, list[Any]], prompts: list[Any], decisions: list[str], out: dict[str, Any],
             epoch: int) -> None:
        """Append what the model actually saw, one line per sample, to a per-process file."""
        append_samples(self.session.output_dir, (
            {
                "epoch": epoch,
                "index": index,
                "decision": decisions[i],
                "user_turns": [m["content"] for m in prompts[i] if m.get("role") == "user"],
                "images": len(batch["_images"][i] or []),
                "image_tokens": out["input_ids"][i].count(self.image_token_id) if self.image_token_id else 0,
                "label_sha": label_digest(t for t in out["labels"][i] if t != IGNORE_INDEX),
            }
            for i, index in enumerate(batch[INDEX_COLUMN])
        ))


def epoch_stats(session: Session, epoch: int) -> Counter[str]:
    """Decisions for every training sample in `epoch` (pure function of seed, epoch and index)."""
    dataset = session.train_dataset
    counts: Counter[str] = Counter({"rewritten": 0, "original": 0, "no_entry": 0})
    if dataset is None:
        return counts
    columns = [c for c in ("_prompt", TASK_COLUMN, INDEX_COLUMN) if c in dataset.column_names]
    for batch in dataset.with_format(None).select_columns(columns).iter(batch_size=1000):
        tasks = batch.get(TASK_COLUMN) or [None] * len(batch[INDEX_COLUMN])
        for messages, task, index in zip(batch["_prompt"], tasks, batch[INDEX_COLUMN]):
            _, decision = rewrite_messages(
                session.rewriter, messages, task=task, epoch=epoch, index=index,
                all_turns=session.config.turns == "all",
            )
            counts[decision] += 1
    return counts
