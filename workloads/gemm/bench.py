"""Verify, then time, one GEMM kernel against cuBLAS; write a results JSON.

python -m workloads.gemm.bench --kernel NAME --cubin-dir DIR --out FILE.json [--sizes ...] [--repeats N]

Verification comes first and gates timing: a float64 reference on small and ragged sizes (fresh random
inputs, output poisoned with NaN, beta = 0 and beta != 0), then cuBLAS on the same inputs at every
timed size. Timing uses CUDA events (warm-up, median of --repeats), rotating input sets when one set
fits in L2, and measures cuBLAS in the same process on the same inputs. Without a CUDA device it runs a
NumPy backend on small sizes, still verifying, labelled backend "cpu". Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from workloads.common import timing
from workloads.common.device import cuda_available
from workloads.common.results import write_results
from workloads.common.verify import poison, rel_frobenius
from workloads.gemm import operands
from workloads.gemm.registry import kernel_spec

DEFAULT_SIZES = "1024,2048,4096,8192,4097x3001x2053"
# Small shapes for the float64 check: square, ragged in every dimension, degenerate, K not a multiple of 8.
VERIFY_SHAPES = [(128, 128, 128), (1, 1, 1), (127, 129, 65), (33, 17, 300), (257, 511, 123), (300, 200, 1000),
                 (513, 1031, 77)]
CPU_SHAPES = [(64, 64, 64), (127, 129, 65), (256, 192, 320)]
CASES = [(1.0, 0.0), (0.75, -1.25)]  # (alpha, beta): beta = 0 runs on a NaN-poisoned C


def parse_sizes(text: str) -> list[tuple[int, int, int]]:
    """'1024,4097x3001x2053' -> [(1024, 1024, 1024), (4097, 3001, 2053)] as (M, N, K)."""
    shapes = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        dims = [int(value) for value in item.lower().split("x")]
        if len(dims) == 1:
            dims *= 3
        if len(dims) != 3 or min(dims) < 1:
            raise ValueError(f"size {item!r}: expected N or MxNxK with positive integers")
        shapes.append(tuple(dims))
    return shapes


def tflops(m: int, n: int, k: int, ms: float) -> float:
    return 2.0 * m * n * k / (ms * 1e-3) / 1e12


def shape_label(m: int, n: int, k: int) -> str:
    return str(m) if m == n == k else f"{m}x{n}x{k}"


def _verification_record(dtype, m, n, k, alpha, beta, reference, error) -> dict:
    tolerance = operands.TOLERANCE[dtype]
    return {"dtype": dtype, "M": m, "N": n, "K": k, "alpha": alpha, "beta": beta, "reference": reference,
            "rel_error": error if np.isfinite(error) else None, "tolerance": tolerance,
            "passed": bool(error < tolerance)}


def verify_small_gpu(runner, dtype: str, seed: int) -> list[dict]:
    import cupy

    rng = np.random.default_rng(seed)
    records = []
    for m, n, k in VERIFY_SHAPES:
        a_host = operands.random_host_operand(rng, (m, k), dtype)
        b_host = operands.random_host_operand(rng, (k, n), dtype)
        a64, b64 = operands.exact_float64(a_host, dtype), operands.exact_float64(b_host, dtype)
        a, b = cupy.asarray(a_host), cupy.asarray(b_host)
        for alpha, beta in CASES:
            c_host = rng.standard_normal((m, n), dtype=np.float32)
            c = poison(cupy.empty((m, n), dtype=cupy.float32)) if beta == 0 else cupy.asarray(c_host)
            runner(dtype, a, b, c, m, n, k, alpha, beta)
            cupy.cuda.Device().synchronize()
            reference = operands.reference_float64(a64, b64, c_host.astype(np.float64), alpha, beta)
            records.append(_verification_record(dtype, m, n, k, alpha, beta, "float64",
                                                rel_frobenius(c, reference)))
    return records


def bench_size_gpu(runner, cublas, dtype: str, m: int, n: int, k: int, seed: int, warmup: int,
                   repeats: int) -> tuple[dict, dict]:
    """Verify against cuBLAS on fresh inputs at this size, then time both on the same input sets."""
    import cupy

    bytes_per_set = (m * k + k * n) * operands.ELEMENT_BYTES[dtype] + m * n * 4
    sets = timing.rotation_count(bytes_per_set)
    inputs = [(operands.random_device_operand((m, k), dtype, seed + 2 * i),
               operands.random_device_operand((k, n), dtype, seed + 2 * i + 1),
               cupy.empty((m, n), dtype=cupy.float32)) for i in range(sets)]
    a, b, c = inputs[0]
    expected = cupy.empty((m, n), dtype=cupy.float32)
    cublas(dtype, a, b, expected, m, n, k, 1.0, 0.0)
    poison(c)
    runner(dtype, a, b, c, m, n, k, 1.0, 0.0)
    cupy.cuda.Device().synchronize()
    record = _verification_record(dtype, m, n, k, 1.0, 0.0, "cublas", rel_frobenius(c, expected))
    del expected
    if not record["passed"]:
        return record, {}
    kernel_time = timing.cuda_time(lambda i: runner(dtype, *inputs[i], m, n, k, 1.0, 0.0),
                                   warmup=warmup, repeats=repeats, rotate=sets)
    cublas_time = timing.cuda_time(lambda i: cublas(dtype, *inputs[i], m, n, k, 1.0, 0.0),
                                   warmup=warmup, repeats=repeats, rotate=sets)
    kernel_tflops = tflops(m, n, k, kernel_time["median_ms"])
    cublas_tflops = tflops(m, n, k, cublas_time["median_ms"])
    return record, {
        "dtype": dtype, "shape": shape_label(m, n, k), "M": m, "N": n, "K": k, "input_sets": sets,
        "kernel": kernel_time, "tflops": kernel_tflops, "baseline": "cublas", "baseline_time": cublas_time,
        "baseline_tflops": cublas_tflops, "ratio": kernel_tflops / cublas_tflops,
    }


def run_gpu(stem: str, cubin_dir: Path, shapes, dtypes, warmup: int, repeats: int, seed: int) -> dict:
    from workloads.gemm.cublas import CublasGemm
    from workloads.gemm.launch import make_runner

    spec = kernel_spec(stem, cubin_dir)
    runner = make_runner(spec, cubin_dir)
    cublas = CublasGemm()
    verification, timings = [], []
    for dtype in dtypes or spec.dtypes:
        verification += verify_small_gpu(runner, dtype, seed)
        if not all(record["passed"] for record in verification):
            break
        for index, (m, n, k) in enumerate(shapes):
            record, timed = bench_size_gpu(runner, cublas, dtype, m, n, k, seed + 100 * (index + 1), warmup,
                                           repeats)
            verification.append(record)
            if not record["passed"]:
                break
            timings.append(timed)
            print(f"  {stem} {dtype} {timed['shape']:>16}: {timed['tflops']:8.2f} TFLOP/s, cuBLAS "
                  f"{timed['baseline_tflops']:8.2f}, ratio {timed['ratio']:.3f}", flush=True)
    return {"verification": verification, "timings": timings, "launch": {
        "threads": spec.threads, "block_m": spec.block_m, "block_n": spec.block_n,
        "dynamic_smem_bytes": spec.smem_bytes, "defines": spec.defines}}


def run_cpu(stem: str, shapes, dtypes, repeats: int, seed: int) -> dict:
    """The NumPy backend: the same contract in float32 arithmetic, verified against float64."""
    spec = kernel_spec(stem)
    rng = np.random.default_rng(seed)
    verification, timings = [], []
    for dtype in dtypes or spec.dtypes:
        for m, n, k in shapes:
            a64 = operands.exact_float64(operands.random_host_operand(rng, (m, k), dtype), dtype)
            b64 = operands.exact_float64(operands.random_host_operand(rng, (k, n), dtype), dtype)
            a32, b32 = a64.astype(np.float32), b64.astype(np.float32)
            for alpha, beta in CASES:
                c32 = rng.standard_normal((m, n), dtype=np.float32)
                out = np.float32(alpha) * (a32 @ b32)
                if beta != 0:
                    out += np.float32(beta) * c32
                reference = operands.reference_float64(a64, b64, c32.astype(np.float64), alpha, beta)
                verification.append(_verification_record(dtype, m, n, k, alpha, beta, "float64",
                                                         rel_frobenius(out, reference)))
            measured = timing.cpu_time(lambda _i, a=a32, b=b32: a @ b, warmup=1, repeats=repeats)
            timings.append({"dtype": dtype, "shape": shape_label(m, n, k), "M": m, "N": n, "K": k,
                            "input_sets": 1, "kernel": measured, "tflops": tflops(m, n, k, measured["median_ms"]),
                            "baseline": None, "baseline_time": None, "baseline_tflops": None, "ratio": None})
    return {"verification": verification, "timings": timings, "launch": None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workloads.gemm.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--kernel", required=True, help="kernel file stem, e.g. 08_warptiling")
    parser.add_argument("--cubin-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"comma list of N or MxNxK (default {DEFAULT_SIZES})")
    parser.add_argument("--dtypes", default="", help="comma list (default: every dtype the kernel has)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=None, help="default: fresh random inputs every run")
    parser.add_argument("--cpu", action="store_true", help="use the NumPy backend even with a GPU")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % (2**31))
    dtypes = [d for d in args.dtypes.split(",") if d]
    kernel_spec(args.kernel)  # unknown names fail before any work
    if cuda_available() and not args.cpu:
        backend = "cuda"
        body = run_gpu(args.kernel, args.cubin_dir, parse_sizes(args.sizes), dtypes, args.warmup, args.repeats, seed)
    else:
        backend = "cpu"
        print(f"{args.kernel}: no CUDA device, NumPy backend on small sizes", flush=True)
        body = run_cpu(args.kernel, CPU_SHAPES, dtypes, min(args.repeats, 5), seed)
    verified = all(record["passed"] for record in body["verification"])
    build_report = Path(args.cubin_dir) / f"{args.kernel}.resources.json"
    write_results(args.out, {"workload": "gemm", "kernel": args.kernel, "backend": backend, "seed": seed,
                             "verified": verified, "build": str(build_report) if build_report.exists() else None,
                             **body})
    failures = [r for r in body["verification"] if not r["passed"]]
    for record in failures[:5]:
        print(f"FAILED {args.kernel} {record['dtype']} {record['M']}x{record['N']}x{record['K']} "
              f"alpha={record['alpha']} beta={record['beta']} vs {record['reference']}: "
              f"rel error {record['rel_error']} (tolerance {record['tolerance']})", file=sys.stderr)
    worst = max((float("inf") if r["rel_error"] is None else r["rel_error"] for r in body["verification"]),
                default=0.0)
    print(f"{args.kernel}: {backend}, {'verified' if verified else 'VERIFICATION FAILED'} "
          f"({len(body['verification'])} checks, worst rel error {worst:.2e}) -> {args.out}")
    return 0 if verified else 1


if __name__ == "__main__":
    sys.exit(main())
