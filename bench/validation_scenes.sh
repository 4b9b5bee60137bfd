#!/usr/bin/env bash
# Validation scenes for choosing weights: the views `deepdesc make-patches` holds out (every fourth view, from the
# fourth) of the training scenes castle-P30, buddha (ordered along a covisibility chain) and monstree (its SIFT
# reconstruction as pseudo ground truth), evaluated with `deepdesc evaluate`'s scene protocol. Never eval data.
# Compare models within one build of runs/val-scenes: monstree's pseudo ground truth comes from an incremental
# reconstruction, which differs between runs unless the mapper has one thread (made so here when it is missing).
#   bash bench/validation_scenes.sh OUT_DIR --model default --model runs/v4/best.safetensors ...
set -euo pipefail
out=${1:?usage: validation_scenes.sh OUT_DIR --model ... }
shift
shared=${DEEPDESC_SHARED:-../shared}
scenes=runs/val-scenes
if [ ! -d "$scenes/castle/castle-P30-val" ]; then
    python bench/subset_scene.py "$shared/data/train/strecha/castle-P30" "$scenes/castle/castle-P30-val" --offset 3
fi
if [ ! -d "$scenes/buddha/buddha-val" ]; then
    python bench/subset_scene.py "$shared/data/train/buddha" "$scenes/buddha/buddha-val" --offset 3 --order covisibility
fi
if [ ! -d "$scenes/monstree-val" ]; then
    if [ ! -d runs/monstree-sift/sparse/0 ]; then
        deepdesc reconstruct "$shared/data/train/monstree/images" -o runs/monstree-sift --model sift --mapper-threads 1
    fi
    python bench/subset_scene.py "$shared/data/train/monstree/images" "$scenes/monstree-val" \
        --colmap runs/monstree-sift/sparse/0 --offset 3
fi
deepdesc evaluate --dataset "strecha:$scenes/castle" --dataset "strecha:$scenes/buddha" \
    --dataset "colmap:$scenes/monstree-val" "$@" -o "$out"
