"""The float64 reference and the NumPy backend against straightforward implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workloads.paged_attention import reference as ref
from workloads.paged_attention.problems import DecodeShape, from_float32, make_problem, to_float32


def softmax_attention_loops(q, k, v, scale):
    """Textbook attention, one query head and one output element at a time (math.exp, Python sums)."""
    q_heads, head_dim = q.shape
    kv_heads, length, _ = k.shape
    group = q_heads // kv_heads
    out = np.zeros((q_heads, head_dim))
    for h in range(q_heads):
        kv = h // group
        scores = [scale * sum(float(q[h, d]) * float(k[kv, t, d]) for d in range(head_dim)) for t in range(length)]
        top = max(scores)
        weights = [math.exp(s - top) for s in scores]
        total = sum(weights)
        for d in range(head_dim):
            out[h, d] = sum(w * float(v[kv, t, d]) for t, w in enumerate(weights)) / total
    return out


@pytest.mark.parametrize("q_heads,kv_heads", [(4, 4), (4, 2), (4, 1)])
def test_attention_float64_matches_textbook_softmax(q_heads, kv_heads):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((q_heads, 8))
    k = rng.standard_normal((kv_heads, 13, 8)) * 3  # peaky scores exercise the max subtraction
    v = rng.standard_normal((kv_heads, 13, 8))
    np.testing.assert_allclose(ref.attention_float64(q, k, v, 0.35), softmax_attention_loops(q, k, v, 0.35),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("block_size", [8, 16, 32])
def test_reference_decode_reads_through_block_tables(dtype, block_size):
    shape = DecodeShape("t", 3, 4, 2, None, 16, max_context=70)
    problem = make_problem(shape, dtype, block_size, seed=5)
    out = ref.reference_decode(problem)
    q = to_float32(problem.q, dtype)
    for b in range(shape.batch):
        n = int(problem.seq_lens_host[b])
        slots = [problem.manager.slot(b, i) for i in range(n)]
        k = to_float32(np.stack([problem.k_cache[s // block_size, :, s % block_size] for s in slots], 1), dtype)
        v = to_float32(np.stack([problem.v_cache[s // block_size, :, s % block_size] for s in slots], 1), dtype)
        np.testing.assert_allclose(out[b], softmax_attention_loops(q[b], k, v, problem.scale), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("partition", [16, 48, 4096])
def test_numpy_splitk_matches_reference(dtype, partition):
    problem = make_problem(DecodeShape("t", 5, 8, 2, None, 64, max_context=300), dtype, 16, seed=9)
    out = ref.paged_decode_cpu(problem, partition_tokens=partition)
    from workloads.common.verify import rel_frobenius

    assert rel_frobenius(to_float32(out, dtype), ref.reference_decode(problem)) < ref.tolerance(dtype) / 4


def test_bf16_round_trip_rounds_to_nearest_even_and_keeps_nan():
    values = np.array([1.0, 1.00390625, 1.01171875, -2.5, np.nan, 3.0e38], dtype=np.float32)
    back = to_float32(from_float32(values, "bf16"), "bf16")
    np.testing.assert_array_equal(back[:4], [1.0, 1.0, 1.015625, -2.5])
    assert np.isnan(back[4]) and np.isfinite(back[5])


def test_cache_ops_match_per_token_loops():
    rng = np.random.default_rng(1)
    k_cache = rng.standard_normal((6, 2, 4, 8)).astype(np.float16)
    v_cache = rng.standard_normal((6, 2, 4, 8)).astype(np.float16)
    key = rng.standard_normal((5, 2, 8)).astype(np.float16)
    value = rng.standard_normal((5, 2, 8)).astype(np.float16)
    slots = np.array([3, 17, -1, 0, 22])
    k_expected, v_expected = k_cache.copy(), v_cache.copy()
    for t, slot in enumerate(slots):
        if slot >= 0:
            k_expected[slot // 4, :, slot % 4] = key[t]
            v_expected[slot // 4, :, slot % 4] = value[t]
    ref.reshape_and_cache_cpu(key, value, k_cache, v_cache, slots)
    np.testing.assert_array_equal(k_cache, k_expected)
    np.testing.assert_array_equal(v_cache, v_expected)
    ref.copy_blocks_cpu(k_cache, v_cache, np.array([[0, 5], [2, 4]]))
    np.testing.assert_array_equal(k_cache[5], k_expected[0])
    np.testing.assert_array_equal(v_cache[4], v_expected[2])
