"""Training throughput: pairs/s with the paper's aggressive mining (x8) and without, and HardNet's loss.

Random 0..255 patches (data generation excluded) through CNN3 forward + backward + SGD step, medians
over repeats in one process. "forwarded" counts pairs that go through the network, "back-propagated"
those that contribute to the loss (mining keeps 1/8 of them).

    python bench/bench_train.py [--pairs 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from deepdesc.train import Trainer, load_config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=256, help="forwarded corresponding pairs per step")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    a = torch.rand(args.pairs, 1, 64, 64) * 255
    p = torch.rand(args.pairs, 1, 64, 64) * 255
    variants = {
        "hinge, no mining (p1 n1)": {"loss": {"positive_mining": 1, "negative_mining": 1}},
        "hinge, mining p8 n8": {"loss": {"positive_mining": 8, "negative_mining": 8}},
        "triplet, hardest in batch": {"preset": "hardnet"},
    }
    print(f"{args.pairs} forwarded positive pairs (+ as many negatives) per step, {torch.get_num_threads()} threads")
    print("the trainer's loss step: mined hinge forwards every pair without gradients, then back-propagates the mined")
    base = None
    for name, override in variants.items():
        trainer = Trainer(load_config(None, {**override, "run": {"device": "cpu"}}))
        times = []
        for i in range(args.repeats + 1):
            start = time.perf_counter()
            trainer.optimizer.zero_grad()
            loss, _ = trainer.loss(a, p, i)
            loss.backward()
            trainer.optimizer.step()
            if i:  # the first step is warm-up
                times.append(time.perf_counter() - start)
        t = statistics.median(times)
        base = base or t
        mined = args.pairs // 8 if "p8" in name else args.pairs
        print(
            f"{name:<28} {args.pairs / t:8.1f} forwarded pairs/s, {mined / t:8.1f} back-propagated positives/s, "
            f"step {t:.2f} s ({base / t:.2f}x the speed of the first)"
        )


if __name__ == "__main__":
    main()
