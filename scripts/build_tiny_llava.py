"""Build the tiny offline LLaVA that examples/tiny_llava_cpu_pool.yaml trains (CPU smoke test).

Usage (from the repository root):  .venv/bin/python scripts/build_tiny_llava.py /tmp/instraug-tiny-llava
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from tiny_llava import build_tiny_llava  # tests/tiny_llava.py holds the one builder


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python scripts/build_tiny_llava.py OUT_DIR", file=sys.stderr)
        return 2
    out = build_tiny_llava(Path(argv[0]))
    print(f"tiny LLaVA written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
