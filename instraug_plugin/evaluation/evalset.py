"""Robustness evaluation sets: instances, each rendered under every instruction variant of its task.

File format (JSON, `format: "instraug-eval/1"`); image paths are relative to the file's folder:

    {"format": "instraug-eval/1", "name": "shapes",
     "tasks": {"shape_color": {"metric": "vqa_accuracy",
                               "original": ["What color is the {shape}?", ...],
                               "heldout": ["Tell me the colour of the {shape}.", ...]}},
     "instances": [{"id": "shape_color/0", "task": "shape_color", "images": ["images/0.png"],
                    "fields": {"shape": "circle"}, "answers": ["red"], "options": null}]}

A template without `<image>` gets one `<image>` per image in front, as LLaMA-Factory's chat engine does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.jsonfile import read_json
from instraug_plugin.core.placeholders import fill_template
from instraug_plugin.evaluation.metrics import get_metric

EVAL_FORMAT = "instraug-eval/1"
VARIANT_KINDS = ("original", "heldout")
VARIANT_CHOICES = ("original", "heldout", "both")
IMAGE_TOKEN = "<image>"


@dataclass(frozen=True)
class Instance:
    """One test instance: images, template field values, acceptable answers, options if multiple choice."""

    id: str
    task: str
    images: tuple[str, ...]
    fields: dict[str, Any]
    answers: tuple[str, ...]
    options: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TaskSpec:
    """A task's metric and its instruction variants, keyed by variant id ("original/0", "heldout/2")."""

    name: str
    metric: str
    variants: dict[str, str]


@dataclass(frozen=True)
class EvalItem:
    """One (instance, variant) pair, rendered: the prompt the model sees."""

    instance: Instance
    variant: str
    prompt: str


@dataclass(frozen=True)
class EvalSet:
    """A loaded evaluation set restricted to the chosen variants, tasks and instances."""

    name: str
    tasks: dict[str, TaskSpec]
    instances: tuple[Instance, ...]

    def items(self) -> list[EvalItem]:
        """Every instance rendered under every variant of its task (instance-major order)."""
        out = []
        for inst in self.instances:
            for variant, template in self.tasks[inst.task].variants.items():
                out.append(EvalItem(inst, variant, render(template, inst)))
        return out

    def to_json(self) -> dict[str, Any]:
        """The set in its file format (`load_eval_set` reads it back; image paths are absolute)."""
        tasks = {}
        for name, spec in self.tasks.items():
            kinds: dict[str, list[str]] = {kind: [] for kind in VARIANT_KINDS}
            for variant, template in spec.variants.items():
                kinds[variant.split("/", 1)[0]].append(template)
            tasks[name] = {"metric": spec.metric, **kinds}
        instances = [{"id": i.id, "task": i.task, "images": list(i.images), "fields": i.fields,
                      "answers": list(i.answers), "options": None if i.options is None else list(i.options)}
                     for i in self.instances]
        return {"format": EVAL_FORMAT, "name": self.name, "tasks": tasks, "instances": instances}


def render(template: str, instance: Instance) -> str:
    """Fill `template` with the instance's fields (whitelist formatter) and place its `<image>` tokens."""
    try:
        text = fill_template(template, instance.fields)
    except InstrAugError as exc:
        raise InstrAugError(f"instance {instance.id!r}: {exc}") from None
    if IMAGE_TOKEN not in text:
        text = IMAGE_TOKEN * len(instance.images) + text
    elif text.count(IMAGE_TOKEN) != len(instance.images):
        raise InstrAugError(
            f"instance {instance.id!r}: template has {text.count(IMAGE_TOKEN)} <image> tokens "
            f"but the instance has {len(instance.images)} images"
        )
    return text


def _str_list(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InstrAugError(f"{what} must be a list of strings")
    return value


def _task_spec(name: str, raw: Any, kinds: Sequence[str], source: str) -> TaskSpec:
    if not isinstance(raw, dict):
        raise InstrAugError(f"{source}: task {name!r} must be an object")
    metric = raw.get("metric")
    if not isinstance(metric, str):
        raise InstrAugError(f"{source}: task {name!r} has no 'metric'")
    get_metric(metric)
    variants: dict[str, str] = {}
    for kind in kinds:
        templates = _str_list(raw.get(kind, []), f"{source}: task {name!r} '{kind}'")
        variants.update({f"{kind}/{i}": t for i, t in enumerate(templates)})
    if not variants:
        raise InstrAugError(f"{source}: task {name!r} has an empty variant list for {' + '.join(kinds)}")
    return TaskSpec(name, metric, variants)


def _instance(raw: Any, index: int, base: Path, source: str) -> Instance:
    if not isinstance(raw, dict) or not isinstance(raw.get("id", index), (str, int)):
        raise InstrAugError(f"{source}: instance #{index} must be an object with an 'id'")
    ident = str(raw.get("id", index))
    where = f"{source}: instance {ident!r}"
    images = _str_list(raw.get("images", []), f"{where} 'images'")
    resolved = []
    for image in images:
        path = Path(image) if Path(image).is_absolute() else base / image
        if not path.is_file():
            raise InstrAugError(f"{where}: image not found: {path}")
        resolved.append(str(path))
    answers = raw.get("answers")
    if isinstance(answers, str):
        answers = [answers]
    answers = _str_list(answers, f"{where} 'answers'")
    if not answers:
        raise InstrAugError(f"{where}: 'answers' is empty")
    fields = raw.get("fields", {})
    if not isinstance(fields, dict):
        raise InstrAugError(f"{where}: 'fields' must be an object")
    options = raw.get("options")
    options = None if options is None else tuple(_str_list(options, f"{where} 'options'"))
    return Instance(ident, str(raw.get("task", "")), tuple(resolved), fields, tuple(answers), options)


def load_eval_set(
    path: Path,
    *,
    variants: str = "heldout",
    tasks: Sequence[str] | None = None,
    max_instances_per_task: int | None = None,
) -> EvalSet:
    """Load and validate an evaluation set; one-line InstrAugError naming the file, task or instance at fault.

    `variants` is "original", "heldout" or "both"; `tasks` restricts to those task names;
    `max_instances_per_task` keeps the first N instances of each task.
    """
    path = Path(path)
    if not path.is_file():
        raise InstrAugError(f"evaluation set not found: {path}")
    if variants not in VARIANT_CHOICES:
        raise InstrAugError(f"variants must be one of {', '.join(VARIANT_CHOICES)}, got {variants!r}")
    raw = read_json(path)
    if not isinstance(raw, dict) or raw.get("format") != EVAL_FORMAT:
        raise InstrAugError(f"{path}: not an evaluation set (expected \"format\": \"{EVAL_FORMAT}\")")
    raw_tasks = raw.get("tasks")
    if not isinstance(raw_tasks, dict) or not raw_tasks:
        raise InstrAugError(f"{path}: 'tasks' must be a non-empty object")
    wanted = list(raw_tasks) if tasks is None else list(tasks)
    for name in wanted:
        if name not in raw_tasks:
            raise InstrAugError(f"unknown task {name!r} in {path} (known: {', '.join(sorted(raw_tasks))})")
    kinds = VARIANT_KINDS if variants == "both" else (variants,)
    specs = {name: _task_spec(name, raw_tasks[name], kinds, str(path)) for name in wanted}
    raw_instances = raw.get("instances")
    if not isinstance(raw_instances, list):
        raise InstrAugError(f"{path}: 'instances' must be a list")
    kept: list[Instance] = []
    per_task: dict[str, int] = {}
    for index, item in enumerate(raw_instances):
        inst = _instance(item, index, path.parent, str(path))
        if inst.task not in raw_tasks:
            raise InstrAugError(
                f"{path}: instance {inst.id!r} has unknown task {inst.task!r} (known: {', '.join(sorted(raw_tasks))})"
            )
        if inst.task not in specs:
            continue
        if max_instances_per_task is not None and per_task.get(inst.task, 0) >= max_instances_per_task:
            continue
        per_task[inst.task] = per_task.get(inst.task, 0) + 1
        if specs[inst.task].metric == "multiple_choice" and not inst.options:
            raise InstrAugError(f"{path}: instance {inst.id!r} of multiple-choice task {inst.task!r} has no 'options'")
        kept.append(inst)
    for name in specs:
        if name not in per_task:
            raise InstrAugError(f"{path}: task {name!r} has no instances")
    for inst in kept:  # every prompt renders (fields, <image> counts) before any model is loaded
        for variant, template in specs[inst.task].variants.items():
            try:
                render(template, inst)
            except InstrAugError as exc:
                raise InstrAugError(f"{path}: task {inst.task!r} variant {variant}: {exc}") from None
    return EvalSet(str(raw.get("name", path.stem)), specs, tuple(kept))
