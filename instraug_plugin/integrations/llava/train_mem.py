"""LLaVA's `train_mem.py` with InstrAug: `train()` with flash-attention 2 (CUDA and flash-attn needed).

`deepspeed --module instraug_plugin.integrations.llava.train_mem <LLaVA's arguments> --instraug_* ...`
"""

from instraug_plugin.integrations.llava.train import main

if __name__ == "__main__":
    main(attn_implementation="flash_attention_2")
