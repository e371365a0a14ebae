"""Settings of the robustness evaluation during training: the `instraug_eval_*` YAML keys.

`EvalCallbackSettings.from_keys` validates them; the TrainerCallback that evaluates the live model at
epoch end with these settings is LLaMA-Factory's side: `integrations.llamafactory.callbacks.InstrAugEvalCallback`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.evaluation.evalset import VARIANT_CHOICES, EvalSet, load_eval_set

KEY_PREFIX = "instraug_eval_"


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
