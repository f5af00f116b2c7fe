"""Shared by the benchmark scripts (imported from their own folder)."""

from __future__ import annotations

import time
from collections.abc import Callable


def per_call_ms(fn: Callable[[], object], runs: int) -> float:
    """Best of three batches of ``runs`` calls, in ms per call, after one warm-up call: the
    least disturbed figure on a shared machine."""
    fn()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(runs):
            fn()
        best = min(best, (time.perf_counter() - t) / runs * 1000)
    return best
