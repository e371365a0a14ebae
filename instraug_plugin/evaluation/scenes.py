"""Text scenes benchmark: four tasks over the same kind of input, told apart only by their instruction.

Every instance is one sentence describing coloured shapes, e.g.
`Scene: a red circle, a blue square and a green triangle.` (shapes and colours distinct inside a scene),
put in front of the instruction (`SCENE_PREFIX`). Two task sets ask about that same kind of sentence:

`positions` (the default; 2-3 shapes per scene), answers read off fixed places of the sentence:
- scene_count: how many shapes (a digit, "3");
- first_color: the colour of the shape listed first (a colour);
- first_shape / last_shape: the shape listed first / last (a shape: the two differ only by first/last).

`lookup` (2-4 shapes; the first design, kept for reference): scene_count; scene_color, the colour of a
named shape (`{shape}`); scene_order, the shape listed `{order}` (first or last); scene_exists, is there a
`{color}` `{shape}` (yes / no, half of each). SmolLM2-135M does not learn these content lookups from a
few hundred freeze-tuned steps (near chance for the colour of a named shape), hence `positions`.

Answers are short and scored with `exact_match`; a model that reads an unfamiliar wording as another
task's instruction answers the other task (a colour for a shape, the first shape for the last one).
Training rows use the 5 original templates per task (`templates/benchmark/<set>_train_templates.json`,
one drawn per instance); the human-written held-out wordings (`<set>_heldout_templates.json`, for
`lookup`: `scenes_*`) appear only in the test set. Every instance comes from `random.Random(f"{seed}/{split}/{task}/{index}")`.
The written files have the layout of `shapes.make_benchmark` (train.json rows carry `task`, `template`
and `fields`), so `shapes.instantiate_pool` expands a template pool over them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instraug_plugin.core.commit import commit_files
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.placeholders import fill_template
from instraug_plugin.evaluation.evalset import EVAL_FORMAT
from instraug_plugin.resources import templates_dir

DATASET_NAME = "instraug_scenes_train"
DEFAULT_TASK_SET = "positions"
SHAPES = ("circle", "square", "triangle", "star", "heart", "diamond")
COLORS = ("red", "blue", "green", "yellow", "purple", "black", "pink")  # no vowel first: always "a"
ORDERS = ("first", "last")
SCENE_PREFIX = "{scene}\n"
TEMPLATE_FILES = {"positions": "positions", "lookup": "scenes"}  # templates/benchmark/<name>_{train,heldout}_templates.json
SCENE_SIZES = {"positions": (2, 3), "lookup": (2, 4)}


@dataclass(frozen=True)
class SceneExample:
    """One drawn instance: the scene sentence, the task's template fields and the answers."""

    scene: str
    fields: dict[str, str]
    answers: list[str]


def scene_templates(task_set: str = DEFAULT_TASK_SET) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(original training templates, held-out wordings) per task, from `templates/benchmark/`."""
    folder = templates_dir() / "benchmark"
    name = TEMPLATE_FILES[task_set]
    train = json.loads((folder / f"{name}_train_templates.json").read_text(encoding="utf-8"))
    heldout = json.loads((folder / f"{name}_heldout_templates.json").read_text(encoding="utf-8"))
    return train, heldout


def describe_scene(objects: list[tuple[str, str]]) -> str:
    """`[(color, shape), ...]` in order: "Scene: a red circle, a blue square and a green triangle."."""
    parts = [f"a {color} {shape}" for color, shape in objects]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"Scene: {listed}."


def _objects(rng: random.Random, sizes: tuple[int, int] = (2, 4)) -> list[tuple[str, str]]:
    n = rng.randint(*sizes)
    return list(zip(rng.sample(COLORS, n), rng.sample(SHAPES, n)))


def _count(rng: random.Random, sizes: tuple[int, int] = (2, 4)) -> SceneExample:
    objects = _objects(rng, sizes)
    return SceneExample(describe_scene(objects), {}, [str(len(objects))])


def _first_color(rng: random.Random) -> SceneExample:
    objects = _objects(rng, SCENE_SIZES["positions"])
    return SceneExample(describe_scene(objects), {}, [objects[0][0]])


def _first_shape(rng: random.Random) -> SceneExample:
    objects = _objects(rng, SCENE_SIZES["positions"])
    return SceneExample(describe_scene(objects), {}, [objects[0][1]])


def _last_shape(rng: random.Random) -> SceneExample:
    objects = _objects(rng, SCENE_SIZES["positions"])
    return SceneExample(describe_scene(objects), {}, [objects[-1][1]])


def _color(rng: random.Random) -> SceneExample:
    objects = _objects(rng)
    color, shape = rng.choice(objects)
    return SceneExample(describe_scene(objects), {"shape": shape}, [color])


def _order(rng: random.Random) -> SceneExample:
    objects = _objects(rng)
    order = rng.choice(ORDERS)
    return SceneExample(describe_scene(objects), {"order": order}, [objects[0 if order == "first" else -1][1]])


def _exists(rng: random.Random) -> SceneExample:
    objects = _objects(rng)
    if rng.random() < 0.5:
        color, shape = rng.choice(objects)
        answer = "yes"
    else:  # a near miss: a present shape in another colour, or a present colour on another shape
        present_color, present_shape = rng.choice(objects)
        if rng.random() < 0.5:
            shape, color = present_shape, rng.choice([c for c in COLORS if c != present_color])
        else:
            color, shape = present_color, rng.choice([s for s in SHAPES if s != present_shape])
        answer = "yes" if (color, shape) in objects else "no"
    return SceneExample(describe_scene(objects), {"color": color, "shape": shape}, [answer])


TASK_SETS: dict[str, dict[str, Callable[[random.Random], SceneExample]]] = {
    "positions": {
        "scene_count": lambda rng: _count(rng, SCENE_SIZES["positions"]),
        "first_color": _first_color,
        "first_shape": _first_shape,
        "last_shape": _last_shape,
    },
    "lookup": {
        "scene_count": _count,
        "scene_color": _color,
        "scene_order": _order,
        "scene_exists": _exists,
    },
}
TASKS = TASK_SETS[DEFAULT_TASK_SET]
TASK_METRICS = {task: "exact_match" for task in TASKS}


def draw_scene_example(task: str, seed: int, split: str, index: int,
                       task_set: str = DEFAULT_TASK_SET) -> SceneExample:
    """The deterministic instance `index` of `task` in `split`."""
    tasks = TASK_SETS[task_set]
    if task not in tasks:
        raise InstrAugError(f"unknown {task_set} task {task!r} (known: {', '.join(tasks)})")
    return tasks[task](random.Random(f"{seed}/{split}/{task}/{index}"))


def make_scenes_benchmark(out_dir: Path, *, seed: int = 0, train_per_task: int = 100,
                          test_per_task: int = 40, task_set: str = DEFAULT_TASK_SET) -> dict[str, Any]:
    """Write train.json (sharegpt rows with `task`, `template`, `fields`), dataset_info.json (entry
    `instraug_scenes_train`), eval.json (original and held-out variants) and manifest.json under `out_dir`."""
    if train_per_task < 0 or test_per_task < 1:
        raise InstrAugError("need train_per_task >= 0 and test_per_task >= 1")
    if task_set not in TASK_SETS:
        raise InstrAugError(f"unknown task set {task_set!r} (known: {', '.join(TASK_SETS)})")
    tasks = TASK_SETS[task_set]
    train_templates, heldout_templates = scene_templates(task_set)
    rows: list[dict[str, Any]] = []
    instances: list[dict[str, Any]] = []
    for split, count in (("train", train_per_task), ("test", test_per_task)):
        for task in tasks:
            for index in range(count):
                example = draw_scene_example(task, seed, split, index, task_set)
                fields = {**example.fields, "scene": example.scene}
                if split == "test":
                    instances.append({"id": f"{task}/{index}", "task": task, "images": [], "fields": fields,
                                      "answers": example.answers, "options": None})
                    continue
                template = random.Random(f"{seed}/template/{task}/{index}").choice(train_templates[task])
                rows.append({
                    "messages": [
                        {"role": "user", "content": fill_template(SCENE_PREFIX + template, fields)},
                        {"role": "assistant", "content": example.answers[0]},
                    ],
                    "task": task,
                    "template": template,
                    "fields": json.dumps(fields, ensure_ascii=False),
                })
    random.Random(f"{seed}/shuffle").shuffle(rows)
    eval_set = {
        "format": EVAL_FORMAT,
        "name": f"instraug-scenes-{task_set}",
        "tasks": {
            task: {"metric": "exact_match", "original": [SCENE_PREFIX + t for t in train_templates[task]],
                   "heldout": [SCENE_PREFIX + t for t in heldout_templates[task]]}
            for task in tasks
        },
        "instances": instances,
    }
    dataset_info = {
        DATASET_NAME: {
            "file_name": "train.json",
            "formatting": "sharegpt",
            "columns": {"messages": "messages"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
        }
    }
    manifest = {"seed": seed, "task_set": task_set, "tasks": list(tasks), "train_rows": len(rows), "test_instances": len(instances)}
    commit_files({out_dir / name: json.dumps(data, indent=1, ensure_ascii=False)
                  for name, data in (("train.json", rows), ("eval.json", eval_set),
                                     ("dataset_info.json", dataset_info), ("manifest.json", manifest))})
    return manifest
