#!/usr/bin/env bash
# The test suite (real models and real LLaMA-Factory training on CPU). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# The LLaVA training stack's own venv (tests/test_llava_train.py) installs beside the main one (both mostly
# wait on the package index while llama.cpp compiles).
mkdir -p runs
bash scripts/setup_llava.sh >runs/setup_llava.log 2>&1 &
llava=$!
trap 'kill "$llava" 2>/dev/null || true' EXIT
bash scripts/setup.sh
wait "$llava" || { cat runs/setup_llava.log >&2; exit 1; }
trap - EXIT
tail -n 2 runs/setup_llava.log
export HF_HUB_OFFLINE=1
# Two test files at a time (pytest-xdist), one thread each: on 2 cores this took 765 s where one at a time
# with the default threads took 1151 s (one run each). INSTRAUG_TEST_WORKERS=0 runs them one at a time.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv/bin/python -m pytest -q -ra -n "${INSTRAUG_TEST_WORKERS:-2}" --dist loadfile "$@"
