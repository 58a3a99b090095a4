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
        for m, n, k in SHAPES:
            tolerance = operands.tolerance(dtype, k)
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


def _device_cell(runner, dtype, m, n, k, rounds=8, seed=3):
    import cupy

    from workloads.common import timing
    from workloads.gemm import bench
    from workloads.gemm.cublas import CublasGemm

    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        cublas = CublasGemm()
    return bench.bench_size_gpu(runner, cublas, dtype, m, n, k, seed, rounds, stream=stream,
                                clock=timing.CudaClock(stream), sampler=None)


def test_cublas_baseline_has_explicit_modes_and_replays_as_a_graph():
    import cupy

    from workloads.common import timing
    from workloads.common.verify import poison, rel_frobenius
    from workloads.gemm.cublas import CUBLAS_DEFAULT_MATH, CublasGemm

    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        cublas = CublasGemm()
        assert cublas.capturable, cublas.api
        assert cublas.math_mode() == CUBLAS_DEFAULT_MATH and cublas.facts()["version"] >= 120000
        for dtype in ("fp32", "fp16"):
            a = operands.random_device_operand((256, 96), dtype, 1)
            b = operands.random_device_operand((96, 128), dtype, 2)
            c = cupy.empty((256, 128), dtype=cupy.float32)
            cublas(dtype, a, b, c, 256, 128, 96, 1.0, 0.0)
            graph, why = timing.capture_graph(
                stream, lambda dtype=dtype, a=a, b=b, c=c: cublas(dtype, a, b, c, 256, 128, 96, 1.0, 0.0))
            assert graph is not None, why
            poison(c)
            graph.launch(stream)
            stream.synchronize()
            reference = operands.device_float32(a, dtype).astype(cupy.float64) @ operands.device_float32(
                b, dtype).astype(cupy.float64)
            # 1e-5 for SGEMM also proves no TF32 ran (TF32 errs ~3e-4)
            assert rel_frobenius(c, reference) < operands.tolerance(dtype, 96)


def test_odd_shape_cell_pads_for_both_sides_and_replays_graphs(built_kernels):
    from workloads.gemm.launch import make_runner

    stem = "t4_wgmma_tma"
    runner = make_runner(kernel_spec(stem, built_kernels[stem]["dir"]), built_kernels[stem]["dir"])
    records, timed = _device_cell(runner, "fp16", 515, 301, 205)
    assert records and all(r["passed"] for r in records), [r for r in records if not r["passed"]]
    assert set(timed["method"].values()) == {"graph"}
    assert timed["padding"]["pitches"] == {"a": 208, "b": 304, "aligned_c": 304}
    assert {r.get("checked") for r in records if r.get("stage") == "last timed launch"} == {
        "kernel", "cublas", "cublas_unaligned", "cublas_aligned_c"}


def test_a_launcher_that_skips_work_after_its_first_call_fails_on_the_device(built_kernels):
    from workloads.gemm.launch import make_runner

    stem = "t2_mma_ldmatrix"
    real = make_runner(kernel_spec(stem, built_kernels[stem]["dir"]), built_kernels[stem]["dir"])

    class Skips:
        def __init__(self):
            self.seen = set()

        def prepare(self, *args):
            return real.prepare(*args)

        def launch(self, dtype, prepared, c, *rest):
            if c.data.ptr in self.seen:
                return
            self.seen.add(c.data.ptr)
            real.launch(dtype, prepared, c, *rest)

    records, timed = _device_cell(Skips(), "bf16", 384, 256, 512)
    assert timed == {}
    assert any(r.get("stage") == "last timed launch" and not r["passed"] for r in records)
    assert all(r["passed"] for r in records if r.get("stage") == "before timing")
