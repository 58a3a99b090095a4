"""Checks that make a wrong kernel fail loudly: relative Frobenius error and poisoned outputs."""

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
