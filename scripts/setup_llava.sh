#!/usr/bin/env bash
# The LLaVA (haotian-liu/LLaVA) training stack's own venv, .venv-llava (idempotent): llava-torch, the
# transformers/tokenizers/accelerate/peft it pins (it cannot share .venv's transformers 5), deepspeed
# (LLaVA's LoRA save path imports it), sentencepiece + protobuf (Vicuna-style Llama tokenizers) and this
# package. Only the package index is used (no model downloads).
#
# torch: the CPU wheel of 2.13.0 that pip's configuration offers here, not LLaVA's pin 2.1.2 (from PyPI
# that is the CUDA build with GBs of nvidia wheels); llava-torch is installed with --no-deps for that
# reason, with its training-path needs listed here (its serving/eval extras - gradio, fastapi, timm,
# scikit-learn... - are left out). Versions are pinned by requirements/llava-constraints.txt.
#
# When the index cannot provide llava-torch, the set-up records that in $VENV/INDEX_LACKS_LLAVA and
# exits 0: the LLaVA training test is then skipped (any other failure fails the set-up).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${INSTRAUG_LLAVA_VENV:-.venv-llava}
PY=${PYTHON:-python3}
LLAVA="llava-torch==1.2.2.post1"
stamp="$VENV/.instraug-setup"
lacks="$VENV/INDEX_LACKS_LLAVA"
want=$(cat pyproject.toml requirements/llava-constraints.txt scripts/setup_llava.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "setup_llava: $PY is older than Python 3.11 (set PYTHON=python3.11)" >&2; exit 1; }
mkdir -p "$VENV"
rm -f "$stamp" "$lacks"
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
# A short timeout: an unreachable index answers "unavailable" in about a minute, not pip's default 18.
if ! "$PY" -m pip download --disable-pip-version-check -q --timeout 30 --retries 1 --no-deps -d "$wheels" "$LLAVA" \
    >"$wheels/log" 2>&1; then
  { echo "the package index could not provide $LLAVA:"; tail -n 3 "$wheels/log"; echo; } > "$lacks"
  echo "setup_llava: the package index could not provide $LLAVA; the LLaVA training test will be skipped" >&2
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
"$VENV/bin/python" -c "import torch" 2>/dev/null || pip install -c requirements/llava-constraints.txt torch
# deepspeed is an sdist: DS_BUILD_OPS=0 installs it without compiling CUDA/C++ ops (none is used on CPU).
DS_BUILD_OPS=0 pip install -c requirements/llava-constraints.txt transformers tokenizers accelerate peft deepspeed \
  sentencepiece protobuf numpy pillow
pip install --no-deps "$wheels"/llava_torch-*.whl
pip install -c requirements/llava-constraints.txt -e .
"$VENV/bin/python" -c "import llava.train.train, instraug_plugin.integrations.llava.hook" >/dev/null 2>&1 \
  || { echo "setup_llava: LLaVA's train module does not import in $VENV; rerun with a fresh $VENV" >&2; exit 1; }
echo "$want" > "$stamp"
echo "set-up done: $VENV"
