"""TrainerCallback: publish the epoch to the data hook, refresh the live pool, record per-epoch stats."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from instraug_plugin.integrations.llamafactory.hook import STATS_FILE, Session, epoch_stats


class InstrAugCallback(TrainerCallback):
    """Runs in every rank's main process, before the epoch's DataLoader workers are forked."""

    def __init__(self, session: Session):
        self.session = session
        self.refresher: Any = None
        if session.config.mode == "live":
            from instraug_plugin.integrations.llamafactory.live import LiveRefresher

            self.refresher = LiveRefresher(session)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 0 and state.is_world_process_zero:  # a fresh run, not a resumed one
            (Path(args.output_dir) / STATS_FILE).unlink(missing_ok=True)

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        epoch = math.floor((state.epoch or 0.0) + 1e-6)
        fallbacks_before = self.session.fallbacks
        live: dict[str, Any] = {}
        if self.refresher is not None and self.refresher.due(epoch):
            self.refresher.refresh(epoch)
            live = self.refresher.last
        self.session.state.epoch = epoch
        self.session.state.training = True
        if not self.session.config.log or not state.is_world_process_zero:
            return
        counts = epoch_stats(self.session, epoch)
        record = {
            "epoch": epoch,
            "step": state.global_step,
            "samples": sum(counts.values()),
            "rewritten": counts["rewritten"],
            "kept_original": counts["original"],
            "no_pool_entry": counts["no_entry"],
            "rewriter_fallbacks": self.session.fallbacks - fallbacks_before,
            "pool_size": len(self.session.rewriter.pool),
            **self.session.pretrain,
            **live,
        }
        history = {f"instraug/{k}": v for k, v in record.items() if k not in self.session.pretrain}
        if "pool_coverage" in self.session.pretrain:  # the share only: log history values stay scalars
            history["instraug/pool_coverage"] = self.session.pretrain["pool_coverage"]["share"]
        state.log_history.append(history | {"epoch": epoch})
        path = Path(args.output_dir) / STATS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.refresher is not None:
            self.refresher.close()
