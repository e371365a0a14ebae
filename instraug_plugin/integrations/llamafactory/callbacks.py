"""LLaMA-Factory TrainerCallbacks of a run with `instraug_*` keys.

`InstrAugCallback` publishes the epoch to the lazy transform, refreshes the live pool and records
per-epoch stats. `InstrAugEvalCallback` is the robustness evaluation during training (`instraug_eval_*`
keys, `EvalCallbackSettings`): results go into `state.log_history` as `instraug_eval/...` scalars (so they
appear in `trainer_state.json`) and, when `save_reports` is on, as `report.{json,md,png}` under
`<output_dir>/instraug_eval/epoch-<n>/`. Only the main process evaluates (other DDP ranks simply continue
to the next collective); ZeRO-3 / FSDP-sharded models are not supported.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.evaluation.report import Report, write_report
from instraug_plugin.evaluation.runner import GenerationSettings, evaluate
from instraug_plugin.integrations.epoch_state import STATS_FILE, log_epoch
from instraug_plugin.integrations.llamafactory.config import InstrAugConfig
from instraug_plugin.integrations.llamafactory.generator import Generator
from instraug_plugin.integrations.llamafactory.live import LiveRefresher
from instraug_plugin.integrations.llamafactory.session import Session
from instraug_plugin.integrations.llamafactory.transform import epoch_stats
from instraug_plugin.settings import EvalCallbackSettings

LOG_PREFIX = "instraug_eval"


class InstrAugCallback(TrainerCallback):
    """Runs in every rank's main process, before the epoch's DataLoader workers are forked."""

    def __init__(self, session: Session):
        self.session = session
        self.refresher = LiveRefresher(session) if session.config.mode == "live" else None

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
        details = {"rewriter_fallbacks": self.session.fallbacks - fallbacks_before,
                   "pool_size": len(self.session.rewriter.pool), **live}
        log_epoch(state, args.output_dir, epoch, epoch_stats(self.session, epoch), details=details,
                  pretrain=self.session.pretrain)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.refresher is not None:
            self.refresher.close()


class InstrAugEvalCallback(TrainerCallback):
    """Evaluate the training model on an instruction-variant set every `every_n_epochs` epochs.

    `model_name_or_path` and `template` are LLaMA-Factory's `model_name_or_path` and `template`
    arguments of the run: the tokenizer, processor and template are rebuilt from them with
    LLaMA-Factory's loaders, exactly as training built them; the model is the trainer's live model.
    """

    def __init__(self, settings: EvalCallbackSettings, *, model_name_or_path: str, template: str):
        self.settings = settings
        self.model_name_or_path = model_name_or_path
        self.template_name = template
        self.eval_set = settings.load_set()  # fail fast, before training starts
        self.reports: list[Report] = []
        self._parts: tuple[Any, Any, Any] | None = None

    def _tokenizer_parts(self) -> tuple[Any, Any, Any]:
        if self._parts is None:  # LLaMA-Factory's loaders, imported when the first evaluation runs
            from llamafactory.data import get_template_and_fix_tokenizer
            from llamafactory.hparams import DataArguments, ModelArguments
            from llamafactory.model import load_tokenizer

            module = load_tokenizer(ModelArguments(model_name_or_path=self.model_name_or_path))
            template = get_template_and_fix_tokenizer(module["tokenizer"], DataArguments(template=self.template_name))
            self._parts = (module["tokenizer"], module["processor"], template)
        return self._parts

    def run(self, model: Any, label: str) -> Report:
        """Evaluate `model` now; returns the report (also kept in `self.reports`)."""
        tokenizer, processor, template = self._tokenizer_parts()
        tokenizer.padding_side = "left"
        generator = Generator(model, tokenizer, processor, template,
                              GenerationSettings(self.settings.batch_size, self.settings.max_new_tokens))
        report, _ = evaluate(generator, self.eval_set, model_name=label, variants=self.settings.variants)
        self.reports.append(report)
        return report

    def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        epoch = round(state.epoch or 0.0)
        if model is None or epoch % self.settings.every_n_epochs != 0 or not state.is_world_process_zero:
            return
        report = self.run(model, f"{self.model_name_or_path} @ epoch {epoch}")
        state.log_history.append({**report.log_metrics(LOG_PREFIX), "epoch": state.epoch, "step": state.global_step})
        if self.settings.save_reports:
            write_report(report, Path(args.output_dir) / "instraug_eval" / f"epoch-{epoch}")
        mean, sens = report.overall["mean"], report.overall["sensitivity"]
        sens_text = "n/a" if sens is None or math.isnan(sens) else f"{sens:.3f}"
        print(f"instraug_eval epoch {epoch}: mean {mean:.2f}, Sensitivity {sens_text}", flush=True)


def eval_callbacks(config: InstrAugConfig, args: Any) -> list[InstrAugEvalCallback]:
    """The epoch-end robustness evaluator, when `instraug_eval_*` keys ask for it (`args`: LLaMA-Factory's
    arguments of the run)."""
    if config.evaluation is None:
        return []
    if not isinstance(args, dict) or "model_name_or_path" not in args or "template" not in args:
        raise InstrAugError("instraug_eval_set: needs model_name_or_path and template in the same YAML")
    return [InstrAugEvalCallback(config.evaluation, model_name_or_path=args["model_name_or_path"],
                                 template=args["template"])]
