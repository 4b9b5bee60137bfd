#!/bin/bash
# Diagnostic after v4.3 (v4.2 whitened on pairs of the training scenes, configs/experiments/v4_whitening.sh), whose
# validation gains did not carry over to the evaluation scenes: the same whitening (power 1.0, 50,000 pairs, seed 0)
# fitted on the Notre Dame PhotoTour groups only (configs/experiments/v4_whitening_notredame.toml), so that none of
# the validation scenes takes part in the fit. -> runs/v4-white10-nd.safetensors
# Rule, fixed before any of its numbers: it replaces v4.3 only if it passes the v4 rule against v4.3 on the
# validation views (bench/validation_scenes.sh; python bench/ship_rule.py): (a) higher mean mutual-NN and
# ratio-test precision, (b) no scene lower by more than 0.01 in either precision nor 5 % in mutual-NN correct
# matches. Against v4.2 (same rule) it says whether the whitening's validation gain needs the validation scenes.
# Usage: bash configs/experiments/v4_whitening_notredame.sh   (-> runs/val-white-nd/results.json)
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p runs/anchors
[ -f runs/anchors/v4.2.safetensors ] || git show e830ac9:deepdesc/hub/pretrained/default.safetensors > runs/anchors/v4.2.safetensors
.venv/bin/deepdesc whiten --model runs/anchors/v4.2.safetensors --config configs/experiments/v4_whitening_notredame.toml \
    --pairs 50000 --seed 0 --power 1.0 -o runs/v4-white10-nd.safetensors
PATH=.venv/bin:$PATH bash bench/validation_scenes.sh runs/val-white-nd --model v4.2=runs/anchors/v4.2.safetensors \
    --model v4.3=default --model v4.2-white10-nd=runs/v4-white10-nd.safetensors
for reference in v4.3 v4.2; do
    .venv/bin/python bench/ship_rule.py runs/val-white-nd/results.json --reference $reference --candidate v4.2-white10-nd
done
