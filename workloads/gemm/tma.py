"""Launch t4 (wgmma + TMA): encode the TMA tensor maps through the CUDA driver and run a persistent grid.

cuTensorMapEncodeTiled is called through ctypes on libcuda (no extra Python package); the 128-byte
maps are copied to device memory and passed to the kernel as pointers. TMA requires 16-byte row
pitches: when K (A's rows) or N (B's rows) is not a multiple of 8 elements, `prepare` copies the operand
into a pitched buffer. The bench times the kernel on those buffers, gives cuBLAS the same buffers, and
times the copy on its own (`Prepared.pad`), so no figure compares different problems.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from workloads.gemm.launch import KernelRunner, Prepared
from workloads.gemm.registry import KernelSpec

TMA_DTYPE = {"fp16": 6, "bf16": 9}        # CU_TENSOR_MAP_DATA_TYPE_FLOAT16 / _BFLOAT16
SWIZZLE_128B = 3
L2_PROMOTION_256B = 3
BOX_K, BOX_M, BOX_N = 64, 128, 64          # A box 64(k) x 128(m); B box 64(n) x 64(k)


class _Driver:
    _instance = None

    def __init__(self) -> None:
        self.lib = ctypes.CDLL("libcuda.so.1")
        self.encode = self.lib.cuTensorMapEncodeTiled
        self.encode.restype = ctypes.c_int
        self.encode.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p,
                                ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint64),
                                ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_uint32),
                                ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]

    @classmethod
    def get(cls) -> _Driver:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance


def encode_tensor_map(dtype: str, pointer: int, inner: int, outer: int, pitch_bytes: int, box_inner: int,
                      box_outer: int) -> bytes:
    """A 2D row-major tensor map (inner dimension contiguous) with 128-byte swizzle; OOB reads give zeros."""
    driver = _Driver.get()
    storage = ctypes.create_string_buffer(128 + 64)
    aligned = (ctypes.addressof(storage) + 63) & ~63
    dims = (ctypes.c_uint64 * 2)(inner, outer)
    strides = (ctypes.c_uint64 * 1)(pitch_bytes)
    box = (ctypes.c_uint32 * 2)(box_inner, box_outer)
    element_strides = (ctypes.c_uint32 * 2)(1, 1)
    status = driver.encode(aligned, TMA_DTYPE[dtype], 2, pointer, dims, strides, box, element_strides, 0,
                           SWIZZLE_128B, L2_PROMOTION_256B, 0)
    if status != 0:
        raise RuntimeError(f"cuTensorMapEncodeTiled failed with CUresult {status} (dims {inner}x{outer}, "
                           f"pitch {pitch_bytes} B, box {box_inner}x{box_outer})")
    return ctypes.string_at(aligned, 128)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class WgmmaRunner(KernelRunner):
    """t4's launcher: pitched copies where needed, tensor maps per operand buffer, one CTA per SM."""

    def __init__(self, spec: KernelSpec, cubin_dir: Path) -> None:
        import cupy

        super().__init__(spec, cubin_dir)
        self.sm_count = cupy.cuda.Device().attributes["MultiProcessorCount"]
        self._maps: dict[tuple, object] = {}
        self._buffers: dict[tuple, object] = {}

    def _pitched(self, array, rows: int, cols: int, key: str):
        """(buffer, pitch, copy): `array` (rows x cols) or a buffer whose rows are padded to 8 elements.

        `copy` is None when no padding is needed, else the function that copies `array` into the buffer.
        """
        import cupy

        if cols % 8 == 0:
            return array, cols, None
        pitch = _round_up(cols, 8)
        cache_key = (key, array.dtype.str, array.data.ptr, rows, cols)
        buffer = self._buffers.get(cache_key)
        if buffer is None:
            buffer = cupy.zeros((rows, pitch), dtype=array.dtype)
            self._buffers[cache_key] = buffer

        def copy() -> None:
            buffer[:, :cols] = array.view(buffer.dtype)

        return buffer, pitch, copy

    def _tensor_map(self, dtype: str, buffer, inner: int, outer: int, pitch: int, box_inner: int, box_outer: int):
        import cupy

        key = (dtype, buffer.data.ptr, inner, outer, pitch, box_inner, box_outer)
        device_map = self._maps.get(key)
        if device_map is None:
            host_map = encode_tensor_map(dtype, buffer.data.ptr, inner, outer, pitch * 2, box_inner, box_outer)
            device_map = cupy.asarray(np.frombuffer(host_map, dtype=np.uint8))
            self._maps[key] = device_map
        return device_map

    def prepare(self, dtype: str, a, b, m: int, n: int, k: int) -> Prepared:
        """Pitched copies where a row is not 16-byte aligned (made now), and the two tensor maps."""
        a_buffer, a_pitch, a_copy = self._pitched(a, m, k, "a")
        b_buffer, b_pitch, b_copy = self._pitched(b, k, n, "b")
        copies = [copy for copy in (a_copy, b_copy) if copy is not None]
        for copy in copies:
            copy()

        def pad() -> None:
            for copy in copies:
                copy()

        maps = (self._tensor_map(dtype, a_buffer, k, m, a_pitch, BOX_K, BOX_M),
                self._tensor_map(dtype, b_buffer, n, k, b_pitch, BOX_N, BOX_K))
        return Prepared(a_buffer, b_buffer, a_pitch, b_pitch, padded=bool(copies), pad=pad if copies else None,
                        extra={"maps": maps})

    def launch(self, dtype: str, prepared: Prepared, c, m: int, n: int, k: int, alpha: float, beta: float) -> None:
        map_a, map_b = prepared.extra["maps"]
        tiles = -(-m // self.spec.block_m) * -(-n // self.spec.block_n)
        self.functions[dtype](
            (min(tiles, self.sm_count), 1, 1), (self.spec.threads, 1, 1),
            (np.int32(m), np.int32(n), np.int32(k), np.float32(alpha), map_a, map_b, np.float32(beta), c),
            shared_mem=self.spec.smem_bytes,
        )
