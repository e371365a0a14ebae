#!/usr/bin/env bash
# The test suite (real models and real LLaMA-Factory training on CPU). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup_llava.sh  # the LLaVA training stack's own venv (tests/test_llava_train.py)
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest -q -ra "$@"
