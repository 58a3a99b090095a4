"""Benchmark paged-attention decode and the cache kernels against the device's own ceilings.

CLI: python -m workloads.paged_attention.bench [--kernels build/paged] [--out results/paged/bench.json]
     [--backend auto|cpu|cuda] [--repeats N] [--shapes NAME,...] [--sweep]

In one run, on one device and the same inputs: the read bandwidth (a large reduction) and the copy
bandwidth (device-to-device memcpy); for each of the issue's shapes (block size 16, fp16) the contiguous-KV
decode baseline (torch SDPA with enable_gqa when torch imports, else a CuPy one), gather-then-attend, and
our kernels, each verified against a float64 reference on these inputs (outputs NaN-poisoned) before it is
timed; reshape_and_cache and copy_blocks against the copy bandwidth. Effective bandwidth = K and V bytes
read once / time. Without a CUDA device the NumPy backend runs the same structure on small shapes and the
results say `backend: cpu`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from workloads.common.device import device_facts
from workloads.common.results import write_results
from workloads.common.timing import cpu_time, cuda_time
from workloads.common.verify import poison, rel_frobenius
from workloads.paged_attention import reference as ref
from workloads.paged_attention.block_manager import BlockManager
from workloads.paged_attention.problems import (CPU_SHAPES, GPU_SHAPES, DecodeShape, make_problem,
                                                storage_dtype, to_float32)
from workloads.paged_attention.verify import pick_backend

BLOCK_SIZE = 16
DTYPE = "fp16"


def tbps(nbytes: int, timing: dict) -> float:
    return nbytes / (timing["median_ms"] * 1e-3) / 1e12


def _timed(nbytes: int, timing: dict, **extra) -> dict:
    return {"bytes": nbytes, "tbps": tbps(nbytes, timing), **extra,
            **{key: timing[key] for key in ("median_ms", "p10_ms", "p90_ms", "min_ms")}}


# -- block manager throughput (both backends: it is host code) --------------------------------------------

def block_manager_throughput(sequences: int = 256, steps: int = 64, block_size: int = BLOCK_SIZE) -> dict:
    """Host cost of the bookkeeping per decode step: appends with forks/CoW and frees."""
    manager = BlockManager(sequences * (steps // block_size + 4) * 2, block_size, shuffle_seed=0)
    for seq in range(sequences):
        manager.add_sequence(seq, 100)
    for seq in range(0, sequences, 4):
        manager.fork(seq, sequences + seq)
    live = list(manager.sequences)
    begin = time.perf_counter()
    for _ in range(steps):
        manager.append_tokens(live)
        manager.take_pending_copies()
        manager.block_tables_array(live)
    elapsed = time.perf_counter() - begin
    for seq in live:
        manager.free(seq)
    manager.check_invariants()
    appends = steps * len(live)
    return {"sequences": len(live), "steps": steps, "appends_per_s": appends / elapsed,
            "step_ms": elapsed / steps * 1e3}


# -- CPU backend ----------------------------------------------------------------------------------------

def cpu_bench(repeats: int, shapes_filter: set[str] | None) -> dict:
    rng = np.random.default_rng(0)
    big = rng.standard_normal(1 << 25, dtype=np.float32)  # 128 MiB
    read = cpu_time(lambda i: big.sum(), repeats=repeats)
    dst = np.empty_like(big)
    copy = cpu_time(lambda i: np.copyto(dst, big), repeats=repeats)
    ceilings = {"read": _timed(big.nbytes, read), "copy": _timed(2 * big.nbytes, copy)}
    decode = []
    for shape in CPU_SHAPES:
        if shapes_filter and shape.name not in shapes_filter:
            continue
        problem = make_problem(shape, DTYPE, BLOCK_SIZE, seed=1)
        expected = ref.reference_decode(problem)
        out = ref.paged_decode_cpu(problem)
        error = rel_frobenius(to_float32(out, DTYPE), expected)
        q32 = to_float32(problem.q, DTYPE)
        k_contig = [to_float32(ref.gather_kv(problem.k_cache, problem.block_tables[b], int(n), BLOCK_SIZE), DTYPE)
                    for b, n in enumerate(problem.seq_lens_host)]
        v_contig = [to_float32(ref.gather_kv(problem.v_cache, problem.block_tables[b], int(n), BLOCK_SIZE), DTYPE)
                    for b, n in enumerate(problem.seq_lens_host)]

        def contiguous(i, k_all=k_contig, v_all=v_contig, q=q32, p=problem):
            return [ref.attention_float64(q[b], k_all[b], v_all[b], p.scale) for b in range(p.shape.batch)]

        def gather_then_attend(i, p=problem, q=q32):
            return [ref.attention_float64(
                q[b], to_float32(ref.gather_kv(p.k_cache, p.block_tables[b], int(n), BLOCK_SIZE), DTYPE),
                to_float32(ref.gather_kv(p.v_cache, p.block_tables[b], int(n), BLOCK_SIZE), DTYPE), p.scale)
                for b, n in enumerate(p.seq_lens_host)]

        kernels = {"numpy_splitk": _timed(problem.kv_bytes, cpu_time(lambda i, p=problem: ref.paged_decode_cpu(p),
                                                                      repeats=repeats), rel_err=error,
                                          passed=error <= ref.tolerance(DTYPE))}
        baselines = {"contiguous_numpy": _timed(problem.kv_bytes, cpu_time(contiguous, repeats=repeats)),
                     "gather_then_attend": _timed(problem.kv_bytes, cpu_time(gather_then_attend, repeats=repeats))}
        decode.append(_decode_row(shape, problem, kernels, baselines, "contiguous_numpy"))
    return {"ceilings": ceilings, "decode": decode, "cache_ops": cpu_cache_ops(repeats, ceilings)}


def cpu_cache_ops(repeats: int, ceilings: dict) -> list[dict]:
    rng = np.random.default_rng(2)
    tokens, kv_heads, head_dim = 4096, 8, 128
    num_blocks = tokens // BLOCK_SIZE
    k_cache = np.zeros((num_blocks, kv_heads, BLOCK_SIZE, head_dim), dtype=np.float16)
    v_cache = np.zeros_like(k_cache)
    key = rng.standard_normal((tokens, kv_heads, head_dim), dtype=np.float32).astype(np.float16)
    value = rng.standard_normal((tokens, kv_heads, head_dim), dtype=np.float32).astype(np.float16)
    slots = rng.permutation(num_blocks * BLOCK_SIZE).astype(np.int64)
    reshape = cpu_time(lambda i: ref.reshape_and_cache_cpu(key, value, k_cache, v_cache, slots), repeats=repeats)
    pairs = np.stack([np.arange(num_blocks // 2), num_blocks // 2 + rng.permutation(num_blocks // 2)], 1)
    copy = cpu_time(lambda i: ref.copy_blocks_cpu(k_cache, v_cache, pairs), repeats=repeats)
    copy_tbps = ceilings["copy"]["tbps"]
    rows = [_timed(4 * key.nbytes, reshape, op="reshape_and_cache", kernel="numpy"),
            _timed(4 * k_cache[: num_blocks // 2].nbytes, copy, op="copy_blocks", kernel="numpy")]
    for row in rows:
        row["ratio_to_copy"] = row["tbps"] / copy_tbps
    return rows


def _decode_row(shape: DecodeShape, problem, kernels: dict, baselines: dict, baseline_key: str) -> dict:
    verified = {name: row for name, row in kernels.items() if row.get("passed")}
    best = max(verified, key=lambda name: verified[name]["tbps"]) if verified else None
    base = baselines.get(baseline_key)
    return {"shape": shape.name, "batch": shape.batch, "q_heads": shape.q_heads, "kv_heads": shape.kv_heads,
            "context": shape.context, "max_context": shape.max_context, "head_dim": shape.head_dim,
            "mean_context": float(problem.seq_lens_host.mean()), "dtype": problem.dtype,
            "block_size": problem.block_size, "kv_bytes": problem.kv_bytes, "kernels": kernels,
            "baselines": baselines, "best_kernel": best, "best_tbps": verified[best]["tbps"] if best else None,
            "baseline_key": baseline_key,
            "ratio_to_baseline": (verified[best]["tbps"] / base["tbps"]) if best and base else None}


# -- GPU ------------------------------------------------------------------------------------------------

def gpu_ceilings(lib, repeats: int) -> dict:
    import cupy

    from workloads.paged_attention import kernels as K

    sm_count = device_facts()["sm_count"]
    nbytes = 4 << 30
    data = cupy.random.default_rng(0).integers(0, 1 << 31, size=nbytes // 4, dtype=cupy.int32)
    result = cupy.zeros(1, dtype=cupy.uint64)
    read = cuda_time(lambda i: K.read_reduce(lib, data, result, sm_count), repeats=repeats)
    half = data[: data.size // 2]
    dst = cupy.empty_like(half)
    copy = cuda_time(lambda i: dst.data.copy_from_device_async(half.data, half.nbytes), repeats=repeats)
    ceilings = {"read": _timed(nbytes, read, method="read_reduce kernel, 16-byte loads"),
                "copy": _timed(2 * half.nbytes, copy, method="cudaMemcpyAsync device-to-device, read+write")}
    return ceilings


def _torch():
    try:
        import torch
        import torch.nn.functional as F  # noqa: N812
    except ImportError:
        return None, None
    return torch, F


def _as_torch(torch, array, dtype: str):
    tensor = torch.as_tensor(array, device="cuda")
    return tensor.view(torch.bfloat16) if dtype == "bf16" else tensor


def contiguous_kv(problem):
    """[batch, kv_heads, L, D] copies of the paged K and V (uniform lengths only)."""
    import cupy

    s = problem.shape
    length = int(problem.seq_lens_host[0])
    blocks = -(-length // problem.block_size)
    out = []
    for cache in (problem.k_cache, problem.v_cache):
        gathered = cache[problem.block_tables[:, :blocks]]  # [B, blocks, Hkv, bs, D]
        gathered = gathered.transpose(0, 2, 1, 3, 4).reshape(s.batch, s.kv_heads, blocks * problem.block_size, -1)
        out.append(cupy.ascontiguousarray(gathered[:, :, :length]))
    return out


def sdpa_callable(problem, k_contig, v_contig):
    """(fn, label): contiguous-KV decode, torch SDPA when available, else CuPy matmul+softmax."""
    import cupy

    torch, F = _torch()
    s = problem.shape
    if torch is not None:
        q = _as_torch(torch, problem.q, problem.dtype).view(s.batch, s.q_heads, 1, s.head_dim)
        k = _as_torch(torch, k_contig, problem.dtype)
        v = _as_torch(torch, v_contig, problem.dtype)
        holder = {}

        def fn(i):
            holder["out"] = F.scaled_dot_product_attention(q, k, v, scale=problem.scale, enable_gqa=True)
            return holder["out"]

        fn(0)
        torch.cuda.synchronize()
        return fn, f"torch {torch.__version__} scaled_dot_product_attention(enable_gqa=True)", \
            lambda: cupy.asarray(holder["out"].float().reshape(s.batch, s.q_heads, s.head_dim))
    q32 = to_float32(problem.q, problem.dtype, cupy).reshape(s.batch, s.kv_heads, s.group, s.head_dim)
    holder = {}

    def fn_cupy(i):
        k32 = to_float32(k_contig, problem.dtype, cupy)
        v32 = to_float32(v_contig, problem.dtype, cupy)
        scores = cupy.matmul(q32, k32.transpose(0, 1, 3, 2)) * problem.scale
        scores = cupy.exp(scores - scores.max(axis=-1, keepdims=True))
        holder["out"] = cupy.matmul(scores / scores.sum(axis=-1, keepdims=True), v32)
        return holder["out"]

    return fn_cupy, "CuPy matmul + softmax (torch not importable)", \
        lambda: holder["out"].reshape(s.batch, s.q_heads, s.head_dim)


def gather_then_attend_callable(problem):
    """Gather the paged KV into contiguous tensors (padded to the longest sequence, masked), then SDPA."""
    import cupy

    torch, F = _torch()
    if torch is None:
        return None, None
    s = problem.shape
    max_len = int(problem.seq_lens_host.max())
    blocks = -(-max_len // problem.block_size)
    table = torch.as_tensor(problem.block_tables[:, :blocks].astype(cupy.int64), device="cuda").reshape(-1)
    k_cache = _as_torch(torch, problem.k_cache, problem.dtype)
    v_cache = _as_torch(torch, problem.v_cache, problem.dtype)
    q = _as_torch(torch, problem.q, problem.dtype).view(s.batch, s.q_heads, 1, s.head_dim)
    ragged = int(problem.seq_lens_host.min()) != max_len
    lens = torch.as_tensor(problem.seq_lens, device="cuda")
    mask = (torch.arange(max_len, device="cuda")[None, :] < lens[:, None]).view(s.batch, 1, 1, max_len)

    def gather(cache):
        g = cache.index_select(0, table).view(s.batch, blocks, s.kv_heads, problem.block_size, s.head_dim)
        return g.permute(0, 2, 1, 3, 4).reshape(s.batch, s.kv_heads, blocks * problem.block_size, s.head_dim)[
            :, :, :max_len]

    def fn(i):
        return F.scaled_dot_product_attention(q, gather(k_cache), gather(v_cache), scale=problem.scale,
                                              attn_mask=mask if ragged else None, enable_gqa=True)

    label = "torch index_select gather + SDPA" + (" (padded to the longest, masked)" if ragged else "")
    return fn, label


def gpu_decode_shape(lib, shape: DecodeShape, repeats: int, sweep: bool, seed: int,
                     versions: set[str] | None = None) -> dict:
    import cupy

    from workloads.paged_attention import kernels as K

    sm_count = device_facts()["sm_count"]
    problem = make_problem(shape, DTYPE, BLOCK_SIZE, seed=seed, xp=cupy)
    expected = ref.reference_decode(problem)
    tol = ref.tolerance(DTYPE)
    out = cupy.empty(problem.q.shape, dtype=storage_dtype(DTYPE))
    partition = K.choose_partition_tokens(problem, sm_count)
    variants = {
        "v1_per_head": (lambda i: K.decode_v1(lib, problem, out, share_kv=False), {}),
        "v1": (lambda i: K.decode_v1(lib, problem, out), {}),
    }
    workspaces = {}
    partitions = [partition] + ([p for p in (256, 512, 1024, 2048, 4096) if p != partition] if sweep else [])
    suffix = {"v2": "splitk", "v3": "pipelined", "v4": "mma", "v5": "smem"}
    for version in suffix:
        if versions and version not in versions:
            continue
        for p in partitions:
            name = f"{version}_{suffix[version]}"
            name += "" if p == partition else f"_p{p}"
            variants[name] = (None, {"partition_tokens": p, "version": version})
            workspaces[name] = K.SplitKWorkspace(problem, p)
    kernels = {}
    for name, (fn, extra) in variants.items():
        if fn is None:
            fn = (lambda ws, version: (lambda i: K.decode_v2(lib, problem, out, ws, version)))(
                workspaces[name], extra["version"])
        poison(out)
        fn(0)
        cupy.cuda.get_current_stream().synchronize()
        error = rel_frobenius(to_float32(out, DTYPE, cupy), expected)
        row = {"rel_err": error, "passed": error <= tol, **extra}
        if row["passed"]:
            row.update(_timed(problem.kv_bytes, cuda_time(fn, repeats=repeats)))
        else:
            row.update(bytes=problem.kv_bytes, tbps=None)
        kernels[name] = row
    baselines = {}
    uniform = shape.context is not None
    if uniform:
        k_contig, v_contig = contiguous_kv(problem)
        dense_problem = problem
    else:  # the dense equivalent: same batch and heads, every sequence at the mean length
        mean_len = int(round(float(problem.seq_lens_host.mean()) / BLOCK_SIZE)) * BLOCK_SIZE
        dense_shape = DecodeShape(shape.name + "_dense", shape.batch, shape.q_heads, shape.kv_heads, mean_len,
                                  shape.head_dim)
        dense_problem = make_problem(dense_shape, DTYPE, BLOCK_SIZE, seed=seed + 1, xp=cupy)
        k_contig, v_contig = contiguous_kv(dense_problem)
    fn, label, result = sdpa_callable(dense_problem, k_contig, v_contig)
    error = rel_frobenius(result(), ref.reference_decode(dense_problem))
    baselines["sdpa_contiguous"] = _timed(dense_problem.kv_bytes, cuda_time(fn, repeats=repeats), label=label,
                                          rel_err=error, passed=error <= tol,
                                          note=None if uniform else f"dense equivalent: every sequence at the mean "
                                          f"length {dense_problem.shape.context} (same KV bytes +-1 block)")
    del k_contig, v_contig, fn
    gather_fn, gather_label = gather_then_attend_callable(problem)
    if gather_fn is not None:
        baselines["gather_then_attend"] = _timed(problem.kv_bytes, cuda_time(gather_fn, repeats=max(5, repeats // 4)),
                                                 label=gather_label)
    row = _decode_row(shape, problem, kernels, baselines, "sdpa_contiguous")
    row["partition_tokens"] = partition
    return row


def gpu_cache_ops(lib, repeats: int, ceilings: dict, seed: int) -> list[dict]:
    import cupy

    from workloads.paged_attention import kernels as K

    rng = cupy.random.default_rng(seed)
    tokens, kv_heads, head_dim = 1 << 16, 8, 128
    num_blocks = tokens // BLOCK_SIZE
    shape = (num_blocks, kv_heads, BLOCK_SIZE, head_dim)
    k_cache = rng.standard_normal(shape, dtype=cupy.float32).astype(cupy.float16)
    v_cache = rng.standard_normal(shape, dtype=cupy.float32).astype(cupy.float16)
    key = rng.standard_normal((tokens, kv_heads, head_dim), dtype=cupy.float32).astype(cupy.float16)
    value = rng.standard_normal((tokens, kv_heads, head_dim), dtype=cupy.float32).astype(cupy.float16)
    slots = cupy.asarray(np.random.default_rng(seed).permutation(tokens).astype(np.int64))
    K.reshape_and_cache(lib, key, value, k_cache, v_cache, slots)
    blocks, offsets = slots // BLOCK_SIZE, slots % BLOCK_SIZE
    ok_reshape = bool((k_cache[blocks, :, offsets] == key).all() and (v_cache[blocks, :, offsets] == value).all())
    reshape = cuda_time(lambda i: K.reshape_and_cache(lib, key, value, k_cache, v_cache, slots), repeats=repeats)
    half = num_blocks // 2
    pairs = cupy.asarray(np.stack([np.random.default_rng(seed).permutation(half),
                                   half + np.random.default_rng(seed + 1).permutation(half)], 1).astype(np.int64))
    K.copy_blocks(lib, k_cache, v_cache, pairs)
    ok_copy = bool((k_cache[pairs[:, 1]] == k_cache[pairs[:, 0]]).all()
                   and (v_cache[pairs[:, 1]] == v_cache[pairs[:, 0]]).all())
    copy = cuda_time(lambda i: K.copy_blocks(lib, k_cache, v_cache, pairs), repeats=repeats)
    copy_tbps = ceilings["copy"]["tbps"]
    rows = [_timed(4 * key.nbytes, reshape, op="reshape_and_cache", kernel="reshape_and_cache_16b",
                   passed=ok_reshape, note=f"{tokens} tokens x {kv_heads} heads x {head_dim}, K+V read and written"),
            _timed(4 * k_cache[:half].nbytes, copy, op="copy_blocks", kernel="copy_blocks_16b", passed=ok_copy,
                   note=f"{half} block pairs of {k_cache[0].nbytes} B in K and V, read and written")]
    for row in rows:
        row["ratio_to_copy"] = row["tbps"] / copy_tbps
    return rows


def gpu_bench(kernels_dir: Path, repeats: int, shapes_filter: set[str] | None, sweep: bool, seed: int,
              versions: set[str] | None = None) -> dict:
    import cupy

    from workloads.paged_attention.kernels import KernelLibrary

    lib = KernelLibrary(kernels_dir)
    ceilings = gpu_ceilings(lib, repeats)
    decode = []
    for shape in GPU_SHAPES:
        if shapes_filter and shape.name not in shapes_filter:
            continue
        decode.append(gpu_decode_shape(lib, shape, repeats, sweep, seed, versions))
        cupy.get_default_memory_pool().free_all_blocks()
        torch, _ = _torch()
        if torch is not None:
            torch.cuda.empty_cache()
    return {"ceilings": ceilings, "decode": decode, "cache_ops": gpu_cache_ops(lib, repeats, ceilings, seed)}


def print_table(result: dict) -> None:
    c = result["ceilings"]
    unit, factor = ("TB/s", 1.0) if result["backend"] == "cuda" else ("GB/s", 1e3)
    print(f"paged bench [backend: {result['backend']}] {result['device_name']}: read "
          f"{c['read']['tbps'] * factor:.3f} {unit}, copy {c['copy']['tbps'] * factor:.3f} {unit}")
    for row in result["decode"]:
        cells = [f"{name} {k['tbps'] * factor:.3f}" if k.get("tbps") else f"{name} FAIL"
                 for name, k in row["kernels"].items()]
        cells += [f"{name} {b['tbps'] * factor:.3f}" for name, b in row["baselines"].items()]
        ratio = row["ratio_to_baseline"]
        print(f"  {row['shape']:<28} " + " | ".join(cells)
              + (f" | best/base {ratio:.2f}" if ratio is not None else ""))
    for row in result["cache_ops"]:
        print(f"  {row['op']:<28} {row['tbps'] * factor:.3f} {unit} = {row['ratio_to_copy']:.2f} x copy"
              + ("" if row.get("passed", True) else " (FAILED verification)"))
    bm = result["block_manager"]
    print(f"  block manager: {bm['appends_per_s']:.0f} appends/s ({bm['sequences']} seqs, {bm['step_ms']:.2f} ms/step)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workloads.paged_attention.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--kernels", type=Path, default=Path("build/paged"))
    parser.add_argument("--out", type=Path, default=Path("results/paged/bench.json"))
    parser.add_argument("--backend", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 30 GPU, 3 CPU)")
    parser.add_argument("--shapes", default=None, help="comma-separated shape names (default: all)")
    parser.add_argument("--sweep", action="store_true", help="also time decode v2 at several partition sizes")
    parser.add_argument("--seed", type=int, default=None, help="default: fresh random inputs each run")
    parser.add_argument("--versions", default=None,
                        help="comma-separated split-K versions to time (v2,v3,v4,v5; default: all)")
    args = parser.parse_args(argv)
    backend = pick_backend(args.backend)
    shapes_filter = set(args.shapes.split(",")) if args.shapes else None
    seed = args.seed if args.seed is not None else int.from_bytes(np.random.bytes(4), "little") % (1 << 30)
    started = time.perf_counter()
    if backend == "cpu":
        result = cpu_bench(args.repeats or 3, shapes_filter)
    else:
        versions = set(args.versions.split(",")) if args.versions else None
        result = gpu_bench(args.kernels, args.repeats or 30, shapes_filter, args.sweep, seed, versions)
    result["block_manager"] = block_manager_throughput()
    verified = all(k.get("passed", True) for row in result["decode"] for k in row["kernels"].values()) and all(
        row.get("passed", True) for row in result["cache_ops"])
    payload = {"task": "paged:bench", "backend": backend, "seed": seed, "block_size": BLOCK_SIZE, "dtype": DTYPE,
               "verified": verified, "seconds": time.perf_counter() - started, **result}
    document = write_results(args.out, payload)
    print_table({**payload, "device_name": document["device"]["name"]})
    return 0 if verified else 1


if __name__ == "__main__":
    sys.exit(main())
