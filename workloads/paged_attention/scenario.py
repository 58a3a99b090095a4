"""A small serving simulation that drives the block manager and the cache kernels end to end.

Prompts with shared prefixes (prefix sharing), forks (copy-on-write), decode steps that append one token
to every live sequence (reshape_and_cache after copy_blocks), and frees. Each token's K/V is a fixed row of
a random table indexed by token id, so the expected cache contents of every sequence are known exactly:
the check reads each sequence back through its block table and compares bit for bit, then the decode
kernel's output is compared with float64 attention over the *expected* KV. Backends plug in through
`CacheOps` (NumPy twins on CPU, CUDA kernels on GPU).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from workloads.paged_attention.block_manager import BlockManager, OutOfBlocks
from workloads.paged_attention.problems import DecodeShape, PagedProblem, from_float32, random_values, to_float32
from workloads.paged_attention.reference import attention_float64, gather_kv


@dataclass
class CacheOps:
    """The three device operations a serving step needs, on some array module `xp`."""

    xp: object
    reshape_and_cache: Callable  # (key, value, k_cache, v_cache, slot_mapping int64)
    copy_blocks: Callable        # (k_cache, v_cache, pairs int64 [n, 2])


def run_scenario(ops: CacheOps, *, dtype: str, head_dim: int, block_size: int, q_heads: int, kv_heads: int,
                 seed: int, num_blocks: int = 96, prompts: int = 6, steps: int = 24, vocab: int = 5):
    """Simulate serving; return (problem, expected_k, expected_v, stats) for the live sequences.

    expected_k/v are lists of host float32 [kv_heads, len, head_dim] arrays, one per live sequence.
    """
    xp = ops.xp
    rng = random.Random(seed)
    manager = BlockManager(num_blocks, block_size, shuffle_seed=seed)
    table_rng = np.random.default_rng(seed)
    token_k = from_float32(table_rng.standard_normal((vocab + 64, kv_heads, head_dim), dtype=np.float32), dtype)
    token_v = from_float32(table_rng.standard_normal((vocab + 64, kv_heads, head_dim), dtype=np.float32), dtype)
    cache_shape = (num_blocks, kv_heads, block_size, head_dim)
    k_cache = xp.asarray(from_float32(np.full(cache_shape, np.nan, dtype=np.float32), dtype))  # unwritten = NaN
    v_cache = xp.asarray(from_float32(np.full(cache_shape, np.nan, dtype=np.float32), dtype))
    tokens: dict[int, list[int]] = {}
    stats = {"prompts": 0, "shared_prompt_tokens": 0, "forks": 0, "cow_copies": 0, "frees": 0, "preemptions": 0}

    def write(token_ids: list[int], slots: np.ndarray) -> None:
        if len(token_ids) == 0:
            return
        ids = np.asarray(token_ids)
        ops.reshape_and_cache(xp.asarray(token_k[ids]), xp.asarray(token_v[ids]), k_cache, v_cache,
                              xp.asarray(slots.astype(np.int64)))

    next_id = 0
    base_prompt = [rng.randrange(vocab) for _ in range(3 * block_size)]
    for _ in range(prompts):
        prefix = base_prompt[: rng.randrange(0, len(base_prompt) + 1)]
        prompt = prefix + [rng.randrange(vocab) for _ in range(rng.randrange(1, 2 * block_size))]
        try:
            cached, slots = manager.allocate_prompt(next_id, prompt)
        except OutOfBlocks:
            stats["preemptions"] += 1
            continue
        write(prompt[cached:], slots)
        tokens[next_id] = list(prompt)
        stats["prompts"] += 1
        stats["shared_prompt_tokens"] += cached
        next_id += 1
    for _ in range(steps):
        live = list(tokens)
        if live and rng.random() < 0.3:
            parent = rng.choice(live)
            manager.fork(parent, next_id)
            tokens[next_id] = list(tokens[parent])
            stats["forks"] += 1
            next_id += 1
        if len(tokens) > 2 and rng.random() < 0.1:
            victim = rng.choice(list(tokens))
            manager.free(victim)
            del tokens[victim]
            stats["frees"] += 1
        live = list(tokens)
        try:
            slots = manager.append_tokens(live)
        except OutOfBlocks:  # preempt: drop the longest sequence, as a scheduler would
            victim = max(live, key=lambda seq: len(tokens[seq]))
            manager.free(victim)
            del tokens[victim]
            stats["preemptions"] += 1
            continue
        copies = manager.take_pending_copies()
        stats["cow_copies"] += len(copies)
        if len(copies):
            ops.copy_blocks(k_cache, v_cache, xp.asarray(copies))
        new_ids = [vocab + rng.randrange(64) for _ in live]
        for seq, token in zip(live, new_ids):
            tokens[seq].append(token)
        write(new_ids, slots)
    manager.check_invariants()

    live = sorted(tokens)
    lengths = manager.seq_lens_array(live)
    shape = DecodeShape("scenario", len(live), q_heads, kv_heads, None, head_dim, max_context=int(lengths.max()))
    q = random_values((len(live), q_heads, head_dim), dtype, np, np.random.default_rng(seed + 1))
    problem = PagedProblem(shape=shape, dtype=dtype, block_size=block_size, q=xp.asarray(q),
                           k_cache=k_cache, v_cache=v_cache, block_tables=xp.asarray(manager.block_tables_array(live)),
                           seq_lens=xp.asarray(lengths), seq_lens_host=lengths, manager=manager)
    expected_k = [to_float32(token_k[np.asarray(tokens[seq])], dtype).transpose(1, 0, 2) for seq in live]
    expected_v = [to_float32(token_v[np.asarray(tokens[seq])], dtype).transpose(1, 0, 2) for seq in live]
    return problem, expected_k, expected_v, stats


def cache_mismatches(problem: PagedProblem, expected_k, expected_v) -> int:
    """How many sequences read back through their block tables differ from the expected K/V (exactly)."""
    xp_tables = problem.block_tables
    tables = xp_tables.get() if hasattr(xp_tables, "get") else xp_tables
    k_host = problem.k_cache.get() if hasattr(problem.k_cache, "get") else problem.k_cache
    v_host = problem.v_cache.get() if hasattr(problem.v_cache, "get") else problem.v_cache
    bad = 0
    for b in range(problem.shape.batch):
        n = int(problem.seq_lens_host[b])
        k = to_float32(gather_kv(k_host, tables[b], n, problem.block_size), problem.dtype)
        v = to_float32(gather_kv(v_host, tables[b], n, problem.block_size), problem.dtype)
        if not (np.array_equal(k, expected_k[b]) and np.array_equal(v, expected_v[b])):
            bad += 1
    return bad


def expected_decode(problem: PagedProblem, expected_k, expected_v) -> np.ndarray:
    """float64 attention over the expected (not the cached) KV: [batch, q_heads, head_dim]."""
    q = problem.q.get() if hasattr(problem.q, "get") else problem.q
    q = to_float32(q, problem.dtype)
    return np.stack([attention_float64(q[b], expected_k[b], expected_v[b], problem.scale)
                     for b in range(problem.shape.batch)])
