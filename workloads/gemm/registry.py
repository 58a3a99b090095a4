"""Launch parameters of every kernel in kernels/: entry points per dtype, block, grid and shared memory.

The registry key is the kernel file's stem (the value the tasks' `matrix.kernel` takes). A kernel file
holds only the kernel; this is the one place that says how to launch it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

KERNEL_DIR = Path(__file__).parent / "kernels"
FP32 = ("fp32",)
HALF = ("fp16", "bf16")


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class KernelSpec:
    """How to launch one kernel file's entry points: C[M][N] = alpha * A[M][K] @ B[K][N] + beta * C."""

    stem: str
    entries: dict[str, str]               # dtype -> extern "C" entry point
    block_m: int                          # rows of C per block
    block_n: int                          # columns of C per block
    threads: int
    smem_bytes: int = 0                   # dynamic shared memory
    block_2d: tuple[int, int] | None = None  # (x, y) for the two kernels that use a 2D block
    grid_rows_first: bool = False         # 01 maps blockIdx.x to rows
    defines: dict[str, str] = field(default_factory=dict)

    @property
    def dtypes(self) -> tuple[str, ...]:
        return tuple(self.entries)

    def grid(self, m: int, n: int) -> tuple[int, int, int]:
        if self.grid_rows_first:
            return (cdiv(m, self.block_m), cdiv(n, self.block_n), 1)
        return (cdiv(n, self.block_n), cdiv(m, self.block_m), 1)

    def block(self) -> tuple[int, int, int]:
        if self.block_2d:
            return (*self.block_2d, 1)
        return (self.threads, 1, 1)


def _pipelined_sgemm(stem: str, entry: str, bm: int, bn: int, bk: int, wm: int, wn: int, stages: int,
                     defines: dict[str, str] | None = None) -> KernelSpec:
    """Launch shape of sgemm_pipelined.cuh for one tile configuration (09 and 10)."""
    threads = 32 * (bm // wm) * (bn // wn)
    smem = stages * (bk * (bm + 4) + bk * bn) * 4
    return KernelSpec(stem, {"fp32": entry}, bm, bn, threads, smem_bytes=smem, defines=defines or {})


def _spec_list() -> list[KernelSpec]:
    return [
        KernelSpec("01_naive", {"fp32": "sgemm_naive"}, 32, 32, 1024, block_2d=(32, 32), grid_rows_first=True),
        KernelSpec("02_coalesced", {"fp32": "sgemm_coalesced"}, 32, 32, 1024),
        KernelSpec("03_smem_tiling", {"fp32": "sgemm_smem_tiling"}, 32, 32, 1024),
        KernelSpec("04_1d_thread_tiling", {"fp32": "sgemm_1d_thread_tiling"}, 64, 64, 512),
        KernelSpec("05_2d_register_tiling", {"fp32": "sgemm_2d_register_tiling"}, 128, 128, 256),
        KernelSpec("06_vectorized", {"fp32": "sgemm_vectorized"}, 128, 128, 256),
        KernelSpec("07_bank_conflict_free", {"fp32": "sgemm_bank_conflict_free"}, 128, 128, 256),
        KernelSpec("08_warptiling", {"fp32": "sgemm_warptiling"}, 128, 128, 256),
        _pipelined_sgemm("09_double_buffered", "sgemm_double_buffered", 128, 128, 16, 32, 64, 2),
        _pipelined_sgemm("10_autotuned", "sgemm_autotuned", 128, 128, 16, 32, 64, 2),
        KernelSpec("t1_wmma", {"fp16": "hgemm_wmma_f16", "bf16": "hgemm_wmma_bf16"}, 64, 64, 128),
        KernelSpec("t2_mma_ldmatrix", {"fp16": "hgemm_mma_f16", "bf16": "hgemm_mma_bf16"}, 128, 128, 256),
        KernelSpec("t3_swizzle_multistage", {"fp16": "hgemm_multistage_f16", "bf16": "hgemm_multistage_bf16"},
                   128, 256, 256, smem_bytes=4 * (128 * 32 + 32 * 256) * 2),
        KernelSpec("t4_wgmma_tma", {"fp16": "hgemm_wgmma_f16", "bf16": "hgemm_wgmma_bf16"}, 128, 256, 384,
                   smem_bytes=T4_SMEM_BYTES),
    ]


# t4: 4 stages of a 128x64 A tile and a 64x256 B tile (bf16/fp16), plus 2 KiB for 1024-byte alignment and the mbarriers.
T4_STAGES = 4
T4_SMEM_BYTES = T4_STAGES * (128 * 64 + 64 * 256) * 2 + 2048

# Candidate shapes the autotuner tries for kernel 10: (BM, BN, BK, WM, WN, STAGES[, KU]). KU is the inner-loop
# unroll in k steps; left out (or 0), the whole K tile is unrolled.
AUTOTUNE_SPACE = [
    (128, 128, 8, 32, 64, 2), (128, 128, 16, 32, 64, 2), (128, 128, 16, 32, 64, 3), (128, 128, 32, 32, 64, 2),
    (128, 128, 16, 64, 32, 3), (128, 256, 8, 64, 64, 2), (128, 256, 16, 64, 64, 2), (256, 128, 16, 64, 64, 2),
    (128, 128, 16, 64, 64, 3), (64, 128, 16, 32, 32, 3), (128, 64, 16, 32, 32, 3), (64, 64, 16, 32, 32, 4),
    (128, 128, 32, 32, 64, 3), (128, 128, 64, 32, 64, 2), (128, 256, 32, 64, 64, 2), (256, 128, 32, 64, 64, 2),
    (128, 256, 32, 64, 64, 3), (128, 256, 64, 64, 64, 2), (256, 128, 64, 64, 64, 2),
    (128, 256, 32, 64, 64, 2, 8), (128, 256, 32, 64, 64, 2, 16), (128, 256, 64, 64, 64, 2, 16),
    (128, 128, 32, 32, 64, 2, 8), (256, 128, 32, 64, 64, 2, 8),
]
TUNE_NAMES = ("BM", "BN", "BK", "WM", "WN", "STAGES", "KU")


def tuned_spec(defines: dict[str, str]) -> KernelSpec:
    """Kernel 10's launch shape for the -D TUNE_* values it was built with."""
    values = {name: int(defines.get(f"TUNE_{name}", default))
              for name, default in (("BM", 128), ("BN", 128), ("BK", 16), ("WM", 32), ("WN", 64), ("STAGES", 2))}
    return _pipelined_sgemm("10_autotuned", "sgemm_autotuned", values["BM"], values["BN"], values["BK"],
                            values["WM"], values["WN"], values["STAGES"], defines=dict(defines))


def tune_defines(bm: int, bn: int, bk: int, wm: int, wn: int, stages: int, ku: int = 0) -> dict[str, str]:
    defines = {"TUNE_BM": str(bm), "TUNE_BN": str(bn), "TUNE_BK": str(bk), "TUNE_WM": str(wm),
               "TUNE_WN": str(wn), "TUNE_STAGES": str(stages)}
    if ku:
        defines["TUNE_KU"] = str(ku)
    return defines


KERNELS: dict[str, KernelSpec] = {spec.stem: spec for spec in _spec_list()}


def kernel_spec(stem: str, cubin_dir: Path | None = None) -> KernelSpec:
    """The spec for `stem`; for kernel 10, the shape recorded in the build's resources.json (its -D values)."""
    if stem not in KERNELS:
        raise KeyError(f"unknown kernel {stem!r}; known: {', '.join(sorted(KERNELS))}")
    spec = KERNELS[stem]
    if stem == "10_autotuned" and cubin_dir is not None:
        resources = Path(cubin_dir) / f"{stem}.resources.json"
        if resources.exists():
            return tuned_spec(json.loads(resources.read_text()).get("defines", {}))
    return spec
