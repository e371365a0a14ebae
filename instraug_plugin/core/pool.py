"""The instruction pool: a directory with `pool.jsonl` (one record per row) and `manifest.json`.

Format (one JSON object per line of `pool.jsonl`):

    id            stable hash of (task, seed_id, text)
    task          task name ("default" when the input has no task column)
    seed_id       "<task>/<index>" of the seed instruction
    seed          the seed instruction text, placeholders included
    text          this row's instruction text (equals `seed` for seed rows)
    strategy      "seed" | "single" | "multi_temperature" | "iterative"
    temperature   sampling temperature (null for seed rows)
    round         0 for seeds, 1.. for rephrasing rounds
    parent        text this row was rephrased from (the seed for round 1; null for seeds)
    meta_prompt   name of the meta-prompt under templates/meta_prompts (null for seeds)
    backend       rewriter backend name (null for seeds)
    model         rewriter model id (null for seeds)
    fidelity      the fidelity judge's score against the seed (null for seeds or when not judged)
    kind          the seed's kind: "template" or "instance" (null in pools made before kinds)

Seed rows are always present, so a pool alone is enough to rebuild a template set. `manifest.json`
records the configuration, per-filter reject counts, per-task counts and timings.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from instraug_plugin.core.commit import commit_files
from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.core.jsonfile import read_json_object

POOL_FILE = "pool.jsonl"
MANIFEST_FILE = "manifest.json"
POOL_FORMAT = "instraug-pool/1"  # the manifest's `format`
SEED_STRATEGY = "seed"


def normalize(text: str) -> str:
    """Key used to match instructions: case-folded, whitespace collapsed, outer spaces stripped."""
    return " ".join(text.split()).casefold()  # str.split() splits on exactly what `\s` matches


@dataclass(frozen=True)
class PoolRecord:
    """One instruction in the pool (a seed or a kept paraphrase)."""

    task: str
    seed_id: str
    seed: str
    text: str
    strategy: str = SEED_STRATEGY
    temperature: float | None = None
    round: int = 0
    parent: str | None = None
    meta_prompt: str | None = None
    backend: str | None = None
    model: str | None = None
    fidelity: float | None = None
    kind: str | None = None  # "template" | "instance" (core.instances); None in pools made before kinds

    @property
    def id(self) -> str:
        return hashlib.sha256(f"{self.task}\x00{self.seed_id}\x00{self.text}".encode()).hexdigest()[:16]

    @property
    def is_seed(self) -> bool:
        return self.strategy == SEED_STRATEGY

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, **asdict(self)}

    @classmethod
    def from_json(cls, row: dict[str, Any], *, source: str) -> PoolRecord:
        try:
            return cls(
                task=str(row["task"]),
                seed_id=str(row["seed_id"]),
                seed=str(row["seed"]),
                text=str(row["text"]),
                strategy=str(row.get("strategy", SEED_STRATEGY)),
                temperature=None if row.get("temperature") is None else float(row["temperature"]),
                round=int(row.get("round", 0)),
                parent=row.get("parent"),
                meta_prompt=row.get("meta_prompt"),
                backend=row.get("backend"),
                model=row.get("model"),
                fidelity=None if row.get("fidelity") is None else float(row["fidelity"]),
                kind=None if row.get("kind") is None else str(row["kind"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InstrAugError(f"{source}: bad pool record ({type(exc).__name__}: {exc})") from None


def write_pool(directory: Path, records: Iterable[PoolRecord], manifest: dict[str, Any]) -> Path:
    """Write `pool.jsonl` and `manifest.json` together (`commit_files`: both new, or both as they were).
    The manifest is strict JSON: a NaN or infinity in it is an error, not a `NaN` token."""
    records = list(records)
    try:
        manifest_text = json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise InstrAugError(f"{directory / MANIFEST_FILE}: {exc} (a NaN or infinite option value?)") from None

    def write_records(fh: Any) -> None:
        for record in records:
            fh.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")

    pool_path = directory / POOL_FILE
    commit_files({pool_path: write_records, directory / MANIFEST_FILE: manifest_text})
    return pool_path


def check_pool_output(directory: Path) -> None:
    """Refuse an output folder whose `pool.jsonl` / `manifest.json` were not written by this tool (the
    manifest's `format` marks its own), so pregen never replaces someone else's files."""
    manifest_path, pool_path = directory / MANIFEST_FILE, directory / POOL_FILE
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            manifest = None
        if not (isinstance(manifest, dict) and manifest.get("format") == POOL_FORMAT):
            raise InstrAugError(f"{manifest_path}: not a pool manifest written by instraug-plugin (no \"format\": "
                                f"\"{POOL_FORMAT}\"); it is never replaced: choose another --out")
    elif pool_path.exists():
        raise InstrAugError(f"{pool_path}: exists without the manifest.json pregen writes beside it; it is never "
                            "replaced: choose another --out")


def _pool_file(path: Path) -> Path:
    return path / POOL_FILE if path.is_dir() else path


def read_records(path: Path) -> Iterator[PoolRecord]:
    """Yield the records of a pool directory or `pool.jsonl` file; one-line errors on bad input."""
    pool_path = _pool_file(path)
    if not pool_path.is_file():
        raise InstrAugError(f"pool file not found: {pool_path}")
    with pool_path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InstrAugError(f"{pool_path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise InstrAugError(f"{pool_path}:{lineno}: expected a JSON object")
            yield PoolRecord.from_json(row, source=f"{pool_path}:{lineno}")


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest next to a pool (empty dict if the pool has none)."""
    manifest_path = (path if path.is_dir() else path.parent) / MANIFEST_FILE
    if not manifest_path.is_file():
        return {}
    return read_json_object(manifest_path)


SCOPES = ("template", "all")


def scoped_records(path: Path, scope: str = "template") -> list[PoolRecord]:
    """The records of one pool that augmentation with `scope` may use.

    `template` (default): no paraphrase of an instance-level seed (one row's own request, see
    `core.instances`); `all`: every paraphrase, an error unless the pool's manifest records that its
    instance-level paraphrases passed the answer check. Records without a kind (pools made before
    kinds) count as template-level.
    """
    if scope not in SCOPES:
        raise InstrAugError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    records = list(read_records(path))
    instance = sum(r.kind == "instance" and not r.is_seed for r in records)
    if not instance:
        return records
    if scope == "template":
        return [r for r in records if r.kind != "instance" or r.is_seed]
    if not read_manifest(path).get("answer_check"):
        raise InstrAugError(
            f"scope all: {_pool_file(path)} has {instance} instance-level paraphrase(s) made without the answer "
            "check (rerun pregen without --no-answer-check, or use scope template)"
        )
    return records


class Pool:
    """Records indexed by (task, normalized seed text), for fast lookup on the training hot path."""

    def __init__(self, records: Iterable[PoolRecord]):
        self.records: list[PoolRecord] = list(records)
        self._variants_by_seed: dict[tuple[str | None, str], list[str]] = defaultdict(list)
        self._tasks_by_seed: dict[str, set[str]] = defaultdict(set)
        for record in self.records:
            if not record.is_seed:
                key = normalize(record.seed)
                self._tasks_by_seed[key].add(record.task)
                for task in (record.task, None):
                    bucket = self._variants_by_seed[(task, key)]
                    if record.text not in bucket:
                        bucket.append(record.text)

    @classmethod
    def load(cls, *paths: Path, scope: str = "template") -> Pool:
        """Load and merge one or more pools, keeping the instance-level paraphrases `scope` allows
        (`scoped_records`)."""
        return cls(record for path in paths for record in scoped_records(Path(path), scope))

    def variants(self, seed_text: str, task: str | None = None) -> list[str]:
        """Kept paraphrases of `seed_text` (matched after normalization); [] if none.

        With `task`, only that task's paraphrases; without, those of any task.
        """
        return self._variants_by_seed.get((task, normalize(seed_text)), [])

    def task_of(self, seed_text: str) -> str | None:
        """The task whose paraphrases `seed_text` has, or None when no task or several tasks have them."""
        tasks = self._tasks_by_seed.get(normalize(seed_text), ())
        return next(iter(tasks)) if len(tasks) == 1 else None

    def __len__(self) -> int:
        return len(self.records)
