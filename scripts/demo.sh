#!/usr/bin/env bash
# The main job, offline, on the embedded default: pregen over bundled MultiInstruct templates with
# the real SmolLM2-135M-Instruct rewriter (CPU), then the pool report. Extra args go to pregen.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
OUT=${OUT:-runs/demo_pool}
.venv/bin/instraug-plugin pregen templates/multiinstruct_templates.json \
  --tasks image_caption,GC,object_relationship --limit 12 --out "$OUT" "$@"
.venv/bin/instraug-plugin stats "$OUT"
