"""The FP32-accumulation tolerance, tested on the CPU reference path: correct accumulators pass, bugs fail.

Products of FP16/BF16 values are exact in FP32, so a simulated accumulator sums float32 products one
term at a time with a chosen rounding of every partial sum: round to nearest (IEEE), truncation toward
zero (what a tensor-core accumulator may do, the worst case the bound is derived for), and the bugs the
old 1e-2 tolerance let through (FP16 accumulation, a dropped term).
"""

from __future__ import annotations

import numpy as np
import pytest

from workloads.common.verify import fp32_accumulation_tolerance, rel_frobenius
from workloads.gemm import operands


def _products(k: int, rng, dtype: str = "fp16", outputs: int = 256) -> np.ndarray:
    """[outputs, k] exact products of random FP16/BF16 operand pairs (float64 holds them exactly)."""
    a = operands.exact_float64(operands.random_host_operand(rng, (outputs, k), dtype), dtype)
    b = operands.exact_float64(operands.random_host_operand(rng, (outputs, k), dtype), dtype)
    return a * b


def _truncate_to_float32(values: np.ndarray) -> np.ndarray:
    """float64 -> float32 rounding toward zero."""
    nearest = values.astype(np.float32)
    too_far = np.abs(nearest.astype(np.float64)) > np.abs(values)
    return np.where(too_far, np.nextafter(nearest, np.float32(0)), nearest)


def _accumulate(products: np.ndarray, mode: str) -> np.ndarray:
    total = np.zeros(products.shape[0], dtype=np.float32)
    for j in range(products.shape[1]):
        term = products[:, j]
        if mode == "nearest":
            total = (total.astype(np.float64) + term).astype(np.float32)
        elif mode == "truncate":
            total = _truncate_to_float32(total.astype(np.float64) + term)
        elif mode == "fp16":
            total = (total.astype(np.float64) + term).astype(np.float16).astype(np.float32)
    return total


@pytest.mark.parametrize("k", [64, 1024, 2053, 8192])
def test_correct_fp32_accumulation_stays_inside_and_near_the_bound(k):
    rng = np.random.default_rng(k)
    products = _products(k, rng)
    exact = products.sum(axis=1)
    tolerance = fp32_accumulation_tolerance(k)
    nearest = rel_frobenius(_accumulate(products, "nearest"), exact)
    truncated = rel_frobenius(_accumulate(products, "truncate"), exact)
    assert nearest < tolerance and truncated < tolerance
    if k >= 1024:  # the bound is within a small factor of the worst accumulator it covers (~0.38 u k)
        assert truncated > tolerance / 8


@pytest.mark.parametrize("k", [1024, 2053, 8192])
def test_the_bugs_the_old_tolerance_let_through_now_fail(k):
    rng = np.random.default_rng(k + 1)
    products = _products(k, rng)
    exact = products.sum(axis=1)
    tolerance = fp32_accumulation_tolerance(k)
    fp16_accumulator = rel_frobenius(_accumulate(products, "fp16"), exact)
    dropped_term = rel_frobenius(products[:, 1:].sum(axis=1), exact)
    assert fp16_accumulator > tolerance and dropped_term > tolerance
    if k <= 2053:
        assert fp16_accumulator < 1e-2   # ... which the old fixed 1e-2 tolerance passed


def test_cpu_gemm_path_meets_the_bound_on_bf16_too():
    rng = np.random.default_rng(5)
    for k in (300, 2053):
        a = operands.exact_float64(operands.random_host_operand(rng, (64, k), "bf16"), "bf16")
        b = operands.exact_float64(operands.random_host_operand(rng, (k, 48), "bf16"), "bf16")
        out = a.astype(np.float32) @ b.astype(np.float32)      # the CPU backend's float32 BLAS
        assert rel_frobenius(out, a @ b) < operands.tolerance("bf16", k)


def test_tolerance_values():
    assert fp32_accumulation_tolerance(1) == 1e-5
    assert fp32_accumulation_tolerance(8192) == pytest.approx(1.5 * 8192 * 2.0**-24)
    assert 1e-4 < fp32_accumulation_tolerance(2053) < 2e-4
    assert operands.tolerance("fp32", 8192) == 1e-5
