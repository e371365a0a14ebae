"""Build a ~6M-parameter LLaVA offline (SmolLM2 tokenizer + `<image>`), small enough for CPU training tests."""

from __future__ import annotations

from pathlib import Path


def build_tiny_llava(out_dir: Path) -> Path:
    """Save a randomly initialised tiny LlavaForConditionalGeneration with its processor to `out_dir`."""
    import torch
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from instraug_plugin.backends.conversion import ensure_converted
    from instraug_plugin.backends.embedded import SMOLLM2

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(ensure_converted(SMOLLM2))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=2, num_attention_heads=2),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
    )
    LlavaForConditionalGeneration(config).save_pretrained(out_dir)
    image_processor = CLIPImageProcessor(  # falls back to the PIL version without torchvision
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               image_token="<image>")
    processor.save_pretrained(out_dir)
    return out_dir
