"""cuBLAS through CuPy for the baseline: C = alpha * A @ B + beta * C, row-major, FP32 output.

cuBLAS is column-major; a row-major C = A @ B is the column-major C^T = B^T @ A^T, so we call it with
the operands swapped and no transposes. FP16/BF16 go through cublasGemmEx with FP32 accumulation and
an FP32 C, the same contract as the tensor-core kernels.
"""

from __future__ import annotations

import numpy as np

from workloads.gemm.operands import CUDA_TYPE

CUBLAS_OP_N = 0
CUBLAS_COMPUTE_32F = 68
CUBLAS_GEMM_DEFAULT = -1


class CublasGemm:
    def __init__(self) -> None:
        import cupy

        self._cublas = cupy.cuda.cublas
        self._handle = cupy.cuda.device.get_cublas_handle()
        self._alpha = np.zeros(1, dtype=np.float32)
        self._beta = np.zeros(1, dtype=np.float32)

    def __call__(self, dtype: str, a, b, c, m: int, n: int, k: int, alpha: float, beta: float) -> None:
        self._alpha[0], self._beta[0] = alpha, beta
        if dtype == "fp32":
            self._cublas.sgemm(self._handle, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, self._alpha.ctypes.data,
                               b.data.ptr, n, a.data.ptr, k, self._beta.ctypes.data, c.data.ptr, n)
        else:
            self._cublas.gemmEx(self._handle, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, self._alpha.ctypes.data,
                                b.data.ptr, CUDA_TYPE[dtype], n, a.data.ptr, CUDA_TYPE[dtype], k,
                                self._beta.ctypes.data, c.data.ptr, CUDA_TYPE["fp32"], n, CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT)
