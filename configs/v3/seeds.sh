#!/bin/bash
# Seed replicate K (1 or 2) of the v3 recipe (docs/model_card.md): stage 1 (configs/v3/compact16.toml), then
# stage 2 (configs/v3/default.toml) from its best checkpoint, one torch thread; seeds 3+10K and 4+10K.
# Usage: bash configs/v3/seeds.sh 1   (-> runs/v3-compact16-s1, runs/v3-default-s1)
set -euo pipefail
K=$1
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
s1=$((3 + 10 * K))
s2=$((4 + 10 * K))
.venv/bin/deepdesc train --config configs/v3/compact16.toml --set run.seed=$s1 --set "run.out_dir=\"runs/v3-compact16-s$K\""
.venv/bin/deepdesc train --config configs/v3/default.toml --set run.seed=$s2 --set "run.out_dir=\"runs/v3-default-s$K\"" \
    --set "run.init=\"runs/v3-compact16-s$K/best.safetensors\""
