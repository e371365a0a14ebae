"""Bad input never destroys data and never passes silently: a table-driven battery over every verb.

Each case builds its inputs in a fresh folder, runs the real CLI entry point in-process, and checks
the exit code (2), that stderr is exactly one `error: ...` line naming the problem, no traceback,
and that every file under the folder is byte-for-byte what it was (nothing written, nothing
replaced). Pregen, stats and eval cases fail the test if a model or judge would load before the
error (the loaders are replaced by ones that raise), except the context-length case, which needs
the real SmolLM2 tokenizer and config. The skip/warning paths and the training hook's checks follow.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from instraug_plugin.cli import main
from instraug_plugin.core.errors import InstrAugError, redact

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEMO_POOL = REPO / "dataset_info" / "instraug_demo" / "pool"
PNG = REPO / "dataset_info" / "instraug_demo" / "images" / "red_square.png"


# ---------------------------------------------------------------- helpers


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under `root`, by relative path."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `instraug-plugin ARGS`, run in this process."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def readonly_dir(tmp: Path) -> Path:
    """A folder nobody may create files in (root ignores permission bits, so it gets one under /sys)."""
    if os.geteuid() == 0:
        return Path("/sys/instraug-bad-input-test")
    folder = tmp / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


SHAREGPT = {"formatting": "sharegpt", "columns": {"messages": "messages", "images": "images", "videos": "videos",
                                                   "audios": "audios"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}


def demo(tmp: Path) -> Path:
    """A copy of the bundled demo dataset (dataset_info.json, rows, images, pool) under tmp/data."""
    shutil.copytree(REPO / "dataset_info", tmp / "data")
    return tmp / "data"


def dataset(tmp: Path, rows: list[dict[str, Any]], **entry: Any) -> Path:
    """tmp/ds/dataset_info.json with entry `d` over `rows` (sharegpt, media columns mapped), an image."""
    write(tmp / "ds" / "rows.json", rows)
    shutil.copy(PNG, tmp / "ds" / "img.png")
    return write(tmp / "ds" / "dataset_info.json", {"d": {"file_name": "rows.json", **SHAREGPT, **entry}})


GOOD_ROW = {"messages": [user("<image>What color is the shape?"), assistant("Red.")], "images": ["img.png"]}
BAD_ROWS = {
    "no_user_turn": {"messages": [assistant("Red.")], "images": []},
    "media_count": {"messages": [user("<image><image>What color?"), assistant("Red.")], "images": ["img.png"]},
    "missing_media": {"messages": [user("<image>What color?"), assistant("Red.")], "images": ["gone.png"]},
    "video_count": {"messages": [user("<video>What happens?"), assistant("A run.")], "images": []},
    "audio_count": {"messages": [user("What is said?"), assistant("Hi.")], "images": [], "audios": ["a.wav"]},
}


def then(args: list[Any], *_written: Path) -> list[Any]:
    """`args`, once the files written in the call's other arguments exist."""
    return args


def build_bad_row(kind: str) -> Callable[[Path], list[Any]]:
    """`build` over a good row and a row with the problem `kind`."""
    return lambda t: ["build", dataset(t, [GOOD_ROW, BAD_ROWS[kind]]), "--name", "d", "--pool", DEMO_POOL]


def pregen_bad_row(kind: str) -> Callable[[Path], list[Any]]:
    """`pregen` over a good row and a row with the problem `kind`."""
    return lambda t: ["pregen", dataset(t, [GOOD_ROW, BAD_ROWS[kind]]), "--dataset", "d", "--out", t / "p"]


def pool(tmp: Path, lines: list[str] | None = None, manifest: Any = None) -> Path:
    """A pool folder: the demo pool, or `lines` as pool.jsonl; `manifest` as manifest.json if given."""
    folder = tmp / "pool"
    if lines is None:
        shutil.copytree(DEMO_POOL, folder)
    else:
        write(folder / "pool.jsonl", "".join(line + "\n" for line in lines))
    if manifest is not None:
        write(folder / "manifest.json", manifest)
    return folder


def templates(tmp: Path, data: Any = None) -> Path:
    return write(tmp / "templates.json", data if data is not None else {"t": ["Describe the {object} in the image."]})


def pregen_config(tmp: Path, text: str, name: str = "pregen.yaml") -> list[Any]:
    """`pregen --config` over a config file with `text` (a pregen over the templates file otherwise)."""
    return ["pregen", "--config", write(tmp / name, text.replace("{templates}", str(templates(tmp))))]


def pool_manifest(tmp: Path, **options: Any) -> Path:
    """A pool folder whose manifest records `options` as the pregen run's (the `options` key only if given)."""
    recorded = {"options": {"source": str(templates(tmp)), "out": str(tmp / "p"), **options}} if options else {}
    return write(tmp / "p" / "manifest.json", {"format": "instraug-pool/1", "seeds": 1, **recorded})


def eval_set(tmp: Path, template: str = "What is the {shape}?") -> Path:
    return write(tmp / "eval" / "eval.json", {
        "format": "instraug-eval/1",
        "tasks": {"t": {"metric": "exact_match", "original": [template], "heldout": ["Name the {shape}."]}},
        "instances": [{"id": "t/0", "task": "t", "fields": {"shape": "circle"}, "answers": ["circle"]}],
    })


def eval_report(tmp: Path, data: Any = None) -> Path:
    """An eval output folder whose report.json holds `data` (default: tasks a and b with a drop rate)."""
    write(tmp / "eval" / "report.json", data if data is not None else {
        "tasks": [{"task": "a", "pdr": 0.2, "sensitivity": 0.1}, {"task": "b", "pdr": 0.0, "sensitivity": 0.0}]})
    return tmp / "eval"


def plan_file(tmp: Path, **tasks: float) -> Path:
    """A plan file (as `instraug-plugin plan` writes it) giving each task of `tasks` that epsilon."""
    from instraug_plugin.core.plan import Plan, Rule, TaskPlan

    return Plan(Rule(0.5, 0.05), {task: TaskPlan(eps, 1) for task, eps in tasks.items()}).save(tmp / "plan.json")


def planned_pool_manifest(tmp: Path) -> Path:
    """A pool made with a plan's budgets {t: 3} (as its manifest records), whose plan file now gives t budget 1."""
    plan = plan_file(tmp, t=0.5)
    return write(tmp / "p" / "manifest.json", {
        "format": "instraug-pool/1", "seeds": 1, "plan": {"path": str(plan), "budgets": {"t": 3}},
        "options": {"source": str(templates(tmp)), "out": str(tmp / "p"), "plan": str(plan)}})


def train_config(tmp: Path, text: str, name: str = "train.yaml") -> Path:
    return write(tmp / name, text)


def build_args(tmp: Path, *extra: Any) -> list[Any]:
    data = demo(tmp)
    return ["build", data / "dataset_info.json", "--name", "instraug_demo", "--pool", data / "instraug_demo" / "pool",
            *extra]


def earlier_build(tmp: Path) -> list[Any]:
    """The demo built once into tmp/out (entry demo_aug), then the same command again."""
    from instraug_plugin.build import build_dataset

    args = build_args(tmp, "--output-dir", tmp / "out", "--output-name", "demo_aug")
    build_dataset(dataset=tmp / "data", name="instraug_demo", pools=[DEMO_POOL], output_dir=tmp / "out",
                  output_name="demo_aug")
    return args


def earlier_benchmark(tmp: Path) -> list[Any]:
    from instraug_plugin.evaluation.shapes import make_benchmark

    make_benchmark(tmp / "bench", train_per_task=1, test_per_task=1, text_scenes=True)
    return ["make-benchmark", tmp / "bench", "--train-per-task", 1, "--test-per-task", 1, "--text-scenes"]


def long_template(tmp: Path) -> list[Any]:
    write(tmp / "long.json", {"t": [" ".join(["word"] * 10_000)]})
    return ["pregen", tmp / "long.json", "--limit", 1, "--out", tmp / "pool_out", "--min-fidelity", 0,
            "--placeholder-mode", "mask"]


@dataclass(frozen=True)
class Case:
    """One bad input: `setup(tmp)` writes the inputs and returns the CLI arguments; `message` is a
    regex the single stderr line must match; `loads_model` allows the real rewriter to load."""

    id: str
    setup: Callable[[Path], list[Any]]
    message: str
    loads_model: bool = False


def _d(tmp: Path) -> Path:
    return demo(tmp)


CASES = [
    # ------------------------------------------------------------ every verb: usage errors
    Case("cli-unknown-command", lambda t: ["frobnicate"], r"No such command 'frobnicate'"),
    Case("cli-unknown-option", lambda t: ["stats", t, "--bogus"], r"No such option: --bogus"),
    Case("build-missing-argument", lambda t: ["build"], r"(?i)missing argument 'dataset'.*build --help"),
    Case("build-missing-pool", lambda t: ["build", t], r"Missing option '--pool'"),
    Case("pregen-limit-not-a-number", lambda t: ["pregen", templates(t), "--limit", "abc"], r"Invalid value for '--limit'"),
    # ------------------------------------------------------------ build: entries and files it must not replace
    Case("build-output-name-is-the-source-entry",  # issue reproduction
         lambda t: build_args(t, "--output-name", "instraug_demo"),
         r"entry 'instraug_demo' exists and was not written by instraug-plugin build"),
    Case("build-output-name-is-another-entry",  # issue reproduction
         lambda t: build_args(t, "--output-name", "instraug_demo_llava"),
         r"entry 'instraug_demo_llava' exists and was not written by instraug-plugin build"),
    Case("build-other-entry-even-with-overwrite",
         lambda t: build_args(t, "--output-name", "instraug_demo_llava", "--overwrite"), r"was not written by"),
    Case("build-own-entry-needs-overwrite", earlier_build, r"entry 'demo_aug' exists \(an earlier build\); pass --overwrite"),
    Case("build-existing-data-file-needs-overwrite",
         lambda t: then(build_args(t, "--output-dir", t / "o", "--output-name", "x"), write(t / "o" / "x.json", "[]")),
         r"o/x\.json: exists; pass --overwrite"),
    Case("build-data-file-of-another-entry",
         lambda t: then(build_args(t, "--output-dir", t / "o", "--output-name", "x", "--overwrite"),
                        write(t / "o" / "dataset_info.json", {"theirs": {"file_name": "x.json"}})),
         r"is the data file of entry 'theirs'"),
    Case("build-malformed-output-dataset-info",  # issue reproduction: no data file left behind
         lambda t: then(build_args(t, "--output-dir", t / "o"), write(t / "o" / "dataset_info.json", "{oops")),
         r"o/dataset_info\.json: not valid JSON"),
    Case("build-output-dataset-info-not-an-object",
         lambda t: then(build_args(t, "--output-dir", t / "o"), write(t / "o" / "dataset_info.json", "[1]")),
         r"o/dataset_info\.json: expected a JSON object"),
    Case("build-output-dir-read-only",  # issue reproduction (was a traceback)
         lambda t: build_args(t, "--output-dir", readonly_dir(t) / "out"), r"cannot write \(.*\); nothing was changed"),
    Case("build-output-dir-is-a-file",
         lambda t: then(build_args(t, "--output-dir", t / "f"), write(t / "f", "x")),
         r"--output-dir: .*f exists and is not a directory"),
    Case("build-output-name-dataset-info", lambda t: build_args(t, "--output-name", "dataset_info"),
         r"would overwrite dataset_info\.json"),
    Case("build-output-name-with-a-path", lambda t: build_args(t, "--output-name", "../escape"),
         r"--output-name: expected a plain dataset name"),
    Case("build-output-over-llava-source",
         lambda t: ["build", _d(t) / "instraug_demo" / "demo_llava.json", "--pool", DEMO_POOL, "--output-name", "demo_llava"],
         r"demo_llava\.json: is the source data of"),
    # ------------------------------------------------------------ build: rows LLaMA-Factory cannot train on
    Case("build-row-without-user-turn",  # issue reproduction
         build_bad_row("no_user_turn"),
         r"rows\.json:row 1: no user turn with text \(.*--skip-invalid"),
    Case("build-image-count-mismatch",  # issue reproduction
         build_bad_row("media_count"),
         r"rows\.json:row 1: 2 <image> placeholder\(s\) but 1 images"),
    Case("build-missing-image-file",
         build_bad_row("missing_media"),
         r"rows\.json:row 1: image file not found: .*gone\.png"),
    Case("build-video-count-mismatch",
         build_bad_row("video_count"),
         r"row 1: 1 <video> placeholder\(s\) but 0 videos"),
    Case("build-audio-count-mismatch",
         build_bad_row("audio_count"),
         r"row 1: 0 <audio> placeholder\(s\) but 1 audios"),
    Case("build-all-rows-skipped",
         lambda t: ["build", dataset(t, [BAD_ROWS["no_user_turn"]]), "--name", "d", "--pool", DEMO_POOL, "--skip-invalid"],
         r"no valid rows to write \(skipped 1 invalid row\(s\): 1 no_user_turn\)"),
    Case("build-media-dir-missing", lambda t: build_args(t, "--media-dir", t / "nomedia"),
         r"--media-dir: .*nomedia is not a directory"),
    Case("build-llava-missing-image-in-media-dir",
         lambda t: ["build", _d(t) / "instraug_demo" / "demo_llava.json", "--pool", DEMO_POOL, "--media-dir",
                    t / "data" / "instraug_demo"], r"demo_llava\.json:row 0: image file not found: .*instraug_demo/instraug_demo/images"),
    # ------------------------------------------------------------ build: other bad values
    Case("build-epsilon-out-of-range", lambda t: build_args(t, "--epsilon", "1.5"), r"--epsilon: expected a number in \[0, 1\]"),
    Case("build-copies-zero", lambda t: build_args(t, "--copies", "0"), r"--copies: expected an integer >= 1"),
    Case("build-unknown-name",
         lambda t: ["build", _d(t) / "dataset_info.json", "--name", "nope", "--pool", DEMO_POOL], r"unknown dataset 'nope'"),
    Case("build-name-missing", lambda t: ["build", _d(t), "--pool", DEMO_POOL], r"--name is required"),
    Case("build-pool-missing",
         lambda t: ["build", _d(t), "--name", "instraug_demo", "--pool", t / "nopool"], r"pool file not found: .*nopool"),
    Case("build-pool-bad-line",
         lambda t: ["build", _d(t), "--name", "instraug_demo", "--pool", pool(t, ["{broken"])], r"pool\.jsonl:1: not valid JSON"),
    Case("build-pool-bad-record",
         lambda t: ["build", _d(t), "--name", "instraug_demo", "--pool", pool(t, ['{"task": "x"}'])], r"bad pool record"),
    Case("build-source-file-missing",
         lambda t: ["build", write(t / "ds" / "dataset_info.json", {"d": {"file_name": "gone.json"}}), "--name", "d",
                    "--pool", DEMO_POOL], r"dataset file not found: .*gone\.json"),
    Case("build-dataset-info-missing", lambda t: ["build", t / "dataset_info.json", "--name", "d", "--pool", DEMO_POOL],
         r"dataset_info\.json not found"),
    Case("build-llava-conversations-not-a-list",
         lambda t: ["build", write(t / "l.json", [{"conversations": "oops"}]), "--pool", DEMO_POOL],
         r"l\.json:row 0: column 'conversations' is not a list of messages"),
    # ------------------------------------------------------------ make-benchmark
    Case("benchmark-over-user-files",  # issue reproduction
         lambda t: then(["make-benchmark", t / "mine", "--test-per-task", 1],
                        write(t / "mine" / "dataset_info.json", {"mine": {"file_name": "m.json"}}),
                        write(t / "mine" / "eval.json", {"user": 1})),
         r"mine: already holds eval\.json; pass --overwrite"),
    Case("benchmark-onto-a-file",  # issue reproduction (was a traceback)
         lambda t: ["make-benchmark", write(t / "file", "x"), "--test-per-task", 1], r"file: exists and is not a directory"),
    Case("benchmark-entry-not-ours-even-with-overwrite",
         lambda t: then(["make-benchmark", t / "b", "--test-per-task", 1, "--overwrite"],
                        write(t / "b" / "dataset_info.json", {"instraug_shapes_train": {"file_name": "mine.json"}})),
         r"entry 'instraug_shapes_train' exists and was not written by make-benchmark"),
    Case("benchmark-earlier-run-needs-overwrite", earlier_benchmark,
         r"already holds dataset_info\.json entry 'instraug_shapes_train', train\.json, eval\.json, manifest\.json"),
    Case("benchmark-malformed-dataset-info",
         lambda t: then(["make-benchmark", t / "b", "--test-per-task", 1], write(t / "b" / "dataset_info.json", "{")),
         r"b/dataset_info\.json: not valid JSON"),
    Case("benchmark-test-per-task-zero", lambda t: ["make-benchmark", t / "b", "--test-per-task", 0], r"test_per_task >= 1"),
    Case("benchmark-image-size-too-small", lambda t: ["make-benchmark", t / "b", "--image-size", 8], r"image_size in \[32, 2048\]; got .*8"),
    Case("benchmark-read-only", lambda t: ["make-benchmark", readonly_dir(t) / "b", "--test-per-task", 1],
         r"cannot write \(.*\); nothing was changed"),
    # ------------------------------------------------------------ pregen
    Case("pregen-direct-prompts-above-five",  # issue reproduction (was silently 5)
         lambda t: ["pregen", templates(t), "--out", t / "p", "--direct-prompts", 6],
         r"--direct-prompts 6: .*direct\.json has 5 direct prompts \(choose 0-5\)"),
    Case("pregen-guided-prompts-above-guides", lambda t: ["pregen", templates(t), "--out", t / "p", "--guided-prompts", 9],
         r"--guided-prompts 9: .*guided\.json has 5 guides"),
    Case("pregen-guided-prompts-above-custom-guides",
         lambda t: ["pregen", templates(t), "--out", t / "p", "--guided-prompts", 3, "--guides",
                    write(t / "g.json", {"guides": ["Be brief."], "request": "Rephrase: {{instruction}}"})],
         r"--guided-prompts 3: .*g\.json has 1 guides"),
    Case("pregen-negative-prompts", lambda t: ["pregen", templates(t), "--out", t / "p", "--direct-prompts", -1],
         r"meta-prompt counts must be >= 0"),
    Case("pregen-out-is-a-file",  # issue reproduction (was reported after the model load)
         lambda t: ["pregen", templates(t), "--out", write(t / "p", "x")], r"--out: .*p exists and is not a directory"),
    Case("pregen-out-under-a-file", lambda t: ["pregen", templates(t), "--out", write(t / "f", "x") / "p"],
         r"--out: cannot write to .*f/p"),
    Case("pregen-out-read-only", lambda t: ["pregen", templates(t), "--out", readonly_dir(t) / "p"], r"--out: cannot write to"),
    Case("pregen-prompt-longer-than-context",  # issue reproduction (was 4 silent minutes)
         long_template, r"seed t/0 \('word word.*prompt of \d+ tokens \+ reply budget of \d+ exceeds the 8192-token "
         r"context of SmolLM2-135M-Instruct", loads_model=True),
    Case("pregen-api-base-secret-redacted",  # issue reproduction: the password was printed
         lambda t: ["pregen", templates(t), "--out", t / "p", "--backend", "openai", "--model", "m", "--api-base",
                    "http://user:SECRET@127.0.0.1:9/v1", "--max-retries", 0, "--min-fidelity", 0],
         r"^error: http://\*\*\*@127\.0\.0\.1:9/v1/chat/completions failed after 1 attempt"),
    Case("pregen-api-base-bad-scheme-redacted",
         lambda t: ["pregen", templates(t), "--out", t / "p", "--backend", "openai", "--model", "m", "--api-base",
                    "ftp://user:SECRET@host/v1?api_key=SECRET2", "--min-fidelity", 0],
         r"--api-base must be an http:// or https:// URL; got 'ftp://\*\*\*@host/v1\?api_key=\*\*\*'"),
    Case("pregen-row-without-user-turn",
         pregen_bad_row("no_user_turn"),
         r"rows\.json:row 1: no user turn with text"),
    Case("pregen-image-count-mismatch",
         pregen_bad_row("media_count"),
         r"rows\.json:row 1: 2 <image> placeholder\(s\) but 1 images"),
    Case("pregen-missing-image-file",
         pregen_bad_row("missing_media"),
         r"rows\.json:row 1: image file not found"),
    Case("pregen-llava-image-count-mismatch",
         lambda t: ["pregen", write(t / "l.json", [{"image": "a.jpg", "conversations": [
             {"from": "human", "value": "Describe it."}, {"from": "gpt", "value": "A cat."}]}]), "--out", t / "p"],
         r"l\.json:row 0: 0 <image> placeholder\(s\) but 1 images"),
    Case("pregen-llava-missing-image-in-media-dir",
         lambda t: ["pregen", write(t / "l.json", [{"image": "a.jpg", "conversations": [
             {"from": "human", "value": "<image>Describe it."}, {"from": "gpt", "value": "A cat."}]}]),
                    "--media-dir", t, "--out", t / "p"], r"l\.json:row 0: image file not found: .*a\.jpg"),
    Case("pregen-limit-zero", lambda t: ["pregen", templates(t), "--out", t / "p", "--limit", 0], r"--limit: expected a number >= 1"),
    Case("pregen-length-window", lambda t: ["pregen", templates(t), "--out", t / "p", "--length-window", "1"],
         r"--length-window: expected low,high"),
    Case("pregen-executor", lambda t: ["pregen", templates(t), "--out", t / "p", "--executor", "slurm"],
         r"--executor must be local or ray"),
    Case("pregen-strategy", lambda t: ["pregen", templates(t), "--out", t / "p", "--strategy", "random"],
         r"strategy must be one of single, multi_temperature, iterative"),
    Case("pregen-unknown-task", lambda t: ["pregen", templates(t), "--out", t / "p", "--tasks", "nope"], r"unknown task\(s\) 'nope'"),
    Case("pregen-source-missing", lambda t: ["pregen", t / "none.json", "--out", t / "p"], r"file not found: .*none\.json"),
    Case("pregen-source-not-json", lambda t: ["pregen", write(t / "s.json", "{nope"), "--out", t / "p"], r"s\.json: not valid JSON"),
    Case("pregen-option-of-another-backend",
         lambda t: ["pregen", templates(t), "--out", t / "p", "--backend", "openai", "--quantization-bits", 4,
                    "--min-fidelity", 0], r"--quantization-bits does not apply to the openai backend"),
    Case("pregen-negative-temperature",  # issue reproduction (ran and was recorded)
         lambda t: ["pregen", templates(t), "--out", t / "p", "--temperature", -1], r"--temperature/--temperatures: expected a number in \[0, 5\], got -1"),
    Case("pregen-temperatures-inf", lambda t: ["pregen", templates(t), "--out", t / "p", "--strategy", "multi_temperature",
                                               "--temperatures", "0.5,inf"], r"--temperature/--temperatures: .*got inf"),
    Case("pregen-top-p-nan",  # issue reproduction (NaN went into manifest.json)
         lambda t: ["pregen", templates(t), "--out", t / "p", "--top-p", "nan"], r"--top-p: expected a number in \(0, 1\], got nan"),
    Case("pregen-top-p-zero", lambda t: ["pregen", templates(t), "--out", t / "p", "--top-p", 0], r"--top-p: expected a number in \(0, 1\]"),
    Case("pregen-length-slack-nan", lambda t: ["pregen", templates(t), "--out", t / "p", "--length-slack", "nan"],
         r"--length-slack: expected a number >= 0, got nan"),
    Case("pregen-near-duplicate-above-one", lambda t: ["pregen", templates(t), "--out", t / "p", "--near-duplicate", 1.5],
         r"--near-duplicate: expected a number in \[0, 1\], got 1.5"),
    Case("pregen-template-task-twice",  # issue reproduction (the first list was dropped silently)
         lambda t: ["pregen", write(t / "dup.json", '{"t": ["Describe the {object}."], "t": ["Name the {object}."]}'),
                    "--out", t / "p"], r"dup\.json: the key 't' is given twice"),
    Case("pregen-yaml-config-key-twice",  # issue reproduction (the last value was taken)
         lambda t: pregen_config(t, "source: {templates}\nmin_fidelity: 0.5\nmin_fidelity: 0.6\n"),
         r"pregen\.yaml: the key 'min_fidelity' is given twice \(line 3\)"),
    Case("pregen-json-template-nan", lambda t: ["pregen", write(t / "nan.json", '{"t": ["Name the {object}."], "n": NaN}'),
                                                "--out", t / "p"], r"nan\.json: NaN is not valid JSON"),
    Case("pregen-out-holds-a-foreign-manifest",  # issue reproduction (a make-benchmark folder was overwritten)
         lambda t: ["pregen", templates(t), "--out", then(t / "b", write(t / "b" / "manifest.json", {"seed": 0}),
                                                          write(t / "b" / "pool.jsonl", "{}\n"))],
         r"b/manifest\.json: not a pool manifest written by instraug-plugin .*choose another --out"),
    Case("pregen-out-holds-a-pool-without-manifest",
         lambda t: ["pregen", templates(t), "--out", then(t / "b", write(t / "b" / "pool.jsonl", "{}\n"))],
         r"b/pool\.jsonl: exists without the manifest\.json pregen writes"),
    Case("make-benchmark-huge-image",  # issue reproduction (was "unexpected MemoryError (a bug)")
         lambda t: ["make-benchmark", t / "bench", "--image-size", 100000], r"image_size in \[32, 2048\]; got .*100000"),
    Case("pregen-min-fidelity-out-of-range", lambda t: ["pregen", templates(t), "--out", t / "p", "--min-fidelity", 2],
         r"--min-fidelity must be in \[0, 1\]"),
    Case("pregen-config-key-typo", lambda t: pregen_config(t, "source: {templates}\nmin-fidelty: 0.8\n"),
         r"pregen\.yaml: unknown option 'min-fidelty' \(did you mean 'min_fidelity'\?\)"),
    Case("pregen-config-unknown-key", lambda t: pregen_config(t, "source: {templates}\nwhatever: 1\n"),
         r"pregen\.yaml: unknown option 'whatever' \(see 'instraug-plugin pregen --help'"),
    Case("pregen-config-key-twice", lambda t: pregen_config(t, "min_fidelity: 0.5\nmin-fidelity: 0.6\n"),
         r"pregen\.yaml: option 'min_fidelity' given twice"),
    Case("pregen-config-not-a-number", lambda t: pregen_config(t, "source: {templates}\nmin_fidelity: high\n"),
         r"pregen\.yaml: min_fidelity: expected a number or null, got 'high'"),
    Case("pregen-config-bool-as-string", lambda t: pregen_config(t, "source: {templates}\ntask_shape: 'no'\n"),
         r"pregen\.yaml: task_shape: expected true or false, got 'no'"),
    Case("pregen-config-null", lambda t: pregen_config(t, "source: {templates}\ntop_p: null\n"),
         r"pregen\.yaml: top_p: expected a number, got null"),
    Case("pregen-config-int-for-count", lambda t: pregen_config(t, "source: {templates}\nlimit: 2.5\n"),
         r"pregen\.yaml: limit: expected an integer or null, got 2\.5"),
    Case("pregen-config-value-checked-like-a-flag", lambda t: pregen_config(t, "source: {templates}\nstrategy: random\n"),
         r"strategy must be one of single, multi_temperature, iterative"),
    Case("pregen-config-without-source", lambda t: pregen_config(t, "limit: 2\n"), r"Missing argument 'source'"),
    Case("pregen-config-broken-yaml", lambda t: pregen_config(t, "limit: [2\n"), r"pregen\.yaml: not valid YAML \(.* at line 2"),
    Case("pregen-config-not-a-mapping", lambda t: pregen_config(t, "- limit\n"),
         r"pregen\.yaml: expected a mapping of pregen options, got list"),
    Case("pregen-config-broken-json", lambda t: pregen_config(t, "{", "pregen.json"), r"pregen\.json: not valid JSON"),
    Case("pregen-config-suffix", lambda t: pregen_config(t, "limit: 2\n", "pregen.txt"),
         r"pregen\.txt: expected a \.yaml, \.yml or \.json pregen config"),
    Case("pregen-config-missing", lambda t: ["pregen", "--config", t / "none.yaml"], r"pregen config not found: .*none\.yaml"),
    Case("pregen-manifest-rerun-without-out", lambda t: ["pregen", "--config", pool_manifest(t, limit=1)],
         r"--config .*manifest\.json: a pool manifest; give --out, a new folder"),
    Case("pregen-manifest-rerun-into-its-folder",
         lambda t: ["pregen", "--config", pool_manifest(t, limit=1), "--out", t / "p"],
         r"--out .*p: the folder of the manifest --config reads"),
    Case("pregen-manifest-without-options", lambda t: ["pregen", "--config", pool_manifest(t), "--out", t / "q"],
         r"manifest\.json: a pool manifest without recorded options"),
    Case("pregen-manifest-bad-recorded-value",
         lambda t: ["pregen", "--config", pool_manifest(t, rounds="two"), "--out", t / "q"],
         r"manifest\.json: rounds: expected an integer, got 'two'"),
    Case("pregen-manifest-api-base-credentials-not-recorded",
         lambda t: ["pregen", "--config", pool_manifest(t, backend="openai", model="m", api_base="http://***@127.0.0.1:9/v1"),
                    "--out", t / "q"], r"the recorded --api-base had its credentials removed; give --api-base"),
    # ------------------------------------------------------------ plan (and pregen / build --plan)
    Case("plan-report-missing", lambda t: ["plan", "--report", t / "none", "--out", t / "plan.json"],
         r"--report: file not found: .*none"),
    Case("plan-report-folder-without-report", lambda t: ["plan", "--report", t, "--out", t / "plan.json"],
         r"--report .*: no report\.json in this folder"),
    Case("plan-report-broken-json", lambda t: ["plan", "--report", write(t / "report.json", "{"), "--out", t / "p.json"],
         r"report\.json: not valid JSON"),
    Case("plan-report-not-a-report", lambda t: ["plan", "--report", eval_report(t, {"overall": {}}), "--out", t / "p.json"],
         r"report\.json: not an evaluation report"),
    Case("plan-report-bad-number",
         lambda t: ["plan", "--report", eval_report(t, {"tasks": [{"task": "a", "pdr": "high"}]}), "--out", t / "p.json"],
         r"report\.json: tasks\[0\]\.pdr is not a number: 'high'"),
    Case("plan-report-without-tasks", lambda t: ["plan", "--report", eval_report(t, {"tasks": []}), "--out", t / "p.json"],
         r"report\.json: the report has no tasks"),
    Case("plan-floor-above-epsilon",
         lambda t: ["plan", "--report", eval_report(t), "--epsilon", 0.3, "--floor", 0.4, "--out", t / "p.json"],
         r"--epsilon 0\.3 --floor 0\.4 --strength 2\.0 --max-budget 4: epsilon floor must be in \[0, epsilon=0\.3\]; got 0\.4"),
    Case("plan-max-budget", lambda t: ["plan", "--report", eval_report(t), "--max-budget", 0, "--out", t / "p.json"],
         r"--max-budget 0: max budget must be >= 1; got 0"),
    Case("plan-no-report-task-in-the-pool",
         lambda t: ["plan", "--report", eval_report(t), "--pool", pool(t), "--out", t / "p.json"],
         r"none of its tasks \(a, b\) is a task of the pool \(colors, shapes\); the names must match"),
    Case("plan-pool-missing", lambda t: ["plan", "--report", eval_report(t), "--pool", t / "nopool", "--out", t / "p.json"],
         r"pool file not found: .*nopool"),
    Case("plan-out-is-a-directory", lambda t: ["plan", "--report", eval_report(t), "--out", t],
         r"--out: .* is a directory; give the plan file to write"),
    Case("plan-out-unwritable",
         lambda t: ["plan", "--report", eval_report(t), "--out", readonly_dir(t) / "sub" / "p.json"], r"--out: cannot write to"),
    Case("pregen-plan-missing", lambda t: ["pregen", templates(t), "--plan", t / "none.json", "--out", t / "p"],
         r"file not found: .*none\.json"),
    Case("pregen-plan-is-a-report",
         lambda t: ["pregen", templates(t), "--plan", eval_report(t) / "report.json", "--out", t / "p"],
         r"report\.json: not a plan file"),
    Case("pregen-manifest-plan-changed", lambda t: ["pregen", "--config", planned_pool_manifest(t), "--out", t / "q"],
         r"manifest\.json: its pool was made with the plan budgets \{'t': 3\}; .*plan\.json now gives \{'t': 1\}"),
    Case("build-plan-with-epsilon", lambda t: build_args(t, "--plan", plan_file(t, colors=0.1), "--epsilon", 0.3),
         r"--epsilon: not with --plan \(the plan sets every task's epsilon\)"),
    Case("build-plan-out-of-its-bounds", lambda t: build_args(t, "--plan", plan_file(t, colors=0.9)),
         r"plan\.json: bad plan \(task 'colors': epsilon 0\.9"),
    # ------------------------------------------------------------ stats
    Case("stats-out-is-a-file",  # issue reproduction (was a traceback)
         lambda t: ["stats", pool(t), "--out", write(t / "report", "x"), "--no-embeddings"],
         r"--out: .*report exists and is not a directory"),
    Case("stats-pool-missing", lambda t: ["stats", t / "nopool"], r"pool file not found"),
    Case("stats-pool-empty", lambda t: ["stats", pool(t, []), "--no-embeddings"], r"the pool has no records"),
    Case("stats-manifest-malformed", lambda t: ["stats", pool(t, manifest="{"), "--no-embeddings"], r"manifest\.json: not valid JSON"),
    Case("stats-manifest-bad-count", lambda t: ["stats", pool(t, manifest={"kept": -1}), "--no-embeddings"],
         r"'kept' must be a non-negative integer"),
    Case("stats-unknown-judge", lambda t: ["stats", pool(t), "--judge", "nojudge"], r"unknown judge 'nojudge'"),
    # ------------------------------------------------------------ eval (every check before the model loads)
    Case("eval-unknown-template-field",  # issue reproduction (was reported after loading the model)
         lambda t: ["eval", t / "no-model", "--eval-set", eval_set(t, "What is the {colour}?"), "--variants", "both",
                    "--out", t / "r"], r"task 't' variant original/0: instance 't/0': template field '\{colour\}' has no value"),
    Case("eval-set-missing", lambda t: ["eval", t / "m", "--eval-set", t / "none.json", "--out", t / "r"],
         r"evaluation set not found"),
    Case("eval-variants", lambda t: ["eval", t / "m", "--eval-set", eval_set(t), "--variants", "all", "--out", t / "r"],
         r"variants must be one of original, heldout, both"),
    Case("eval-batch-size", lambda t: ["eval", t / "m", "--eval-set", eval_set(t), "--batch-size", 0, "--out", t / "r"],
         r"--batch-size, --max-new-tokens and --max-instances must be >= 1"),
    Case("eval-unknown-task", lambda t: ["eval", t / "m", "--eval-set", eval_set(t), "--tasks", "nope", "--out", t / "r"],
         r"unknown task 'nope'"),
    Case("eval-out-is-a-file", lambda t: ["eval", t / "m", "--eval-set", eval_set(t), "--out", write(t / "r", "x")],
         r"--out: .*r exists and is not a directory"),
    # ------------------------------------------------------------ train (checked before LLaMA-Factory loads)
    Case("train-broken-yaml",  # issue reproduction (was a traceback)
         lambda t: ["train", train_config(t, "model_name_or_path: x\n  stage: [sft\n")],
         r"train\.yaml: not valid YAML \(.* at line 2 column \d+\)"),
    Case("train-config-missing", lambda t: ["train", t / "none.yaml"], r"config file not found"),
    Case("train-config-not-a-mapping", lambda t: ["train", train_config(t, "- a\n- b\n")], r"expected a mapping of training arguments"),
    Case("train-config-suffix", lambda t: ["train", train_config(t, "a: 1\n", "train.txt")], r"expected a \.yaml, \.yml or \.json"),
    Case("train-config-broken-json", lambda t: ["train", train_config(t, "{", "train.json")], r"train\.json: not valid JSON"),
    Case("train-key-typo", lambda t: ["train", train_config(t, "instraug_epsilom: 0.3\n")],
         r"unknown key 'instraug_epsilom' \(did you mean 'instraug_epsilon'\?\)"),
    Case("train-epsilon-out-of-range", lambda t: ["train", train_config(t, f"instraug_pool: {DEMO_POOL}\ninstraug_epsilon: 2\n")],
         r"instraug_epsilon: expected a number in \[0\.0, 1\.0\] or a \{task: number in \[0, 1\]\} map \('\*': other tasks\), got 2"),
    Case("train-skip-invalid-not-a-bool",
         lambda t: ["train", train_config(t, f"instraug_pool: {DEMO_POOL}\ninstraug_skip_invalid: 'yes'\n")],
         r"instraug_skip_invalid: expected true or false"),
    Case("train-pool-mode-without-pool", lambda t: ["train", train_config(t, "instraug_mode: pool\n")],
         r"instraug_pool: required when instraug_mode is pool"),
    Case("train-pool-missing", lambda t: ["train", train_config(t, f"instraug_pool: {t / 'nopool'}\n")],
         r"instraug_pool: .*nopool does not exist"),
    # ------------------------------------------------------------ bootstrap-guides
    Case("bootstrap-guides-out-is-a-directory", lambda t: ["bootstrap-guides", "--out", t], r"--out: .* is a directory"),
]


@pytest.fixture()
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any rewriter, judge or evaluated model that would load fails the test."""
    from instraug_plugin import judges
    from instraug_plugin.backends import registry
    from instraug_plugin.generation import pipeline
    from instraug_plugin.integrations.llamafactory import generator

    def loaded(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model was loaded before the input was checked")

    for name in ("transformers", "vllm"):
        monkeypatch.setitem(registry.BACKENDS, name, loaded)
    monkeypatch.setattr(judges, "load_judge", loaded)
    monkeypatch.setattr(pipeline, "load_judge", loaded)
    monkeypatch.setattr(generator, "resolve_model", loaded)
    monkeypatch.setattr(generator.Generator, "load", loaded)


def test_battery_has_every_verb_and_enough_cases() -> None:
    assert len(CASES) >= 60
    assert len({case.id for case in CASES}) == len(CASES)
    verbs = {case.id.split("-")[0] for case in CASES}
    assert {"build", "benchmark", "pregen", "stats", "eval", "train", "bootstrap", "cli"} <= verbs


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          request: pytest.FixtureRequest) -> None:
    if not case.loads_model:
        request.getfixturevalue("no_model_loads")
    work = tmp_path / "work"
    work.mkdir()
    args = case.setup(work)
    capsys.readouterr()
    before = snapshot(work)
    code, out, err = run_cli(args, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(case.message, lines[0]), lines[0]
    assert "Traceback" not in err + out and "SECRET" not in err + out
    assert snapshot(work) == before, "the failed command changed files"


@pytest.mark.parametrize("make_args", [
    lambda t: ["train", train_config(t, "model_name_or_path: x\n  stage: [sft\n")],
    lambda t: ["pregen", templates(t), "--out", write(t / "p", "x")],
], ids=["train-broken-yaml", "pregen-out-is-a-file"])
def test_real_executable_prints_one_line(make_args: Callable[[Path], list[Any]], tmp_path: Path,
                                         offline_env: dict[str, str]) -> None:
    """The installed `instraug-plugin` script, in its own process: nothing but the error line on stderr."""
    args = [str(a) for a in make_args(tmp_path)]
    result = subprocess.run([str(BIN / "instraug-plugin"), *args], capture_output=True, text=True, env=offline_env,
                            timeout=120, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: "), result.stderr


# ---------------------------------------------------------------- what is skipped, kept or warned about


def test_build_skip_invalid_reports_counts_by_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [GOOD_ROW, BAD_ROWS["no_user_turn"], BAD_ROWS["media_count"], BAD_ROWS["missing_media"], GOOD_ROW]
    info = dataset(tmp_path, rows)
    code, out, err = run_cli(["build", info, "--name", "d", "--pool", DEMO_POOL, "--skip-invalid"], capsys)
    assert code == 0, err
    assert "skipped 3 invalid row(s): 1 no_user_turn, 1 media_count, 1 missing_media" in out
    assert len(json.loads((tmp_path / "ds" / "d_instraug.json").read_text())) == 2


def test_build_overwrite_replaces_only_its_own_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = earlier_build(tmp_path)
    info_path = tmp_path / "out" / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["theirs"] = {"file_name": "theirs.json", "formatting": "alpaca"}
    info_path.write_text(json.dumps(info))
    code, _, err = run_cli([*args, "--overwrite", "--seed", "7"], capsys)
    assert code == 0, err
    after = json.loads(info_path.read_text())
    assert after["theirs"] == {"file_name": "theirs.json", "formatting": "alpaca"}
    assert after["demo_aug"]["instraug_build"]["seed"] == 7
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dataset_info.json", "demo_aug.json"]  # no temp files


def test_build_into_the_source_directory_keeps_the_users_entries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = demo(tmp_path)
    before = json.loads((data / "dataset_info.json").read_text())
    code, _, err = run_cli(build_args_existing(data), capsys)
    assert code == 0, err
    after = json.loads((data / "dataset_info.json").read_text())
    assert {k: after[k] for k in before} == before and "instraug_demo_instraug" in after


def test_build_llava_json_with_media_dir_checks_and_resolves_images(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = demo(tmp_path)
    code, _, err = run_cli(["build", data / "instraug_demo" / "demo_llava.json", "--pool", DEMO_POOL, "--media-dir",
                            data, "--output-dir", tmp_path / "out"], capsys)
    assert code == 0, err
    rows = json.loads((tmp_path / "out" / "demo_llava_instraug.json").read_text())
    assert all(Path(row["image"]).is_absolute() and Path(row["image"]).is_file() for row in rows)


def build_args_existing(data: Path) -> list[Any]:
    return ["build", data / "dataset_info.json", "--name", "instraug_demo", "--pool", data / "instraug_demo" / "pool"]


def test_make_benchmark_keeps_other_entries_and_overwrites_only_its_own(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    bench = tmp_path / "b"
    write(bench / "dataset_info.json", {"mine": {"file_name": "m.json"}})
    args = ["make-benchmark", bench, "--train-per-task", 1, "--test-per-task", 1, "--text-scenes"]
    assert run_cli(args, capsys)[0] == 0
    assert run_cli([*args, "--seed", 3, "--overwrite"], capsys)[0] == 0
    info = json.loads((bench / "dataset_info.json").read_text())
    assert info["mine"] == {"file_name": "m.json"} and info["instraug_shapes_train"]["instraug_benchmark"]["seed"] == 3
    assert json.loads((bench / "manifest.json").read_text())["seed"] == 3
    assert not [p for p in bench.iterdir() if p.name.startswith(".")]  # the staging folder is gone


def test_stats_says_when_pool_and_manifest_disagree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue reproduction: a shortened pool.jsonl reported the manifest's pass rate as if it were the pool's."""
    folder = tmp_path / "pool"
    shutil.copytree(REPO / "benchmarks" / "pools" / "positions_train", folder)
    lines = (folder / "pool.jsonl").read_text().splitlines(keepends=True)
    (folder / "pool.jsonl").write_text("".join(lines[:25]))
    code, _, err = run_cli(["stats", folder, "--no-embeddings"], capsys)
    assert code == 0
    assert err.count("\n") == 1 and err.startswith("warning: pool.jsonl and manifest.json disagree: pool.jsonl has ")
    assert "manifest records kept 46" in err
    assert "n/a (pool.jsonl and manifest disagree)" in (folder / "stats" / "stats.md").read_text()
    shutil.copy(REPO / "benchmarks" / "pools" / "positions_train" / "pool.jsonl", folder / "pool.jsonl")
    assert run_cli(["stats", folder, "--no-embeddings"], capsys)[2] == ""  # the untouched pool agrees


def test_pregen_skip_invalid_counts_rows_and_manifest_records_meta_prompts(tmp_path: Path) -> None:
    from instraug_plugin.backends.base import GenerationRequest
    from instraug_plugin.core.filters import FilterConfig
    from instraug_plugin.generation.pipeline import PregenConfig, pregen_to_directory
    from instraug_plugin.generation.prompts import load_meta_prompts
    from instraug_plugin.inputs import load_seed_set

    info = dataset(tmp_path, [GOOD_ROW, BAD_ROWS["no_user_turn"], BAD_ROWS["missing_media"]])
    seed_set = load_seed_set(info, dataset="d", skip_invalid=True)
    assert seed_set.invalid_rows == {"no_user_turn": 1, "missing_media": 1}
    assert [s.text for s in seed_set.seeds] == ["<image>What color is the shape?"]

    class Echo:  # a rewriter whose replies are fixed: this test is about the manifest, not generation
        name, model_id, supports_constraints = "echo", "echo", False

        def generate(self, requests: list[GenerationRequest]) -> list[str]:
            return ["Which color does the shape have?"] * len(requests)

        def close(self) -> None:
            return None

    prompts = load_meta_prompts(2, 1)
    pregen_to_directory(seed_set.seeds, Echo(), prompts, PregenConfig(filters=FilterConfig(min_fidelity=0)),
                        tmp_path / "p", meta_prompt_counts={"direct": 2, "guided": 1}, invalid_rows=seed_set.invalid_rows)
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert manifest["meta_prompt_counts"] == {"direct": 2, "guided": 1}
    assert manifest["invalid_rows"] == {"no_user_turn": 1, "missing_media": 1}


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(how: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INSTRAUG_DEBUG", raising=False)
    args = ["stats", tmp_path / "nopool"]
    if how == "flag":
        args.insert(0, "--debug")
    else:
        monkeypatch.setenv("INSTRAUG_DEBUG", "1")
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "Traceback (most recent call last)" in err
    assert err.splitlines()[-1].startswith("error: pool file not found")


def test_unexpected_errors_are_one_line_with_exit_1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("INSTRAUG_DEBUG", raising=False)
    from instraug_plugin import stats

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(stats, "write_stats", broken)
    code, _, err = run_cli(["stats", pool(tmp_path), "--no-embeddings"], capsys)
    assert code == 1
    assert err.strip() == ("error: unexpected ZeroDivisionError: division by zero (a bug: rerun with --debug or "
                           "INSTRAUG_DEBUG=1 for the traceback and report it)")


@pytest.mark.parametrize(("text", "expected"), [
    ("http://user:SECRET@host:8000/v1", "http://***@host:8000/v1"),
    ("https://TOKEN@host/v1 failed", "https://***@host/v1 failed"),
    ("http://host/v1?api_key=SECRET&model=m", "http://host/v1?api_key=***&model=m"),
    ("http://host/v1/chat", "http://host/v1/chat"),
])
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


# ---------------------------------------------------------------- the training hook, before training


def aligned(rows: list[tuple[str, list[str]]], tasks: list[str] | None = None) -> Any:
    """LLaMA-Factory's aligned rows (`_prompt`, `_response`, `_images`, ...) as a real datasets.Dataset."""
    from datasets import Dataset

    data = {"_prompt": [[{"role": "user", "content": text}] for text, _ in rows],
            "_response": [[{"role": "assistant", "content": "x"}] for _ in rows],
            "_images": [images or None for _, images in rows], "_videos": [None] * len(rows),
            "_audios": [None] * len(rows)}
    if tasks is not None:
        data["_instraug_task"] = tasks
    return Dataset.from_dict(data)


def demo_rewriter(epsilon: float = 0.5) -> Any:
    from instraug_plugin.core.pool import Pool
    from instraug_plugin.core.sampling import InstructionRewriter

    return InstructionRewriter(Pool.load(DEMO_POOL), epsilon, 0)


def check(data: Any, *, skip: bool = False, media: bool = True) -> Any:
    from instraug_plugin.integrations.llamafactory.pretrain import check_training_rows

    return check_training_rows(data, demo_rewriter(), all_turns=False, skip_invalid=skip, check_media=media,
                               media_root=REPO / "dataset_info", where="dataset demo")


def test_hook_zero_coverage_is_an_error_naming_pool_and_instruction() -> None:
    """Issue reproduction: a pool matching none of the instructions trained with no word."""
    from instraug_plugin.core.coverage import coverage_verdict

    _, _, coverage = check(aligned([("Translate this sentence.", []), ("Summarize the text.", [])]))
    assert (coverage.instructions, coverage.covered) == (2, 0)
    with pytest.raises(InstrAugError, match=r"instraug_pool: .*pool has no paraphrase for any of the 2 training "
                                            r"instructions \(first unmatched: 'Translate this sentence\.'\)"):
        coverage_verdict(coverage, pools=(str(DEMO_POOL),), mode="pool", epsilon=0.3)
    assert coverage_verdict(coverage, pools=(str(DEMO_POOL),), mode="pool", epsilon=1.0) == []  # originals only
    assert coverage_verdict(coverage, pools=(), mode="live", epsilon=0.3) == []  # live mode writes its pool later


def test_hook_low_coverage_is_a_warning_per_task() -> None:
    from instraug_plugin.core.coverage import LOW_COVERAGE, coverage_verdict

    colors, shapes = "<image>\nWhat color is the shape in the image?", "<image>\nWhich shape is drawn in the picture?"
    rows = [(shapes, []), ("Unknown one.", []), ("Unknown two.", []), (colors, []), (colors, [])]
    _, _, coverage = check(aligned(rows, tasks=["shapes", "shapes", "shapes", "colors", "colors"]), media=False)
    warnings = coverage_verdict(coverage, pools=("P",), mode="pool", epsilon=0.3)
    assert coverage.record() == {"instructions": 4, "covered": 2, "share": 0.5,
                                 "tasks": {"shapes": 0.3333, "colors": 1.0}}
    assert LOW_COVERAGE == 0.5 and len(warnings) == 1
    assert warnings[0].startswith("pool coverage 33% of task 'shapes': 1 of 3 distinct training instructions have "
                                  "a paraphrase in P (below 50%; first unmatched: 'Unknown one.')")


def test_hook_invalid_rows_fail_or_are_skipped_by_kind() -> None:
    image = "instraug_demo/images/red_square.png"
    rows = [("<image>What color?", [image]), ("", []), ("<image><image>Two?", [image]), ("<image>Gone?", ["gone.png"])]
    with pytest.raises(InstrAugError, match=r"dataset demo: training row 1: no user turn with text \(fix the row, "
                                            r"or pass instraug_skip_invalid: true"):
        check(aligned(rows))
    keep, skipped, coverage = check(aligned(rows), skip=True)
    assert keep == [0] and skipped == {"no_user_turn": 1, "media_count": 1, "missing_media": 1}
    assert coverage.instructions == 1
    keep, skipped, _ = check(aligned([("<image><image>Two?", [image])]), media=False)  # text template: plain text
    assert keep is None and skipped == {}


@pytest.mark.slow
def test_training_with_a_pool_that_matches_nothing_fails_before_training(tmp_path: Path, tiny_llava: Path,
                                                                         offline_env: dict[str, str]) -> None:
    """Issue reproduction through the real `instraug-plugin train`: one line, exit 2, no checkpoint."""
    import yaml

    data = demo(tmp_path)
    other = pool(tmp_path, [json.dumps({"task": "t", "seed_id": "t/0", "seed": "Unrelated?", "text": t,
                                        "strategy": s}) for t, s in (("Unrelated?", "seed"), ("Not related?", "single"))])
    config = yaml.safe_load((REPO / "examples" / "tiny_llava_cpu_pool.yaml").read_text())
    config.update(model_name_or_path=str(tiny_llava), dataset_dir=str(data), output_dir=str(tmp_path / "run"),
                  instraug_pool=str(other), instraug_task_column=None)
    config = {k: v for k, v in config.items() if v is not None}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([str(BIN / "instraug-plugin"), "train", str(tmp_path / "c.yaml")], capture_output=True,
                            text=True, env=offline_env, cwd=tmp_path, timeout=600, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert re.match(r"instraug: error: instraug_pool: .* has no paraphrase for any of the \d+ training "
                    r"instructions \(first unmatched: ", last), last
    assert "Traceback" not in result.stderr and not (tmp_path / "run" / "adapter_model.safetensors").exists()


# ------------------------------------------------ rows LLaMA-Factory skips ("abnormal"), counted everywhere

ABNORMAL_ROW = {"messages": [user("<image>What color is the shape?"), user("And its size?"), assistant("Red.")],
                "images": ["img.png"]}


@pytest.mark.parametrize("keep", [False, True])
def test_build_leaves_out_rows_llamafactory_skips_and_says_so(keep: bool, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Issue reproduction: a sharegpt row with two user turns in a row was copied and counted as written."""
    info = dataset(tmp_path, [GOOD_ROW, ABNORMAL_ROW, GOOD_ROW])
    args = ["build", info, "--name", "d", "--pool", DEMO_POOL, "--output-dir", tmp_path / "out"]
    code, out, err = run_cli([*args, "--keep-abnormal"] if keep else args, capsys)
    assert code == 0, err
    rows = json.loads((tmp_path / "out" / "d_instraug.json").read_text())
    if keep:
        assert len(rows) == 3 and rows[1] == ABNORMAL_ROW | {"images": [str((tmp_path / "ds" / "img.png").resolve())]}
        assert "wrote 3 rows" in out and "copied 1 row(s) unchanged that LLaMA-Factory will skip" in out
    else:
        assert len(rows) == 2 and "wrote 2 rows" in out
        assert "left out 1 row(s) LLaMA-Factory would skip at training time" in out


def test_pregen_counts_rows_llamafactory_skips(tmp_path: Path) -> None:
    from instraug_plugin.inputs import load_seed_set

    info = dataset(tmp_path, [GOOD_ROW, ABNORMAL_ROW])
    seeds = load_seed_set(info, dataset="d", strip_media=True)
    assert seeds.invalid_rows == {"abnormal": 1} and len(seeds.seeds) == 1


# ------------------------------------------------ eval names the file a model folder lacks

@pytest.mark.parametrize(("files", "adapter_base", "message"), [
    ({"config.json": "{}", "model.safetensors": "x"}, None,  # issue reproduction (stopped at "...from one of:")
     r"m: no tokenizer files \(tokenizer\.json, tokenizer\.model, vocab\.json, tokenizer_config\.json\)"),
    ({"config.json": "{}", "tokenizer.json": "{}"}, None, r"m: no model weights"),
    ({"tokenizer.json": "{}"}, None, r"m: no config\.json \(not a model folder\)"),
    ({}, "base", r"m: LoRA adapter without its weights \(adapter_model\.safetensors or adapter_model\.bin\)"),
])
def test_resolve_model_names_the_missing_file(files: dict[str, str], adapter_base: str | None, message: str,
                                              tmp_path: Path) -> None:
    """Issue reproduction: a LoRA folder without its weights reported a hub download error."""
    from instraug_plugin.integrations.llamafactory.generator import resolve_model

    for name, text in files.items():
        write(tmp_path / "m" / name, text)
    if adapter_base is not None:
        base = tmp_path / adapter_base
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            write(base / name, "{}")
        write(tmp_path / "m" / "adapter_config.json", {"base_model_name_or_path": str(base)})
    with pytest.raises(InstrAugError, match=message):
        resolve_model(str(tmp_path / "m"), template="chatml")
