"""Every patch of LLaMA-Factory's internals, and the names and parameters they rely on.

For the SFT training split, `_get_preprocessed_dataset` keeps the aligned rows, adds an index column
and returns `with_transform(LazyTransform)`: each epoch is rewritten for (seed, epoch, index), then
tokenized by LLaMA-Factory's own processor. Evaluation splits and other stages are untouched.
`run_exp` is wrapped to split off our `instraug_*` keys, start the session and add our callbacks;
`align_dataset` carries the task column. With USE_V1, `llamafactory.v1.launcher.launch` is wrapped to
refuse `instraug_*` keys. `RELIES_ON` is checked with `inspect.signature` before anything is patched,
so a LLaMA-Factory release that changed one of them stops with one line instead of training unaugmented.

LLaMA-Factory is imported inside the functions that use it: the v1 guard is installed while only
LLaMA-Factory's v1 launcher is loaded, and it must not import the v0 data stack.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.integrations.llamafactory.callbacks import InstrAugCallback, eval_callbacks
from instraug_plugin.integrations.llamafactory.config import InstrAugConfig, split_args
from instraug_plugin.integrations.llamafactory.media_cache import MediaExpansionCache
from instraug_plugin.integrations.llamafactory.pretrain import (
    check_before_training,
    check_config_file,
    check_environment,
    check_supported,
    refusal,
)
from instraug_plugin.integrations.llamafactory.session import ACTIVE, INDEX_COLUMN, TASK_COLUMN, start_session
from instraug_plugin.integrations.llamafactory.transform import LazyTransform

Relied = tuple[tuple[str, str, tuple[str, ...]], ...]  # (module, function, its first parameters in order)
# What the patches wrap or call: the wrappers receive and pass these parameters positionally or by name.
RELIES_ON: Relied = (
    ("llamafactory.train.tuner", "run_exp", ("args", "callbacks")),
    ("llamafactory.hparams", "read_args", ("args",)),
    ("llamafactory.data.loader", "align_dataset", ("dataset", "dataset_attr", "data_args", "training_args")),
    ("llamafactory.data.loader", "_get_preprocessed_dataset",
     ("dataset", "data_args", "training_args", "stage", "template", "tokenizer", "processor", "is_eval")),
    ("llamafactory.data.loader", "_get_dataset_processor", ("data_args", "stage", "template", "tokenizer", "processor")),
    ("llamafactory.data.processor", "SupervisedDatasetProcessor.preprocess_dataset", ("self", "examples")),
    ("llamafactory.data.processor", "SupervisedDatasetProcessor.print_data_example", ("self", "example")),
    ("llamafactory.data.mm_plugin", "BasePlugin.process_messages",  # wrapped per template by `media_cache`
     ("self", "messages", "images", "videos", "audios", "processor")),
)
RELIES_ON_V1: Relied = (("llamafactory.v1.launcher", "launch", ()),)
V1_TRAIN_COMMANDS = ("train", "sft", "dpo", "rm")  # `llamafactory-cli <command>` that train under USE_V1


def _llamafactory_version() -> str:
    module = sys.modules.get("llamafactory")
    return str(getattr(module, "__version__", "(version unknown)"))


def check_llamafactory(relies_on: Relied = RELIES_ON) -> None:
    """InstrAugError (one line) naming the first function the patches rely on that the installed
    LLaMA-Factory lacks or changed (its first parameters, by name and order)."""
    for module_name, name, params in relies_on:
        where = f"{module_name}.{name}"
        function: Any = importlib.import_module(module_name)
        for part in name.split("."):  # a method: Class.method
            function = getattr(function, part, None)
        if not callable(function):
            raise InstrAugError(f"LLaMA-Factory {_llamafactory_version()} has no {where}, which instraug-plugin "
                                "patches; use a LLaMA-Factory release it supports (0.9.x)")
        found = list(inspect.signature(function).parameters)
        if found[: len(params)] != list(params):
            raise InstrAugError(
                f"LLaMA-Factory {_llamafactory_version()} changed {where}: instraug-plugin expects its parameters to "
                f"start with ({', '.join(params)}), found ({', '.join(found)}); use a LLaMA-Factory release it "
                "supports (0.9.x)"
            )


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """An InstrAugError ends the LLaMA-Factory process with one stderr line and exit status 2."""
    try:
        yield
    except InstrAugError as exc:
        print(f"instraug: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def media_placeholders() -> dict[str, str]:
    """LLaMA-Factory's media placeholders (its IMAGE/VIDEO/AUDIO_PLACEHOLDER environment overrides included)."""
    from llamafactory.extras import constants

    return {"image": constants.IMAGE_PLACEHOLDER, "video": constants.VIDEO_PLACEHOLDER,
            "audio": constants.AUDIO_PLACEHOLDER}


def _patched_align(original: Any) -> Any:
    @functools.wraps(original)
    def align_dataset(dataset: Any, dataset_attr: Any, data_args: Any, training_args: Any) -> Any:
        session = ACTIVE.session
        column = session.config.task_column if session else None
        if column is None or data_args.streaming:
            return original(dataset, dataset_attr, data_args, training_args)
        tasks = [None if t is None else str(t) for t in dataset[column]] if column in dataset.column_names else None
        aligned = original(dataset, dataset_attr, data_args, training_args)
        return aligned.add_column(TASK_COLUMN, tasks or [None] * len(aligned))

    return align_dataset


def _patched_preprocess(original: Any) -> Any:
    @functools.wraps(original)
    def _get_preprocessed_dataset(dataset: Any, data_args: Any, training_args: Any, stage: str, template: Any,
                                  tokenizer: Any, processor: Any = None, is_eval: bool = False, **kwargs: Any) -> Any:
        session = ACTIVE.session
        if session is None or is_eval or dataset is None:
            return original(dataset, data_args, training_args, stage, template, tokenizer, processor, is_eval, **kwargs)
        check_supported(data_args, stage)
        from llamafactory.data import loader

        dataset_processor = loader._get_dataset_processor(data_args, stage, template, tokenizer, processor)
        column = session.config.task_column
        if column and (TASK_COLUMN not in dataset.column_names or not any(dataset[TASK_COLUMN])):
            raise InstrAugError(f"instraug_task_column: no training dataset has a column {column!r}")
        # The processor silently drops malformed rows; drop them here once so the lazy transform never does.
        dataset = dataset.filter(lambda p, r: len(p) % 2 == 1 and len(r) == 1, input_columns=["_prompt", "_response"])
        dataset = check_before_training(session, dataset, data_args, template)
        dataset = dataset.add_column(INDEX_COLUMN, list(range(len(dataset))))
        session.train_dataset = dataset
        session.output_dir = training_args.output_dir
        image_token = getattr(template.mm_plugin, "image_token", None)
        image_token_id = tokenizer.convert_tokens_to_ids(image_token) if image_token else None
        media = MediaExpansionCache.install(template.mm_plugin, media_placeholders())
        media.prime(dataset, processor, data_args.preprocessing_num_workers, not data_args.overwrite_cache)
        lazy = dataset.with_transform(LazyTransform(session, dataset_processor, image_token_id))
        if training_args.should_log:
            print("training example (instraug: tokenized lazily, wording varies per epoch):")
            dataset_processor.print_data_example(lazy[0])
        return lazy

    return _get_preprocessed_dataset


def _patched_run_exp(original: Any) -> Any:
    @functools.wraps(original)
    def run_exp(args: Any = None, callbacks: Any = None) -> Any:
        from llamafactory.hparams import read_args

        with _one_line_errors():
            config, rest = split_args(read_args(args))
            if config is None:
                return original(args, callbacks)
            callbacks = [*(callbacks or []), *eval_callbacks(config, rest)]
            if not config.active:
                return original(rest, callbacks)
            check_environment()
            default_seed = rest.get("seed", 42) if isinstance(rest, dict) else 42
            with ACTIVE.running(start_session(config, int(default_seed))) as session:
                return original(rest, [*callbacks, InstrAugCallback(session)])

    run_exp.__instraug_patched__ = True  # type: ignore[attr-defined]
    return run_exp


def patch_tuner(tuner: ModuleType) -> None:
    """Wrap `llamafactory.train.tuner.run_exp` and patch the data loader (idempotent), after checking
    that LLaMA-Factory still has what the patches rely on (InstrAugError otherwise)."""
    from llamafactory.data import loader

    check_llamafactory()
    if not getattr(tuner.run_exp, "__instraug_patched__", False):
        tuner.run_exp = _patched_run_exp(tuner.run_exp)
    if not hasattr(loader, "__instraug_patched__"):
        loader._get_preprocessed_dataset = _patched_preprocess(loader._get_preprocessed_dataset)
        loader.align_dataset = _patched_align(loader.align_dataset)
        loader.__instraug_patched__ = True  # type: ignore[attr-defined]


def install() -> None:
    """Import LLaMA-Factory's tuner and patch it now (the explicit, no-startup-hook path)."""
    from llamafactory.train import tuner

    patch_tuner(tuner)


def _active_config(argv: list[str]) -> InstrAugConfig | None:
    """The active `instraug_*` config of `llamafactory-cli <command> <config or --args>` (argv), if any."""
    if len(argv) < 3 or argv[1] not in V1_TRAIN_COMMANDS:
        return None
    config_file = Path(argv[2])
    if config_file.suffix in (".yaml", ".yml", ".json"):
        config = check_config_file(config_file, argv[3:])
    else:
        config = split_args(argv[2:])[0]
    return config if config is not None and config.active else None


def _guarded_v1_launch(original: Callable[[], Any]) -> Callable[[], Any]:
    @functools.wraps(original)
    def launch() -> Any:
        with _one_line_errors():
            if _active_config(sys.argv) is not None:
                raise refusal("USE_V1")
        return original()

    launch.__instraug_patched__ = True  # type: ignore[attr-defined]
    return launch


def patch_v1_launcher(launcher: ModuleType) -> None:
    """Wrap LLaMA-Factory's v1 `launch` so that a run with `instraug_*` keys stops before training (idempotent)."""
    check_llamafactory(RELIES_ON_V1)
    if not getattr(launcher.launch, "__instraug_patched__", False):
        launcher.launch = _guarded_v1_launch(launcher.launch)
