"""Re-estimate a model's BatchNorm statistics on its training batches (deepdesc.train.batchnorm).

    python bench/recalibrate_bn.py default --config configs/v4/default.toml -o runs/v4-bn.safetensors

The batches are drawn as the training batches of ``--config`` are (its ``data.sources`` and weights, training
split), anchors and positives together, ``--batches`` of ``--batch-size`` pairs; dropout is off, as at inference.
The default v4.2 is a mean of two runs' weights whose statistics are the mean of theirs, not its own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm import tqdm

from deepdesc.hub.registry import load_model
from deepdesc.hub.weights import save_safetensors
from deepdesc.train import load_config
from deepdesc.train.batchnorm import recalibrate_batch_norm
from deepdesc.train.sources import build_sources
from deepdesc.train.synthetic import PairBatches


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model name or .safetensors path")
    parser.add_argument("--config", required=True, help="training config whose data.sources give the batches")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=256, help="pairs per batch (2x patches)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--half", action="store_true", help="store float16 tensors")
    args = parser.parse_args(argv)
    if args.batches < 1 or args.batch_size < 1:
        parser.error("--batches and --batch-size must be positive")
    model = load_model(args.model, device="cpu")
    sources, weights = build_sources(load_config(args.config), "train")
    pairs = PairBatches(sources, args.batch_size, seed=args.seed, weights=weights)
    batches = (torch.cat(pairs[i][:2]) for i in tqdm(range(args.batches), desc="batch norm", unit="batch"))
    out = recalibrate_batch_norm(model, batches)
    out.info.pop("version", None)  # other weights than the source's version
    recipe = f"BatchNorm statistics re-estimated on {args.batches} x {args.batch_size} pairs of {args.config}"
    provenance = model.info.get("provenance", args.model)
    save_safetensors(out, args.output, {"provenance": f"{provenance}; {recipe} (seed {args.seed})"}, half=args.half)
    print(f"wrote {args.output} ({recipe})")


if __name__ == "__main__":
    main()
