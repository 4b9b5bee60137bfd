"""Helpers shared by the benchmark scripts (run them as `python bench/NAME.py`)."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time in seconds of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_times(
    timed: dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None] = lambda: None
) -> dict[str, list[float]]:
    """Wall times in seconds of each variant, measured round-robin (``repeats`` rounds) so that machine noise
    hits every variant alike; ``sync`` (e.g. ``torch.cuda.synchronize``) runs before and after each call."""
    times: dict[str, list[float]] = {k: [] for k in timed}
    for _ in range(repeats):
        for name, fn in timed.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
