#!/bin/bash
# Runs configs/experiments/heldout_buddha_nd60.toml (its header: the question and its reading) and evaluates it
# on the validation views next to `nobuddha` (configs/experiments/heldout_buddha.sh, run first).
# Usage: bash configs/experiments/heldout_buddha_nd60.sh   (-> runs/val-heldout-nd60/results.json)
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH=.venv/bin:$PATH
deepdesc train --config configs/experiments/heldout_buddha_nd60.toml
bash bench/validation_scenes.sh runs/val-heldout-nd60 --model nobuddha=runs/heldout-buddha/best.safetensors \
    --model nobuddha-nd60=runs/heldout-buddha-nd60/best.safetensors
