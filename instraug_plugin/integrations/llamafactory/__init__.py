"""LLaMA-Factory integration: `instraug_*` YAML keys, per-epoch data hook, callback, startup hook."""
