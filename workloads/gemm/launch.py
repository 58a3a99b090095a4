"""Load a kernel's cubin with cupy.RawModule and launch it for C = alpha * A @ B + beta * C.

A runner separates what it does to the operands once (`prepare`: t4 pads rows to 16-byte pitches and
encodes TMA descriptors) from the launch itself (`launch`), so the bench can time the kernel on prepared
buffers, give cuBLAS the very same buffers, and time the preparation on its own. Calling the runner
does both, every time: the contract the tests and the autotuner use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workloads.gemm.registry import KernelSpec

DEFAULT_SMEM_LIMIT = 48 * 1024


@dataclass
class Prepared:
    """The operand buffers a kernel reads, with their row pitches (elements), and how they were made."""

    a: object                               # M x lda, the first K columns are A
    b: object                               # K x ldb, the first N columns are B
    lda: int
    ldb: int
    padded: bool = False                    # a or b is a padded copy of the caller's array
    pad: Callable[[], None] | None = None   # redo the copies (what a caller with unaligned data pays)
    extra: dict = field(default_factory=dict)


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

    def prepare(self, dtype: str, a, b, m: int, n: int, k: int) -> Prepared:
        """These kernels read any row-major A and B as they are."""
        return Prepared(a, b, k, n)

    def launch(self, dtype: str, prepared: Prepared, c, m: int, n: int, k: int, alpha: float, beta: float) -> None:
        self.functions[dtype](
            self.spec.grid(m, n), self.spec.block(),
            (np.int32(m), np.int32(n), np.int32(k), np.float32(alpha), prepared.a, prepared.b, np.float32(beta), c),
            shared_mem=self.spec.smem_bytes,
        )

    def __call__(self, dtype: str, a, b, c, m: int, n: int, k: int, alpha: float, beta: float) -> None:
        self.launch(dtype, self.prepare(dtype, a, b, m, n, k), c, m, n, k, alpha, beta)


def make_runner(spec: KernelSpec, cubin_dir: Path):
    """The runner for `spec`: t4 needs TMA descriptors and a persistent grid, the rest launch plainly."""
    if spec.stem.startswith("t4_"):
        from workloads.gemm.tma import WgmmaRunner

        return WgmmaRunner(spec, cubin_dir)
    return KernelRunner(spec, cubin_dir)
