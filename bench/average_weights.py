"""Average the weights of models fine-tuned from one start (a "model soup"): one candidate from several runs.

    python bench/average_weights.py runs/v4-batch512/best.safetensors runs/v4-longer/best.safetensors \
        -o runs/v4-soup.safetensors

Every floating-point tensor (convolution weights and BatchNorm running statistics) is the mean of the inputs';
integer tensors (BatchNorm's step counters) are the first input's. The inputs must share architecture and config.
Averaging is meaningful only for runs that started from the same weights (here both from v4.1), which stay in one
basin of the loss.

Candidate v4-soup (the two runs above, both refused alone): the ship rule of ``configs/v4/default.toml``, fixed
before its numbers, applies against v4.1 (``runs/v4-long``) on the validation views of castle-P30, buddha and
monstree (``bash bench/validation_scenes.sh``; ``python bench/ship_rule.py``): (a) higher mean mutual-NN and
ratio-test precision, (b) no scene lower by more than 0.01 in either precision nor 5 % in mutual-NN correct matches.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from deepdesc.hub.weights import load_safetensors, save_safetensors


def average(paths: list[Path]) -> torch.nn.Module:
    """The first model with every floating-point tensor replaced by the mean over ``paths``."""
    models = [load_safetensors(p) for p in paths]
    first = models[0]
    for other, path in zip(models[1:], paths[1:]):
        if other.conf != first.conf or other.state_dict().keys() != first.state_dict().keys():
            raise SystemExit(f"{path}: another architecture or config than {paths[0]}")
    states = [m.state_dict() for m in models]
    averaged = {
        key: torch.stack([state[key].double() for state in states]).mean(0).to(value.dtype)
        if value.is_floating_point()
        else value
        for key, value in states[0].items()
    }
    first.load_state_dict(averaged)
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help=".safetensors models fine-tuned from one start")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    if len(args.models) < 2:
        parser.error("give at least two models")
    model = average(args.models)
    sources = ", ".join(str(p) for p in args.models)
    save_safetensors(model, args.output, {"provenance": f"mean of the weights of {sources}"})
    print(f"wrote {args.output} (mean of {len(args.models)} models)")


if __name__ == "__main__":
    main()
