"""Startup hook (run from `instraug_plugin_llamafactory.pth` / `.start` at interpreter start).

Acts only in `llamafactory-cli` (or `lmf`) and in the torchrun children that run LLaMA-Factory's
`launcher.py`; there it only registers post-import hooks that patch `llamafactory.train.tuner` (and,
under USE_V1, LLaMA-Factory's v1 launcher) when first imported. Every other Python process pays one
`sys.argv` check.
"""

from __future__ import annotations

import os
import sys

TARGET = "llamafactory.train.tuner"
V1_TARGET = "llamafactory.v1.launcher"  # what `llamafactory-cli` imports instead of the tuner under USE_V1
PATCHES = {TARGET: "patch_tuner", V1_TARGET: "patch_v1_launcher"}  # module -> function of `patches`
_CLI_NAMES = ("llamafactory-cli", "lmf")


def _is_llamafactory_process(argv0: str) -> bool:
    name = os.path.basename(argv0)
    if name.endswith((".exe", "-script.py")):
        name = name.rsplit(".", 1)[0].removesuffix("-script")
    return name in _CLI_NAMES or argv0.replace("\\", "/").endswith("llamafactory/launcher.py")


def _patch(module: object, target: str) -> None:
    """Apply the patch of `target` to its module; an InstrAugError ends the process with one line."""
    # Imported here: this module runs at every interpreter start, the patches (torch, transformers) only
    # in LLaMA-Factory processes once LLaMA-Factory itself is being imported.
    from instraug_plugin.core.errors import InstrAugError
    from instraug_plugin.integrations.llamafactory import patches

    try:
        getattr(patches, PATCHES[target])(module)
    except InstrAugError as exc:
        print(f"instraug: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


class _PostImportFinder:
    """A meta-path finder that lets the normal finders locate `target`, then patches it after execution."""

    def __init__(self, target: str):
        self.target = target

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        if fullname != self.target:
            return None
        import importlib.util

        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module: object) -> None:
            exec_module(module)
            _patch(module, fullname)

        spec.loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


def activate() -> None:
    """Entry point of the startup hook; a no-op outside LLaMA-Factory processes."""
    argv = getattr(sys, "argv", None) or [""]
    if os.environ.get("INSTRAUG_PLUGIN_DISABLE") == "1" or not _is_llamafactory_process(argv[0]):
        return
    for target in PATCHES:
        if target in sys.modules:
            _patch(sys.modules[target], target)
        elif not any(isinstance(f, _PostImportFinder) and f.target == target for f in sys.meta_path):
            sys.meta_path.insert(0, _PostImportFinder(target))
