"""cuBLAS for the baseline: C = alpha * A @ B + beta * C, row-major, FP32 output.

cuBLAS is column-major; a row-major C = A @ B is the column-major C^T = B^T @ A^T, so we call it with
the operands swapped and no transposes. FP16/BF16 go through cublasGemmEx with FP32 accumulation and
an FP32 C, the same contract as the tensor-core kernels.

Modes are explicit, not inherited: the baseline has its own handle (CuPy's shared handle may carry a
TF32 math mode, e.g. under CUPY_TF32=1, and CuPy's own calls move its stream), the math mode is
CUBLAS_DEFAULT_MATH and asserted so (SGEMM never rounds to TF32), and every call binds the handle to
the current CuPy stream, so the baseline runs on the stream the events time. Leading dimensions may be
given: the baseline then reads the same padded buffers as a kernel.

The calls go straight to libcublas through ctypes (the library CuPy has loaded): CuPy's wrappers refuse
any cuBLAS call while a stream is being captured, and the bench replays cuBLAS as a CUDA graph exactly
as it replays the kernel. Where that library cannot be opened, CuPy's wrappers are used and the
baseline cannot be captured (`capturable` False; the bench then queues both sides alike).
"""

from __future__ import annotations

import ctypes

import numpy as np

from workloads.gemm.operands import CUDA_TYPE

CUBLAS_OP_N = 0
CUBLAS_COMPUTE_32F = 68
CUBLAS_GEMM_DEFAULT = -1
CUBLAS_DEFAULT_MATH = 0
LIBRARY_NAMES = ("libcublas.so.13", "libcublas.so.12", "libcublas.so")


class CublasError(RuntimeError):
    pass


def _loaded_path(soname: str) -> str | None:
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.split()[-1] if line.strip() else ""
                if "/" in path and path.rsplit("/", 1)[-1].startswith(soname):
                    return path
    except OSError:
        return None
    return None


class _CtypesCublas:
    """The handful of cuBLAS entry points the baseline needs, with argument types."""

    def __init__(self) -> None:
        last: Exception | None = None
        for name in LIBRARY_NAMES:
            try:
                self.lib = ctypes.CDLL(name)
                self.name = name
                break
            except OSError as error:
                last = error
        else:
            raise OSError(f"no libcublas could be opened: {last}")
        lib, p, i = self.lib, ctypes.c_void_p, ctypes.c_int
        self.create = self._fn("cublasCreate_v2", [ctypes.POINTER(p)])
        self.set_stream = self._fn("cublasSetStream_v2", [p, p])
        self.set_math_mode = self._fn("cublasSetMathMode", [p, i])
        self.get_math_mode = self._fn("cublasGetMathMode", [p, ctypes.POINTER(i)])
        self.get_version = self._fn("cublasGetVersion_v2", [p, ctypes.POINTER(i)])
        self.sgemm = self._fn("cublasSgemm_v2", [p, i, i, i, i, i, p, p, i, p, i, p, p, i])
        self.gemm_ex = self._fn("cublasGemmEx", [p, i, i, i, i, i, p, p, i, i, p, i, i, p, p, i, i, i, i])
        del lib

    def _fn(self, name: str, argtypes: list):
        function = getattr(self.lib, name)
        function.argtypes = argtypes
        function.restype = ctypes.c_int
        return function

    @staticmethod
    def check(status: int, what: str) -> None:
        if status != 0:
            raise CublasError(f"{what} failed with cublasStatus_t {status}")


class CublasGemm:
    def __init__(self) -> None:
        import cupy

        self._cupy = cupy
        self._cublas = cupy.cuda.cublas
        cupy.cuda.device.get_cublas_handle()  # CuPy loads its libcublas first: ctypes then finds that one
        self._stream: int | None = None
        self._alpha = np.zeros(1, dtype=np.float32)
        self._beta = np.zeros(1, dtype=np.float32)
        try:
            self._c = _CtypesCublas()
            handle = ctypes.c_void_p()
            self._c.check(self._c.create(ctypes.byref(handle)), "cublasCreate")
            self._handle = handle
            self.api = f"ctypes ({self._c.name})"
        except (OSError, AttributeError, CublasError) as error:
            self._c = None
            self._handle = self._cublas.create()
            self.api = f"CuPy wrappers (ctypes unavailable: {error})"
        self.capturable = self._c is not None
        self._set_math_mode(CUBLAS_DEFAULT_MATH)
        mode = self.math_mode()
        if mode != CUBLAS_DEFAULT_MATH:
            raise RuntimeError(f"cuBLAS math mode is {mode} after setting CUBLAS_DEFAULT_MATH: SGEMM could use TF32")
        self.version = self._version()
        self.library_path = _loaded_path("libcublas.so")

    def _set_math_mode(self, mode: int) -> None:
        if self._c is not None:
            self._c.check(self._c.set_math_mode(self._handle, mode), "cublasSetMathMode")
        else:
            self._cublas.setMathMode(self._handle, mode)

    def math_mode(self) -> int:
        if self._c is None:
            return int(self._cublas.getMathMode(self._handle))
        value = ctypes.c_int()
        self._c.check(self._c.get_math_mode(self._handle, ctypes.byref(value)), "cublasGetMathMode")
        return value.value

    def _version(self) -> int:
        if self._c is None:
            return int(self._cublas.getVersion(self._handle))
        value = ctypes.c_int()
        self._c.check(self._c.get_version(self._handle, ctypes.byref(value)), "cublasGetVersion")
        return value.value

    def facts(self) -> dict:
        """What the results JSON records about the baseline library and its modes."""
        version = self.version
        return {"library": "cuBLAS", "version": version,
                "version_text": f"{version // 10000}.{version // 100 % 100}.{version % 100}",
                "path": self.library_path, "api": self.api, "graph_capture": self.capturable,
                "math_mode": "CUBLAS_DEFAULT_MATH (no TF32)", "math_mode_value": self.math_mode(),
                "fp32": "cublasSgemm", "fp16_bf16": "cublasGemmEx, CUBLAS_COMPUTE_32F, FP32 C",
                "handle": "own (not CuPy's shared one)", "stream": "bound to the current CuPy stream on every call"}

    def __call__(self, dtype: str, a, b, c, m: int, n: int, k: int, alpha: float, beta: float,
                 lda: int | None = None, ldb: int | None = None, ldc: int | None = None) -> None:
        lda = k if lda is None else lda
        ldb = n if ldb is None else ldb
        ldc = n if ldc is None else ldc
        self._alpha[0], self._beta[0] = alpha, beta
        if self._c is None:
            self._call_cupy(dtype, a, b, c, m, n, k, lda, ldb, ldc)
            return
        stream = self._cupy.cuda.get_current_stream().ptr
        if stream != self._stream:
            self._c.check(self._c.set_stream(self._handle, stream), "cublasSetStream")
            self._stream = stream
        alpha_p, beta_p = self._alpha.ctypes.data, self._beta.ctypes.data
        if dtype == "fp32":
            status = self._c.sgemm(self._handle, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, alpha_p, b.data.ptr, ldb,
                                   a.data.ptr, lda, beta_p, c.data.ptr, ldc)
        else:
            status = self._c.gemm_ex(self._handle, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, alpha_p, b.data.ptr,
                                     CUDA_TYPE[dtype], ldb, a.data.ptr, CUDA_TYPE[dtype], lda, beta_p, c.data.ptr,
                                     CUDA_TYPE["fp32"], ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)
        self._c.check(status, f"cuBLAS {dtype} GEMM {m}x{n}x{k}")

    def _call_cupy(self, dtype, a, b, c, m, n, k, lda, ldb, ldc) -> None:
        if dtype == "fp32":
            self._cublas.sgemm(self._handle, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, self._alpha.ctypes.data,
                               b.data.ptr, ldb, a.data.ptr, lda, self._beta.ctypes.data, c.data.ptr, ldc)
        else:
            self._cublas.gemmEx(self._handle, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, self._alpha.ctypes.data,
                                b.data.ptr, CUDA_TYPE[dtype], ldb, a.data.ptr, CUDA_TYPE[dtype], lda,
                                self._beta.ctypes.data, c.data.ptr, CUDA_TYPE["fp32"], ldc, CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT)
