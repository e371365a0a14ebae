"""Load a model the way LLaMA-Factory does and generate answers in batches (`evaluation.runner`'s
`AnswerGenerator`, for `instraug-plugin eval` and the robustness callback).

Prompts go through the same template (`get_template_and_fix_tokenizer`) and multimodal plugin
(`template.mm_plugin`: image token expansion, pixel values) as LLaMA-Factory training, so the model
sees at evaluation exactly the token layout it was trained on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instraug_plugin.core.errors import InstrAugError, describe
from instraug_plugin.core.jsonfile import read_json_object
from instraug_plugin.evaluation.runner import GenerationSettings

if TYPE_CHECKING:
    import torch
    from llamafactory.data import Template
    from transformers import PreTrainedModel, PreTrainedTokenizer, ProcessorMixin

ADAPTER_CONFIG = "adapter_config.json"
DEFAULT_SETTINGS = GenerationSettings()
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ResolvedModel:
    """Where the weights come from: a base model and optionally a LoRA adapter on top of it."""

    base: str
    adapter: str | None
    template: str


def _template_from_output_dir(path: Path) -> str | None:
    """The `template` recorded by LLaMA-Factory's web UI (`training_args.yaml`) in an output dir, if any."""
    args_file = path / "training_args.yaml"
    if not args_file.is_file():
        return None
    import yaml

    data = yaml.safe_load(args_file.read_text(encoding="utf-8")) or {}
    return data.get("template") if isinstance(data, dict) else None


def _check_model_location(location: str, what: str) -> None:
    path = Path(location).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InstrAugError(f"{what} is not a directory: {location}")
        return
    if location.startswith((".", "/", "~")) or not _HUB_ID_RE.match(location):
        raise InstrAugError(f"{what} does not exist: {location}")


ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
MODEL_WEIGHTS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json", "*.gguf")


def _check_model_files(path: Path, adapter: bool) -> None:
    """A local model folder holds what loading needs: a LoRA adapter its weights; a full model its
    config, weights and tokenizer files. InstrAugError naming the folder and the missing file otherwise."""
    if adapter:
        if not any((path / name).is_file() for name in ADAPTER_WEIGHTS):
            raise InstrAugError(f"{path}: LoRA adapter without its weights ({' or '.join(ADAPTER_WEIGHTS)})")
        return
    if not (path / "config.json").is_file():
        raise InstrAugError(f"{path}: no config.json (not a model folder)")
    if not any(any(path.glob(pattern)) for pattern in MODEL_WEIGHTS):
        raise InstrAugError(f"{path}: no model weights (*.safetensors or *.bin)")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise InstrAugError(f"{path}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")


def _read_adapter_config(path: Path) -> dict[str, Any]:
    """The adapter's config as a JSON object; InstrAugError (one line) otherwise."""
    config = read_json_object(path)
    base = config.get("base_model_name_or_path")
    if base is not None and not isinstance(base, str):
        raise InstrAugError(f"{path}: base_model_name_or_path is not a string")
    return config


def resolve_model(model: str, *, template: str | None = None, base_model: str | None = None) -> ResolvedModel:
    """Interpret `model` as a full model (local dir or hub id), a LoRA adapter, or a LLaMA-Factory output dir.

    An adapter's base is `base_model` or the adapter config's `base_model_name_or_path`. The template
    is `template` or the one a web-UI output dir records; it must be known, since prompts must match training.
    """
    _check_model_location(model, "model path")
    path = Path(model).expanduser()
    adapter = None
    base = model
    if (path / ADAPTER_CONFIG).is_file():
        adapter = str(path)
        config = _read_adapter_config(path / ADAPTER_CONFIG)
        base = base_model or config.get("base_model_name_or_path") or ""
        if not base:
            raise InstrAugError(f"adapter {model} names no base model; pass --base-model")
        _check_model_location(base, f"base model of adapter {model}")
        _check_model_files(path, adapter=True)
        if Path(base).expanduser().is_dir():
            _check_model_files(Path(base).expanduser(), adapter=False)
    elif base_model is not None:
        raise InstrAugError(f"--base-model given but {model} is not a LoRA adapter (no {ADAPTER_CONFIG})")
    elif path.is_dir():
        _check_model_files(path, adapter=False)
    template = template or (_template_from_output_dir(path) if path.is_dir() else None)
    if template is None:
        raise InstrAugError(f"no template known for {model}; pass --template (the LLaMA-Factory template used in training)")
    from llamafactory.data.template import TEMPLATES

    if template not in TEMPLATES:
        raise InstrAugError(f"unknown LLaMA-Factory template {template!r}")
    return ResolvedModel(base, adapter, template)


class Generator:
    """Batched greedy generation over (prompt, images) pairs with LLaMA-Factory's template and mm plugin."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizer,
        processor: ProcessorMixin | None,
        template: Template,
        settings: GenerationSettings = DEFAULT_SETTINGS,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.processor = processor
        self.template = template
        self.settings = settings

    @classmethod
    def load(cls, resolved: ResolvedModel, settings: GenerationSettings = DEFAULT_SETTINGS) -> Generator:
        """Load tokenizer, processor, template and model with LLaMA-Factory's own loaders (inference mode)."""
        from llamafactory.data import get_template_and_fix_tokenizer
        from llamafactory.hparams import get_infer_args
        from llamafactory.model import load_model, load_tokenizer

        args: dict[str, Any] = {"model_name_or_path": resolved.base, "template": resolved.template}
        if resolved.adapter:
            args.update(adapter_name_or_path=resolved.adapter, finetuning_type="lora")
        try:
            model_args, data_args, finetuning_args, _ = get_infer_args(args)
            tokenizer_module = load_tokenizer(model_args)
            tokenizer = tokenizer_module["tokenizer"]
            template = get_template_and_fix_tokenizer(tokenizer, data_args)
            model = load_model(tokenizer, model_args, finetuning_args, is_trainable=False)
        except InstrAugError:
            raise
        except Exception as exc:  # any loader failure (KeyError, RuntimeError, ImportError...) is one line
            raise InstrAugError(f"cannot load model {resolved.adapter or resolved.base}: {describe(exc)}") from None
        return cls(model, tokenizer, tokenizer_module["processor"], template, settings)

    def _encode(self, prompt: str, images: Sequence[str], system: str | None) -> list[int]:
        plugin = self.template.mm_plugin
        messages = plugin.process_messages([{"role": "user", "content": prompt}], list(images), [], [], self.processor)
        paired = messages + [{"role": "assistant", "content": ""}]
        ids, _ = self.template.encode_oneturn(self.tokenizer, paired, system)
        ids, _ = plugin.process_token_ids(ids, None, list(images), [], [], self.tokenizer, self.processor)
        return ids

    def _batch_inputs(self, batch: Sequence[tuple[str, Sequence[str]]], system: str | None) -> dict[str, torch.Tensor]:
        import torch

        ids = [self._encode(prompt, images, system) for prompt, images in batch]
        width = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
        attention = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
        images = [img for _, imgs in batch for img in imgs]
        mm = self.template.mm_plugin.get_mm_inputs(
            images, [], [], [len(imgs) for _, imgs in batch], [0] * len(batch), [0] * len(batch), ids, self.processor
        )
        inputs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention}
        for key, value in mm.items():
            if not isinstance(value, torch.Tensor):
                value = torch.tensor(value)
            if torch.is_floating_point(value):
                value = value.to(self.model.dtype)
            inputs[key] = value
        return {k: v.to(self.model.device) for k, v in inputs.items()}

    def generate(self, batch_prompts: Sequence[tuple[str, Sequence[str]]], system: str | None = None) -> list[str]:
        """Greedy answers for (prompt with `<image>` tokens, image paths) pairs, in input order."""
        import torch

        was_training = self.model.training
        self.model.eval()
        outputs: list[str] = []
        stop_ids = self.template.get_stop_token_ids(self.tokenizer)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else stop_ids[0]
        try:
            for start in range(0, len(batch_prompts), self.settings.batch_size):
                inputs = self._batch_inputs(batch_prompts[start : start + self.settings.batch_size], system)
                with torch.inference_mode():
                    generated = self.model.generate(
                        **inputs,
                        max_new_tokens=self.settings.max_new_tokens,
                        do_sample=False,
                        eos_token_id=stop_ids,
                        pad_token_id=pad,
                    )
                new_tokens = generated[:, inputs["input_ids"].shape[1] :]
                outputs.extend(t.strip() for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        finally:
            self.model.train(was_training)
        return outputs
