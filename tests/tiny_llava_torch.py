"""Build a tiny LLaVA-1.5-style checkpoint offline for the LLaVA (haotian-liu/LLaVA) training test.

Runs inside `.venv-llava` (transformers 4.37.2, sentencepiece). Writes, under OUT_DIR:

- `llm/`: a tiny Llama (the role Vicuna plays in LLaVA-1.5) with a Llama sentencepiece tokenizer
  trained here on the given text files (BPE with byte fallback, `<unk>`/`<s>`/`</s>` = 0/1/2 like
  Llama's), loaded by LLaVA as `LlamaTokenizer(use_fast=False)`;
- `vision/`: a tiny `CLIPVisionModel` with its `CLIPImageProcessor` (LLaVA's `--vision_tower` accepts
  an existing local directory).

Usage: .venv-llava/bin/python tests/tiny_llava_torch.py OUT_DIR TEXT_FILE [TEXT_FILE ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import sentencepiece as spm
import torch
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaTokenizer,
)

VOCAB_SIZE = 600
IMAGE_SIZE = 32


def train_tokenizer(texts: list[str], out_dir: Path) -> None:
    """A Llama-style sentencepiece model over `texts`, saved as a slow `LlamaTokenizer`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = out_dir / "corpus.txt"
    corpus.write_text("\n".join(line for text in texts for line in text.splitlines() if line.strip()),
                      encoding="utf-8")
    prefix = out_dir / "sp"
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(prefix), vocab_size=VOCAB_SIZE, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, hard_vocab_limit=False, split_digits=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2,
    )
    corpus.unlink()
    tokenizer = LlamaTokenizer(vocab_file=str(prefix.with_suffix(".model")), legacy=False)
    tokenizer.save_pretrained(out_dir)
    for suffix in (".model", ".vocab"):
        prefix.with_suffix(suffix).unlink()


def build(out_dir: Path, texts: list[str]) -> Path:
    """Write `llm/` and `vision/` under `out_dir` (the same vocabulary and weights for the same texts)."""
    torch.manual_seed(0)
    llm = out_dir / "llm"
    train_tokenizer(texts, llm)
    tokenizer = LlamaTokenizer.from_pretrained(llm)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(llm)
    vision = out_dir / "vision"
    CLIPVisionModel(CLIPVisionConfig(image_size=IMAGE_SIZE, patch_size=8, hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=3, num_attention_heads=2)).save_pretrained(vision)
    CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                       crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(vision)
    return out_dir


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] in ("-h", "--help"):
        print("usage: python tests/tiny_llava_torch.py OUT_DIR TEXT_FILE [TEXT_FILE ...]", file=sys.stderr)
        return 2
    texts = [Path(path).read_text(encoding="utf-8") for path in argv[1:]]
    print(f"tiny LLaVA (llava-torch) written to {build(Path(argv[0]), texts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
