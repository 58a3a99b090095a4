"""Pick kernel 10's tile shape for this device: compile each candidate, verify it, time it paired with cuBLAS.

python -m workloads.gemm.autotune --out results/gemm/autotune.json [--size 4096] [--repeats 10]

The output's "defines" are what the build task of 10 passes to the compiler (--defines-json), so the
choice is an ordinary cached task output, keyed to the hardware. Without a CUDA device nothing can be
measured: it writes 09's hand-picked shape, labelled backend "cpu".
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import tempfile
from pathlib import Path

import numpy as np

from workloads.common.build import BuildError, compile_cubin
from workloads.common.device import cuda_available
from workloads.common.results import write_results
from workloads.gemm.registry import AUTOTUNE_SPACE, KERNEL_DIR, TUNE_NAMES, tune_defines, tuned_spec

SOURCE = KERNEL_DIR / "10_autotuned.cu"
DEFAULT_SHAPE = (128, 128, 16, 32, 64, 2)


def _compile(shape: tuple[int, ...], scratch: Path) -> tuple[tuple[int, ...], Path | None, dict | str]:
    defines = tune_defines(*shape)
    out_dir = scratch / "_".join(map(str, shape))
    try:
        resources = compile_cubin(SOURCE, out_dir / "10_autotuned.cubin", defines=defines)
    except BuildError as error:
        return shape, None, str(error).splitlines()[0]
    return shape, out_dir, resources["sgemm_autotuned"]


def tune(size: int, repeats: int, seed: int) -> dict:
    """Compile every candidate first (no compile runs while anything is timed), then verify each and time
    it paired with cuBLAS (interleaved rounds); the best is the highest median paired ratio."""
    import cupy

    from workloads.common import gpu_lock, timing
    from workloads.common.verify import poison, rel_frobenius
    from workloads.gemm import operands
    from workloads.gemm.bench import verify_small_gpu
    from workloads.gemm.cublas import CublasGemm
    from workloads.gemm.launch import KernelRunner

    candidates = []
    with tempfile.TemporaryDirectory() as scratch:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            compiled = list(pool.map(lambda s: _compile(s, Path(scratch)), AUTOTUNE_SPACE))
        with gpu_lock.exclusive("autotune"):
            stream = cupy.cuda.Stream(non_blocking=True)
            clock = timing.CudaClock(stream)
            with stream:
                cublas = CublasGemm()
                a = operands.random_device_operand((size, size), "fp32", seed)
                b = operands.random_device_operand((size, size), "fp32", seed + 1)
                c = cupy.empty((size, size), dtype=cupy.float32)
                c_base = cupy.empty_like(c)
                expected = cupy.empty_like(c)
                cublas("fp32", a, b, expected, size, size, size, 1.0, 0.0)
            for shape, cubin_dir, report in compiled:
                entry = {"shape": dict(zip(TUNE_NAMES, shape, strict=False))}
                candidates.append(entry)
                if cubin_dir is None:
                    entry["status"] = f"compile failed: {report}"
                    continue
                entry["resources"] = report
                if report["spill_store_bytes"] or report["spill_load_bytes"]:
                    entry["status"] = "skipped: register spills"
                    continue
                with stream:
                    runner = KernelRunner(tuned_spec(tune_defines(*shape)), cubin_dir)
                    checks = verify_small_gpu(runner, "fp32", seed + 7)
                    poison(c)
                    runner("fp32", a, b, c, size, size, size, 1.0, 0.0)
                    stream.synchronize()
                error = rel_frobenius(c, expected)
                if not all(check["passed"] for check in checks) or not error < operands.tolerance("fp32", size):
                    entry["status"] = f"failed verification (rel error vs cuBLAS {error:.2e})"
                    continue
                result = timing.interleave([
                    timing.Variant("kernel", lambda r=runner: r("fp32", a, b, c, size, size, size, 1.0, 0.0)),
                    timing.Variant("baseline", lambda: cublas("fp32", a, b, c_base, size, size, size, 1.0, 0.0)),
                ], rounds=repeats, clock=clock, seed=seed)
                figure = timing.compare(result, "kernel", "baseline", seed=seed)
                median_ms = float(np.median(result["samples_ms"]["kernel"]))
                entry.update(status="ok", median_ms=median_ms, tflops=2 * size**3 / (median_ms * 1e-3) / 1e12,
                             ratio=figure["median"], ratio_ci=figure["ci"],
                             cublas_ms=float(np.median(result["samples_ms"]["baseline"])))
                print(f"  {shape}: {entry['tflops']:.2f} TFLOP/s ({entry['ratio']:.3f} of cuBLAS, paired "
                      f"[{figure['ci'][0]:.3f}, {figure['ci'][1]:.3f}]), {report['registers']} regs", flush=True)
    timed = [entry for entry in candidates if entry.get("status") == "ok"]
    if not timed:
        raise RuntimeError("no autotuning candidate compiled and verified")
    best = max(timed, key=lambda entry: entry["ratio"])
    shape = tuple(best["shape"].get(name, 0) for name in TUNE_NAMES)
    cublas_ms = float(np.median([entry["cublas_ms"] for entry in timed]))
    return {"defines": tune_defines(*shape), "best": best, "size": size,
            "cublas_tflops": 2 * size**3 / (cublas_ms * 1e-3) / 1e12, "candidates": candidates}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workloads.gemm.autotune", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=4096, help="M = N = K used for timing (default 4096)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % (2**31))
    if cuda_available():
        body = {"backend": "cuda", **tune(args.size, args.repeats, seed)}
    else:
        body = {"backend": "cpu", "defines": tune_defines(*DEFAULT_SHAPE), "best": None,
                "note": "no CUDA device: nothing measured, 09's hand-picked shape"}
    write_results(args.out, {"workload": "gemm-autotune", "kernel": "10_autotuned", **body})
    print(f"autotune ({body['backend']}): {body['defines']} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
