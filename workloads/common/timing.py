"""Time device work with CUDA events: warm-up, many repeats, median and spread.

When one input set fits in L2, repeated runs over it measure the cache, not the memory: callers pass
`rotate=N` and keep N input sets, and `fn(i)` receives the index of the set to use.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def l2_bytes(device_index: int = 0) -> int | None:
    """The device's L2 size in bytes, or None without a CUDA device."""
    from workloads.common.device import device_facts

    return device_facts(device_index)["l2_bytes"]


def rotation_count(bytes_per_set: int, device_index: int = 0, cap: int = 8) -> int:
    """How many input sets to rotate through so that the sets together overflow L2 (1 when one set does)."""
    l2 = l2_bytes(device_index) or 0
    if bytes_per_set <= 0:
        return 1
    return max(1, min(cap, -(-2 * l2 // bytes_per_set)))


def summarize(samples_ms: list[float]) -> dict:
    """median, p10, p90 and min of a list of times in milliseconds, plus the samples themselves."""
    ordered = sorted(samples_ms)

    def quantile(q: float) -> float:
        position = q * (len(ordered) - 1)
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return {"median_ms": statistics.median(ordered), "p10_ms": quantile(0.1), "p90_ms": quantile(0.9),
            "min_ms": ordered[0], "samples": list(samples_ms)}


def _argument(i: int, rotate: int | None) -> int:
    return i % rotate if rotate else i


def cuda_time(fn: Callable[[int], object], *, warmup: int = 3, repeats: int = 20,
              rotate: int | None = None) -> dict:
    """Time `fn(i)` on the current CuPy stream with one pair of CUDA events per repeat.

    `fn(i)` must only enqueue work (no host synchronisation); i is the repeat index, reduced modulo
    `rotate` when given. Returns {median_ms, p10_ms, p90_ms, min_ms, samples}.
    """
    import cupy

    stream = cupy.cuda.get_current_stream()
    for i in range(warmup):
        fn(_argument(i, rotate))
    stream.synchronize()
    events = [(cupy.cuda.Event(), cupy.cuda.Event()) for _ in range(repeats)]
    for i, (start, end) in enumerate(events):
        start.record(stream)
        fn(_argument(i, rotate))
        end.record(stream)
    stream.synchronize()
    return summarize([cupy.cuda.get_elapsed_time(start, end) for start, end in events])


def cpu_time(fn: Callable[[int], object], *, warmup: int = 1, repeats: int = 5,
             rotate: int | None = None) -> dict:
    """The host-clock counterpart of cuda_time, for the CPU reference backend."""
    for i in range(warmup):
        fn(_argument(i, rotate))
    samples = []
    for i in range(repeats):
        begin = time.perf_counter()
        fn(_argument(i, rotate))
        samples.append((time.perf_counter() - begin) * 1e3)
    return summarize(samples)
