#!/bin/bash
# Candidate after v4.2: the packaged v4.2 with its BatchNorm statistics re-estimated (bench/recalibrate_bn.py;
# deepdesc/train/batchnorm.py) on 200 x 256 training pairs drawn as the batches of configs/v4/default.toml are,
# dropout off. v4.2 is the mean of two runs' weights and holds the mean of their statistics, not its own.
#   -> runs/v4-bn.safetensors
# Ship rule, fixed before any of its numbers: the candidate replaces v4.2 only if, on the validation views of
# castle-P30, buddha and monstree (bench/validation_scenes.sh; deepdesc evaluate's scene protocol), (a) its
# mutual-NN precision and its ratio-test precision, each averaged over the three scenes, are higher than v4.2's,
# and (b) on no scene is either precision lower than v4.2's by more than 0.01, nor its mutual-NN correct matches
# lower by more than 5 % (python bench/ship_rule.py).
# Usage: bash configs/experiments/v4_batchnorm.sh   (-> runs/val-bn/results.json; v4.2's descriptors come from
# the cache of runs/val-white when that folder exists)
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/python bench/recalibrate_bn.py default --config configs/v4/default.toml --batches 200 --batch-size 256 \
    --seed 0 -o runs/v4-bn.safetensors
if [ -d runs/val-white/cache ] && [ ! -d runs/val-bn ]; then
    mkdir -p runs/val-bn && cp -r runs/val-white/cache runs/val-bn/
fi
PATH=.venv/bin:$PATH bash bench/validation_scenes.sh runs/val-bn --model v4.2=default --model v4.2-bn=runs/v4-bn.safetensors
.venv/bin/python bench/ship_rule.py runs/val-bn/results.json --reference v4.2 --candidate v4.2-bn
