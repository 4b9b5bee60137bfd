#!/bin/bash
# Candidates after v4.2: the packaged v4.2 with a learned whitening folded into its last layer
# (deepdesc whiten; deepdesc/train/whitening.py), fitted on 50,000 training pairs drawn as the batches of
# configs/v4/default.toml are (its data.sources; prepare them with the commands in that file's header).
#   power 0.5 -> runs/v4-white05.safetensors, power 1.0 -> runs/v4-white10.safetensors
# Ship rule, fixed before any of its numbers: a candidate replaces v4.2 only if, on the validation views of
# castle-P30, buddha and monstree (bench/validation_scenes.sh; deepdesc evaluate's scene protocol), (a) its
# mutual-NN precision and its ratio-test precision, each averaged over the three scenes, are higher than v4.2's,
# and (b) on no scene is either precision lower than v4.2's by more than 0.01, nor its mutual-NN correct matches
# lower by more than 5 % (python bench/ship_rule.py). If both pass, the one with the higher mean mutual-NN
# precision is chosen.
# Usage: bash configs/experiments/v4_whitening.sh   (-> runs/val-white/results.json)
set -euo pipefail
cd "$(dirname "$0")/../.."
for power in 05 10; do
    .venv/bin/deepdesc whiten --model default --config configs/v4/default.toml --pairs 50000 --seed 0 \
        --power "${power:0:1}.${power:1:1}" -o "runs/v4-white$power.safetensors"
done
PATH=.venv/bin:$PATH bash bench/validation_scenes.sh runs/val-white --model v4.2=default \
    --model v4.2-white05=runs/v4-white05.safetensors --model v4.2-white10=runs/v4-white10.safetensors
for power in 05 10; do
    .venv/bin/python bench/ship_rule.py runs/val-white/results.json --reference v4.2 --candidate "v4.2-white$power"
done
