"""Operands for the GEMM benchmark: random inputs in each dtype, and their exact float64 values.

BF16 has no NumPy/CuPy dtype, so BF16 matrices travel as uint16 bit patterns; the kernels and cuBLAS
read the bits. Rounding to BF16 is round-to-nearest-even on the float32 bit pattern.
"""

from __future__ import annotations

import numpy as np

from workloads.common.verify import fp32_accumulation_tolerance

# cudaDataType values for cublasGemmEx.
CUDA_TYPE = {"fp32": 0, "fp16": 2, "bf16": 14}
STORAGE = {"fp32": np.float32, "fp16": np.float16, "bf16": np.uint16}
ELEMENT_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


def tolerance(dtype: str, k: int) -> float:
    """Relative Frobenius error allowed against a float64 reference for this dtype and depth k.

    FP32 (SGEMM on FFMA, round to nearest): 1e-5, which also proves no TF32 ran (TF32 rounds every operand
    to 10 bits: ~3e-4). FP16/BF16 with FP32 accumulation: verify.fp32_accumulation_tolerance(k), derived
    there. Against cuBLAS instead of float64 the two errors add: callers pass twice this.
    """
    if dtype == "fp32":
        return 1e-5
    return fp32_accumulation_tolerance(k)


def float32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def to_storage(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values -> the array the kernel reads (float32, float16, or bf16 bits in uint16)."""
    if dtype == "bf16":
        return float32_to_bf16_bits(values)
    return values.astype(STORAGE[dtype])


def exact_float64(stored: np.ndarray, dtype: str) -> np.ndarray:
    """The values a stored operand really holds, in float64 (the reference computes on these)."""
    if dtype == "bf16":
        return bf16_bits_to_float32(stored).astype(np.float64)
    return stored.astype(np.float64)


def random_host_operand(rng: np.random.Generator, shape: tuple[int, int], dtype: str) -> np.ndarray:
    return to_storage(rng.standard_normal(shape, dtype=np.float32), dtype)


def random_device_operand(shape: tuple[int, int], dtype: str, seed: int):
    """A random operand generated on the GPU (host generation of 8192^2 matrices would dominate)."""
    import cupy

    values = cupy.random.default_rng(seed).standard_normal(shape, dtype=cupy.float32)
    if dtype == "fp32":
        return values
    if dtype == "fp16":
        return values.astype(cupy.float16)
    bits = values.view(cupy.uint32).astype(cupy.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(cupy.uint16)


def device_float32(array, dtype: str):
    """A device operand's values as float32 (exact for all three dtypes)."""
    import cupy

    if dtype == "bf16":
        return (array.astype(cupy.uint32) << 16).view(cupy.float32)
    return array.astype(cupy.float32)


def reference_float64(a64: np.ndarray, b64: np.ndarray, c64: np.ndarray | None, alpha: float,
                      beta: float) -> np.ndarray:
    out = alpha * (a64 @ b64)
    if beta != 0.0 and c64 is not None:
        out += beta * c64
    return out
