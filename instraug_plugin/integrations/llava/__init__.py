"""LLaVA (haotian-liu/LLaVA, PyPI `llava-torch`) integration: LLaVA's own `train()` with per-epoch rewriting.

`python -m instraug_plugin.integrations.llava.train <LLaVA's arguments> --instraug_mode pool ...`
(`train_mem` for LLaVA's flash-attention entry). `args` is torch-free; `hook` imports LLaVA.
"""
