"""Statistics for paired timings: balanced run orders, medians and seeded bootstrap intervals.

Pure NumPy, no device: the CPU tests exercise exactly the code the GPU benches use.

A paired figure compares two variants timed in the same rounds (same clock state, same warm-up): for
each round i the ratio r_i = baseline_i / candidate_i (> 1: the candidate is faster), and the figure is
the median of the r_i with a percentile-bootstrap interval for that median. Pairing removes what the
two sides share (a clock that drifts over the run moves both), so the interval is much narrower than
one computed from two separate blocks of samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


def round_orders(names: Sequence[str], rounds: int, seed: int) -> list[tuple[str, ...]]:
    """The order in which to run `names` in each of `rounds` rounds, balanced and seeded.

    Rounds come in blocks of len(names): within a block, every variant runs once in every position (a
    cyclic Latin square whose rows are shuffled and whose labels are re-drawn per block), so no variant
    is always first after a sync or always right after the same neighbour. With two variants this is
    AB/BA in a random order per pair of rounds.
    """
    names = list(names)
    count = len(names)
    if count == 0 or rounds <= 0:
        return []
    rng = np.random.default_rng(seed)
    orders: list[tuple[str, ...]] = []
    while len(orders) < rounds:
        labels = [names[i] for i in rng.permutation(count)]
        square = [tuple(labels[(row + column) % count] for column in range(count)) for row in range(count)]
        orders.extend(square[i] for i in rng.permutation(count))
    return orders[:rounds]


def median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


def bootstrap_interval(values: Sequence[float], *, statistic: Callable = np.median, resamples: int = RESAMPLES,
                       level: float = LEVEL, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of `statistic` (median by default) of `values`, seeded.

    One value gives a zero-width interval at that value; no values give (nan, nan).
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return float("nan"), float("nan")
    if data.size == 1:
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, data.size, size=(resamples, data.size))
    estimates = statistic(data[picks], axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(estimates, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_ratio(candidate: Sequence[float], baseline: Sequence[float], *, resamples: int = RESAMPLES,
                 level: float = LEVEL, seed: int = 0) -> dict:
    """Median of baseline_i / candidate_i over rounds, with its bootstrap interval.

    `candidate` and `baseline` are times of the same rounds (equal length, in round order). Returns
    {"median", "ci": [low, high], "n", "level", "ratios"}; "ratios" keeps every paired ratio.
    """
    cand = np.asarray(candidate, dtype=np.float64)
    base = np.asarray(baseline, dtype=np.float64)
    if cand.shape != base.shape:
        raise ValueError(f"paired samples differ in length: {cand.size} candidate vs {base.size} baseline")
    keep = (cand > 0) & np.isfinite(cand) & np.isfinite(base)
    ratios = base[keep] / cand[keep]
    if ratios.size == 0:
        return {"median": None, "ci": [None, None], "n": 0, "level": level, "ratios": []}
    low, high = bootstrap_interval(ratios, resamples=resamples, level=level, seed=seed)
    return {"median": float(np.median(ratios)), "ci": [low, high], "n": int(ratios.size), "level": level,
            "ratios": [round(float(r), 6) for r in ratios]}


def time_summary(samples_ms: Sequence[float], *, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """median, its bootstrap interval, p10/p90 and min of per-launch times (ms), plus the samples."""
    data = np.asarray(samples_ms, dtype=np.float64)
    if data.size == 0:
        return {"median_ms": None, "ci_ms": [None, None], "p10_ms": None, "p90_ms": None, "min_ms": None,
                "samples": []}
    low, high = bootstrap_interval(data, resamples=resamples, seed=seed)
    p10, p90 = np.quantile(data, [0.1, 0.9])
    return {"median_ms": float(np.median(data)), "ci_ms": [low, high], "p10_ms": float(p10),
            "p90_ms": float(p90), "min_ms": float(data.min()), "samples": [round(float(x), 6) for x in data]}


def interval_excludes(ci: Sequence[float | None], value: float) -> bool:
    """True when the interval lies wholly on one side of `value` (the samples support a difference)."""
    low, high = ci
    return low is not None and high is not None and (low > value or high < value)
