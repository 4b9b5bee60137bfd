"""Matching throughput: chunked match_descriptors vs a naive full-matrix torch.cdist baseline.

Usage: ``.venv/bin/python bench/bench_matching.py [--n 20000] [--dim 128] [--repeats 3] [--threads N]
[--device cpu|cuda] [--chunk-size 2048] [--col-chunk-size 32768] [--large N]``

Both variants run in one process on the same random descriptors (desc2 = desc1 + noise, so the matches are
many and meaningful), mutual nearest neighbour + ratio test 0.9, interleaved round by round; the median
time, descriptor pairs/s (N1 * N2 / time) and the ratio to the baseline are printed, and both must give the
same matches. Peak memory is computed from the shapes (the distance tile vs the full matrix) and printed
for N x N and for 100k x 100k; ``--large N`` also times the chunked matcher alone on N x N (slow on CPU).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from _common import cpu_model, interleaved_times

from deepdesc.matching.nearest_neighbor import DEFAULT_CHUNK_SIZE, DEFAULT_COL_CHUNK_SIZE, match_descriptors


def naive_match(d1: torch.Tensor, d2: torch.Tensor, ratio: float) -> np.ndarray:
    """Full (N1, N2) distance matrix with torch.cdist, top-2 per row, argmin per column."""
    dist = torch.cdist(d1, d2)
    vals, idx = dist.topk(2, dim=1, largest=False)
    nn21 = dist.argmin(dim=0)
    keep = (nn21[idx[:, 0]] == torch.arange(len(d1), device=d1.device)) & (vals[:, 0] < ratio * vals[:, 1])
    i = torch.nonzero(keep).squeeze(1)
    return torch.stack([i, idx[i, 0]], 1).cpu().numpy()


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def memory_note(n1: int, n2: int, dim: int, chunk: int, col_chunk: int) -> str:
    """Working memory beyond the inputs, float32: the distance tile + O(N) statistics vs the full matrix."""
    tile = chunk * min(n2, col_chunk) * 4
    stats = n1 * (8 + 4 + 4) + n2 * (8 + 4) + (n1 + n2) * 4  # indices, distances, second distances, norms
    full = n1 * n2 * 4
    inputs = (n1 + n2) * dim * 4
    return (
        f"{n1} x {n2}: chunked {fmt_bytes(tile + stats)} (tile {chunk} x {min(n2, col_chunk)}), "
        f"full matrix {fmt_bytes(full)} (inputs {fmt_bytes(inputs)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--col-chunk-size", type=int, default=DEFAULT_COL_CHUNK_SIZE)
    parser.add_argument("--large", type=int, default=0, help="also time the chunked matcher on N x N")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    print(f"cpu: {cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    if cuda:
        print(f"gpu: {torch.cuda.get_device_name(device)}")
    n, ratio = args.n, 0.9
    print(f"{n} x {n} descriptors, D = {args.dim}, mutual + ratio {ratio}, {args.repeats} rounds on {device}")

    gen = torch.Generator().manual_seed(0)
    d1 = torch.rand(n, args.dim, generator=gen)
    d2 = d1 + 0.05 * torch.randn(n, args.dim, generator=gen)
    d1, d2 = d1.to(device), d2.to(device)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    timed = {
        "a) naive cdist (full)": lambda: naive_match(d1, d2, ratio),
        "b) match_descriptors": lambda: match_descriptors(
            d1, d2, mutual=True, ratio=ratio, chunk_size=args.chunk_size, col_chunk_size=args.col_chunk_size
        )[0],
    }
    results = {name: fn() for name, fn in timed.items()}  # warm-up and agreement check
    same = np.array_equal(results["a) naive cdist (full)"], results["b) match_descriptors"])
    print(f"matches: {len(results['b) match_descriptors'])} (chunked) vs {len(results['a) naive cdist (full)'])} "
          f"(naive); identical: {same}")  # fmt: skip
    times = interleaved_times(timed, args.repeats, sync)
    base = statistics.median(times["a) naive cdist (full)"])
    print(f"\n{'variant':24s}{'median s':>10s}{'pairs/s':>12s}{'x base':>8s}")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"{name:24s}{t:10.3f}{n * n / t:12.3g}{base / t:8.2f}")

    print("\npeak working memory (float32, computed from shapes):")
    for size in (n, 100_000):
        print("  " + memory_note(size, size, args.dim, args.chunk_size, args.col_chunk_size))

    if args.large:
        big = args.large
        e1 = torch.rand(big, args.dim, generator=gen).to(device)
        e2 = (e1.cpu() + 0.05 * torch.randn(big, args.dim, generator=gen)).to(device)
        sync()
        start = time.perf_counter()
        m, _ = match_descriptors(e1, e2, ratio=ratio, chunk_size=args.chunk_size, col_chunk_size=args.col_chunk_size)
        sync()
        t = time.perf_counter() - start
        print(f"\nchunked {big} x {big}: {t:.1f} s, {big * big / t:.3g} pairs/s, {len(m)} matches")


if __name__ == "__main__":
    main()
