"""Time device work: paired, interleaved blocks with CUDA events (the method), and single-sided helpers.

The method (`interleave`): every variant of a comparison (a kernel and its baseline, or several kernel
versions and baselines) runs in the same rounds, in a balanced order (stats.round_orders), after the same
warm-up, so all of them see the same clock state; a sliding SM clock (near-peak tensor-core work lowers
it by 15-20 % after some 20-35 ms) then moves both sides of a ratio instead of whichever ran second.
Rounds run in chunks: the host queues a whole chunk behind a short spin ("gate") kernel, so the GPU
runs the timed blocks back to back and never waits for Python; the first round of every chunk (the
first work after a synchronisation) is run and dropped; a block whose host enqueue had not finished
when the GPU reached it is counted as possibly host-bound. Small kernels run as a CUDA graph of many
launches per block (the caller captures it), so a block measures the kernels, not the launch path.
Before the last counted round every variant's outputs are poisoned, so the caller can check that the
last timed launches really computed their results.

When one input set fits in L2, repeated runs over it measure the cache, not the memory: callers keep
several input sets (`rotation_count`) and rotate through them inside a block.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from workloads.common import clocks, stats
from workloads.common.verify import poison


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


# -- paired, interleaved timing ------------------------------------------------------------------------

@dataclass
class Variant:
    """One side of a comparison: `run()` enqueues one timed block (no host synchronisation in it)."""

    name: str
    run: Callable[[], object]
    launches: int = 1                      # launches per block: per-launch time = block time / launches
    outputs: Sequence = ()                 # arrays the block writes; poisoned before the last counted round
    method: str = "queued"                 # "graph" (one CUDA graph launch), "queued" (launches), "host"
    note: str | None = None


@dataclass
class Block:
    name: str
    ms: float                              # the whole block (all its launches)
    start: float                           # host perf_counter time the block started on the device
    end: float
    queued_ahead: bool = True              # the host had queued the whole block before the device began it


class HostClock:
    """Blocks timed on the host clock (the CPU backend): each block runs synchronously."""

    kind = "host perf_counter"

    def __init__(self) -> None:
        self._blocks: list[Block] = []

    def facts(self) -> dict:
        return {"clock": self.kind}

    def begin_chunk(self) -> None:
        self._blocks = []

    def time_block(self, name: str, run: Callable[[], object]) -> None:
        begin = time.perf_counter()
        run()
        end = time.perf_counter()
        self._blocks.append(Block(name, (end - begin) * 1e3, begin, end))

    def between(self, action: Callable[[], object]) -> None:
        action()

    def end_chunk(self) -> list[Block]:
        return self._blocks


_GATE_SOURCE = r"""
extern "C" __global__ void timing_gate(unsigned long long ns) {
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now)); } while (now - start < ns);
}
"""


class CudaClock:
    """Blocks timed with CUDA events on one stream, queued behind a spin kernel so the GPU never waits.

    The gate's length adapts: it starts at `gate_us` and grows to twice the host's enqueue time of a
    chunk whenever a block was reached before it had been queued whole.
    """

    kind = "CUDA events"

    def __init__(self, stream=None, gate_us: float = 2000.0, max_gate_us: float = 200_000.0) -> None:
        import cupy

        self.cupy = cupy
        self.stream = stream if stream is not None else cupy.cuda.get_current_stream()
        self.gate_us = gate_us
        self.max_gate_us = max_gate_us
        self.gate_error: str | None = None
        try:
            self._gate = cupy.RawKernel(_GATE_SOURCE, "timing_gate")
            self._gate.compile()
        except Exception as error:  # noqa: BLE001 -- no NVRTC: time without the gate, say so
            self._gate = None
            self.gate_error = f"{type(error).__name__}: {error}"
        self._pending: list[tuple] = []

    def facts(self) -> dict:
        return {"clock": self.kind, "gate": self._gate is not None, "gate_error": self.gate_error,
                "stream": int(self.stream.ptr)}

    def begin_chunk(self) -> None:
        import numpy as np

        cupy = self.cupy
        self.stream.synchronize()
        self._origin_host = time.perf_counter()
        self._origin = cupy.cuda.Event()
        self._origin.record(self.stream)
        if self._gate is not None:
            with self.stream:
                self._gate((1,), (1,), (np.uint64(int(self.gate_us * 1e3)),))
        self._pending = []

    def time_block(self, name: str, run: Callable[[], object]) -> None:
        cupy = self.cupy
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record(self.stream)
        with self.stream:
            run()
        end.record(self.stream)
        self._pending.append((name, start, end, time.perf_counter()))

    def between(self, action: Callable[[], object]) -> None:
        with self.stream:
            action()

    def end_chunk(self) -> list[Block]:
        cupy = self.cupy
        enqueued = time.perf_counter()
        self.stream.synchronize()
        blocks = []
        for name, start, end, queued in self._pending:
            begin_host = self._origin_host + cupy.cuda.get_elapsed_time(self._origin, start) / 1e3
            end_host = self._origin_host + cupy.cuda.get_elapsed_time(self._origin, end) / 1e3
            blocks.append(Block(name, cupy.cuda.get_elapsed_time(start, end), begin_host, end_host,
                                queued_ahead=queued <= begin_host))
        if self._gate is not None and not all(block.queued_ahead for block in blocks):
            self.gate_us = min(self.max_gate_us, max(2 * self.gate_us, 2e6 * (enqueued - self._origin_host)))
        return blocks


def interleave(variants: Sequence[Variant], *, rounds: int, clock, seed: int = 0, warmup_rounds: int = 2,
               chunk_rounds: int = 8, sampler: clocks.NvmlSampler | None = None,
               poison_outputs: Callable = poison) -> dict:
    """Run `variants` in `rounds` counted rounds (balanced order), chunked, and return every sample.

    A warm-up chunk of `warmup_rounds` rounds comes first; every later chunk starts with one round that is
    run and dropped (the first work after a synchronisation), then up to `chunk_rounds` counted rounds.
    Right before the last counted round each variant's `outputs` are poisoned (on the device stream,
    between blocks), so what they hold afterwards is what the last timed launches wrote.

    Returns {"rounds", "order", "samples_ms" (per launch, per counted round), "dropped_ms", "launches",
    "method", "host_bound_blocks", "clock": {"nvml", "sides", "samples"}, "clock_source"}.
    """
    if rounds < 1:
        raise ValueError("interleave needs at least one counted round")
    names = [variant.name for variant in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique: {names}")
    by_name = {variant.name: variant for variant in variants}
    plan: list[tuple[str, int]] = [("warmup", -1)] * max(0, warmup_rounds)   # (kind, counted index)
    counted = 0
    while counted < rounds:
        plan.append(("prewarm", -1))
        for _ in range(min(chunk_rounds, rounds - counted)):
            plan.append(("counted", counted))
            counted += 1
        plan.append(("sync", -1))
    if warmup_rounds > 0:
        plan.insert(warmup_rounds, ("sync", -1))
    # Counted rounds get their own balanced sequence (each variant first equally often among them); the
    # dropped warm-up rounds draw from a second one.
    counted_orders = stats.round_orders(names, rounds, seed)
    dropped_orders = stats.round_orders(names, sum(1 for kind, _ in plan if kind in ("warmup", "prewarm")), seed + 1)
    samples: dict[str, list[float]] = {name: [] for name in names}
    dropped: dict[str, list[float]] = {name: [] for name in names}
    host_bound = {name: 0 for name in names}
    counted_blocks: list[Block] = []
    used_orders: list[list[str]] = []
    if sampler is not None:
        sampler.take()
    origin = time.perf_counter()
    chunk_kinds: list[str] = []
    clock.begin_chunk()
    order_index = 0
    for step, (kind, index) in enumerate(plan):
        if kind == "sync":
            for block, block_kind in zip(clock.end_chunk(), chunk_kinds):
                per_launch = block.ms / by_name[block.name].launches
                if block_kind == "counted":
                    samples[block.name].append(per_launch)
                    counted_blocks.append(block)
                    host_bound[block.name] += 0 if block.queued_ahead else 1
                else:
                    dropped[block.name].append(per_launch)
            chunk_kinds = []
            if step + 1 < len(plan):
                clock.begin_chunk()
            continue
        if kind == "counted":
            order = counted_orders[index]
        else:
            order = dropped_orders[order_index]
            order_index += 1
        if kind == "counted":
            used_orders.append(list(order))
            if index == rounds - 1:
                clock.between(lambda: [poison_outputs(out) for v in variants for out in v.outputs])
        for name in order:
            clock.time_block(name, by_name[name].run)
            chunk_kinds.append(kind)
    nvml_samples = sampler.take() if sampler is not None else []
    attributed = clocks.attribute(nvml_samples, [(b.name, b.start, b.end) for b in counted_blocks])
    return {
        "rounds": rounds, "order": used_orders, "launches": {v.name: v.launches for v in variants},
        "method": {v.name: v.method for v in variants}, "samples_ms": samples, "dropped_ms": dropped,
        "host_bound_blocks": host_bound, "clock_source": clock.facts(),
        "clock": {"nvml": sampler is not None and sampler.available,
                  "sides": {name: clocks.side_state(attributed.get(name, [])) for name in names},
                  "samples": clocks.compact(nvml_samples, origin) if nvml_samples else None},
    }


def compare(result: dict, candidate: str, baseline: str, *, seed: int = 0,
            candidate_samples: Sequence[float] | None = None) -> dict:
    """The paired figure baseline/candidate of an `interleave` result, with the two sides' clock states.

    `candidate_samples` replaces the candidate's own samples (e.g. kernel + padding copy per round).
    """
    cand = list(candidate_samples) if candidate_samples is not None else result["samples_ms"][candidate]
    ratio = stats.paired_ratio(cand, result["samples_ms"][baseline], seed=seed)
    sides = result["clock"]["sides"]
    state = (clocks.compare_sides(sides[candidate], sides[baseline]) if result["clock"]["nvml"]
             else {"differ": None, "why": "no clock data (NVML unavailable)"})
    throttled = [name for name in (candidate, baseline) if sides.get(name, {}).get("throttled")]
    return {"candidate": candidate, "baseline": baseline, **ratio, "clock_states": state,
            "throttled": throttled,
            "host_bound_blocks": result["host_bound_blocks"][candidate] + result["host_bound_blocks"][baseline]}


def one_launch_ms(stream, run: Callable[[], object]) -> float:
    """One launch of `run` on `stream`, timed with events after one untimed launch: a first
    estimate to size timed blocks and rounds, never a reported figure."""
    import cupy

    with stream:
        run()
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record(stream)
        run()
        end.record(stream)
    end.synchronize()
    return cupy.cuda.get_elapsed_time(start, end)


def plan_rounds(round_ms: float, *, budget_ms: float = 1500.0, minimum: int = 8, maximum: int = 30) -> int:
    """How many counted rounds fit `budget_ms` when one round (every variant once) takes `round_ms`."""
    if round_ms <= 0:
        return maximum
    return max(minimum, min(maximum, int(budget_ms // round_ms)))


def capture_graph(stream, enqueue: Callable[[], object]):
    """A CUDA graph of what `enqueue()` queues on `stream` (a non-default CuPy stream), or None with why.

    The caller must have run `enqueue` once before (module loads, tensor maps and pool allocations happen
    then, not during capture). Returns (graph, None) or (None, reason).
    """
    try:
        with stream:
            stream.begin_capture()
            try:
                enqueue()
            finally:
                graph = stream.end_capture()
        return graph, None
    except Exception as error:  # noqa: BLE001 -- capture unsupported by this callable: fall back to queued launches
        return None, f"{type(error).__name__}: {error}".splitlines()[0]
