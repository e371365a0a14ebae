"""Commit several output files as one step: the new state whole, or the old state untouched (torch-free).

`commit_files` writes each file under a hidden temporary name beside its target, then moves every old
target aside and every new file into place. If anything fails on the way (a full disk, a read-only
file, SIGTERM or Ctrl-C), each target gets its old content back, files that did not exist are removed
again and no temporary file stays behind; the error names the file that could not be written. Every
command that writes more than one file (pregen's pool and manifest, build's data and dataset_info,
make-benchmark) commits through here.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from instraug_plugin.core.errors import InstrAugError

Content = str | bytes | Callable[[TextIO], None]  # text, bytes, or a writer that streams text into the file


class Interrupted(BaseException):
    """SIGTERM arrived while files were being committed (raised so that the clean-up runs)."""


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises `Interrupted` (SIGINT already raises KeyboardInterrupt) in the main
    thread; elsewhere, and afterwards, signal handling is unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _side_name(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}")


def _write(path: Path, content: Content) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        with path.open("w", encoding="utf-8") as fh:
            content(fh)


def commit_files(files: Mapping[Path, Content]) -> None:
    """Write all `files` or none of them (see the module); InstrAugError naming the file on failure."""
    temps: dict[Path, Path] = {}
    backups: dict[Path, Path] = {}
    placed: list[Path] = []
    created_dirs: list[Path] = []
    current: Path | None = None
    try:
        with signals_interrupt():
            for path in files:
                for folder in reversed([path.parent, *path.parent.parents]):
                    if not folder.exists():
                        folder.mkdir()
                        created_dirs.append(folder)
            for path, content in files.items():
                current = path
                temps[path] = _side_name(path, "tmp")
                _write(temps[path], content)
            for path in files:
                current = path
                if path.exists():
                    backups[path] = _side_name(path, "old")
                    os.replace(path, backups[path])
                os.replace(temps[path], path)
                del temps[path]
                placed.append(path)
            current = None
            for backup in backups.values():
                backup.unlink(missing_ok=True)
    except (OSError, Interrupted, KeyboardInterrupt) as exc:
        _roll_back(temps, backups, placed, created_dirs)
        if isinstance(exc, OSError):
            where = current if current is not None else next(iter(files), Path("."))
            raise InstrAugError(f"{where}: cannot write ({exc.strerror or exc}); nothing was changed") from None
        raise


def _roll_back(temps: dict[Path, Path], backups: dict[Path, Path], placed: list[Path],
               created_dirs: list[Path]) -> None:
    """Put every target back as it was and remove what this commit wrote (best effort, never raises)."""
    for path in [*placed, *backups]:
        try:
            if path in backups:
                if backups[path].exists():
                    os.replace(backups[path], path)
            else:
                path.unlink(missing_ok=True)
        except OSError:
            pass
    for temp in temps.values():
        try:
            temp.unlink(missing_ok=True)
        except OSError:
            pass
    for folder in reversed(created_dirs):
        try:
            folder.rmdir()
        except OSError:
            pass
