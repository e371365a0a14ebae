"""Startup hook (run from `instraug_plugin_llamafactory.pth` / `.start` at interpreter start).

Acts only in `llamafactory-cli` (or `lmf`) and in the torchrun children that run LLaMA-Factory's
`launcher.py`; there it only registers a post-import hook that patches `llamafactory.train.tuner`
when it is first imported. Every other Python process pays one `sys.argv` check.
"""

from __future__ import annotations

import os
import sys

TARGET = "llamafactory.train.tuner"
_CLI_NAMES = ("llamafactory-cli", "lmf")


def _is_llamafactory_process(argv0: str) -> bool:
    name = os.path.basename(argv0)
    if name.endswith((".exe", "-script.py")):
        name = name.rsplit(".", 1)[0].removesuffix("-script")
    return name in _CLI_NAMES or argv0.replace("\\", "/").endswith("llamafactory/launcher.py")


class _PostImportFinder:
    """A meta-path finder that lets the normal finders locate TARGET, then patches it after execution."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        if fullname != TARGET:
            return None
        import importlib.util

        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module: object) -> None:
            exec_module(module)
            from instraug_plugin.integrations.llamafactory.hook import patch_tuner

            patch_tuner(module)

        spec.loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


def activate() -> None:
    """Entry point of the startup hook; a no-op outside LLaMA-Factory processes."""
    argv = getattr(sys, "argv", None) or [""]
    if os.environ.get("INSTRAUG_PLUGIN_DISABLE") == "1" or not _is_llamafactory_process(argv[0]):
        return
    if TARGET in sys.modules:
        from instraug_plugin.integrations.llamafactory.hook import patch_tuner

        patch_tuner(sys.modules[TARGET])
    elif not any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PostImportFinder())
