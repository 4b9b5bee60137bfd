"""Validation scores of trained models, each at a chosen patch region, on the held-out *training-split*
images of a training config (never ../shared/data/eval): the numbers the model card uses to justify
choices without touching the evaluation data.

    python bench/validate_models.py --config configs/default.toml \
        runs/default-stage1/last.pt@8,1 runs/default-stage1/last.pt@16,2 runs/default/best.safetensors@16,2

Each model is ``PATH@REGION,BLUR`` (a training checkpoint ``.pt`` or a ``.safetensors`` model). The
validation pairs are rebuilt with that region and blur and the config's seed and augmentation, so every
model sees the same held-out images and keypoints (minus those whose region leaves the image).
"""

from __future__ import annotations

import argparse
import copy

from deepdesc.hub.weights import load_safetensors
from deepdesc.train import load_config, model_from_checkpoint
from deepdesc.train.sources import validation_pairs
from deepdesc.train.trainer import validation_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the training config whose held-out images to use")
    parser.add_argument("models", nargs="+", help="PATH@REGION,BLUR")
    args = parser.parse_args()
    base = load_config(args.config)
    data = base["data"]
    print(f"{data['val_pairs']} validation pairs from {data['sources']}, seed {base['run']['seed']}")
    print("| model | region | blur | precision@1 | FPR95 |")
    print("|---|---|---|---|---|")
    for spec in args.models:
        path, _, patch = spec.rpartition("@")
        region, blur = (float(x) for x in patch.split(","))
        model = load_safetensors(path) if path.endswith(".safetensors") else model_from_checkpoint(path)[0]
        conf = copy.deepcopy(base)
        conf["data"]["region_scale"], conf["data"]["blur_sigma"] = region, blur
        scores = validation_scores(model, *validation_pairs(conf))
        print(f"| {path} | {region:g} | {blur:g} | {scores['precision_at_1']:.4f} | {scores['fpr95']:.4f} |")


if __name__ == "__main__":
    main()
