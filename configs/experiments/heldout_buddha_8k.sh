#!/bin/bash
# Runs configs/experiments/heldout_buddha_8k.toml (its header: the question and its reading) and evaluates it on
# the validation views next to `nobuddha` (configs/experiments/heldout_buddha.sh, run first).
# Usage: bash configs/experiments/heldout_buddha_8k.sh   (-> runs/val-heldout-8k/results.json)
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH=.venv/bin:$PATH
deepdesc train --config configs/experiments/heldout_buddha_8k.toml
bash bench/validation_scenes.sh runs/val-heldout-8k --model nobuddha=runs/heldout-buddha/best.safetensors \
    --model nobuddha-8k=runs/heldout-buddha-8k/best.safetensors
