"""`python -m instraug_plugin.integrations.llava.train <LLaVA's arguments> --instraug_mode pool --instraug_pool DIR ...`

LLaVA's `llava/train/train.py` with InstrAug: the `--instraug_*` arguments are validated and removed,
then LLaVA's own `train()` runs on the rest. Works the same under `torchrun ... -m` and
`deepspeed --module`; `train_mem` is the flash-attention variant (LLaVA's `train_mem.py`).
"""

from __future__ import annotations

import sys

from instraug_plugin.core.errors import InstrAugError
from instraug_plugin.integrations.llava.args import parse_argv


def main(attn_implementation: str | None = None) -> None:
    """Parse our arguments from `sys.argv`, then train; an InstrAugError is one line on stderr, exit 2."""
    try:
        config, rest = parse_argv(sys.argv[1:])
        # LLaVA, torch and transformers load only once our arguments are known to be valid (a typo fails in ~1 s)
        from instraug_plugin.integrations.llava.hook import run

        run(config, rest, attn_implementation)
    except InstrAugError as exc:
        print(f"instraug: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
