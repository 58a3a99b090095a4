"""The serving engines: iteration-level scheduling over a paged or a reserved KV cache, on any runner.

One loop serves both engines; what differs is the KV manager:

- `PagedKV` (vLLM): our block manager, block size 16; a request holds the blocks its tokens fill, a
  block is taken when a sequence crosses a block boundary. Admission keeps a watermark of free blocks;
  when a decode step finds no free block the youngest running request is preempted, by recomputation
  (its blocks freed; later its prompt plus the tokens generated so far are prefilled again) or by
  swapping (its blocks copied to host memory and freed; later copied back into new blocks).
- `ReservedKV` (Orca-Max / FasterTransformer): at admission a request gets one contiguous range of
  `max_len` token slots (whole blocks, so the same kernels read it through an identity block table) and
  keeps it to the end: never preempted, and the batch is capped by how many ranges fit.

The loop (vLLM v0's order): requests arrive in trace order (FCFS); each iteration either prefills newly
admitted requests (swapped-out requests come back first, and nobody new is admitted while any waits to
come back) or runs one decode step of every running request; a request leaves when it has produced its
trace output length (no EOS). Iterations are timed on the runner (after a device sync); the engine's
clock advances by each iteration's measured time and jumps over idle gaps to the next arrival, so
latencies are those of a real-time server whose idle time is skipped (`clock="virtual"`).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from workloads.paged_attention.block_manager import BlockManager, OutOfBlocks


class KVFull(RuntimeError):
    """The KV manager cannot give this step its slots."""


class PagedKV:
    kind = "paged"

    def __init__(self, num_blocks: int, block_size: int = 16, watermark: float = 0.01) -> None:
        self.manager = BlockManager(num_blocks, block_size)
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.watermark_blocks = int(watermark * num_blocks)

    def can_admit(self, num_tokens: int, max_len: int) -> bool:
        return self.manager.can_allocate(num_tokens, self.watermark_blocks)

    def admit(self, seq_id, num_tokens: int, max_len: int) -> np.ndarray:
        return self.manager.add_sequence(seq_id, num_tokens)

    def append(self, seq_ids: list) -> np.ndarray:
        try:
            return self.manager.append_tokens(seq_ids)
        except OutOfBlocks as error:
            raise KVFull(str(error)) from None

    def blocks_for_step(self, seq_ids: list) -> int:
        """Free blocks this decode step needs (sequences at a block boundary)."""
        return sum(1 for s in seq_ids if self.manager.num_tokens(s) % self.block_size == 0)

    def free(self, seq_id) -> None:
        self.manager.free(seq_id)

    def free_blocks(self) -> int:
        return self.manager.num_free_blocks

    def block_table(self, seq_id) -> list[int]:
        return self.manager.block_table(seq_id)

    def block_tables(self, seq_ids: list, width: int) -> np.ndarray:
        return self.manager.block_tables_array(seq_ids, width)

    def allocated_tokens(self) -> int:
        return self.manager.num_used_blocks * self.block_size

    def capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size


class ReservedKV:
    """Contiguous ranges of `max_len` slots, one per admitted request (Orca-Max, FasterTransformer)."""

    kind = "reservation"

    def __init__(self, num_blocks: int, block_size: int, max_len: int) -> None:
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.blocks_per_range = -(-max_len // block_size)
        self.num_ranges = num_blocks // self.blocks_per_range
        if self.num_ranges == 0:
            raise ValueError(f"{num_blocks} blocks of {block_size} cannot hold one {max_len}-token reservation")
        self.free_ranges = list(range(self.num_ranges - 1, -1, -1))
        self.ranges: dict = {}
        self.tokens: dict = {}

    def can_admit(self, num_tokens: int, max_len: int) -> bool:
        return bool(self.free_ranges)

    def _table(self, seq_id) -> list[int]:
        base = self.ranges[seq_id] * self.blocks_per_range
        return list(range(base, base + -(-self.tokens[seq_id] // self.block_size)))

    def _slots(self, seq_id, begin: int, end: int) -> np.ndarray:
        return self.ranges[seq_id] * self.blocks_per_range * self.block_size + np.arange(begin, end, dtype=np.int64)

    def admit(self, seq_id, num_tokens: int, max_len: int) -> np.ndarray:
        if num_tokens > self.blocks_per_range * self.block_size:
            raise KVFull(f"request {seq_id!r} of {num_tokens} tokens exceeds the {max_len}-token reservation")
        self.ranges[seq_id] = self.free_ranges.pop()
        self.tokens[seq_id] = num_tokens
        return self._slots(seq_id, 0, num_tokens)

    def append(self, seq_ids: list) -> np.ndarray:
        for seq_id in seq_ids:
            if self.tokens[seq_id] >= self.blocks_per_range * self.block_size:
                raise KVFull(f"request {seq_id!r} outgrew its reservation")
        slots = [self._slots(s, self.tokens[s], self.tokens[s] + 1)[0] for s in seq_ids]
        for seq_id in seq_ids:
            self.tokens[seq_id] += 1
        return np.asarray(slots, dtype=np.int64)

    def blocks_for_step(self, seq_ids: list) -> int:
        return 0

    def free_blocks(self) -> int:
        return (self.num_ranges - len(self.ranges)) * self.blocks_per_range

    def free(self, seq_id) -> None:
        self.free_ranges.append(self.ranges.pop(seq_id))
        del self.tokens[seq_id]

    def block_table(self, seq_id) -> list[int]:
        return self._table(seq_id)

    def block_tables(self, seq_ids: list, width: int) -> np.ndarray:
        array = np.zeros((len(seq_ids), max(width, 1)), dtype=np.int32)
        for row, seq_id in enumerate(seq_ids):
            table = self._table(seq_id)
            array[row, :len(table)] = table
        return array

    def allocated_tokens(self) -> int:
        return len(self.ranges) * self.blocks_per_range * self.block_size

    def capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size


@dataclass
class Sequence:
    """A request in the engine: its prompt, what it generated, when, and how often it was preempted."""

    id: int
    arrival_s: float
    prompt: list[int]
    output_len: int
    output: list[int] = field(default_factory=list)
    token_times: list[float] = field(default_factory=list)
    logits: list = field(default_factory=list)
    preemptions: int = 0
    swapped: object = None        # host copy of the KV while swapped out
    kv_tokens: int = 0            # tokens whose KV is in the cache

    @property
    def done(self) -> bool:
        return len(self.output) >= self.output_len

    def record(self) -> dict:
        return {"id": self.id, "arrival_s": self.arrival_s, "input_len": len(self.prompt),
                "output_len": len(self.output), "token_times": self.token_times, "preemptions": self.preemptions}


@dataclass
class EngineConfig:
    max_batch: int = 256               # running requests (vLLM's max_num_seqs)
    max_batched_tokens: int = 8192     # prompt tokens per prefill iteration
    preemption: str = "recompute"      # or "swap"
    max_len: int = 2048                # the longest request (reservation size)
    keep_logits: bool = False


class Engine:
    def __init__(self, runner, kv, config: EngineConfig | None = None, clock: str = "virtual") -> None:
        self.runner = runner
        self.kv = kv
        self.config = config or EngineConfig()
        if self.config.preemption not in ("recompute", "swap"):
            raise ValueError(f"preemption must be recompute or swap, not {self.config.preemption!r}")
        self.clock = clock
        self.width = -(-self.config.max_len // runner.block_size)
        self.now = 0.0
        self.iterations: list[dict] = []
        self.preemptions = {"recompute": 0, "swap": 0}

    # -- bookkeeping ----------------------------------------------------------------------------------
    def _timed(self, work):
        start = time.perf_counter()
        result = work()
        self.runner.synchronize()
        elapsed = time.perf_counter() - start
        self.now += elapsed
        return result, elapsed

    def _emit(self, seqs: list[Sequence], tokens, logits) -> None:
        for row, seq in enumerate(seqs):
            seq.output.append(int(tokens[row]))
            seq.token_times.append(self.now)
            if self.config.keep_logits and logits is not None:
                seq.logits.append(np.asarray(logits[row], dtype=np.float32))

    def _sample(self, kind: str, batch: int, tokens: int, elapsed: float, running: int) -> None:
        token_states = sum(s.kv_tokens for s in self._running)
        self.iterations.append({"t_s": self.now, "kind": kind, "batch": batch, "tokens": tokens,
                                "elapsed_s": elapsed, "running": running,
                                "allocated_tokens": self.kv.allocated_tokens(), "token_states": token_states,
                                "waiting": len(self._waiting) + len(self._swapped)})

    # -- preemption -----------------------------------------------------------------------------------
    def _preempt(self, seq: Sequence) -> None:
        seq.preemptions += 1
        if self.config.preemption == "swap":
            # the copy to host memory is the engine's time as much as a step is: on the clock
            table = self.kv.block_table(seq.id)
            seq.swapped, elapsed = self._timed(lambda: self.runner.swap_out(table))
            self.kv.free(seq.id)
            self._swapped.append(seq)
            self.preemptions["swap"] += 1
            self._sample("swap_out", 1, 0, elapsed, len(self._running))   # the victim out, and waiting
        else:
            self.kv.free(seq.id)
            seq.kv_tokens = 0
            self._waiting.appendleft(seq)
            self.preemptions["recompute"] += 1

    # -- the loop -------------------------------------------------------------------------------------
    def run(self, requests: list[Sequence]) -> list[Sequence]:
        pending = deque(sorted(requests, key=lambda s: (s.arrival_s, s.id)))
        self._waiting: deque[Sequence] = deque()
        self._swapped: deque[Sequence] = deque()
        self._running: list[Sequence] = []
        finished: list[Sequence] = []
        cfg = self.config
        for seq in requests:
            if len(seq.prompt) + seq.output_len > cfg.max_len:
                raise ValueError(f"request {seq.id}: {len(seq.prompt)} + {seq.output_len} tokens exceed max_len "
                                 f"{cfg.max_len}")
        while pending or self._waiting or self._swapped or self._running:
            while pending and pending[0].arrival_s <= self.now:
                self._waiting.append(pending.popleft())
            if not (self._waiting or self._swapped or self._running):
                self.now = max(self.now, pending[0].arrival_s)
                continue
            if self._swap_in() or self._prefill():
                pass
            elif self._running:
                self._decode()
            else:
                stuck = (self._swapped or self._waiting)[0]
                raise RuntimeError(f"request {stuck.id} ({len(stuck.prompt) + len(stuck.output)} tokens) cannot be "
                                   f"admitted into an empty KV cache of {self.kv.capacity_tokens()} slots; give the "
                                   "engine more KV memory")
            still = []
            for seq in self._running:
                if seq.done:
                    self.kv.free(seq.id)
                    finished.append(seq)
                else:
                    still.append(seq)
            self._running = still
        return sorted(finished, key=lambda s: s.id)

    def _swap_in(self) -> bool:
        moved = []
        while self._swapped and len(self._running) + len(moved) < self.config.max_batch:
            seq = self._swapped[0]
            if not self.kv.can_admit(seq.kv_tokens + 1, self.config.max_len):
                break
            self._swapped.popleft()
            self.kv.admit(seq.id, seq.kv_tokens, self.config.max_len)
            moved.append(seq)
        if not moved:
            return False

        def work():
            for seq in moved:
                self.runner.swap_in(seq.swapped, self.kv.block_table(seq.id))
                seq.swapped = None

        _, elapsed = self._timed(work)
        self._running.extend(moved)
        self._sample("swap_in", len(moved), 0, elapsed, len(self._running))
        return True

    def _prefill(self) -> bool:
        if self._swapped:
            return False
        cfg = self.config
        chosen, slot_mappings, budget = [], [], cfg.max_batched_tokens
        while self._waiting and len(self._running) + len(chosen) < cfg.max_batch:
            seq = self._waiting[0]
            context = seq.prompt + seq.output  # a recomputed request prefills what it generated too
            if chosen and len(context) > budget:
                break
            if not self.kv.can_admit(len(context), cfg.max_len):
                break
            self._waiting.popleft()
            slot_mappings.append(self.kv.admit(seq.id, len(context), cfg.max_len))
            seq.kv_tokens = len(context)
            chosen.append(seq)
            budget -= len(context)
        if not chosen:
            return False
        contexts = [seq.prompt + seq.output for seq in chosen]
        (tokens, logits), elapsed = self._timed(lambda: self.runner.prefill(contexts, slot_mappings))
        self._emit(chosen, tokens, logits)
        self._running.extend(chosen)
        self._sample("prefill", len(chosen), sum(map(len, contexts)), elapsed, len(self._running))
        return True

    def _decode(self) -> None:
        while self.kv.blocks_for_step([s.id for s in self._running]) > self.kv.free_blocks():
            victim = self._running.pop()  # the youngest (last admitted) request
            self._preempt(victim)
            if not self._running:
                return
        seqs = self._running
        ids = [s.id for s in seqs]
        slots = self.kv.append(ids)
        positions = np.array([s.kv_tokens for s in seqs], dtype=np.int64)
        for seq in seqs:
            seq.kv_tokens += 1
        tokens = np.array([s.output[-1] for s in seqs], dtype=np.int64)
        tables = self.kv.block_tables(ids, self.width)
        seq_lens = (positions + 1).astype(np.int32)
        (next_tokens, logits), elapsed = self._timed(
            lambda: self.runner.decode(tokens, positions, slots, tables, seq_lens))
        self._emit(seqs, next_tokens, logits)
        self._sample("decode", len(seqs), len(seqs), elapsed, len(seqs))


def sequences_from_trace(requests, vocab: int, seed: int = 0, time_scale: float = 1.0) -> list[Sequence]:
    """Engine sequences for trace requests (prompts are seeded random token ids; arrivals scaled)."""
    from workloads.serving.model import prompt_tokens

    return [Sequence(r.id, r.arrival_s * time_scale, prompt_tokens(r.id, r.input_len, vocab, seed), r.output_len)
            for r in requests]
