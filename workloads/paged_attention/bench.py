"""Benchmark paged-attention decode and the cache kernels against the device's own ceilings.

CLI: python -m workloads.paged_attention.bench [--kernels build/paged] [--out results/paged/bench.json]
     [--backend auto|cpu|cuda] [--repeats N] [--shapes NAME,...] [--sweep]

Per shape (block size 16, fp16), everything runs in one paired, interleaved set of rounds
(workloads/common/timing.py) so every figure compares work done in the same clock state: our decode
kernels, the device read bandwidth (a 4 GiB reduction), the contiguous-KV baselines and gather-then-
attend. Contiguous baselines: every torch SDPA backend that accepts the problem (cuDNN, flash, memory-
efficient; the best is the baseline, the others are kept) on equal lengths, and for the ragged batch
flash-attention's variable-length path over the same lengths packed contiguously. Each kernel and
baseline is verified against a float64 reference on these inputs before timing (outputs NaN-poisoned),
and the outputs of the last timed launches are poisoned first and checked after. Figures: effective
bandwidth = K and V bytes read once / median time (with a bootstrap interval), and the best kernel
against the read bandwidth and against the best contiguous baseline as medians of per-round ratios
with bootstrap intervals; NVML clock/power/throttle samples per side. reshape_and_cache and
copy_blocks run against a device-to-device copy the same way. Without a CUDA device the NumPy
backend runs the same structure on small shapes and the results say `backend: cpu`.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from workloads.common import gpu_lock, provenance, stats, timing
from workloads.common.device import device_facts
from workloads.common.results import write_results
from workloads.common.verify import poison, rel_frobenius
from workloads.paged_attention import reference as ref
from workloads.paged_attention.block_manager import BlockManager
from workloads.paged_attention.problems import (CPU_SHAPES, GPU_SHAPES, DecodeShape, make_problem,
                                                storage_dtype, to_float32)
from workloads.paged_attention.verify import pick_backend

BLOCK_SIZE = 16
DTYPE = "fp16"
READ = "device_read"
COPY = "device_copy"
# Baselines that read the KV contiguously (the bar a paged kernel is held to); gather_then_attend is not one.
CONTIGUOUS = ("sdpa_cudnn", "sdpa_flash", "sdpa_efficient", "flash_varlen", "contiguous_numpy")


def tbps(nbytes: int, ms: float | None) -> float | None:
    return nbytes / (ms * 1e-3) / 1e12 if ms else None


def _timed(nbytes: int, samples: list[float], seed: int, **extra) -> dict:
    summary = stats.time_summary(samples, seed=seed)
    low, high = summary["ci_ms"]
    return {"bytes": nbytes, "tbps": tbps(nbytes, summary["median_ms"]),
            "tbps_ci": [tbps(nbytes, high), tbps(nbytes, low)] if low else [None, None], **extra, **summary}


def _scaled(figure: dict, factor: float) -> dict:
    """A paired time ratio turned into a bandwidth ratio (the two sides read `factor` times the bytes)."""
    low, high = figure["ci"]
    return {"median": figure["median"] * factor if figure["median"] is not None else None,
            "ci": [low * factor if low is not None else None, high * factor if high is not None else None],
            "n": figure["n"], "clock_states": figure["clock_states"], "throttled": figure["throttled"],
            "host_bound_blocks": figure["host_bound_blocks"], "against": figure["baseline"]}


def _suppress(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


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


# -- one shape: candidates and baselines interleaved ----------------------------------------------------

class Candidate:
    """A kernel or baseline of one shape: run() computes it, result() reads its last output as float32."""

    def __init__(self, name: str, run, result, nbytes: int, *, outputs=(), kind: str = "kernel", expected=None,
                 **extra) -> None:
        self.name, self.run, self.result, self.nbytes = name, run, result, nbytes
        self.outputs, self.kind, self.extra = outputs, kind, extra
        self.expected = expected  # its own reference when it solves another problem (a dense equivalent)


TARGET_BLOCK_MS = 2.0  # a timed block repeats a call until it lasts about this long (enough NVML samples)
MAX_LAUNCHES = 64


def measure_shape(shape: DecodeShape, problem, expected, candidates: list[Candidate], read: Candidate, *,
                  clock, rounds: int, seed: int, sampler=None, sync=lambda: None, unavailable=None,
                  time_one=None) -> dict:
    """Verify every candidate, time them all with the read ceiling interleaved, check the last outputs.

    `time_one(run)` (GPU) times one call, to size blocks of several calls; without it a block is one call.
    """
    tol = ref.tolerance(problem.dtype)
    rows: dict[str, dict] = {}
    live = []
    for cand in candidates:
        for out in cand.outputs:
            poison(out)
        try:
            cand.run()
            sync()
            error = rel_frobenius(cand.result(), expected if cand.expected is None else cand.expected)
        except Exception as exc:  # noqa: BLE001 -- a baseline that cannot run this problem is reported, not fatal
            if cand.kind == "kernel":
                raise
            (unavailable if unavailable is not None else {})[cand.name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            continue
        rows[cand.name] = {"rel_err": error, "passed": bool(error <= tol), "kind": cand.kind, **cand.extra}
        if rows[cand.name]["passed"]:
            live.append(cand)
    variants = []
    for cand in [*live, read]:
        launches = 1
        if time_one is not None:
            launches = min(MAX_LAUNCHES, max(1, int(-(-TARGET_BLOCK_MS // max(time_one(cand.run), 1e-3)))))

        def block(run=cand.run, launches=launches):
            for _ in range(launches):
                run()
        variants.append(timing.Variant(cand.name, block, launches, cand.outputs))
    result = timing.interleave(variants, rounds=rounds, clock=clock, seed=seed, sampler=sampler)
    sync()
    for cand in live:  # the last timed launch of each wrote into poisoned memory (or a fresh tensor)
        error = rel_frobenius(cand.result(), expected if cand.expected is None else cand.expected)
        rows[cand.name].update(rel_err_last_timed=error, passed=bool(error <= tol and rows[cand.name]["passed"]))
    for index, cand in enumerate(live):
        rows[cand.name].update(_timed(cand.nbytes, result["samples_ms"][cand.name], seed + index))
    kernels = {c.name: rows[c.name] for c in candidates if c.kind == "kernel" and c.name in rows}
    baselines = {c.name: rows[c.name] for c in candidates if c.kind != "kernel" and c.name in rows}
    for row in kernels.values():
        if not row["passed"]:
            row.setdefault("tbps", None)
    verified = {name: row for name, row in kernels.items() if row["passed"] and row.get("tbps")}
    best = max(verified, key=lambda name: verified[name]["tbps"]) if verified else None
    contiguous = {name: row for name, row in baselines.items()
                  if name in CONTIGUOUS and row["passed"] and row.get("tbps")}
    base = max(contiguous, key=lambda name: contiguous[name]["tbps"]) if contiguous else None
    by_name = {c.name: c for c in live}
    vs_base = vs_read = None
    if best:
        read_figure = timing.compare(result, best, read.name, seed=seed)
        vs_read = _scaled(read_figure, by_name[best].nbytes / read.nbytes)
        if base:
            vs_base = _scaled(timing.compare(result, best, base, seed=seed), by_name[best].nbytes / by_name[base].nbytes)
    read_row = _timed(read.nbytes, result["samples_ms"][read.name], seed, method=read.extra.get("method"))
    return {"shape": shape.name, "batch": shape.batch, "q_heads": shape.q_heads, "kv_heads": shape.kv_heads,
            "context": shape.context, "max_context": shape.max_context, "head_dim": shape.head_dim,
            "mean_context": float(problem.seq_lens_host.mean()), "dtype": problem.dtype,
            "block_size": problem.block_size, "kv_bytes": problem.kv_bytes, "kernels": kernels,
            "baselines": baselines, "unavailable": dict(unavailable or {}), "read": read_row,
            "best_kernel": best, "best_tbps": verified[best]["tbps"] if best else None,
            "best_tbps_ci": verified[best]["tbps_ci"] if best else None, "baseline_key": base,
            "ratio_to_baseline": vs_base["median"] if vs_base else None,
            "ratio_to_baseline_ci": vs_base["ci"] if vs_base else None,
            "ratio_to_read": vs_read["median"] if vs_read else None,
            "ratio_to_read_ci": vs_read["ci"] if vs_read else None,
            "paired": {"vs_baseline": vs_base, "vs_read": vs_read}, "rounds": result["rounds"],
            "order": result["order"], "dropped_ms": result["dropped_ms"], "clock": result["clock"]}


# -- CPU backend ----------------------------------------------------------------------------------------

def cpu_bench(repeats: int, shapes_filter: set[str] | None, seed: int = 0) -> dict:
    rng = np.random.default_rng(0)
    big = rng.standard_normal(1 << 25, dtype=np.float32)  # 128 MiB
    dst = np.empty_like(big)
    clock = timing.HostClock()
    read = Candidate(READ, lambda: big.sum(), None, big.nbytes, kind="ceiling", method="numpy sum")
    ceilings = cpu_ceilings(big, dst, clock, repeats, seed)
    decode = []
    for shape in CPU_SHAPES:
        if shapes_filter and shape.name not in shapes_filter:
            continue
        problem = make_problem(shape, DTYPE, BLOCK_SIZE, seed=1)
        expected = ref.reference_decode(problem)
        q32 = to_float32(problem.q, DTYPE)
        k_contig = [to_float32(ref.gather_kv(problem.k_cache, problem.block_tables[b], int(n), BLOCK_SIZE), DTYPE)
                    for b, n in enumerate(problem.seq_lens_host)]
        v_contig = [to_float32(ref.gather_kv(problem.v_cache, problem.block_tables[b], int(n), BLOCK_SIZE), DTYPE)
                    for b, n in enumerate(problem.seq_lens_host)]
        holders = {"numpy_splitk": {}, "contiguous_numpy": {}, "gather_then_attend": {}}

        def splitk(p=problem, h=holders["numpy_splitk"]):
            h["out"] = ref.paged_decode_cpu(p)

        def contiguous(k_all=k_contig, v_all=v_contig, q=q32, p=problem, h=holders["contiguous_numpy"]):
            h["out"] = np.stack([ref.attention_float64(q[b], k_all[b], v_all[b], p.scale) for b in range(p.shape.batch)])

        def gather_then_attend(p=problem, q=q32, h=holders["gather_then_attend"]):
            h["out"] = np.stack([ref.attention_float64(
                q[b], to_float32(ref.gather_kv(p.k_cache, p.block_tables[b], int(n), BLOCK_SIZE), DTYPE),
                to_float32(ref.gather_kv(p.v_cache, p.block_tables[b], int(n), BLOCK_SIZE), DTYPE), p.scale)
                for b, n in enumerate(p.seq_lens_host)])

        def reader(name, dtype=None, holders=holders):
            def result():
                out = holders[name]["out"]
                return to_float32(out, DTYPE) if dtype else out
            return result

        candidates = [
            Candidate("numpy_splitk", splitk, reader("numpy_splitk", DTYPE), problem.kv_bytes),
            Candidate("contiguous_numpy", contiguous, reader("contiguous_numpy"), problem.kv_bytes, kind="baseline",
                      label="NumPy float64 attention over contiguous copies"),
            Candidate("gather_then_attend", gather_then_attend, reader("gather_then_attend"), problem.kv_bytes,
                      kind="baseline", label="NumPy gather through the block table, then attention"),
        ]
        decode.append(measure_shape(shape, problem, expected, candidates, read, clock=clock, rounds=repeats,
                                    seed=seed))
    return {"ceilings": ceilings, "decode": decode, "cache_ops": cpu_cache_ops(repeats, clock, seed)}


def cpu_ceilings(big, dst, clock, repeats: int, seed: int) -> dict:
    result = timing.interleave([timing.Variant(READ, lambda: big.sum()),
                                timing.Variant(COPY, lambda: np.copyto(dst, big))], rounds=repeats, clock=clock,
                               seed=seed)
    return {"read": _timed(big.nbytes, result["samples_ms"][READ], seed, method="numpy sum"),
            "copy": _timed(2 * big.nbytes, result["samples_ms"][COPY], seed, method="numpy copyto, read+write")}


def _cache_rows(result: dict, ops: list[tuple], copy_bytes: int, seed: int) -> list[dict]:
    rows = []
    for name, kernel, nbytes, passed, note in ops:
        figure = timing.compare(result, name, COPY, seed=seed)
        scaled = _scaled(figure, nbytes / copy_bytes)
        rows.append(_timed(nbytes, result["samples_ms"][name], seed, op=name, kernel=kernel, passed=passed, note=note,
                           ratio_to_copy=scaled["median"], ratio_to_copy_ci=scaled["ci"],
                           clock_states=scaled["clock_states"], throttled=scaled["throttled"]))
    return rows


def cpu_cache_ops(repeats: int, clock, seed: int) -> list[dict]:
    rng = np.random.default_rng(2)
    tokens, kv_heads, head_dim = 4096, 8, 128
    num_blocks = tokens // BLOCK_SIZE
    k_cache = np.zeros((num_blocks, kv_heads, BLOCK_SIZE, head_dim), dtype=np.float16)
    v_cache = np.zeros_like(k_cache)
    key = rng.standard_normal((tokens, kv_heads, head_dim), dtype=np.float32).astype(np.float16)
    value = rng.standard_normal((tokens, kv_heads, head_dim), dtype=np.float32).astype(np.float16)
    slots = rng.permutation(num_blocks * BLOCK_SIZE).astype(np.int64)
    pairs = np.stack([np.arange(num_blocks // 2), num_blocks // 2 + rng.permutation(num_blocks // 2)], 1)
    src = np.empty(8 << 20, dtype=np.uint8)
    dst = np.empty_like(src)
    result = timing.interleave([
        timing.Variant("reshape_and_cache", lambda: ref.reshape_and_cache_cpu(key, value, k_cache, v_cache, slots)),
        timing.Variant("copy_blocks", lambda: ref.copy_blocks_cpu(k_cache, v_cache, pairs)),
        timing.Variant(COPY, lambda: np.copyto(dst, src)),
    ], rounds=repeats, clock=clock, seed=seed)
    return _cache_rows(result, [("reshape_and_cache", "numpy", 4 * key.nbytes, True, None),
                                ("copy_blocks", "numpy", 4 * k_cache[: num_blocks // 2].nbytes, True, None)],
                       2 * src.nbytes, seed)


# -- GPU ------------------------------------------------------------------------------------------------

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


def torch_facts() -> dict:
    torch, _ = _torch()
    if torch is None:
        return {"torch": None}
    cudnn = torch.backends.cudnn
    return {"torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn_version": cudnn.version() if cudnn.is_available() else None}


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


def packed_kv(problem):
    """[total tokens, kv_heads, D] K and V, sequence after sequence (the variable-length layout)."""
    import cupy

    tables = problem.block_tables.get()
    out = []
    for cache in (problem.k_cache, problem.v_cache):
        parts = [ref.gather_kv(cache, tables[b], int(n), problem.block_size).transpose(1, 0, 2)
                 for b, n in enumerate(problem.seq_lens_host) if n > 0]
        out.append(cupy.ascontiguousarray(cupy.concatenate(parts, axis=0)))
    return out


def _from_torch(problem, holder):
    import cupy

    s = problem.shape

    def result():
        return cupy.asarray(holder["out"].float().reshape(s.batch, s.q_heads, s.head_dim))
    return result


def sdpa_candidates(problem, k_contig, v_contig) -> tuple[list[Candidate], dict]:
    """One candidate per torch SDPA backend over contiguous KV, plus the backend torch would pick itself."""
    torch, F = _torch()
    s = problem.shape
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = _as_torch(torch, problem.q, problem.dtype).view(s.batch, s.q_heads, 1, s.head_dim)
    k = _as_torch(torch, k_contig, problem.dtype)
    v = _as_torch(torch, v_contig, problem.dtype)
    backends = {"sdpa_cudnn": "CUDNN_ATTENTION", "sdpa_flash": "FLASH_ATTENTION", "sdpa_efficient": "EFFICIENT_ATTENTION"}
    candidates, info = [], {}
    try:
        choice = int(torch._fused_sdp_choice(q, k, v, None, 0.0, False, scale=problem.scale, enable_gqa=True))
        names = {int(member.value): name for name, member in SDPBackend.__members__.items()}
        info["default_choice"] = names.get(choice, choice)
    except Exception as error:  # noqa: BLE001 -- a private API: record that it could not be asked
        info["default_choice"] = f"unknown ({type(error).__name__})"
    for name, member in backends.items():
        backend = getattr(SDPBackend, member, None)
        if backend is None:
            continue
        holder = {}

        def run(backend=backend, holder=holder):
            with sdpa_kernel([backend]):
                holder["out"] = F.scaled_dot_product_attention(q, k, v, scale=problem.scale, enable_gqa=True)

        candidates.append(Candidate(name, lambda run=run: _suppress(run), _from_torch(problem, holder), problem.kv_bytes,
                                    kind="baseline", backend=member,
                                    label=f"torch {torch.__version__} SDPA, {member}, enable_gqa=True"))
    return candidates, info


def varlen_candidate(problem) -> Candidate:
    """flash-attention's variable-length forward over the same lengths, K/V packed contiguously."""
    import cupy

    torch, _ = _torch()
    s = problem.shape
    k_packed, v_packed = packed_kv(problem)
    q = _as_torch(torch, problem.q, problem.dtype)            # [batch, q_heads, D]: one query token per sequence
    k = _as_torch(torch, k_packed, problem.dtype)
    v = _as_torch(torch, v_packed, problem.dtype)
    lengths = problem.seq_lens_host.astype(np.int64)
    cu_k = torch.as_tensor(cupy.asarray(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)), device="cuda")
    cu_q = torch.arange(s.batch + 1, dtype=torch.int32, device="cuda")
    max_k = int(lengths.max())
    holder = {}

    def run_aten():
        holder["out"] = torch.ops.aten._flash_attention_forward(q, k, v, cu_q, cu_k, 1, max_k, 0.0, False, False,
                                                                scale=problem.scale)[0]

    run, label = run_aten, f"torch {torch.__version__} aten._flash_attention_forward (variable length)"
    try:
        from torch.nn.attention.varlen import varlen_attn

        def run_public():
            holder["out"] = varlen_attn(q, k, v, cu_q, cu_k, 1, max_k, scale=problem.scale)

        _suppress(run_public)
        run, label = run_public, f"torch {torch.__version__} varlen_attn (flash, variable length)"
    except Exception:  # noqa: BLE001 -- older torch, or another signature: the aten op below
        pass
    return Candidate("flash_varlen", lambda: _suppress(run), _from_torch(problem, holder), problem.kv_bytes,
                     kind="baseline", label=label, note="same lengths as the paged batch, K/V packed contiguously")


def dense_equivalent_candidate(problem, shape: DecodeShape, seed: int) -> Candidate:
    """A reference, not the baseline: torch's default SDPA with every sequence at the mean length (the
    same KV bytes within a block). It answers "what would equal lengths give", not the ragged problem."""
    import cupy

    torch, F = _torch()
    mean_len = int(round(float(problem.seq_lens_host.mean()) / BLOCK_SIZE)) * BLOCK_SIZE
    dense_shape = DecodeShape(shape.name + "_dense", shape.batch, shape.q_heads, shape.kv_heads, mean_len,
                              shape.head_dim)
    dense = make_problem(dense_shape, DTYPE, BLOCK_SIZE, seed=seed + 1, xp=cupy)
    k_contig, v_contig = contiguous_kv(dense)
    s = dense.shape
    q = _as_torch(torch, dense.q, dense.dtype).view(s.batch, s.q_heads, 1, s.head_dim)
    k = _as_torch(torch, k_contig, dense.dtype)
    v = _as_torch(torch, v_contig, dense.dtype)
    holder = {}

    def run():
        holder["out"] = F.scaled_dot_product_attention(q, k, v, scale=dense.scale, enable_gqa=True)

    return Candidate("sdpa_dense_equivalent", lambda: _suppress(run), _from_torch(dense, holder), dense.kv_bytes,
                     kind="reference", expected=ref.reference_decode(dense),
                     label=f"torch {torch.__version__} SDPA (default backend) with every sequence at the mean "
                     f"length {mean_len}", note="a reference for equal lengths, not the ragged baseline")


def gather_then_attend_candidate(problem) -> Candidate | None:
    """Gather the paged KV into contiguous tensors (padded to the longest sequence, masked), then SDPA."""
    import cupy

    torch, F = _torch()
    if torch is None:
        return None
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
    holder = {}

    def gather(cache):
        g = cache.index_select(0, table).view(s.batch, blocks, s.kv_heads, problem.block_size, s.head_dim)
        return g.permute(0, 2, 1, 3, 4).reshape(s.batch, s.kv_heads, blocks * problem.block_size, s.head_dim)[
            :, :, :max_len]

    def run():
        holder["out"] = F.scaled_dot_product_attention(q, gather(k_cache), gather(v_cache), scale=problem.scale,
                                                       attn_mask=mask if ragged else None, enable_gqa=True)

    label = "torch index_select gather + SDPA" + (" (padded to the longest, masked)" if ragged else "")
    return Candidate("gather_then_attend", lambda: _suppress(run), _from_torch(problem, holder), problem.kv_bytes,
                     kind="baseline", label=label)


def kernel_candidates(lib, problem, sweep: bool, versions: set[str] | None) -> tuple[list[Candidate], int]:
    import cupy

    from workloads.paged_attention import kernels as K

    sm_count = device_facts()["sm_count"]
    partition = K.choose_partition_tokens(problem, sm_count)

    def make(name, launch, extra):
        out = cupy.empty(problem.q.shape, dtype=storage_dtype(DTYPE))
        return Candidate(name, lambda: launch(out), lambda: to_float32(out, DTYPE, cupy), problem.kv_bytes,
                         outputs=(out,), **extra)

    candidates = [make("v1_per_head", lambda out: K.decode_v1(lib, problem, out, share_kv=False), {}),
                  make("v1", lambda out: K.decode_v1(lib, problem, out), {})]
    partitions = [partition] + ([p for p in (256, 512, 1024, 2048, 4096) if p != partition] if sweep else [])
    suffix = {"v2": "splitk", "v3": "pipelined", "v4": "mma", "v5": "smem"}
    for version in suffix:
        if versions and version not in versions:
            continue
        for p in partitions:
            name = f"{version}_{suffix[version]}" + ("" if p == partition else f"_p{p}")
            workspace = K.SplitKWorkspace(problem, p)
            candidates.append(make(name, lambda out, ws=workspace, v=version: K.decode_v2(lib, problem, out, ws, v),
                                   {"partition_tokens": p, "version": version}))
    return candidates, partition


def gpu_decode_shape(lib, shape: DecodeShape, rounds: int, sweep: bool, seed: int, versions: set[str] | None, *,
                     stream, clock, sampler, read: Candidate) -> dict:
    import cupy

    problem = make_problem(shape, DTYPE, BLOCK_SIZE, seed=seed, xp=cupy)
    expected = ref.reference_decode(problem)
    candidates, partition = kernel_candidates(lib, problem, sweep, versions)
    unavailable: dict[str, str] = {}
    info: dict = {}
    torch, _ = _torch()
    if torch is not None:
        if shape.context is not None:
            k_contig, v_contig = contiguous_kv(problem)
            sdpa, info = sdpa_candidates(problem, k_contig, v_contig)
            candidates += sdpa
        else:
            candidates.append(varlen_candidate(problem))
            candidates.append(dense_equivalent_candidate(problem, shape, seed))
        gather = gather_then_attend_candidate(problem)
        if gather is not None:
            candidates.append(gather)
    else:
        unavailable["torch"] = "torch not importable: no contiguous baseline"
    row = measure_shape(shape, problem, expected, candidates, read, clock=clock, rounds=rounds, seed=seed,
                        sampler=sampler, sync=stream.synchronize, unavailable=unavailable,
                        time_one=lambda run: timing.one_launch_ms(stream, run))
    row["partition_tokens"] = partition
    row["sdpa"] = info
    return row


def gpu_ceilings(lib, data, result, clock, sampler, rounds: int, seed: int) -> dict:
    import cupy

    from workloads.paged_attention import kernels as K

    sm_count = device_facts()["sm_count"]
    half = data[: data.size // 2]
    dst = cupy.empty_like(half)
    measured = timing.interleave([
        timing.Variant(READ, lambda: K.read_reduce(lib, data, result, sm_count)),
        timing.Variant(COPY, lambda: dst.data.copy_from_device_async(half.data, half.nbytes)),
    ], rounds=rounds, clock=clock, seed=seed, sampler=sampler)
    return {"read": _timed(data.nbytes, measured["samples_ms"][READ], seed, method="read_reduce kernel, 16-byte loads"),
            "copy": _timed(2 * half.nbytes, measured["samples_ms"][COPY], seed,
                           method="cudaMemcpyAsync device-to-device, read+write"),
            "clock": measured["clock"]["sides"]}


def gpu_cache_ops(lib, rounds: int, seed: int, clock, sampler) -> list[dict]:
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
    half = num_blocks // 2
    pairs = cupy.asarray(np.stack([np.random.default_rng(seed).permutation(half),
                                   half + np.random.default_rng(seed + 1).permutation(half)], 1).astype(np.int64))
    K.copy_blocks(lib, k_cache, v_cache, pairs)
    ok_copy = bool((k_cache[pairs[:, 1]] == k_cache[pairs[:, 0]]).all()
                   and (v_cache[pairs[:, 1]] == v_cache[pairs[:, 0]]).all())
    src = cupy.empty(256 << 20, dtype=cupy.uint8)
    dst = cupy.empty_like(src)
    result = timing.interleave([
        timing.Variant("reshape_and_cache", lambda: K.reshape_and_cache(lib, key, value, k_cache, v_cache, slots)),
        timing.Variant("copy_blocks", lambda: K.copy_blocks(lib, k_cache, v_cache, pairs)),
        timing.Variant(COPY, lambda: dst.data.copy_from_device_async(src.data, src.nbytes)),
    ], rounds=rounds, clock=clock, seed=seed, sampler=sampler)
    return _cache_rows(result, [
        ("reshape_and_cache", "reshape_and_cache_16b", 4 * key.nbytes, ok_reshape,
         f"{tokens} tokens x {kv_heads} heads x {head_dim}, K+V read and written"),
        ("copy_blocks", "copy_blocks_16b", 4 * k_cache[:half].nbytes, ok_copy,
         f"{half} block pairs of {k_cache[0].nbytes} B in K and V, read and written")], 2 * src.nbytes, seed)


def gpu_bench(kernels_dir: Path, repeats: int, shapes_filter: set[str] | None, sweep: bool, seed: int,
              versions: set[str] | None = None) -> dict:
    import cupy

    from workloads.common.clocks import NvmlSampler
    from workloads.paged_attention import kernels as K
    from workloads.paged_attention.kernels import KernelLibrary

    lib = KernelLibrary(kernels_dir)
    stream = cupy.cuda.Stream(non_blocking=True)
    torch, _ = _torch()
    torch_stream = torch.cuda.stream(torch.cuda.ExternalStream(stream.ptr)) if torch is not None else None
    clock = timing.CudaClock(stream)
    sampler = NvmlSampler(cupy.cuda.Device().pci_bus_id).start()
    sm_count = device_facts()["sm_count"]
    try:
        with stream, (torch_stream if torch_stream is not None else _null()):
            data = cupy.random.default_rng(0).integers(0, 1 << 31, size=(4 << 30) // 4, dtype=cupy.int32)
            checksum = cupy.zeros(1, dtype=cupy.uint64)
            ceilings = gpu_ceilings(lib, data, checksum, clock, sampler, repeats, seed)
            read = Candidate(READ, lambda: K.read_reduce(lib, data, checksum, sm_count), None, data.nbytes,
                             kind="ceiling", method="read_reduce kernel, 16-byte loads")
            decode = []
            for shape in GPU_SHAPES:
                if shapes_filter and shape.name not in shapes_filter:
                    continue
                decode.append(gpu_decode_shape(lib, shape, repeats, sweep, seed, versions, stream=stream, clock=clock,
                                               sampler=sampler, read=read))
                cupy.get_default_memory_pool().free_all_blocks()
                if torch is not None:
                    torch.cuda.empty_cache()
            data = read = None  # free the 4 GiB before the cache ops
            cupy.get_default_memory_pool().free_all_blocks()
            cache_ops = gpu_cache_ops(lib, repeats, seed, clock, sampler)
    finally:
        sampler.stop()
    return {"ceilings": ceilings, "decode": decode, "cache_ops": cache_ops, "gpu": sampler.facts(),
            "libraries": torch_facts(), "timing_method": {**clock.facts(), "pairing": "interleaved balanced rounds",
                                                           "figure": "median of paired ratios, 95% bootstrap (2000, seeded)"}}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _fmt_ci(ci) -> str:
    low, high = ci or (None, None)
    return f"[{low:.3f}, {high:.3f}]" if low is not None and high is not None else "[–]"


def print_table(result: dict) -> None:
    c = result["ceilings"]
    unit, factor = ("TB/s", 1.0) if result["backend"] == "cuda" else ("GB/s", 1e3)
    print(f"paged bench [backend: {result['backend']}] {result['device_name']}: read "
          f"{c['read']['tbps'] * factor:.3f} {unit}, copy {c['copy']['tbps'] * factor:.3f} {unit}")
    for row in result["decode"]:
        cells = [f"{name} {k['tbps'] * factor:.3f}" if k.get("tbps") else f"{name} FAIL"
                 for name, k in row["kernels"].items()]
        cells += [f"{name} {b['tbps'] * factor:.3f}" for name, b in row["baselines"].items() if b.get("tbps")]
        lead = (f"best {row['best_kernel']} vs read {row['ratio_to_read']:.3f} {_fmt_ci(row['ratio_to_read_ci'])}"
                if row["ratio_to_read"] is not None else "no verified kernel")
        if row["ratio_to_baseline"] is not None:
            lead += f", vs {row['baseline_key']} {row['ratio_to_baseline']:.3f} {_fmt_ci(row['ratio_to_baseline_ci'])}"
        print(f"  {row['shape']:<28} {lead}\n      " + " | ".join(cells)
              + (f"\n      unavailable: {row['unavailable']}" if row.get("unavailable") else ""))
    for row in result["cache_ops"]:
        print(f"  {row['op']:<28} {row['tbps'] * factor:.3f} {unit} = {row['ratio_to_copy']:.2f} x copy "
              f"{_fmt_ci(row['ratio_to_copy_ci'])}" + ("" if row.get("passed", True) else " (FAILED verification)"))
    bm = result["block_manager"]
    print(f"  block manager: {bm['appends_per_s']:.0f} appends/s ({bm['sequences']} seqs, {bm['step_ms']:.2f} ms/step)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workloads.paged_attention.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--kernels", type=Path, default=Path("build/paged"))
    parser.add_argument("--out", type=Path, default=Path("results/paged/bench.json"))
    parser.add_argument("--backend", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--repeats", type=int, default=None, help="counted paired rounds (default 30 GPU, 3 CPU)")
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
        result = cpu_bench(args.repeats or 3, shapes_filter, seed)
        result["timing_method"] = {"clock": timing.HostClock.kind, "pairing": "interleaved balanced rounds"}
    else:
        versions = set(args.versions.split(",")) if args.versions else None
        with gpu_lock.exclusive("paged bench") as lock:
            result = gpu_bench(args.kernels, args.repeats or 30, shapes_filter, args.sweep, seed, versions)
        result["timing_lock"] = lock
    result["block_manager"] = block_manager_throughput()
    verified = all(k.get("passed", True) for row in result["decode"] for k in row["kernels"].values()) and all(
        row.get("passed", True) for row in result["cache_ops"])
    payload = {"task": "paged:bench", "backend": backend, "seed": seed, "block_size": BLOCK_SIZE, "dtype": DTYPE,
               "verified": verified, "seconds": time.perf_counter() - started,
               "provenance": provenance.record(result.get("gpu")), **result}
    document = write_results(args.out, payload)
    print_table({**payload, "device_name": document["device"]["name"]})
    return 0 if verified else 1


if __name__ == "__main__":
    sys.exit(main())
