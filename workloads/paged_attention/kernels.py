"""Load the paged-attention cubins with cupy.RawModule and launch them on PagedProblem inputs.

Kernel names follow the instantiation macros in kernels/*.cu: paged_decode_v1_{f16,bf16}_d{D}_g{G},
paged_decode_v2_..., paged_decode_v2_reduce_{f16,bf16}_d{D}, reshape_and_cache_16b, copy_blocks_16b,
read_reduce. CuPy is imported lazily: this module imports fine on a machine without a GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workloads.paged_attention.problems import PagedProblem

CUBINS = {
    "read": "0_read_bandwidth.cubin",
    "reshape_and_cache": "1_reshape_and_cache.cubin",
    "copy_blocks": "2_copy_blocks.cubin",
    "decode_v1": "3_decode_v1.cubin",
    "decode_v2": "4_decode_v2_splitk.cubin",
    "decode_v3": "5_decode_v3_pipelined.cubin",
    "decode_v4": "6_decode_v4_mma.cubin",
    "decode_v5": "7_decode_v5_smem_pipeline.cubin",
}
THREADS = 128  # kWarps * 32 in decode_core.cuh
HEADS_PER_CTA = (1, 2, 4, 8)
_TYPE_NAMES = {"fp16": "f16", "bf16": "bf16"}


class KernelLibrary:
    """The built cubins of one build folder, loaded on first use."""

    def __init__(self, build_dir: Path | str) -> None:
        self.build_dir = Path(build_dir)
        self._modules: dict[str, object] = {}
        missing = [name for name in CUBINS.values() if not (self.build_dir / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{self.build_dir}: missing {', '.join(missing)}; run "
                                    f"`python -m workloads.paged_attention.build --out {self.build_dir}` first")

    def module(self, key: str):
        if key not in self._modules:
            import cupy

            self._modules[key] = cupy.RawModule(path=str(self.build_dir / CUBINS[key]))
        return self._modules[key]

    def function(self, key: str, name: str):
        return self.module(key).get_function(name)

    def v5_ring_bytes(self, head_dim: int) -> int:
        """Dynamic shared memory of a decode v5 block: its cp.async ring, sized by the cubin's config."""
        if "v5_ring" not in self._modules:
            import cupy

            pointer = self.module("decode_v5").get_global("paged_v5_config")
            config = cupy.ndarray((3,), dtype=cupy.int32, memptr=pointer).get()
            self._modules["v5_ring"] = tuple(int(x) for x in config)
        tiles, stages, warps = self._modules["v5_ring"]
        # per warp and stage, TILES tiles of 8 K rows then 8 V rows of head_dim 2-byte elements
        return stages * warps * tiles * (head_dim // 32) * 2 * 32 * 16


def heads_per_cta(problem: PagedProblem, share_kv: bool = True) -> int:
    """G for the kernel: the whole GQA group (KV read once per group) or 1 (once per query head)."""
    group = problem.shape.group
    if not share_kv:
        return 1
    if group in HEADS_PER_CTA:
        return group
    return max(g for g in HEADS_PER_CTA if group % g == 0)


def _common_args(problem: PagedProblem):
    return (problem.q, problem.k_cache, problem.v_cache, problem.block_tables, problem.seq_lens)


def decode_v1(lib: KernelLibrary, problem: PagedProblem, out, *, share_kv: bool = True) -> None:
    s = problem.shape
    g = heads_per_cta(problem, share_kv)
    name = f"paged_decode_v1_{_TYPE_NAMES[problem.dtype]}_d{s.head_dim}_g{g}"
    kernel = lib.function("decode_v1", name)
    kernel((s.q_heads // g, s.batch), (THREADS,),
           (*_common_args(problem), out, np.int32(s.q_heads), np.int32(s.kv_heads),
            np.int32(problem.block_tables.shape[1]), np.int32(problem.block_size.bit_length() - 1),
            np.float32(problem.scale)))


def choose_partition_tokens(problem: PagedProblem, sm_count: int, resident_per_sm: int = 4,
                            waves: int = 4, minimum: int = 256) -> int:
    """Partition length for split-K (a power of two, at least `minimum` tokens).

    Uniform lengths with at least one full wave of (sequence, head group) blocks are not split: splitting
    then only adds partial writes and a reduce. Otherwise aim for `waves` waves of `resident_per_sm`
    blocks per SM, which fills a small batch and, for ragged batches, keeps the longest sequence from
    being one long block that the rest of the GPU waits for.
    """
    s = problem.shape
    lengths = problem.seq_lens_host
    longest = max(minimum, int(lengths.max()))
    groups = s.q_heads // heads_per_cta(problem)
    if int(lengths.min()) == int(lengths.max()) and s.batch * groups >= sm_count * resident_per_sm:
        return longest
    per_cta = -(-int(lengths.sum()) * groups // (sm_count * resident_per_sm * waves))
    partition = minimum
    while partition < per_cta:
        partition *= 2
    return min(partition, longest)


class SplitKWorkspace:
    """fp32 partial outputs and softmax statistics for decode v2 (allocated once, reused per launch)."""

    def __init__(self, problem: PagedProblem, partition_tokens: int) -> None:
        import cupy

        s = problem.shape
        self.partition_tokens = partition_tokens
        self.max_partitions = max(1, -(-int(problem.seq_lens_host.max()) // partition_tokens))
        rows = s.batch * s.q_heads * self.max_partitions
        self.part_o = cupy.empty((rows, s.head_dim), dtype=cupy.float32)
        self.part_m = cupy.empty(rows, dtype=cupy.float32)
        self.part_l = cupy.empty(rows, dtype=cupy.float32)


def decode_v2(lib: KernelLibrary, problem: PagedProblem, out, workspace: SplitKWorkspace,
              version: str = "v2") -> None:
    """Split-K decode: version "v2", "v3" (pipelined loop), "v4" (tensor-core loop) or "v5" (tensor cores
    fed through a shared-memory ring); same launch, v5 with dynamic shared memory."""
    s = problem.shape
    g = heads_per_cta(problem)
    tname = _TYPE_NAMES[problem.dtype]
    kernel = lib.function(f"decode_{version}", f"paged_decode_{version}_{tname}_d{s.head_dim}_g{g}")
    reduce = lib.function("decode_v2", f"paged_decode_v2_reduce_{tname}_d{s.head_dim}")
    shared_mem = lib.v5_ring_bytes(s.head_dim) if version == "v5" else 0
    if shared_mem and kernel.max_dynamic_shared_size_bytes < shared_mem:  # the default cap is 48 KB - static
        kernel.max_dynamic_shared_size_bytes = shared_mem
    kernel((workspace.max_partitions, s.q_heads // g, s.batch), (THREADS,),
           (*_common_args(problem), out, workspace.part_o, workspace.part_m, workspace.part_l,
            np.int32(s.q_heads), np.int32(s.kv_heads), np.int32(problem.block_tables.shape[1]),
            np.int32(problem.block_size.bit_length() - 1), np.float32(problem.scale),
            np.int32(workspace.partition_tokens), np.int32(workspace.max_partitions)), shared_mem=shared_mem)
    if workspace.max_partitions > 1:
        reduce((s.q_heads, s.batch), (THREADS,),
               (workspace.part_o, workspace.part_m, workspace.part_l, problem.seq_lens, out,
                np.int32(s.q_heads), np.int32(workspace.partition_tokens), np.int32(workspace.max_partitions)))


def decode_v3(lib: KernelLibrary, problem: PagedProblem, out, workspace: SplitKWorkspace) -> None:
    decode_v2(lib, problem, out, workspace, version="v3")


def decode_v4(lib: KernelLibrary, problem: PagedProblem, out, workspace: SplitKWorkspace) -> None:
    decode_v2(lib, problem, out, workspace, version="v4")


def decode_v5(lib: KernelLibrary, problem: PagedProblem, out, workspace: SplitKWorkspace) -> None:
    decode_v2(lib, problem, out, workspace, version="v5")


def reshape_and_cache(lib: KernelLibrary, key, value, k_cache, v_cache, slot_mapping) -> None:
    """key/value [tokens, kv_heads, head_dim] (2-byte dtype) -> caches at slot_mapping (int64)."""
    tokens, kv_heads, head_dim = key.shape
    if tokens == 0:
        return
    kernel = lib.function("reshape_and_cache", "reshape_and_cache_16b")
    vecs_per_head = head_dim * key.itemsize // 16
    threads = min(256, kv_heads * vecs_per_head)
    kernel((tokens,), (threads,), (key, value, k_cache, v_cache, slot_mapping, np.int32(kv_heads),
                                   np.int32(vecs_per_head), np.int32(k_cache.shape[2])))


def copy_blocks(lib: KernelLibrary, k_cache, v_cache, block_mapping) -> None:
    """Copy physical blocks src -> dst (int64 [pairs, 2]) in both caches."""
    pairs = block_mapping.shape[0]
    if pairs == 0:
        return
    kernel = lib.function("copy_blocks", "copy_blocks_16b")
    vecs_per_block = k_cache[0].size * k_cache.itemsize // 16
    kernel((pairs, 2), (256,), (k_cache, v_cache, block_mapping, np.int64(vecs_per_block)))


def read_reduce(lib: KernelLibrary, data, result, sm_count: int) -> None:
    """Read every byte of `data` (size a multiple of 16) once; result is a uint64[1] scratch."""
    kernel = lib.function("read", "read_reduce")
    kernel((sm_count * 8,), (256,), (data, np.int64(data.nbytes // 16), result))
