"""Paired, interleaved timing on the CPU backend: run order, dropped warm-up work, poisoning, intervals."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from workloads.common import stats, timing
from workloads.common.verify import rel_frobenius


class FakeClock:
    """A host clock whose block times come from a script: lets a test set the 'measured' times exactly."""

    kind = "fake"

    def __init__(self, times: dict[str, float]) -> None:
        self.times = times
        self.now = 0.0
        self.blocks: list[timing.Block] = []
        self.chunks = 0
        self.events: list[str] = []

    def facts(self) -> dict:
        return {"clock": self.kind}

    def begin_chunk(self) -> None:
        self.chunks += 1
        self.blocks = []
        self.events.append("sync")

    def time_block(self, name, run) -> None:
        run()
        start = self.now
        self.now += self.times[name]
        self.blocks.append(timing.Block(name, self.times[name], start, self.now))
        self.events.append(name)

    def between(self, action) -> None:
        self.events.append("between")
        action()

    def end_chunk(self) -> list[timing.Block]:
        return self.blocks


def test_round_orders_are_balanced_and_seeded():
    orders = stats.round_orders(["a", "b"], 40, seed=3)
    assert orders == stats.round_orders(["a", "b"], 40, seed=3)
    assert orders != stats.round_orders(["a", "b"], 40, seed=4)
    # every pair of rounds holds AB once and BA once: each side first exactly half the time
    for block in range(0, 40, 2):
        assert {orders[block], orders[block + 1]} == {("a", "b"), ("b", "a")}
    names = ["k", "s1", "s2", "read"]
    orders = stats.round_orders(names, 8, seed=0)
    for block in (orders[:4], orders[4:]):
        for position in range(4):   # a Latin square: every variant once in every position per block
            assert sorted(order[position] for order in block) == sorted(names)
        assert all(sorted(order) == sorted(names) for order in block)


def test_interleave_alternates_drops_the_first_round_after_each_sync_and_keeps_every_sample():
    seen: list[str] = []
    variants = [timing.Variant("kernel", lambda: seen.append("kernel")),
                timing.Variant("baseline", lambda: seen.append("baseline"))]
    clock = FakeClock({"kernel": 2.0, "baseline": 4.0})
    result = timing.interleave(variants, rounds=10, clock=clock, seed=1, warmup_rounds=2, chunk_rounds=4)
    # 2 warm-up rounds, then 3 chunks (4 + 4 + 2 counted rounds), each opened by one dropped round
    assert len(seen) == 2 * (2 + 3 + 10)
    assert result["samples_ms"] == {"kernel": [2.0] * 10, "baseline": [4.0] * 10}
    assert len(result["dropped_ms"]["kernel"]) == 2 + 3
    assert clock.chunks == 4
    firsts = Counter(order[0] for order in result["order"])
    assert firsts["kernel"] == firsts["baseline"] == 5
    # the first round after every sync was not counted: the chunk starts ("sync") are followed by a dropped round
    chunk_starts = [i for i, event in enumerate(clock.events) if event == "sync"]
    assert len(chunk_starts) == clock.chunks
    figure = timing.compare(result, "kernel", "baseline")
    assert figure["median"] == pytest.approx(2.0) and figure["ci"] == pytest.approx([2.0, 2.0]) and figure["n"] == 10


def test_interleave_divides_block_time_by_launches():
    clock = FakeClock({"a": 10.0})
    result = timing.interleave([timing.Variant("a", lambda: None, launches=5)], rounds=3, clock=clock)
    assert result["samples_ms"]["a"] == [2.0, 2.0, 2.0]


def test_outputs_are_poisoned_right_before_the_last_counted_round():
    out = np.zeros(4, dtype=np.float32)
    log: list[str] = []

    def run():
        log.append("run:" + ("nan" if np.isnan(out).all() else "ok"))
        out[:] = 1.0

    clock = FakeClock({"k": 1.0})
    timing.interleave([timing.Variant("k", run, outputs=(out,))], rounds=5, clock=clock, warmup_rounds=1,
                      chunk_rounds=8)
    # only the very last run found its output poisoned, and the poison happened between blocks
    assert log.count("run:nan") == 1 and log[-1] == "run:nan"
    assert clock.events[-2:] == ["between", "k"]


class SkipsAfterFirstCall:
    """A broken launcher: does the work on its first call for each output buffer, then returns early."""

    def __init__(self) -> None:
        self.done: set[int] = set()

    def __call__(self, a, b, out) -> None:
        if id(out) in self.done:
            return
        self.done.add(id(out))
        np.matmul(a, b, out=out)


def test_a_launcher_that_skips_work_after_the_first_call_fails_the_last_launch_check():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((16, 16), dtype=np.float32), rng.standard_normal((16, 16), dtype=np.float32)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    for launcher, ok in ((SkipsAfterFirstCall(), False), (lambda a, b, out: np.matmul(a, b, out=out), True)):
        out = np.empty((16, 16), dtype=np.float32)
        launcher(a, b, out)   # the check before timing passes either way
        assert rel_frobenius(out, expected) < 1e-5
        timing.interleave([timing.Variant("k", lambda launcher=launcher, out=out: launcher(a, b, out), outputs=(out,))],
                          rounds=4, clock=timing.HostClock())
        assert (rel_frobenius(out, expected) < 1e-5) is ok


def test_bootstrap_interval_covers_a_known_ratio_about_95_percent_of_the_time():
    """Synthetic paired timings with a known true ratio 1.25 and lognormal noise on both sides."""
    rng = np.random.default_rng(7)
    trials, rounds, covered, widths = 300, 30, 0, []
    for trial in range(trials):
        drift = np.exp(rng.normal(0, 0.15, rounds))          # a clock that moves both sides of a round alike
        candidate = 1.0 * drift * np.exp(rng.normal(0, 0.02, rounds))
        baseline = 1.25 * drift * np.exp(rng.normal(0, 0.02, rounds))
        figure = stats.paired_ratio(candidate, baseline, seed=trial)
        low, high = figure["ci"]
        covered += low <= 1.25 <= high
        widths.append(high - low)
    assert 0.90 <= covered / trials <= 0.99
    # pairing cancels the shared drift: the interval is far narrower than the drift's own spread
    assert np.median(widths) < 0.05


def test_bootstrap_is_seeded_and_handles_edge_cases():
    values = [1.0, 1.1, 0.9, 1.05, 0.95]
    assert stats.bootstrap_interval(values, seed=1) == stats.bootstrap_interval(values, seed=1)
    assert stats.bootstrap_interval([2.0]) == (2.0, 2.0)
    low, high = stats.bootstrap_interval([])
    assert math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError, match="length"):
        stats.paired_ratio([1.0, 2.0], [1.0])
    assert stats.paired_ratio([], [])["median"] is None


def test_plan_rounds_fits_the_budget_within_bounds():
    assert timing.plan_rounds(10.0, budget_ms=1500, minimum=8, maximum=30) == 30
    assert timing.plan_rounds(100.0, budget_ms=1500, minimum=8, maximum=30) == 15
    assert timing.plan_rounds(5000.0, budget_ms=1500, minimum=8, maximum=30) == 8


def test_interleave_rejects_duplicate_names_and_no_rounds():
    with pytest.raises(ValueError, match="unique"):
        timing.interleave([timing.Variant("a", lambda: None), timing.Variant("a", lambda: None)], rounds=2,
                          clock=timing.HostClock())
    with pytest.raises(ValueError, match="at least one"):
        timing.interleave([timing.Variant("a", lambda: None)], rounds=0, clock=timing.HostClock())


@pytest.mark.gpu
def test_cuda_clock_queues_blocks_ahead_and_captures_graphs():
    import cupy

    from workloads.common.clocks import NvmlSampler

    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        a = cupy.random.standard_normal(1 << 24, dtype=cupy.float32)
        c = cupy.empty_like(a)
        cupy.add(a, a, out=c)
        stream.synchronize()
    graph, why = timing.capture_graph(stream, lambda: [cupy.add(a, a, out=c) for _ in range(20)])
    clock = timing.CudaClock(stream)
    assert clock.facts()["gate"], clock.gate_error
    with NvmlSampler(cupy.cuda.Device().pci_bus_id) as sampler:
        result = timing.interleave([
            timing.Variant("graph", (lambda: graph.launch(stream)) if graph else (lambda: None), launches=20,
                           outputs=(c,)),
            timing.Variant("queued", lambda: [cupy.add(a, a, out=c) for _ in range(20)], launches=20),
        ], rounds=12, clock=clock, sampler=sampler)
    assert graph is not None, why
    # every block but at most one was queued ahead of the GPU (a fresh process's first graph upload
    # can leave the GPU waiting once; a launch path that is host-bound shows up in most blocks)
    assert sum(result["host_bound_blocks"].values()) <= 1, result["host_bound_blocks"]
    assert all(x > 0 for x in result["samples_ms"]["graph"] + result["samples_ms"]["queued"])
    assert bool(cupy.isfinite(c).all())           # the last (poisoned) round really wrote c
    if sampler.available:
        assert result["clock"]["nvml"] and result["clock"]["samples"]["sm_mhz"]
        assert sampler.facts()["uuid"].startswith("GPU-")
