"""Verify, then time, one GEMM kernel against cuBLAS (paired, interleaved); write a results JSON.

python -m workloads.gemm.bench --kernel NAME --cubin-dir DIR --out FILE.json [--sizes ...] [--repeats N]

Verification gates timing: a float64 reference on small and ragged sizes (fresh random inputs, output
poisoned with NaN, beta = 0 and beta != 0), then, at every timed size, every input set against cuBLAS.
Timing (workloads/common/timing.py): the kernel and cuBLAS alternate in balanced rounds after the same
warm-up, as CUDA graphs of enough launches to last about a millisecond (so 1024^3 measures kernels, not
Python), rotating input sets when one set fits in L2; the figure is the median of the per-round ratios
cuBLAS time / kernel time with a bootstrap interval, and every raw sample, the run order and the NVML
clock/power/throttle samples of each side are kept. cuBLAS reads the same buffers as the kernel: where t4
pads rows for TMA, cuBLAS gets the padded buffers too, the padding copy is timed on its own, and cuBLAS
on the unaligned originals is timed against kernel + copy (both labelled). The outputs of the last
timed launches are poisoned first and checked after, for every input set. Without a CUDA device a
NumPy backend runs the same code on small sizes (host clock, no graphs), labelled backend "cpu".
Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from pathlib import Path

import numpy as np

from workloads.common import gpu_lock, provenance, stats, timing
from workloads.common.device import cuda_available
from workloads.common.results import write_results
from workloads.common.verify import poison, rel_frobenius
from workloads.gemm import operands
from workloads.gemm.launch import Prepared
from workloads.gemm.registry import kernel_spec

DEFAULT_SIZES = "1024,2048,4096,8192,4097x3001x2053"
# Small shapes for the float64 check: square, ragged in every dimension, degenerate, K not a multiple of 8.
VERIFY_SHAPES = [(128, 128, 128), (1, 1, 1), (127, 129, 65), (33, 17, 300), (257, 511, 123), (300, 200, 1000),
                 (513, 1031, 77)]
CPU_SHAPES = [(64, 64, 64), (127, 129, 65), (256, 192, 320)]
CASES = [(1.0, 0.0), (0.75, -1.25)]  # (alpha, beta): beta = 0 runs on a NaN-poisoned C
TARGET_BLOCK_MS = 2.0     # a timed block (one graph launch) lasts at least this long (clock samples)
MAX_LAUNCHES = 256        # launches per block at most
ROUND_BUDGET_MS = 1000.0  # counted rounds per cell: as many as fit this, within [MIN_ROUNDS, --repeats]
MIN_ROUNDS = 8


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


def tflops(m: int, n: int, k: int, ms: float | None) -> float | None:
    if not ms:
        return None
    return 2.0 * m * n * k / (ms * 1e-3) / 1e12


def shape_label(m: int, n: int, k: int) -> str:
    return str(m) if m == n == k else f"{m}x{n}x{k}"


def _verification_record(dtype, m, n, k, alpha, beta, reference, error, **labels) -> dict:
    # Against another FP32-accumulating implementation (cuBLAS) the two rounding errors add: twice the bound.
    tolerance = operands.tolerance(dtype, k) * (2 if reference == "cublas" else 1)
    return {"dtype": dtype, "M": m, "N": n, "K": k, "alpha": alpha, "beta": beta, "reference": reference,
            "rel_error": error if np.isfinite(error) else None, "tolerance": tolerance,
            "passed": bool(error < tolerance), **labels}


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
            cupy.cuda.get_current_stream().synchronize()
            reference = operands.reference_float64(a64, b64, c_host.astype(np.float64), alpha, beta)
            records.append(_verification_record(dtype, m, n, k, alpha, beta, "float64",
                                                rel_frobenius(c, reference)))
    return records


class NumpyRunner:
    """The CPU backend's kernel: float32 NumPy matmul writing into C (the GPU runners' contract)."""

    def prepare(self, dtype: str, a, b, m: int, n: int, k: int) -> Prepared:
        return Prepared(a, b, k, n)

    def launch(self, dtype: str, prepared: Prepared, c, m: int, n: int, k: int, alpha: float, beta: float) -> None:
        product = prepared.a @ prepared.b
        if beta != 0:
            c *= np.float32(beta)
            c += np.float32(alpha) * product
        else:
            np.multiply(product, np.float32(alpha), out=c)

    def __call__(self, dtype, a, b, c, m, n, k, alpha, beta) -> None:
        self.launch(dtype, self.prepare(dtype, a, b, m, n, k), c, m, n, k, alpha, beta)


def numpy_baseline(dtype: str, a, b, c, m: int, n: int, k: int, alpha: float, beta: float,
                   lda: int | None = None, ldb: int | None = None, ldc: int | None = None) -> None:
    """The CPU backend's baseline: NumPy's float32 matmul (a vendor BLAS) into C (padded rows allowed)."""
    np.matmul(a[:, :k], b[:, :n], out=c[:, :n])


def measure_cell(runner, baseline, dtype: str, m: int, n: int, k: int, inputs: list, expected: list, *,
                 xp, clock, rounds_max: int, seed: int, sampler=None, stream=None, baseline_name: str = "cublas",
                 reference: str = "cublas") -> tuple[list[dict], dict]:
    """Check every input set, time kernel and baseline interleaved, check the last timed outputs.

    `inputs` are (a, b) pairs, `expected` the reference C of each. On the GPU (`stream` given) blocks are
    CUDA graphs of several launches; on the CPU each block is one call on the host clock. Returns the
    verification records and the timing record ({} when a check before timing failed).
    """
    sets = len(inputs)
    prepared = [runner.prepare(dtype, a, b, m, n, k) for a, b in inputs]
    out_kernel = [xp.empty((m, n), dtype=xp.float32) for _ in range(sets)]
    out_base = [xp.empty((m, n), dtype=xp.float32) for _ in range(sets)]
    padded = any(p.padded for p in prepared)
    labels = {"stage": "before timing"}

    def sync() -> None:
        if stream is not None:
            stream.synchronize()

    def kernel_one(i: int) -> None:
        runner.launch(dtype, prepared[i], out_kernel[i], m, n, k, 1.0, 0.0)

    def base_one(i: int) -> None:
        baseline(dtype, prepared[i].a, prepared[i].b, out_base[i], m, n, k, 1.0, 0.0,
                 lda=prepared[i].lda, ldb=prepared[i].ldb)

    records = []
    with stream if stream is not None else contextlib.nullcontext():
        for i in range(sets):
            poison(out_kernel[i])
            kernel_one(i)
            poison(out_base[i])
            base_one(i)
        sync()
    for i in range(sets):
        records.append(_verification_record(dtype, m, n, k, 1.0, 0.0, reference,
                                            rel_frobenius(out_kernel[i], expected[i]), input_set=i, **labels))
        if padded:
            records.append(_verification_record(dtype, m, n, k, 1.0, 0.0, reference,
                                                rel_frobenius(out_base[i], expected[i]), input_set=i,
                                                checked=f"{baseline_name} on the padded buffers", **labels))
    if not all(record["passed"] for record in records):
        return records, {}

    specs = [("kernel", kernel_one, out_kernel, None), ("baseline", base_one, out_base, None)]
    out_unaligned, out_aligned = [], []
    if padded:
        # Two more labelled comparisons where the kernel pads: the caller's unaligned arrays given to the
        # baseline (against kernel + copy), and the baseline with its output rows aligned too.
        out_unaligned = [xp.empty((m, n), dtype=xp.float32) for _ in range(sets)]
        ldc = -(-n // 8) * 8
        out_aligned = [xp.empty((m, ldc), dtype=xp.float32) for _ in range(sets)]
        specs.append(("padding", lambda i: prepared[i].pad(), (), None))
        specs.append(("baseline_unaligned",
                      lambda i: baseline(dtype, inputs[i][0], inputs[i][1], out_unaligned[i], m, n, k, 1.0, 0.0),
                      out_unaligned, None))
        specs.append(("baseline_aligned_c",
                      lambda i: baseline(dtype, prepared[i].a, prepared[i].b, out_aligned[i], m, n, k, 1.0, 0.0,
                                         lda=prepared[i].lda, ldb=prepared[i].ldb, ldc=ldc),
                      out_aligned, ldc))
    launches = 1
    if stream is not None:  # size a block: about TARGET_BLOCK_MS of the faster side, a multiple of the sets
        fastest = min(timing.one_launch_ms(stream, lambda one=one: one(0)) for _name, one, _out, _ld in specs[:2])
        launches = min(MAX_LAUNCHES, max(1, math.ceil(TARGET_BLOCK_MS / max(fastest, 1e-4))))
    launches = -(-max(launches, sets) // sets) * sets  # every block writes every set's output
    variants, estimate, graphs, why_not = [], 0.0, {}, None
    for name, one, outputs, _ld in specs:
        def enqueue(one=one) -> None:
            for j in range(launches):
                one(j % sets)
        variants.append(timing.Variant(name, enqueue, launches, outputs, "host" if stream is None else "queued"))
        if stream is not None:
            estimate += launches * timing.one_launch_ms(stream, lambda one=one: one(0))
            graph, why = timing.capture_graph(stream, enqueue) if why_not is None else (None, why_not)
            graphs[name], why_not = graph, why_not or why
    if stream is not None and why_not is None:  # every side replays a graph, or every side queues its launches
        for variant in variants:
            variant.run, variant.method = (lambda g=graphs[variant.name]: g.launch(stream)), "graph"
    elif stream is not None:
        variants[0].note = f"graph capture failed ({why_not}): every side queued its launches instead"
    rounds = timing.plan_rounds(estimate, budget_ms=ROUND_BUDGET_MS, minimum=min(MIN_ROUNDS, rounds_max),
                                maximum=rounds_max) if stream is not None else rounds_max
    result = timing.interleave(variants, rounds=rounds, clock=clock, seed=seed, sampler=sampler,
                               warmup_rounds=1 if estimate > 100 else 2)
    last = {"stage": "last timed launch"}
    for name, outputs in (("kernel", out_kernel), ("baseline", out_base), ("baseline_unaligned", out_unaligned),
                          ("baseline_aligned_c", out_aligned)):
        for i, out in enumerate(outputs):
            records.append(_verification_record(dtype, m, n, k, 1.0, 0.0, reference,
                                                rel_frobenius(out[:, :n], expected[i]), input_set=i,
                                                checked=name.replace("baseline", baseline_name), **last))
    if not all(record["passed"] for record in records):
        return records, {}
    figure = timing.compare(result, "kernel", "baseline", seed=seed)
    kernel_time = stats.time_summary(result["samples_ms"]["kernel"], seed=seed)
    base_time = stats.time_summary(result["samples_ms"]["baseline"], seed=seed + 1)
    timed = {
        "dtype": dtype, "shape": shape_label(m, n, k), "M": m, "N": n, "K": k, "input_sets": sets,
        "launches_per_block": launches, "method": result["method"], "rounds": result["rounds"],
        "kernel": kernel_time, "tflops": tflops(m, n, k, kernel_time["median_ms"]),
        "tflops_ci": _tflops_interval(m, n, k, kernel_time["ci_ms"]),
        "baseline": baseline_name, "baseline_time": base_time,
        "baseline_tflops": tflops(m, n, k, base_time["median_ms"]),
        "baseline_tflops_ci": _tflops_interval(m, n, k, base_time["ci_ms"]),
        "baseline_inputs": "the kernel's padded buffers" if padded else "the same arrays as the kernel",
        "ratio": figure["median"], "ratio_ci": figure["ci"], "ratio_n": figure["n"], "paired_ratios": figure["ratios"],
        "clock_states": figure["clock_states"], "throttled": figure["throttled"],
        "host_bound_blocks": figure["host_bound_blocks"], "order": result["order"], "dropped_ms": result["dropped_ms"],
        "clock": result["clock"], "notes": [v.note for v in variants if v.note],
    }
    if padded:
        combined = [kern + pad for kern, pad in zip(result["samples_ms"]["kernel"], result["samples_ms"]["padding"])]
        unaligned = timing.compare(result, "kernel", "baseline_unaligned", seed=seed, candidate_samples=combined)
        unaligned_time = stats.time_summary(result["samples_ms"]["baseline_unaligned"], seed=seed + 2)
        aligned = timing.compare(result, "kernel", "baseline_aligned_c", seed=seed)
        aligned_time = stats.time_summary(result["samples_ms"]["baseline_aligned_c"], seed=seed + 4)
        timed["padding"] = {
            "pitches": {"a": prepared[0].lda, "b": prepared[0].ldb, "aligned_c": -(-n // 8) * 8},
            "aligned_c_baseline_time": aligned_time,
            f"{baseline_name}_aligned_c_tflops": tflops(m, n, k, aligned_time["median_ms"]),
            "aligned_c_ratio": aligned["median"], "aligned_c_ratio_ci": aligned["ci"],
            "aligned_c_clock_states": aligned["clock_states"],
            "copy_time": stats.time_summary(result["samples_ms"]["padding"], seed=seed + 3),
            "unaligned_baseline_time": unaligned_time,
            f"{baseline_name}_unaligned_tflops": tflops(m, n, k, unaligned_time["median_ms"]),
            "with_copy_ratio": unaligned["median"], "with_copy_ratio_ci": unaligned["ci"],
            "meaning": f"{baseline_name} on the caller's unaligned arrays / (kernel + padding copy), paired per round",
        }
    return records, timed


def _tflops_interval(m: int, n: int, k: int, ci_ms: list) -> list:
    low, high = ci_ms
    if low is None or high is None:
        return [None, None]
    return [tflops(m, n, k, high), tflops(m, n, k, low)]


def bench_size_gpu(runner, cublas, dtype: str, m: int, n: int, k: int, seed: int, rounds_max: int, *,
                   stream, clock, sampler) -> tuple[list[dict], dict]:
    """Fresh inputs at this size (rotated sets when one fits in L2), references from cuBLAS, then measure_cell."""
    import cupy

    bytes_per_set = (m * k + k * n) * operands.ELEMENT_BYTES[dtype] + m * n * 4
    sets = timing.rotation_count(bytes_per_set)
    with stream:
        inputs = [(operands.random_device_operand((m, k), dtype, seed + 2 * i),
                   operands.random_device_operand((k, n), dtype, seed + 2 * i + 1)) for i in range(sets)]
        expected = [cupy.empty((m, n), dtype=cupy.float32) for _ in range(sets)]
        for (a, b), out in zip(inputs, expected):
            cublas(dtype, a, b, out, m, n, k, 1.0, 0.0)
        stream.synchronize()
    return measure_cell(runner, cublas, dtype, m, n, k, inputs, expected, xp=cupy, clock=clock,
                        rounds_max=rounds_max, seed=seed, sampler=sampler, stream=stream)


def _print_cell(stem: str, timed: dict) -> None:
    low, high = timed["ratio_ci"]
    flags = []
    if timed["throttled"]:
        flags.append("throttled: " + ",".join(timed["throttled"]))
    if timed["clock_states"].get("differ"):
        flags.append("CLOCK STATES DIFFER: " + timed["clock_states"]["why"])
    if timed["host_bound_blocks"]:
        flags.append(f"{timed['host_bound_blocks']} blocks possibly host-bound")
    extra = ""
    if timed.get("padding"):
        pad = timed["padding"]
        extra = (f", pad {pad['copy_time']['median_ms']:.3f} ms, vs unaligned {timed['baseline']} with copy "
                 f"{pad['with_copy_ratio']:.3f}, vs {timed['baseline']} with aligned C {pad['aligned_c_ratio']:.3f}")
    print(f"  {stem} {timed['dtype']} {timed['shape']:>16}: {timed['tflops']:8.2f} TFLOP/s, {timed['baseline']} "
          f"{timed['baseline_tflops']:8.2f}, paired ratio {timed['ratio']:.3f} [{low:.3f}, {high:.3f}] "
          f"n={timed['ratio_n']} ({timed['method']['kernel']}, {timed['launches_per_block']}/block){extra}"
          + (f" [{'; '.join(flags)}]" if flags else ""), flush=True)


def run_gpu(stem: str, cubin_dir: Path, shapes, dtypes, repeats: int, seed: int) -> dict:
    import cupy

    from workloads.common.clocks import NvmlSampler
    from workloads.gemm.cublas import CublasGemm
    from workloads.gemm.launch import make_runner

    spec = kernel_spec(stem, cubin_dir)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        runner = make_runner(spec, cubin_dir)
        cublas = CublasGemm()
    clock = timing.CudaClock(stream)
    sampler = NvmlSampler(cupy.cuda.Device().pci_bus_id).start()
    verification, timings = [], []
    try:
        for dtype in dtypes or spec.dtypes:
            with stream:
                verification += verify_small_gpu(runner, dtype, seed)
            if not all(record["passed"] for record in verification):
                break
            for index, (m, n, k) in enumerate(shapes):
                records, timed = bench_size_gpu(runner, cublas, dtype, m, n, k, seed + 100 * (index + 1), repeats,
                                                stream=stream, clock=clock, sampler=sampler)
                verification += records
                if not timed:
                    break
                timings.append(timed)
                _print_cell(stem, timed)
    finally:
        sampler.stop()
    return {"verification": verification, "timings": timings, "baseline_library": cublas.facts(),
            "gpu": sampler.facts(), "timing_method": {**clock.facts(), "pairing": "interleaved balanced rounds",
                                                      "figure": "median of paired ratios, 95% bootstrap (2000, seeded)"},
            "launch": {"threads": spec.threads, "block_m": spec.block_m, "block_n": spec.block_n,
                       "dynamic_smem_bytes": spec.smem_bytes, "defines": spec.defines}}


def run_cpu(stem: str, shapes, dtypes, repeats: int, seed: int, runner=None) -> dict:
    """The NumPy backend: the same checks and paired timing in float32 arithmetic, against float64."""
    spec = kernel_spec(stem)
    runner = runner or NumpyRunner()
    rng = np.random.default_rng(seed)
    clock = timing.HostClock()
    verification, timings = [], []
    for dtype in dtypes or spec.dtypes:
        for index, (m, n, k) in enumerate(shapes):
            a64 = operands.exact_float64(operands.random_host_operand(rng, (m, k), dtype), dtype)
            b64 = operands.exact_float64(operands.random_host_operand(rng, (k, n), dtype), dtype)
            a32, b32 = a64.astype(np.float32), b64.astype(np.float32)
            for alpha, beta in CASES:
                c32 = rng.standard_normal((m, n), dtype=np.float32)
                out = poison(np.empty_like(c32)) if beta == 0 else c32.copy()
                runner(dtype, a32, b32, out, m, n, k, alpha, beta)
                reference = operands.reference_float64(a64, b64, c32.astype(np.float64), alpha, beta)
                verification.append(_verification_record(dtype, m, n, k, alpha, beta, "float64",
                                                         rel_frobenius(out, reference)))
            a2 = operands.exact_float64(operands.random_host_operand(rng, (m, k), dtype), dtype)
            b2 = operands.exact_float64(operands.random_host_operand(rng, (k, n), dtype), dtype)
            inputs = [(a32, b32), (a2.astype(np.float32), b2.astype(np.float32))]  # every set is checked
            expected = [a64 @ b64, a2 @ b2]
            records, timed = measure_cell(runner, numpy_baseline, dtype, m, n, k, inputs, expected, xp=np,
                                          clock=clock, rounds_max=repeats, seed=seed + index,
                                          baseline_name="numpy", reference="float64")
            verification += records
            if timed:
                timings.append(timed)
    return {"verification": verification, "timings": timings, "launch": None,
            "baseline_library": {"library": "NumPy float32 matmul"},
            "timing_method": {**clock.facts(), "pairing": "interleaved balanced rounds",
                              "figure": "median of paired ratios, 95% bootstrap (2000, seeded)"}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workloads.gemm.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--kernel", required=True, help="kernel file stem, e.g. 08_warptiling")
    parser.add_argument("--cubin-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"comma list of N or MxNxK (default {DEFAULT_SIZES})")
    parser.add_argument("--dtypes", default="", help="comma list (default: every dtype the kernel has)")
    parser.add_argument("--repeats", type=int, default=24, help="counted paired rounds per cell at most")
    parser.add_argument("--seed", type=int, default=None, help="default: fresh random inputs every run")
    parser.add_argument("--cpu", action="store_true", help="use the NumPy backend even with a GPU")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % (2**31))
    dtypes = [d for d in args.dtypes.split(",") if d]
    kernel_spec(args.kernel)  # unknown names fail before any work
    if cuda_available() and not args.cpu:
        backend = "cuda"
        with gpu_lock.exclusive(f"bench {args.kernel}") as lock:
            body = run_gpu(args.kernel, args.cubin_dir, parse_sizes(args.sizes), dtypes, args.repeats, seed)
        body["timing_lock"] = lock
    else:
        backend = "cpu"
        print(f"{args.kernel}: no CUDA device, NumPy backend on small sizes", flush=True)
        body = run_cpu(args.kernel, CPU_SHAPES, dtypes, min(args.repeats, 6), seed)
    verified = all(record["passed"] for record in body["verification"])
    build_report = Path(args.cubin_dir) / f"{args.kernel}.resources.json"
    write_results(args.out, {"workload": "gemm", "kernel": args.kernel, "backend": backend, "seed": seed,
                             "verified": verified, "build": str(build_report) if build_report.exists() else None,
                             "provenance": provenance.record(body.get("gpu")), **body})
    failures = [r for r in body["verification"] if not r["passed"]]
    for record in failures[:5]:
        print(f"FAILED {args.kernel} {record['dtype']} {record['M']}x{record['N']}x{record['K']} "
              f"alpha={record['alpha']} beta={record['beta']} vs {record['reference']}"
              f"{' (' + record['stage'] + ')' if record.get('stage') else ''}: "
              f"rel error {record['rel_error']} (tolerance {record['tolerance']:.2e})", file=sys.stderr)
    worst = max((float("inf") if r["rel_error"] is None else r["rel_error"] / r["tolerance"]
                 for r in body["verification"]), default=0.0)
    print(f"{args.kernel}: {backend}, {'verified' if verified else 'VERIFICATION FAILED'} "
          f"({len(body['verification'])} checks, worst error/tolerance {worst:.2e}) -> {args.out}")
    return 0 if verified else 1


if __name__ == "__main__":
    sys.exit(main())
