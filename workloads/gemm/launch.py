"""Load a kernel's cubin with cupy.RawModule and launch it for C = alpha * A @ B + beta * C."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workloads.gemm.registry import KernelSpec

DEFAULT_SMEM_LIMIT = 48 * 1024


class KernelRunner:
    """Launches one kernel file's entry points (one per dtype) on CuPy arrays."""

    def __init__(self, spec: KernelSpec, cubin_dir: Path) -> None:
        import cupy

        cubin = Path(cubin_dir) / f"{spec.stem}.cubin"
        if not cubin.exists():
            raise FileNotFoundError(f"{cubin} not found: run the build task first "
                                    f"(python -m workloads.common.build workloads/gemm/kernels/{spec.stem}.cu "
                                    f"--out {cubin_dir})")
        self.spec = spec
        self.module = cupy.RawModule(path=str(cubin))
        self.functions = {}
        for dtype, entry in spec.entries.items():
            function = self.module.get_function(entry)
            if spec.smem_bytes > DEFAULT_SMEM_LIMIT:
                function.max_dynamic_shared_size_bytes = spec.smem_bytes
            self.functions[dtype] = function

    def __call__(self, dtype: str, a, b, c, m: int, n: int, k: int, alpha: float, beta: float) -> None:
        self.functions[dtype](
            self.spec.grid(m, n), self.spec.block(),
            (np.int32(m), np.int32(n), np.int32(k), np.float32(alpha), a, b, np.float32(beta), c),
            shared_mem=self.spec.smem_bytes,
        )


def make_runner(spec: KernelSpec, cubin_dir: Path):
    """The runner for `spec`: t4 needs TMA descriptors and a persistent grid, the rest launch plainly."""
    if spec.stem.startswith("t4_"):
        from workloads.gemm.tma import WgmmaRunner

        return WgmmaRunner(spec, cubin_dir)
    return KernelRunner(spec, cubin_dir)
