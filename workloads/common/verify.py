"""Checks that make a wrong kernel fail loudly: relative Frobenius error, poisoned outputs, tolerances."""

from __future__ import annotations

import math

import numpy as np


def _host_float64(array) -> np.ndarray:
    if hasattr(array, "get") and not isinstance(array, np.ndarray):  # a CuPy array
        array = array.get()
    return np.asarray(array, dtype=np.float64)


def _is_device_array(array) -> bool:
    return not isinstance(array, np.ndarray) and hasattr(array, "__cuda_array_interface__")


def rel_frobenius(out, ref) -> float:
    """||out - ref||_F / ||ref||_F in float64; inf when `out` holds NaN or inf, so NaN never passes.

    Works on NumPy and CuPy arrays; when both are CuPy arrays the sums run on the device (no copy of a
    large matrix to the host). With ref all zeros it returns the absolute error norm.
    """
    if _is_device_array(out) and _is_device_array(ref):
        import cupy

        if out.shape != ref.shape:
            raise ValueError(f"shape mismatch: out {out.shape} vs ref {ref.shape}")
        out64, ref64 = out.astype(cupy.float64), ref.astype(cupy.float64)
        if not bool(cupy.isfinite(out64).all()):
            return math.inf
        error = float(cupy.linalg.norm((out64 - ref64).ravel()))
        scale = float(cupy.linalg.norm(ref64.ravel()))
        return error / scale if scale > 0 else error
    out64 = _host_float64(out)
    ref64 = _host_float64(ref)
    if out64.shape != ref64.shape:
        raise ValueError(f"shape mismatch: out {out64.shape} vs ref {ref64.shape}")
    if not np.all(np.isfinite(out64)):
        return math.inf
    error = float(np.linalg.norm((out64 - ref64).ravel()))
    scale = float(np.linalg.norm(ref64.ravel()))
    return error / scale if scale > 0 else error


def poison(array):
    """Fill `array` in place with a value no correct kernel writes (NaN for floats, the max for ints)."""
    if np.issubdtype(array.dtype, np.floating):
        array.fill(np.nan)
    elif np.issubdtype(array.dtype, np.integer):
        array.fill(np.iinfo(array.dtype).max)
    else:
        raise TypeError(f"cannot poison dtype {array.dtype}")
    return array


FP32_UNIT = 2.0 ** -24  # unit roundoff of FP32 (round to nearest); truncation errs by up to twice this
FP32_TOLERANCE_FLOOR = 1e-5


def fp32_accumulation_tolerance(k: int) -> float:
    """Relative Frobenius error a correct A @ B reaches at most when exact products are summed in FP32.

    Why this bound: FP16 and BF16 operands have 11- and 8-bit significands, so every product a*b (22 or
    16 bits) is exact in FP32; the only roundings are those of the running sums s_j (j = 1..k) and two more
    for alpha and beta. The error is e = sum_j d_j s_j with |d_j| <= u = 2^-24 under round to nearest and
    up to 2u under truncation (tensor-core accumulators may truncate). Worst case, every d_j pushes the
    same way as its partial sum: |e| <= 2u sum_j |s_j|. For random inputs s_j is a random walk, E|s_j| =
    sigma sqrt(2j/pi), so sum_j |s_j| ~ sigma sqrt(2/pi) (2/3) k^1.5, while the result itself is ~ sigma
    sqrt(k): the relative error of a fully biased accumulator is ~ 1.06 u k. Unbiased rounding errors
    cancel instead, ~ u sqrt(k/6) (2.2e-6 at k = 8192; blocked accumulation lowers both); a truncating
    accumulator's errors average 0.72 u |s_j| and give ~ 0.38 u k. The bound is 1.5 u k (the worst case
    plus margin for the alpha/beta roundings and the spread over a finite matrix), floored at 1e-5:
    1.1e-5 at k = 128, 9.2e-5 at 1024, 1.8e-4 at 2053, 7.3e-4 at 8192. What it catches that the old fixed
    1e-2 did not: accumulating in FP16 (~ 2^-11 sqrt(k/6): 4e-3 at k = 1024, 8e-3 at 2053), a dropped
    term (k^-0.5: 1.1e-2 at 8192, at the old bound's edge); and any indexing error (O(1)), as before.
    tests/common/test_tolerance.py simulates each accumulator on the CPU and checks these numbers.
    """
    return max(FP32_TOLERANCE_FLOOR, 1.5 * FP32_UNIT * k)
