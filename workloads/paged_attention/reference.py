"""Reference paged attention and the NumPy backend.

`reference_decode` is the float64 ground truth: gather each sequence's KV through its block table, then
plain softmax attention (NumPy on CPU, CuPy on GPU: pass arrays of either). The `*_cpu` functions are
the NumPy backend, the CPU counterparts of the CUDA kernels (same algorithm: fp32 split-K with online
softmax statistics and a reduce), used where no CUDA device exists and checked against the reference.
"""

from __future__ import annotations

import numpy as np

from workloads.paged_attention.problems import PagedProblem, from_float32, to_float32


def array_module(array):
    """numpy or cupy, whichever holds `array` (without importing cupy for NumPy arrays)."""
    if isinstance(array, np.ndarray):
        return np
    import cupy

    return cupy.get_array_module(array)


def gather_kv(cache, table_row, seq_len: int, block_size: int):
    """[kv_heads, seq_len, head_dim] for one sequence, read through its block table."""
    xp = array_module(cache)
    num_blocks = -(-seq_len // block_size)
    blocks = cache[xp.asarray(table_row[:num_blocks])]  # [n, kv_heads, block_size, head_dim]
    kv_heads, head_dim = cache.shape[1], cache.shape[3]
    return blocks.transpose(1, 0, 2, 3).reshape(kv_heads, num_blocks * block_size, head_dim)[:, :seq_len]


def attention_float64(q, k, v, scale: float):
    """Softmax attention for one sequence: q [q_heads, D], k/v [kv_heads, L, D] -> [q_heads, D] float64."""
    xp = array_module(q)
    kv_heads = k.shape[0]
    group = q.shape[0] // kv_heads
    q = q.astype(xp.float64).reshape(kv_heads, group, -1)
    k = k.astype(xp.float64)
    v = v.astype(xp.float64)
    scores = xp.einsum("hgd,hld->hgl", q, k) * scale
    scores -= scores.max(axis=-1, keepdims=True)
    weights = xp.exp(scores)
    weights /= weights.sum(axis=-1, keepdims=True)
    return xp.einsum("hgl,hld->hgd", weights, v).reshape(kv_heads * group, -1)


def reference_decode(problem: PagedProblem, batch_indices=None):
    """float64 [batch, q_heads, head_dim] output of one decode step (selected sequences if given)."""
    xp = array_module(problem.k_cache)
    q = to_float32(problem.q, problem.dtype, xp)
    tables = problem.block_tables.get() if xp is not np else problem.block_tables
    indices = range(problem.shape.batch) if batch_indices is None else batch_indices
    rows = []
    for b in indices:
        n = int(problem.seq_lens_host[b])
        if n == 0:
            rows.append(xp.zeros(q.shape[1:], dtype=xp.float64))
            continue
        k = to_float32(gather_kv(problem.k_cache, tables[b], n, problem.block_size), problem.dtype, xp)
        v = to_float32(gather_kv(problem.v_cache, tables[b], n, problem.block_size), problem.dtype, xp)
        rows.append(attention_float64(q[b], k, v, problem.scale))
    return xp.stack(rows)


# -- the NumPy backend ------------------------------------------------------------------------------------

def paged_decode_cpu(problem: PagedProblem, partition_tokens: int = 512) -> np.ndarray:
    """fp32 split-K paged decode in NumPy (the CPU twin of decode v2); output in the storage dtype.

    Each partition of `partition_tokens` tokens yields (o_p normalised, m_p, l_p); the reduce weighs
    partitions by l_p * exp(m_p - max m), as the CUDA reduce kernel does.
    """
    s = problem.shape
    q = to_float32(problem.q, problem.dtype).reshape(s.batch, s.kv_heads, s.group, s.head_dim) * problem.scale
    out = np.zeros((s.batch, s.kv_heads, s.group, s.head_dim), dtype=np.float32)
    for b in range(s.batch):
        n = int(problem.seq_lens_host[b])
        if n == 0:
            continue
        k_all = to_float32(gather_kv(problem.k_cache, problem.block_tables[b], n, problem.block_size), problem.dtype)
        v_all = to_float32(gather_kv(problem.v_cache, problem.block_tables[b], n, problem.block_size), problem.dtype)
        partials = []
        for start in range(0, n, partition_tokens):
            k = k_all[:, start:start + partition_tokens]
            v = v_all[:, start:start + partition_tokens]
            scores = np.einsum("hgd,hld->hgl", q[b], k)
            m = scores.max(axis=-1, keepdims=True)
            p = np.exp(scores - m)
            l_sum = p.sum(axis=-1, keepdims=True)
            partials.append((np.einsum("hgl,hld->hgd", p, v) / l_sum, m, l_sum))
        m_max = np.max([m for _, m, _ in partials], axis=0)
        weights = [l_sum * np.exp(m - m_max) for _, m, l_sum in partials]
        out[b] = sum(w * o for w, (o, _, _) in zip(weights, partials)) / sum(weights)
    return from_float32(out.reshape(s.batch, s.q_heads, s.head_dim), problem.dtype)


def reshape_and_cache_cpu(key, value, k_cache, v_cache, slot_mapping) -> None:
    """Write key/value [tokens, kv_heads, head_dim] into the caches at their slots (negative: skip)."""
    slot_mapping = np.asarray(slot_mapping)
    valid = slot_mapping >= 0
    block_size = k_cache.shape[2]
    blocks = slot_mapping[valid] // block_size
    offsets = slot_mapping[valid] % block_size
    heads = np.arange(k_cache.shape[1])
    k_cache[blocks[:, None], heads[None, :], offsets[:, None]] = key[valid]
    v_cache[blocks[:, None], heads[None, :], offsets[:, None]] = value[valid]


def copy_blocks_cpu(k_cache, v_cache, block_mapping) -> None:
    """Copy whole physical blocks src -> dst for each (src, dst) row of block_mapping, in K and V."""
    block_mapping = np.asarray(block_mapping).reshape(-1, 2)
    k_cache[block_mapping[:, 1]] = k_cache[block_mapping[:, 0]]
    v_cache[block_mapping[:, 1]] = v_cache[block_mapping[:, 0]]


def tolerance(dtype: str) -> float:
    """Relative Frobenius error a correct fp32-accumulating kernel stays under, by storage dtype.

    The output is rounded to the storage dtype (2^-11 relative for fp16, 2^-8 for bf16), so the error
    is dominated by that rounding; the bounds leave a few times headroom and still catch any indexing bug.
    """
    return {"fp16": 2e-3, "bf16": 1.5e-2}[dtype]
