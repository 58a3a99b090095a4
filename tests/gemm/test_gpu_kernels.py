"""Every kernel against float64 on fresh random inputs, ragged sizes included (needs a CUDA device)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.gemm.conftest import KERNEL_STEMS
from workloads.gemm import operands
from workloads.gemm.registry import kernel_spec

pytestmark = pytest.mark.gpu

SHAPES = [(1, 1, 1), (127, 129, 65), (64, 256, 8), (257, 511, 123), (300, 200, 1000), (1000, 33, 517)]


@pytest.mark.parametrize("stem", KERNEL_STEMS)
def test_kernel_matches_float64_on_ragged_shapes(built_kernels, stem):
    import cupy

    from workloads.common.verify import poison, rel_frobenius
    from workloads.gemm.launch import make_runner

    spec = kernel_spec(stem, built_kernels[stem]["dir"])
    runner = make_runner(spec, built_kernels[stem]["dir"])
    rng = np.random.default_rng()
    for dtype in spec.dtypes:
        tolerance = 1e-5 if dtype == "fp32" else 1e-2
        for m, n, k in SHAPES:
            a_host = operands.random_host_operand(rng, (m, k), dtype)
            b_host = operands.random_host_operand(rng, (k, n), dtype)
            a, b = cupy.asarray(a_host), cupy.asarray(b_host)
            c_host = rng.standard_normal((m, n), dtype=np.float32)
            for alpha, beta in ((1.0, 0.0), (-0.5, 2.0)):
                c = poison(cupy.empty((m, n), dtype=cupy.float32)) if beta == 0 else cupy.asarray(c_host)
                runner(dtype, a, b, c, m, n, k, alpha, beta)
                cupy.cuda.Device().synchronize()
                reference = operands.reference_float64(operands.exact_float64(a_host, dtype),
                                                       operands.exact_float64(b_host, dtype),
                                                       c_host.astype(np.float64), alpha, beta)
                error = rel_frobenius(c, reference)
                assert error < tolerance, f"{stem} {dtype} {m}x{n}x{k} alpha={alpha} beta={beta}: {error}"


def test_nan_never_passes_on_the_device():
    import cupy

    from workloads.common.verify import poison, rel_frobenius

    out = poison(cupy.empty((4, 4), dtype=cupy.float32))
    assert rel_frobenius(out, cupy.ones((4, 4), dtype=cupy.float32)) == math.inf
    out[:] = 1.0
    out[2, 3] = cupy.nan
    assert rel_frobenius(out, cupy.ones((4, 4), dtype=cupy.float32)) == math.inf
