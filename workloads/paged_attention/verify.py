"""Verify the paged-attention kernels (GPU) or the NumPy backend (CPU) against float64 references.

CLI: python -m workloads.paged_attention.verify [--kernels build/paged] [--out results/paged/verify.json]
     [--backend auto|cpu|cuda] [--seed N] [--level full|quick|small]

Checks, each on fresh random inputs with NaN-poisoned outputs (and NaN-filled unwritten cache slots):
  * serving scenario: block manager + reshape_and_cache + copy_blocks (CoW) + decode, cache contents exact;
  * decode v1 (KV shared across the GQA group, and per query head), v2 split-K (a small partition that
    forces many partitions, and the bench heuristic), every dtype x head dim x block size x group size on
    ragged batches;
  * reshape_and_cache and copy_blocks against their NumPy twins, bit for bit.
Exit status 1 when any check fails. Results are labelled `backend: cpu` or `backend: cuda`.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

from workloads.common.device import cuda_available, device_facts
from workloads.common.results import write_results
from workloads.common.verify import poison, rel_frobenius
from workloads.paged_attention import reference as ref
from workloads.paged_attention.problems import (BLOCK_SIZES, CPU_SHAPES, DTYPES, HEAD_DIMS, DecodeShape,
                                                make_problem, storage_dtype, to_float32)
from workloads.paged_attention.scenario import CacheOps, cache_mismatches, expected_decode, run_scenario

# (q_heads, kv_heads): GQA groups of 1, 2, 4 and 8.
HEAD_CONFIGS = ((4, 4), (4, 2), (8, 2), (8, 1))


def _check(checks: list, kernel: str, error: float, dtype: str, **labels) -> None:
    tol = ref.tolerance(dtype)
    checks.append({"kernel": kernel, "dtype": dtype, "rel_err": error, "tol": tol,
                   "passed": bool(error <= tol), **labels})


# -- CPU ------------------------------------------------------------------------------------------------

def cpu_checks(seed: int, level: str) -> list[dict]:
    checks: list[dict] = []
    ops = CacheOps(np, ref.reshape_and_cache_cpu, ref.copy_blocks_cpu)
    for dtype, block_size in itertools.product(DTYPES, BLOCK_SIZES):
        problem, exp_k, exp_v, stats = run_scenario(ops, dtype=dtype, head_dim=64, block_size=block_size,
                                                    q_heads=8, kv_heads=2, seed=seed + block_size)
        bad = cache_mismatches(problem, exp_k, exp_v)
        out = ref.paged_decode_cpu(problem, partition_tokens=2 * block_size)
        error = rel_frobenius(to_float32(out, dtype), expected_decode(problem, exp_k, exp_v))
        _check(checks, "scenario_cpu", error if bad == 0 else float("inf"), dtype, block_size=block_size,
               head_dim=64, sequences=problem.shape.batch, cache_mismatches=bad, **stats)
    shapes = CPU_SHAPES if level == "full" else CPU_SHAPES[:2]
    for dtype, shape in itertools.product(DTYPES, shapes):
        problem = make_problem(shape, dtype, 16, seed=seed)
        out = ref.paged_decode_cpu(problem, partition_tokens=256)
        _check(checks, "decode_cpu", rel_frobenius(to_float32(out, dtype), ref.reference_decode(problem)), dtype,
               shape=shape.name, block_size=16, head_dim=shape.head_dim)
    return checks


# -- GPU ------------------------------------------------------------------------------------------------

def gpu_decode_checks(lib, seed: int, level: str) -> list[dict]:
    import cupy

    from workloads.paged_attention import kernels as K

    checks: list[dict] = []
    sm_count = device_facts()["sm_count"]
    dims = HEAD_DIMS if level == "full" else (128,)
    block_sizes = (16,) if level == "small" else BLOCK_SIZES
    heads = ((4, 4), (8, 2)) if level == "small" else HEAD_CONFIGS
    for dtype, head_dim, block_size, (q_heads, kv_heads) in itertools.product(DTYPES, dims, block_sizes, heads):
        shape = DecodeShape("verify", 5, q_heads, kv_heads, None, head_dim, max_context=700)
        problem = make_problem(shape, dtype, block_size, seed=seed, xp=cupy,
                               lengths=np.random.default_rng(seed + head_dim + block_size).integers(1, 700, 5))
        expected = ref.reference_decode(problem)
        out = cupy.empty(problem.q.shape, dtype=storage_dtype(dtype))
        labels = dict(head_dim=head_dim, block_size=block_size, q_heads=q_heads, kv_heads=kv_heads)
        heuristic = K.choose_partition_tokens(problem, sm_count)
        variants = {
            "decode_v1": (K.decode_v1, {}),
            "decode_v1_per_head": (K.decode_v1, {"share_kv": False}),
            "decode_v2_p64": (K.decode_v2, {"workspace": K.SplitKWorkspace(problem, 64)}),
            "decode_v2": (K.decode_v2, {"workspace": K.SplitKWorkspace(problem, heuristic)}),
            "decode_v3_p64": (K.decode_v3, {"workspace": K.SplitKWorkspace(problem, 64)}),
            "decode_v3": (K.decode_v3, {"workspace": K.SplitKWorkspace(problem, heuristic)}),
            "decode_v4_p64": (K.decode_v4, {"workspace": K.SplitKWorkspace(problem, 64)}),
            "decode_v4": (K.decode_v4, {"workspace": K.SplitKWorkspace(problem, heuristic)}),
            "decode_v5_p64": (K.decode_v5, {"workspace": K.SplitKWorkspace(problem, 64)}),
            "decode_v5": (K.decode_v5, {"workspace": K.SplitKWorkspace(problem, heuristic)}),
        }
        for name, (launch, kwargs) in variants.items():
            poison(out)
            launch(lib, problem, out, **kwargs)
            cupy.cuda.get_current_stream().synchronize()
            _check(checks, name, rel_frobenius(to_float32(out, dtype, cupy), expected), dtype, **labels)
    return checks


def gpu_cache_checks(lib, seed: int, level: str) -> list[dict]:
    import cupy

    from workloads.paged_attention import kernels as K

    checks: list[dict] = []
    dims, block_sizes = ((128,), (16,)) if level == "small" else (HEAD_DIMS, BLOCK_SIZES)
    for dtype, head_dim, block_size in itertools.product(DTYPES, dims, block_sizes):
        rng = np.random.default_rng(seed + head_dim + block_size)
        num_blocks, kv_heads, tokens = 40, 3, 150
        shape = (num_blocks, kv_heads, block_size, head_dim)
        k_host = rng.integers(0, 1 << 15, size=shape).astype(np.uint16).view(storage_dtype(dtype))
        v_host = rng.integers(0, 1 << 15, size=shape).astype(np.uint16).view(storage_dtype(dtype))
        key = rng.integers(0, 1 << 15, size=(tokens, kv_heads, head_dim)).astype(np.uint16).view(k_host.dtype)
        value = rng.integers(0, 1 << 15, size=(tokens, kv_heads, head_dim)).astype(np.uint16).view(k_host.dtype)
        slots = rng.permutation(num_blocks * block_size)[:tokens].astype(np.int64)
        slots[rng.random(tokens) < 0.1] = -1  # padding tokens are skipped
        k_dev, v_dev = cupy.asarray(k_host), cupy.asarray(v_host)
        K.reshape_and_cache(lib, cupy.asarray(key), cupy.asarray(value), k_dev, v_dev, cupy.asarray(slots))
        ref.reshape_and_cache_cpu(key, value, k_host, v_host, slots)
        same = bool((k_dev.get().view(np.uint16) == k_host.view(np.uint16)).all()
                    and (v_dev.get().view(np.uint16) == v_host.view(np.uint16)).all())
        labels = dict(head_dim=head_dim, block_size=block_size)
        _check(checks, "reshape_and_cache", 0.0 if same else float("inf"), dtype, **labels)
        pairs = np.stack([rng.permutation(num_blocks // 2), num_blocks // 2 + rng.permutation(num_blocks // 2)], 1)
        K.copy_blocks(lib, k_dev, v_dev, cupy.asarray(pairs.astype(np.int64)))
        ref.copy_blocks_cpu(k_host, v_host, pairs)
        same = bool((k_dev.get().view(np.uint16) == k_host.view(np.uint16)).all()
                    and (v_dev.get().view(np.uint16) == v_host.view(np.uint16)).all())
        _check(checks, "copy_blocks", 0.0 if same else float("inf"), dtype, **labels)
    return checks


def gpu_scenario_checks(lib, seed: int, level: str) -> list[dict]:
    import cupy

    from workloads.paged_attention import kernels as K

    checks: list[dict] = []
    ops = CacheOps(cupy, lambda *a: K.reshape_and_cache(lib, *a), lambda *a: K.copy_blocks(lib, *a))
    for dtype, block_size in itertools.product(DTYPES, (16,) if level == "small" else BLOCK_SIZES):
        problem, exp_k, exp_v, stats = run_scenario(ops, dtype=dtype, head_dim=128, block_size=block_size,
                                                    q_heads=8, kv_heads=2, seed=seed + block_size)
        bad = cache_mismatches(problem, exp_k, exp_v)
        out = cupy.empty(problem.q.shape, dtype=storage_dtype(dtype))
        poison(out)
        K.decode_v4(lib, problem, out, K.SplitKWorkspace(problem, 2 * block_size))
        error = rel_frobenius(to_float32(out, dtype, cupy), expected_decode(problem, exp_k, exp_v))
        _check(checks, "scenario_cuda", error if bad == 0 else float("inf"), dtype, block_size=block_size,
               head_dim=128, sequences=problem.shape.batch, cache_mismatches=bad, **stats)
    return checks


def run(backend: str, kernels_dir: Path, seed: int, level: str = "full") -> dict:
    started = time.perf_counter()
    if backend == "cpu":
        checks = cpu_checks(seed, level)
    else:
        from workloads.paged_attention.kernels import KernelLibrary

        lib = KernelLibrary(kernels_dir)
        checks = (gpu_cache_checks(lib, seed, level) + gpu_scenario_checks(lib, seed, level)
                  + gpu_decode_checks(lib, seed, level))
    failed = [check for check in checks if not check["passed"]]
    return {"backend": backend, "seed": seed, "level": level, "checks": checks, "passed": not failed,
            "num_checks": len(checks), "num_failed": len(failed), "seconds": time.perf_counter() - started}


def pick_backend(requested: str) -> str:
    if requested == "auto":
        return "cuda" if cuda_available() else "cpu"
    if requested == "cuda" and not cuda_available():
        raise SystemExit("verify: --backend cuda asked for, but no CUDA device answers (CuPy found none)")
    return requested


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workloads.paged_attention.verify", description=__doc__.split("\n")[0])
    parser.add_argument("--kernels", type=Path, default=Path("build/paged"), help="build folder with the cubins")
    parser.add_argument("--out", type=Path, default=Path("results/paged/verify.json"))
    parser.add_argument("--backend", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--seed", type=int, default=None, help="default: fresh random inputs each run")
    parser.add_argument("--level", choices=("full", "quick", "small"), default="full",
                        help="quick: head dim 128 only; small: one block size and two head layouts "
                             "(the compute-sanitizer case)")
    args = parser.parse_args(argv)
    backend = pick_backend(args.backend)
    seed = args.seed if args.seed is not None else int.from_bytes(np.random.bytes(4), "little") % (1 << 30)
    result = run(backend, args.kernels, seed, args.level)
    write_results(args.out, {"task": "paged:verify", **result})
    worst: dict[str, float] = {}
    for check in result["checks"]:
        worst[check["kernel"]] = max(worst.get(check["kernel"], 0.0), check["rel_err"] / check["tol"])
    print(f"paged verify [backend: {backend}] {result['num_checks']} checks, {result['num_failed']} failed "
          f"({result['seconds']:.1f} s, seed {seed}) -> {args.out}")
    for kernel, ratio in worst.items():
        print(f"  {kernel:<22} worst error / tolerance = {ratio:.3f}")
    for check in result["checks"]:
        if not check["passed"]:
            print(f"  FAILED {check}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
