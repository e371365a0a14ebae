"""`instraug-plugin train`: LLaMA-Factory's launcher with the plugin patched in explicitly."""

from __future__ import annotations

import sys
from pathlib import Path

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.integrations.llamafactory import torchrun_entry
from instraug_plugin.integrations.llamafactory.pretrain import check_config_file, check_environment


def launch_train(config: str, overrides: list[str]) -> None:
    """`llamafactory-cli train config [overrides]` with the plugin patched in explicitly.

    The config and the environment are checked before LLaMA-Factory is imported. Multi-process runs
    re-launch torchrun on our own entry script instead of LLaMA-Factory's `launcher.py`, so every
    rank is patched without a startup hook.
    """
    if not Path(config).is_file():
        raise InstrAugError(f"config file not found: {config}")
    instraug = check_config_file(Path(config), overrides)
    if instraug is not None and instraug.active:
        check_environment()
    # torch, transformers and LLaMA-Factory (through the patches) load only once the checks passed:
    # a bad config fails in a fraction of a second instead of after those imports
    from llamafactory import launcher

    from instraug_plugin.integrations.llamafactory.patches import install

    install()
    launcher.__file__ = torchrun_entry.__file__  # launch() formats its torchrun command from __file__
    sys.argv = ["llamafactory-cli", "train", config, *overrides]
    launcher.launch()
