"""The fast path's chunk size and precision on this CPU: the packaged default through ``FastDescriber`` at several
chunk sizes (patches per forward pass), float32 and (where the CPU has it) bfloat16.

    python bench/bench_chunks.py [--patches 2000] [--repeats 7] [--chunks 16,32,64,128,256] [-o OUT.json]

All variants run in one process on the same random 0..255 patches, interleaved round by round; the median
patches/s over the rounds and the ratio to the library's default (``default_batch_size("cpu", model)`` chunks, fp32)
are printed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from deepdesc.hub.registry import load_model
from deepdesc.nn.fast import FastDescriber, _cpu_has_bf16, default_batch_size


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patches", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--chunks", default="16,32,64,128,256")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args(argv)
    model = load_model("default", device="cpu")
    x = torch.rand(args.patches, 1, 64, 64, generator=torch.Generator().manual_seed(0)) * 255
    default = default_batch_size("cpu", model)
    chunks = sorted({int(c) for c in args.chunks.split(",")} | {default})
    precisions = ["fp32", "bf16"] if _cpu_has_bf16() else ["fp32"]
    variants = {(p, c): FastDescriber(model, p, batch_size=c) for p in precisions for c in chunks}
    times: dict[tuple[str, int], list[float]] = {k: [] for k in variants}
    for fast in variants.values():
        fast(x[:64])  # warm-up: prepared weights, oneDNN primitives
    with torch.inference_mode():
        for _ in range(args.repeats):
            for key, fast in variants.items():
                start = time.perf_counter()
                fast(x)
                times[key].append(time.perf_counter() - start)
    base = statistics.median(times[("fp32", default)])
    rows = []
    cpu = platform.processor() or platform.machine()
    print(f"{args.patches} patches, {torch.get_num_threads()} torch threads, {cpu}; baseline fp32 chunk {default}")
    for (precision, chunk), ts in times.items():
        median = statistics.median(ts)
        rows.append({"precision": precision, "chunk": chunk, "patches_per_s": args.patches / median,
                     "ratio": base / median})  # fmt: skip
        print(f"  {precision} chunk {chunk:4d}: {args.patches / median:8.0f} patches/s  x{base / median:.2f}")
    record = {"command": "python bench/bench_chunks.py " + " ".join(argv or []), "rows": rows}
    if args.output:
        args.output.write_text(json.dumps(record, indent=1) + "\n")
    return record


if __name__ == "__main__":
    main()
