"""Latency figures: a distribution of times summarized the one way vp reports them.

vp bench and the torch comparison (vp.models.timing) both summarize with
`summarize`, so their medians and percentiles are the same statistic.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def summarize(times_ms) -> dict:
    """{median_ms, p90_ms, p99_ms, mean_ms, n} of times in ms (at least one)."""
    v = np.asarray(times_ms, np.float64)
    if v.size == 0:
        raise ValueError("no times to summarize")
    return {"median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90)),
            "p99_ms": float(np.percentile(v, 99)), "mean_ms": float(v.mean()), "n": int(v.size)}


def time_calls(fn: Callable[[], object], warmup: int, iters: int) -> dict:
    """summarize() of `iters` timed calls of fn after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return summarize(times)
