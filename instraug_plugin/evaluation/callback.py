"""Robustness evaluation during training: a TrainerCallback that evaluates the live model at epoch end.

Settings come from `instraug_eval_*` YAML keys (`EvalCallbackSettings.from_keys`). Results go into
`state.log_history` as `instraug_eval/...` scalars (so they appear in `trainer_state.json`) and, when
`save_reports` is on, as `report.{json,md,png}` under `<output_dir>/instraug_eval/epoch-<n>/`.
Only the main process evaluates (other DDP ranks simply continue to the next collective); ZeRO-3 /
FSDP-sharded models are not supported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.evaluation.evalset import VARIANT_CHOICES, EvalSet, load_eval_set
from instraug_plugin.evaluation.report import Report, write_report
from instraug_plugin.evaluation.runner import GenerationSettings, Generator, evaluate

KEY_PREFIX = "instraug_eval_"
LOG_PREFIX = "instraug_eval"


@dataclass(frozen=True)
class EvalCallbackSettings:
    """Field `x` is YAML key `instraug_eval_x`; giving `instraug_eval_set` enables the callback."""

    set: str
    variants: str = "both"
    tasks: tuple[str, ...] = ()
    max_instances: int | None = 50
    batch_size: int = 8
    max_new_tokens: int = 16
    every_n_epochs: int = 1
    save_reports: bool = True

    @classmethod
    def keys(cls) -> list[str]:
        """The full YAML key names."""
        return [KEY_PREFIX + f.name for f in fields(cls)]

    @classmethod
    def from_keys(cls, raw: dict[str, Any]) -> EvalCallbackSettings | None:
        """Validate the `instraug_eval_*` entries of `raw` (other keys ignored); None if there are none."""
        ours = {k[len(KEY_PREFIX):]: v for k, v in raw.items() if k.startswith(KEY_PREFIX)}
        if not ours:
            return None
        known = {f.name for f in fields(cls)}
        for name in ours:
            if name not in known:
                raise InstrAugError(f"unknown key {KEY_PREFIX + name!r} (known: {', '.join(cls.keys())})")
        if not isinstance(ours.get("set"), str) or not ours["set"]:
            raise InstrAugError(f"{KEY_PREFIX}set: required (path of an evaluation set) when any {KEY_PREFIX}* key is given")
        if ours.get("variants", "both") not in VARIANT_CHOICES:
            raise InstrAugError(f"{KEY_PREFIX}variants: expected {' | '.join(VARIANT_CHOICES)}, got {ours['variants']!r}")
        tasks = ours.get("tasks", ())
        if isinstance(tasks, str):
            tasks = tuple(t.strip() for t in tasks.split(",") if t.strip())
        if not isinstance(tasks, (list, tuple)) or not all(isinstance(t, str) for t in tasks):
            raise InstrAugError(f"{KEY_PREFIX}tasks: expected a list of task names, got {tasks!r}")
        ours["tasks"] = tuple(tasks)
        for name in ("max_instances", "batch_size", "max_new_tokens", "every_n_epochs"):
            value = ours.get(name, 1)
            if value is None and name == "max_instances":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InstrAugError(f"{KEY_PREFIX}{name}: expected an integer >= 1, got {value!r}")
        if not isinstance(ours.get("save_reports", True), bool):
            raise InstrAugError(f"{KEY_PREFIX}save_reports: expected true or false, got {ours['save_reports']!r}")
        return cls(**ours)

    def load_set(self) -> EvalSet:
        """The evaluation set these settings select (validated; one-line errors)."""
        return load_eval_set(Path(self.set), variants=self.variants, tasks=self.tasks or None,
                             max_instances_per_task=self.max_instances)


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
        if self._parts is None:
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
