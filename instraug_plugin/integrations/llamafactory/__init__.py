"""LLaMA-Factory integration, one job per module (each imports only modules listed before it):

- `config`: the `instraug_*` YAML keys;
- `session`: a run's state (`Session`, `EpochState`) and the one holder of the running session (`ACTIVE`);
- `encode_cache`, `media_cache`: what makes the lazy re-tokenization cheap;
- `transform`: `LazyTransform`, the per-epoch rewrite + tokenization of the training split;
- `pretrain`: every check before training (config file, environment, LLaMA-Factory settings, rows, coverage);
- `live`: live mode's pool refresh;
- `generator`: a model loaded and prompted the way LLaMA-Factory does (evaluation);
- `callbacks`: the TrainerCallbacks (epoch, stats, live refresh; robustness evaluation; the online loop);
- `patches`: every patch of LLaMA-Factory's internals and the signatures they rely on;
- `torchrun_entry`, `launcher`: `instraug-plugin train`; `startup`: the `.pth` startup hook.
"""
