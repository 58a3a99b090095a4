"""Allocator replay: a request trace through each KV-memory policy, and where the KV memory goes over time.

CLI: python -m workloads.serving.allocator TRACE.jsonl --out results/serving/replay/NAME.json
     [--capacity-tokens 15360] [--max-len 2048] [--block-size 16] [--max-batch 256] [--step-s 0.03]
     [--watermark 0.01] [--policies orca-max,orca-pow2,orca-oracle,orca-max-buddy,...,paged]

The server is simulated at iteration level (continuous batching), one iteration per `step_s` seconds of
trace time. Each iteration:
  1. every running request decodes one token (its KV grows by one slot); under paging, when no block is
     left, the most recently admitted request is preempted (freed, put back at the head of the queue, and
     recomputed when readmitted: vLLM's default);
  2. unless this iteration preempted, waiting requests are admitted first come, first served while the
     policy finds them memory and the batch has room; an admitted request's prompt (plus what it generated
     before a preemption) enters the cache in this iteration (prefill);
  3. the memory is recorded;
  4. requests that have generated their trace's output length leave (a request ends holding
     input + output tokens, the length Orca-Oracle reserves).

Memory, in token slots of the whole KV pool, splits into
  token states (KV of tokens already computed), reservation (allocated, to be filled by later tokens of the
  same request), internal fragmentation (allocated beyond the request's final length: never filled),
  external fragmentation (free, at an iteration where the head of the queue waits for memory although the
  free slots add up to its need: free but in pieces too small), and free (everything else unallocated).
Averages are over *loaded* iterations (a request waits after admission, i.e. demand exceeds what the policy
lets run) — the regime of the paper's Figure 2 — and, for reference, over all busy iterations.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workloads.common.results import write_results
from workloads.serving.policies import LABELS, POLICIES, KVPolicy, make_policy
from workloads.serving.traces import Request, read_trace

CATEGORIES = ("token_states", "reservation", "internal_frag", "external_frag", "free")
# Figure 2 of the PagedAttention paper: share of KV memory holding token states.
PAPER_TOKEN_STATES = {"orca-max": 0.204, "orca-pow2": 0.268, "orca-oracle": 0.382, "paged": 0.963}
# OPT-13B on an A100-40GB: ~12 GB of KV cache at 800 KB per token (the paper's section 3); 960 blocks of 16.
DEFAULT_CAPACITY = 15360
DEFAULT_MAX_LEN = 2048


class ReplayError(ValueError):
    """A trace or configuration the replay cannot run: the message says what to change."""


@dataclass(eq=False)
class Live:
    """A request in the server. While running, it grows one token per iteration after `admitted_step`."""

    request: Request
    generated: int = 0  # output tokens generated before the current admission
    tokens: int = 0  # KV tokens held right after the current admission
    admitted_step: int = -1
    finish_step: int = -1
    slots: int = 0  # slots allocated to it now
    running: bool = False

    def tokens_at(self, step: int) -> int:
        """KV tokens held after iteration `step`'s decode (it decodes from the iteration after admission)."""
        return self.tokens + step - self.admitted_step


@dataclass
class ReplayConfig:
    capacity: int = DEFAULT_CAPACITY
    max_len: int = DEFAULT_MAX_LEN
    block_size: int = 16
    max_batch: int = 256
    step_s: float = 0.03
    watermark: float = 0.01
    series_points: int = 200


class _Sums:
    """Sums over the running requests, updated on every change so that recording an iteration is O(1)."""

    def __init__(self) -> None:
        self.tokens = 0  # token states
        self.fillable = 0  # sum of min(slots, final length): token states + reservation
        self.internal = 0  # sum of max(0, slots - final length)

    def add(self, live: Live, tokens: int, sign: int = 1) -> None:
        total = live.request.total_len
        self.tokens += sign * tokens
        self.fillable += sign * min(live.slots, total)
        self.internal += sign * max(0, live.slots - total)

    def resize(self, live: Live, slots: int) -> None:
        self.add(live, 0, -1)
        live.slots = slots
        self.add(live, 0)


def check_trace(requests: list[Request], config: ReplayConfig, where: str) -> None:
    """ReplayError when a request cannot ever run: longer than the model allows or than the whole pool."""
    if config.max_len > config.capacity:
        raise ReplayError(f"--max-len {config.max_len} exceeds --capacity-tokens {config.capacity}: a request of "
                          "the model's maximum length would not fit; raise the capacity or lower the maximum length")
    blocks = config.capacity // config.block_size
    most_blocks = -(-config.max_len // config.block_size) + int(config.watermark * blocks)
    if most_blocks > blocks:
        raise ReplayError(f"a {config.max_len}-token request plus the {config.watermark:g} watermark needs {most_blocks} "
                          f"blocks of {config.block_size}; the pool has {blocks}: raise --capacity-tokens")
    longest = max(requests, key=lambda r: r.total_len)
    if longest.total_len > config.max_len:
        raise ReplayError(f"{where}: request {longest.id} needs {longest.total_len} tokens (input {longest.input_len} "
                          f"+ output {longest.output_len}), more than --max-len {config.max_len}; pass a larger "
                          "--max-len or generate the trace with smaller --max-input/--max-output")


class Server:
    """One policy's server state: the queue, the running batch and the memory sums."""

    def __init__(self, policy: KVPolicy, config: ReplayConfig) -> None:
        self.policy = policy
        self.config = config
        self.waiting: deque[Live] = deque()
        self.running: list[Live] = []
        self.finishing: dict[int, list[Live]] = {}
        self.sums = _Sums()
        self.preemptions = 0
        self.finished = 0
        self.releases = 0  # memory only grows back on a release: an admission that failed stays failed until one
        self._failed_at = -1

    def decode(self, step: int) -> int:
        """Step 1: every running request grows by one token; returns the number of preemptions."""
        if self.policy.reserves_up_front:
            self.sums.tokens += len(self.running)
            return 0
        preemptions = 0
        for live in list(self.running):
            if not live.running:
                continue
            while not self.policy.grow(live.request.id):
                victim = self.running.pop()
                self._preempt(victim, step)
                preemptions += 1
                if victim is live:
                    break
            else:
                self.sums.tokens += 1
                slots = self.policy.allocated(live.request.id)
                if slots != live.slots:
                    self.sums.resize(live, slots)
        self.preemptions += preemptions
        return preemptions

    def _preempt(self, victim: Live, step: int) -> None:
        """Free a request that has not decoded in iteration `step` yet; it will be recomputed on readmission."""
        held = victim.tokens_at(step - 1)
        self.sums.add(victim, held, -1)
        self.policy.release(victim.request.id)
        self.releases += 1
        victim.generated = held - victim.request.input_len
        victim.running = False
        self.waiting.appendleft(victim)

    def admit(self, step: int) -> str:
        """Step 2: FCFS admission; returns why the head of the queue still waits ('' when none waits)."""
        while self.waiting:
            if len(self.running) >= self.config.max_batch:
                return "batch"
            live = self.waiting[0]
            request = live.request
            tokens = request.input_len + live.generated
            if self._failed_at == self.releases:
                return "memory"
            if not self.policy.try_admit(request.id, request.input_len, request.output_len, tokens):
                self._failed_at = self.releases
                return "memory"
            self.waiting.popleft()
            live.tokens, live.admitted_step, live.running = tokens, step, True
            live.slots = self.policy.allocated(request.id)
            live.finish_step = step + request.output_len - live.generated
            self.finishing.setdefault(live.finish_step, []).append(live)
            self.sums.add(live, tokens)
            self.running.append(live)
        return ""

    def external_fragmentation(self, blocked: str, free: int) -> int:
        """Free slots that would admit the waiting head if they were one piece (0 unless memory blocks it)."""
        if blocked != "memory":
            return 0
        request, generated = self.waiting[0].request, self.waiting[0].generated
        need = self.policy.admission_need(request.input_len, request.output_len, request.input_len + generated)
        return free if self.policy.fits_compacted(need) else 0

    def retire(self, step: int) -> None:
        """Step 4: requests that generated their whole output leave."""
        for live in self.finishing.pop(step, ()):
            if live.running and live.finish_step == step:
                self.running.remove(live)
                self.sums.add(live, live.tokens_at(step), -1)
                self.policy.release(live.request.id)
                self.releases += 1
                live.running = False
                self.finished += 1

    def audit(self, step: int) -> None:
        """Recompute the sums from scratch and check them and the capacity (a replay observer for tests)."""
        held = [(self.policy.allocated(live.request.id), live.request.total_len, live.tokens_at(step))
                for live in self.running]
        assert self.sums.tokens == sum(t for _, _, t in held), "token sum drifted"
        assert self.sums.fillable == sum(min(a, n) for a, n, _ in held), "reservation sum drifted"
        assert self.sums.internal == sum(max(0, a - n) for a, n, _ in held), "internal sum drifted"
        allocated = sum(a for a, _, _ in held)
        assert allocated + self.policy.free_slots() == self.policy.capacity, "allocated + free != capacity"
        assert all(t <= min(a, n) for a, n, t in held), "a request holds more tokens than its slots or length"


def replay(requests: list[Request], policy: KVPolicy, config: ReplayConfig, *,
           observer: Callable[[Server, int], None] | None = None) -> dict:
    """Run the trace through one policy; the per-iteration memory breakdown, its averages and the batch sizes.

    `observer(server, step)` is called after each iteration's decode and admission, before requests leave
    (tests pass `Server.audit` or their own checks).
    """
    pending = deque(sorted(requests, key=lambda r: (r.arrival_s, r.id)))
    server = Server(policy, config)
    rows: list[tuple] = []  # per busy iteration: step, the five categories, batch, waiting
    step = 0
    step_limit = 4 * (sum(r.total_len + 1 for r in requests) + math.ceil(pending[-1].arrival_s / config.step_s)) + 16
    while pending or server.waiting or server.running:
        if not server.running and not server.waiting:  # idle: jump to the next arrival
            step = max(step, math.ceil(pending[0].arrival_s / config.step_s - 1e-9))
        now = step * config.step_s
        while pending and pending[0].arrival_s <= now + 1e-9:
            server.waiting.append(Live(pending.popleft()))
        preempted = server.decode(step)
        blocked = ("preemption" if server.waiting else "") if preempted else server.admit(step)
        if observer is not None:
            observer(server, step)
        sums = server.sums
        free = policy.free_slots()
        external = server.external_fragmentation(blocked, free)
        rows.append((step, sums.tokens, sums.fillable - sums.tokens, sums.internal, external, free - external,
                     len(server.running), len(server.waiting)))
        server.retire(step)
        step += 1
        if step > step_limit:
            raise ReplayError(f"policy {policy.name} made no progress after {step} iterations; this is a bug in "
                              "the replay, please report it with the trace")
    return summarize(np.array(rows, dtype=np.float64), policy, config, server.preemptions, server.finished)


def _shares(rows: np.ndarray, capacity: int) -> dict[str, float]:
    if rows.size == 0:
        return {name: None for name in (*CATEGORIES, "token_states_of_allocated", "mean_batch", "max_batch")}
    shares = {name: float(rows[:, 1 + i].mean() / capacity) for i, name in enumerate(CATEGORIES)}
    allocated = rows[:, 1] + rows[:, 2] + rows[:, 3]
    with np.errstate(invalid="ignore", divide="ignore"):
        of_allocated = np.where(allocated > 0, rows[:, 1] / np.maximum(allocated, 1), np.nan)
    shares["token_states_of_allocated"] = float(np.nanmean(of_allocated)) if np.isfinite(of_allocated).any() else None
    shares["mean_batch"] = float(rows[:, 6].mean())
    shares["max_batch"] = int(rows[:, 6].max())
    return shares


def _series(rows: np.ndarray, config: ReplayConfig) -> dict[str, list[float]]:
    """The per-iteration shares averaged into at most `series_points` buckets of consecutive busy iterations."""
    buckets = np.array_split(np.arange(len(rows)), min(config.series_points, len(rows)))
    series: dict[str, list[float]] = {"t_s": [], **{name: [] for name in CATEGORIES}, "batch": [], "waiting": []}
    for index in buckets:
        chunk = rows[index]
        series["t_s"].append(round(float(chunk[:, 0].mean()) * config.step_s, 4))
        for i, name in enumerate(CATEGORIES):
            series[name].append(round(float(chunk[:, 1 + i].mean()) / config.capacity, 5))
        series["batch"].append(round(float(chunk[:, 6].mean()), 3))
        series["waiting"].append(round(float(chunk[:, 7].mean()), 3))
    return series


def summarize(rows: np.ndarray, policy: KVPolicy, config: ReplayConfig, preemptions: int, finished: int) -> dict:
    loaded = rows[rows[:, 7] > 0]
    return {"policy": policy.name, "label": LABELS[policy.name], "allocator": policy.allocator_name,
            "paper_token_states": PAPER_TOKEN_STATES[policy.name.removesuffix("-buddy")],
            "loaded": _shares(loaded, config.capacity), "busy": _shares(rows, config.capacity),
            "iterations": len(rows), "loaded_iterations": len(loaded), "finished": finished,
            "preemptions": preemptions, "makespan_s": round(float(rows[-1, 0] + 1) * config.step_s, 4),
            "series": _series(rows, config)}


def run(trace_path: Path, config: ReplayConfig, policies: list[str]) -> dict:
    header, requests = read_trace(trace_path)
    check_trace(requests, config, str(trace_path))
    built = [make_policy(name, config.capacity, config.max_len, config.block_size, config.watermark)
             for name in policies]  # configuration errors before any replay runs
    results = []
    for policy in built:
        results.append(replay(requests, policy, config))
        policy.check_invariants()
        if policy.free_slots() != config.capacity:
            raise ReplayError(f"policy {policy.name} still holds memory after the last request left; this is a bug")
    return {"trace": {"path": str(trace_path), "requests": len(requests), **header},
            "config": {"capacity_tokens": config.capacity, "max_len": config.max_len, "block_size": config.block_size,
                       "max_batch": config.max_batch, "step_s": config.step_s, "watermark": config.watermark,
                       "preemption": "recompute, youngest first"},
            "policies": results}


def print_summary(payload: dict) -> None:
    trace = payload["trace"]
    print(f"allocator replay [backend: cpu] {trace['dataset']}: {trace['requests']} requests, "
          f"KV capacity {payload['config']['capacity_tokens']} tokens (loaded-iteration averages)")
    for result in payload["policies"]:
        shares = result["loaded"]
        cells = " ".join(f"{name} {shares[name] * 100:5.1f}%" if shares[name] is not None else f"{name} -"
                         for name in CATEGORIES)
        batch = f"batch {shares['mean_batch']:.1f}" if shares["mean_batch"] is not None else "batch -"
        print(f"  {result['label']:<21} {cells} | {batch} | paper token states "
              f"{result['paper_token_states'] * 100:.1f}% | preemptions {result['preemptions']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workloads.serving.allocator", description=__doc__.split("\n")[0])
    parser.add_argument("trace", type=Path, help="trace file from python -m workloads.serving.traces")
    parser.add_argument("--out", type=Path, required=True, help="results JSON")
    parser.add_argument("--capacity-tokens", type=int, default=DEFAULT_CAPACITY, help="KV pool size in token slots")
    parser.add_argument("--max-len", type=int, default=DEFAULT_MAX_LEN, help="model maximum sequence length")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=256, help="most requests running at once")
    parser.add_argument("--step-s", type=float, default=0.03, help="trace seconds per iteration")
    parser.add_argument("--watermark", type=float, default=0.01, help="share of blocks paging keeps free at admission")
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated: " + ", ".join(POLICIES))
    args = parser.parse_args(argv)
    policies = [name.strip() for name in args.policies.split(",") if name.strip()]
    unknown = [name for name in policies if name not in POLICIES]
    if unknown or not policies:
        parser.error(f"unknown policies {', '.join(unknown) or '(none given)'}; choose from {', '.join(POLICIES)}")
    for flag, value in (("--capacity-tokens", args.capacity_tokens), ("--max-len", args.max_len),
                        ("--block-size", args.block_size), ("--max-batch", args.max_batch)):
        if value <= 0:
            parser.error(f"{flag} must be positive, got {value}")
    if not args.step_s > 0 or not 0 <= args.watermark < 1:
        parser.error("--step-s must be positive and --watermark in [0, 1)")
    config = ReplayConfig(args.capacity_tokens, args.max_len, args.block_size, args.max_batch, args.step_s,
                          args.watermark)
    started = time.perf_counter()
    try:
        payload = run(args.trace, config, policies)
    except ValueError as error:  # TraceError, ReplayError, or a configuration a policy rejects
        print(f"allocator replay: {error}", file=sys.stderr)
        return 2
    payload = {"task": "serving:replay", "backend": "cpu", "seconds": time.perf_counter() - started, **payload}
    write_results(args.out, payload)
    print_summary(payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
