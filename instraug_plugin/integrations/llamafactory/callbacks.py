"""LLaMA-Factory TrainerCallbacks of a run with `instraug_*` keys.

`InstrAugCallback` publishes the epoch to the lazy transform, refreshes the live pool and records
per-epoch stats. `InstrAugEvalCallback` is the robustness evaluation during training (`instraug_eval_*`
keys, `EvalCallbackSettings`): results go into `state.log_history` as `instraug_eval/...` scalars (so they
appear in `trainer_state.json`) and, when `save_reports` is on, as `report.{json,md,png}` under
`<output_dir>/instraug_eval/epoch-<n>/`. Only the main process evaluates (other DDP ranks simply continue
to the next collective); ZeRO-3 / FSDP-sharded models are not supported.

`AdaptiveCallback` is the online loop (`instraug_adaptive`): it evaluates the development set instead
(never the test wordings; `instraug_dev/...`, `<output_dir>/instraug_dev/epoch-<n>/`) and sets the next
epoch's per-task epsilon by the rule of `core.plan`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.plan import plan_from_signals, report_signals
from instraug_plugin.evaluation.evalset import EvalSet
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
DEV_PREFIX = "instraug_dev"  # the online loop's development evaluations: log history keys and output folder
DEV_SET_FILE = "dev_set.json"  # under <output_dir>/instraug_dev: the development set, in the eval-set format


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
        task_epsilon = self.session.state.task_epsilon
        if task_epsilon is not None:  # the online loop: what set this epoch's epsilons
            details |= {"dev_epoch": self.session.dev_epoch, "dev_signals": self.session.dev_signals}
        log_epoch(state, args.output_dir, epoch, epoch_stats(self.session, epoch), details=details,
                  pretrain=self.session.pretrain, task_epsilon=task_epsilon)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.refresher is not None:
            self.refresher.close()


class InstrAugEvalCallback(TrainerCallback):
    """Evaluate the training model on an instruction-variant set every `every_n_epochs` epochs.

    `model_name_or_path` and `template` are LLaMA-Factory's `model_name_or_path` and `template`
    arguments of the run: the tokenizer, processor and template are rebuilt from them with
    LLaMA-Factory's loaders, exactly as training built them; the model is the trainer's live model.
    """

    def __init__(self, settings: EvalCallbackSettings, *, model_name_or_path: str, template: str,
                 eval_set: EvalSet | None = None):
        self.settings = settings
        self.model_name_or_path = model_name_or_path
        self.template_name = template
        self.eval_set = settings.load_set() if eval_set is None else eval_set  # fail fast, before training starts
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


class AdaptiveCallback(InstrAugEvalCallback):
    """The online loop: at the end of every `every_n_epochs`-th epoch that another epoch follows, score the
    development set (`session.dev_set`) and set each steered task's epsilon for the next epoch by the rule
    (`InstrAugConfig.adaptive_rule`, `core.plan`) from the task's PDR (development vs original wordings)
    and Sensitivity. The main process evaluates; the values reach the other ranks by broadcast and every
    DataLoader worker through shared memory (`SharedEpsilons`) before the next epoch's data is drawn. The
    log history gets the report's `instraug_dev/...` scalars with each task's `weakness` and `next_epsilon`,
    from which a resumed run restores the epsilons."""

    def __init__(self, session: Session, *, model_name_or_path: str, template: str):
        assert session.config.evaluation is not None and session.dev_set is not None
        assert session.state.task_epsilon is not None
        super().__init__(session.config.evaluation, model_name_or_path=model_name_or_path, template=template,
                         eval_set=session.dev_set)
        self.session = session
        self.rule = session.config.adaptive_rule()
        self.epsilons = session.state.task_epsilon

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step > 0:  # resumed: every rank reads the same checkpointed log history
            self._restore(state.log_history)
        elif state.is_world_process_zero:
            path = Path(args.output_dir) / DEV_PREFIX / DEV_SET_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.eval_set.to_json(), indent=1, ensure_ascii=False), encoding="utf-8")

    def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        epoch = round(state.epoch or 0.0)
        if control.should_training_stop or epoch % self.settings.every_n_epochs != 0:
            return  # the same decision on every rank: no epoch left to steer, or not due
        values = [self.epsilons[task] for task in self.epsilons]
        if state.is_world_process_zero and model is not None:
            steered = self._evaluate(args, state, model, epoch)
            values = [steered[task] for task in self.epsilons]
        self.epsilons.publish(dict(zip(self.epsilons, broadcast_from_main(values, args.device))))

    def _evaluate(self, args: Any, state: Any, model: Any, epoch: int) -> dict[str, float]:
        """Score the development set now, log it, and return the next epoch's epsilon per steered task."""
        before = dict(self.epsilons)
        report = self.run(model, f"{self.model_name_or_path} @ epoch {epoch}")
        signals = report_signals(report.to_json(), source="development report")
        plan = plan_from_signals(self.rule, {task: signals.get(task, (None, None)) for task in self.epsilons})
        self.session.dev_epoch = epoch
        self.session.dev_signals = {task: {"pdr": p.pdr, "sensitivity": p.sensitivity, "weakness": p.weakness}
                                    for task, p in plan.tasks.items()}
        steered = {task: plan.epsilon_for(task) for task in self.epsilons}
        logged = report.log_metrics(DEV_PREFIX)
        for task, p in plan.tasks.items():
            logged[f"{DEV_PREFIX}/{task}/next_epsilon"] = steered[task]
            if p.weakness is not None:
                logged[f"{DEV_PREFIX}/{task}/weakness"] = p.weakness
        state.log_history.append({**logged, "epoch": state.epoch, "step": state.global_step})
        if self.settings.save_reports:
            write_report(report, Path(args.output_dir) / DEV_PREFIX / f"epoch-{epoch}")
        changes = ", ".join(f"{task} {before[task]:.3f} -> {steered[task]:.3f}" for task in self.epsilons)
        print(f"instraug_adaptive epoch {epoch}: development mean {report.overall['mean']:.2f}; "
              f"epsilon {changes}", flush=True)
        return steered

    def _restore(self, history: list[dict[str, Any]]) -> None:
        """The epsilons and signals of the last development evaluation in a resumed run's log history."""
        for entry in reversed(history):
            found = {t: entry[f"{DEV_PREFIX}/{t}/next_epsilon"] for t in self.epsilons
                     if f"{DEV_PREFIX}/{t}/next_epsilon" in entry}
            if found:
                self.epsilons.publish(found)
                self.session.dev_epoch = round(entry["epoch"])
                self.session.dev_signals = {t: {key: entry.get(f"{DEV_PREFIX}/{t}/{key}")
                                                for key in ("pdr", "sensitivity", "weakness")} for t in found}
                return


def broadcast_from_main(values: list[float], device: Any) -> list[float]:
    """The main process's `values` on every rank (unchanged without torch.distributed)."""
    import torch

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.broadcast(tensor, src=0)
    return tensor.tolist()


def _model_and_template(args: Any) -> tuple[str, str]:
    """LLaMA-Factory's `model_name_or_path` and `template` of the run, which evaluation rebuilds its prompts from."""
    if not isinstance(args, dict) or "model_name_or_path" not in args or "template" not in args:
        raise InstrAugError("instraug_eval_set: needs model_name_or_path and template in the same YAML")
    return args["model_name_or_path"], args["template"]


def eval_callbacks(config: InstrAugConfig, args: Any) -> list[InstrAugEvalCallback]:
    """The epoch-end robustness evaluator, when `instraug_eval_*` keys ask for it (`args`: LLaMA-Factory's
    arguments of the run); none with `instraug_adaptive`, whose `AdaptiveCallback` evaluates the development
    set instead (`session_callbacks`)."""
    if config.evaluation is None:
        return []
    model, template = _model_and_template(args)
    if config.adaptive:
        return []
    return [InstrAugEvalCallback(config.evaluation, model_name_or_path=model, template=template)]


def session_callbacks(session: Session, args: Any) -> list[TrainerCallback]:
    """The callbacks of a run that rewrites: epochs and stats, and the online loop with `instraug_adaptive`."""
    callbacks: list[TrainerCallback] = [InstrAugCallback(session)]
    if session.dev_set is not None:
        model, template = _model_and_template(args)
        callbacks.append(AdaptiveCallback(session, model_name_or_path=model, template=template))
    return callbacks
