"""The shipped robustness benchmark: procedurally drawn shape images, regenerated offline from a seed.

Five tasks (metric in brackets): shape_count [exact_match], shape_color [vqa_accuracy],
shape_position [prefix_match], text_read [rouge_l], color_choice [multiple_choice]. Training rows use
the original templates (`templates/benchmark/shapes_train_templates.json`, one drawn per instance);
the human-written held-out wordings (`shapes_heldout_templates.json`) appear only in the test set.
Every instance's image and fields come from `random.Random(f"{seed}/{split}/{task}/{index}")`, so the
same seed gives the same files (for a given Pillow version). With `text_scenes=True` the picture is
replaced by a sentence describing it (field `scene`, put before the instruction): a text-only variant
that a small pretrained language model can learn on CPU in minutes.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from instraug_plugin.core.commit import commit_files
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.jsonfile import read_json
from instraug_plugin.core.placeholders import fill_template
from instraug_plugin.evaluation.evalset import EVAL_FORMAT
from instraug_plugin.resources import templates_dir

DATASET_NAME = "instraug_shapes_train"
BENCHMARK_MARKER = "instraug_benchmark"  # in the dataset_info entry make-benchmark writes
OUTPUTS = ("train.json", "eval.json", "manifest.json", "images")  # replaced only with overwrite
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 2048  # pixels per side
TASK_METRICS = {
    "shape_count": "exact_match",
    "shape_color": "vqa_accuracy",
    "shape_position": "prefix_match",
    "text_read": "rouge_l",
    "color_choice": "multiple_choice",
}
SHAPES = {"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds"}
COLORS = {
    "red": (220, 30, 30), "green": (30, 160, 50), "blue": (40, 70, 220), "yellow": (240, 210, 20),
    "purple": (140, 40, 170), "orange": (250, 140, 20), "black": (15, 15, 15),
}
COLOR_SYNONYMS = {"purple": ["violet"]}
POSITIONS = [
    "top left", "top middle", "top right", "middle left", "center", "middle right",
    "bottom left", "bottom middle", "bottom right",
]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five"]
WORDS = ["cat", "dog", "sun", "box", "map", "red", "cup", "hat", "pen", "sky", "fox", "key", "bus", "egg"]
BACKGROUND = (235, 235, 235)
SCENE_PREFIX = "{scene}\n"


@dataclass(frozen=True)
class Example:
    """One drawn instance: its image, the image described in words, template fields, answers, options."""

    image: Image.Image
    scene: str
    fields: dict[str, str]
    answers: list[str]
    options: list[str] | None = None


def benchmark_templates() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(original training templates, held-out wordings) per task, from `templates/benchmark/`."""
    folder = templates_dir() / "benchmark"
    train = json.loads((folder / "shapes_train_templates.json").read_text(encoding="utf-8"))
    heldout = json.loads((folder / "shapes_heldout_templates.json").read_text(encoding="utf-8"))
    return train, heldout


class _Canvas:
    """A square image divided into a 3x3 grid of cells."""

    def __init__(self, size: int):
        self.size = size
        self.image = Image.new("RGB", (size, size), BACKGROUND)
        self.draw = ImageDraw.Draw(self.image)

    def shape(self, kind: str, color: str, cell: int, rng: random.Random) -> None:
        cell_size = self.size / 3
        radius = cell_size * rng.uniform(0.28, 0.4)
        cx = (cell % 3 + 0.5) * cell_size + rng.uniform(-0.08, 0.08) * cell_size
        cy = (cell // 3 + 0.5) * cell_size + rng.uniform(-0.08, 0.08) * cell_size
        fill = COLORS[color]
        if kind == "circle":
            self.draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
        elif kind == "square":
            self.draw.rectangle([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
        elif kind == "triangle":
            self.draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=fill)
        else:
            self.draw.polygon([(cx, cy - radius), (cx + radius, cy), (cx, cy + radius), (cx - radius, cy)], fill=fill)


def describe_objects(placed: Sequence[tuple[str, str, int]]) -> str:
    """Shapes `(kind, color, cell)` in reading order: "Picture: a red circle (top left), a blue square (center)."."""
    parts = [f"{'an' if color[0] in 'aeiou' else 'a'} {color} {kind} ({POSITIONS[cell]})"
             for kind, color, cell in sorted(placed, key=lambda p: p[2])]
    return "Picture: " + ", ".join(parts) + "."


def describe_words(words: Sequence[str], color: str) -> str:
    """Printed words as the text scene of `text_read`: 'Picture: the words "CAT DOG" written in blue.'."""
    noun = "word" if len(words) == 1 else "words"
    return f'Picture: the {noun} "{" ".join(w.upper() for w in words)}" written in {color}.'


def _scene(rng: random.Random, size: int, kinds: list[str]) -> tuple[_Canvas, list[tuple[str, str, int]]]:
    """Draw `kinds` in distinct random cells with random colors; returns (canvas, [(kind, color, cell)])."""
    canvas = _Canvas(size)
    cells = rng.sample(range(9), len(kinds))
    placed = [(kind, rng.choice(list(COLORS)), cell) for kind, cell in zip(kinds, cells)]
    for kind, color, cell in placed:
        canvas.shape(kind, color, cell, rng)
    return canvas, placed


def _color_answers(color: str) -> list[str]:
    return [color, *COLOR_SYNONYMS.get(color, [])]


def _shape_count(rng: random.Random, size: int) -> Example:
    target = rng.choice(list(SHAPES))
    count = rng.randint(1, 4)
    others = [k for k in SHAPES if k != target]
    kinds = [target] * count + [rng.choice(others) for _ in range(rng.randint(0, 3))]
    canvas, placed = _scene(rng, size, kinds)
    scene = describe_objects(placed)
    return Example(canvas.image, scene, {"shapes": SHAPES[target]}, [str(count), NUMBER_WORDS[count]])


def _distinct_scene(rng: random.Random, size: int) -> tuple[_Canvas, str, tuple[str, str, int]]:
    """Up to three different shapes; returns (canvas, scene description, the shape asked about)."""
    kinds = rng.sample(list(SHAPES), rng.randint(1, 3))
    canvas, placed = _scene(rng, size, kinds)
    return canvas, describe_objects(placed), rng.choice(placed)


def _shape_color(rng: random.Random, size: int) -> Example:
    canvas, scene, (kind, color, _) = _distinct_scene(rng, size)
    return Example(canvas.image, scene, {"shape": kind}, _color_answers(color))


def _shape_position(rng: random.Random, size: int) -> Example:
    kinds = [rng.choice(list(SHAPES)) for _ in range(rng.randint(2, 4))]
    canvas, placed = _scene(rng, size, kinds)
    kind, _, cell = rng.choice(placed)
    return Example(canvas.image, describe_objects(placed), {"position": POSITIONS[cell]}, [kind])


def _text_read(rng: random.Random, size: int) -> Example:
    words = rng.sample(WORDS, rng.randint(1, 3))
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    color = rng.choice(["red", "blue", "black", "purple", "green"])
    top = rng.randint(2, max(2, size - 14 * len(words) - 2))
    for i, word in enumerate(words):
        draw.text((rng.randint(2, max(2, size // 3)), top + 14 * i), word.upper(), fill=COLORS[color], font=font)
    return Example(image, describe_words(words, color), {}, [" ".join(words)])


def _color_choice(rng: random.Random, size: int) -> Example:
    canvas, scene, (kind, color, _) = _distinct_scene(rng, size)
    options = [color, *rng.sample([c for c in COLORS if c != color], 3)]
    rng.shuffle(options)
    letters = "ABCD"
    formatted = "\n".join(f"({letters[i]}) {o}" for i, o in enumerate(options))
    fields = {"shape": kind, "options": formatted}
    return Example(canvas.image, scene, fields, [letters[options.index(color)]], options)


TASKS: dict[str, Callable[[random.Random, int], Example]] = {
    "shape_count": _shape_count,
    "shape_color": _shape_color,
    "shape_position": _shape_position,
    "text_read": _text_read,
    "color_choice": _color_choice,
}


def draw_example(task: str, seed: int, split: str, index: int, image_size: int = 96) -> Example:
    """The deterministic instance `index` of `task` in `split`."""
    if task not in TASKS:
        raise InstrAugError(f"unknown benchmark task {task!r} (known: {', '.join(TASKS)})")
    return TASKS[task](random.Random(f"{seed}/{split}/{task}/{index}"), image_size)


def make_benchmark(
    out_dir: Path, *, seed: int = 0, train_per_task: int = 200, test_per_task: int = 40, image_size: int = 96,
    text_scenes: bool = False, overwrite: bool = False,
) -> dict[str, Any]:
    """Write the benchmark under `out_dir`; returns its manifest.

    Files: `images/{train,test}/*.png`, `train.json` (LLaMA-Factory sharegpt; each row also carries
    `task`, `template` and `fields` so an augmenter can re-render its instruction), `dataset_info.json`
    (entry `instraug_shapes_train`), `eval.json` (robustness evaluation set with original and held-out
    variants), `manifest.json`. With `text_scenes` there are no images: each prompt is the scene
    description, a newline, then the instruction (`SCENE_PREFIX`; the description is field `scene`).

    An existing `dataset_info.json` keeps its other entries; an existing file or `images/` folder is
    replaced only with `overwrite`, the `instraug_shapes_train` entry only if make-benchmark wrote it; in
    `images/` only the files make-benchmark names (`<task>-NNNNN.png`) are replaced or removed, others stay.
    All files are committed together (`commit_files`): the folder is either the new benchmark or as it was.
    """
    if train_per_task < 0 or test_per_task < 1 or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise InstrAugError(f"need train_per_task >= 0, test_per_task >= 1 and image_size in "
                            f"[{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}]; got {train_per_task}, {test_per_task}, {image_size}")
    info = _existing_info(out_dir, overwrite)
    train_templates, heldout_templates = benchmark_templates()
    prefix = SCENE_PREFIX if text_scenes else "<image>"
    files: dict[Path, str | bytes] = {}
    manifest = _draw(out_dir, files, info, seed=seed, train_per_task=train_per_task, test_per_task=test_per_task,
                     image_size=image_size, text_scenes=text_scenes, prefix=prefix,
                     templates=(train_templates, heldout_templates))
    stale = [path for path in _own_images(out_dir) if path not in files]
    commit_files(files)
    for path in stale:  # images an earlier make-benchmark wrote that this one does not; a user's own files stay
        path.unlink(missing_ok=True)
    return manifest


def _own_images(out_dir: Path) -> list[Path]:
    """The image files under `out_dir/images/` named the way make-benchmark names them."""
    names = {f"{task}-" for task in TASKS}
    return [path for split in ("train", "test") for path in sorted((out_dir / "images" / split).glob("*-[0-9][0-9][0-9][0-9][0-9].png"))
            if path.name[: -len("00000.png")] in names]


def _draw(out_dir: Path, files: dict[Path, str | bytes], info: dict[str, Any], *, seed: int, train_per_task: int, test_per_task: int,
          image_size: int, text_scenes: bool, prefix: str,
          templates: tuple[dict[str, list[str]], dict[str, list[str]]]) -> dict[str, Any]:
    """Draw every instance; the benchmark's files (under `out_dir`) go into `files`, to be committed together."""
    train_templates, heldout_templates = templates
    rows: list[dict[str, Any]] = []
    instances: list[dict[str, Any]] = []
    for split, count in (("train", train_per_task), ("test", test_per_task)):
        for task in TASKS:
            for index in range(count):
                example = draw_example(task, seed, split, index, image_size)
                fields = {**example.fields, "scene": example.scene} if text_scenes else example.fields
                images = []
                if not text_scenes:
                    images = [f"images/{split}/{task}-{index:05d}.png"]
                    png = io.BytesIO()
                    example.image.save(png, format="PNG")
                    files[out_dir / images[0]] = png.getvalue()
                if split == "test":
                    instances.append({
                        "id": f"{task}/{index}", "task": task, "images": images, "fields": fields,
                        "answers": example.answers, "options": example.options,
                    })
                    continue
                template = random.Random(f"{seed}/template/{task}/{index}").choice(train_templates[task])
                rows.append({
                    "messages": [
                        {"role": "user", "content": fill_template(prefix + template, fields)},
                        {"role": "assistant", "content": example.answers[0]},
                    ],
                    "images": images,
                    "task": task,
                    "template": template,
                    "fields": json.dumps(fields, ensure_ascii=False),
                })
    scene = SCENE_PREFIX if text_scenes else ""
    eval_set = {
        "format": EVAL_FORMAT,
        "name": "instraug-shapes-text" if text_scenes else "instraug-shapes",
        "tasks": {
            task: {"metric": TASK_METRICS[task], "original": [scene + t for t in train_templates[task]],
                   "heldout": [scene + t for t in heldout_templates[task]]}
            for task in TASKS
        },
        "instances": instances,
    }
    columns = {"messages": "messages"} if text_scenes else {"messages": "messages", "images": "images"}
    dataset_info = {
        **info,
        DATASET_NAME: {
            "file_name": "train.json",
            "formatting": "sharegpt",
            "columns": columns,
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
            BENCHMARK_MARKER: {"seed": seed, "text_scenes": text_scenes},
        },
    }
    manifest = {
        "seed": seed, "image_size": image_size, "text_scenes": text_scenes, "tasks": TASK_METRICS,
        "train_rows": len(rows), "test_instances": len(instances),
    }
    for name, data in (("train.json", rows), ("eval.json", eval_set), ("dataset_info.json", dataset_info),
                       ("manifest.json", manifest)):
        files[out_dir / name] = json.dumps(data, indent=1, ensure_ascii=False)
    return manifest


def _existing_info(out_dir: Path, overwrite: bool) -> dict[str, Any]:
    """The entries of an existing `out_dir/dataset_info.json` to keep; refuses what must not be replaced."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InstrAugError(f"{out_dir}: exists and is not a directory")
    info_path = out_dir / "dataset_info.json"
    info = read_json(info_path) if info_path.exists() else {}
    if not isinstance(info, dict):
        raise InstrAugError(f"{info_path}: expected a JSON object of dataset entries")
    entry = info.get(DATASET_NAME)
    if entry is not None and not (isinstance(entry, dict) and BENCHMARK_MARKER in entry):
        raise InstrAugError(f"{info_path}: entry {DATASET_NAME!r} exists and was not written by make-benchmark; "
                            "choose another output directory")
    existing = [name for name in OUTPUTS if (out_dir / name).exists()]
    if entry is not None:
        existing.insert(0, f"dataset_info.json entry {DATASET_NAME!r}")
    if existing and not overwrite:
        raise InstrAugError(f"{out_dir}: already holds {', '.join(existing)}; pass --overwrite to replace "
                            "them, or choose another output directory")
    return {name: value for name, value in info.items() if name != DATASET_NAME}


def instantiate_pool(template_pool: Path, bench_dir: Path, out_dir: Path) -> Path:
    """Expand a pool generated from the benchmark's templates into one over the training rows' instructions.

    Pool lookup during training matches a row's instruction text, which has its fields filled in
    ("What color is the circle?"). Each training row records its `template` and `fields`, so every
    kept paraphrase of that template is filled with the same fields (whitelist formatter) and stored
    as a paraphrase of the filled seed; text-scene rows (a `scene` field) keep their scene in front.
    Returns the written `pool.jsonl`.
    """
    from instraug_plugin.core.pool import Pool, PoolRecord, normalize, write_pool

    pool = Pool.load(template_pool)
    rows = json.loads((bench_dir / "train.json").read_text(encoding="utf-8"))
    records: dict[str, PoolRecord] = {}
    for row in rows:
        fields = json.loads(row["fields"])
        prefix = SCENE_PREFIX if "scene" in fields else ""
        seed = fill_template(prefix + row["template"], fields)
        seed_id = f"{row['task']}/{normalize(seed)}"
        for text in [row["template"], *pool.variants(row["template"], row["task"])]:
            filled = fill_template(prefix + text, fields)
            is_seed = text == row["template"]
            record = PoolRecord(row["task"], seed_id, seed, filled, "seed" if is_seed else "single",
                                round=0 if is_seed else 1, parent=None if is_seed else seed)
            records.setdefault(record.id, record)
    manifest = {"instantiated_from": str(template_pool), "benchmark": str(bench_dir), "records": len(records)}
    return write_pool(out_dir, records.values(), manifest)
