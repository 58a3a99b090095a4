"""Decode problems: the issue's shapes, fp16/bf16 storage, and paged KV caches laid out by the block manager.

Works on NumPy (CPU backend) and CuPy (GPU) alike: every function takes the array module `xp`. bf16 is
stored as uint16 bit patterns (NumPy has no bfloat16), fp16 as float16; `to_float32`/`from_float32`
convert. The cache layout is [num_blocks, num_kv_heads, block_size, head_dim] for K and V alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from workloads.paged_attention.block_manager import BlockManager

DTYPES = ("fp16", "bf16")
HEAD_DIMS = (64, 128, 256)
BLOCK_SIZES = (8, 16, 32)


def storage_dtype(dtype: str):
    return {"fp16": np.float16, "bf16": np.uint16}[dtype]


def from_float32(values, dtype: str, xp=np):
    """fp32 -> fp16 (IEEE) or bf16 bits (round to nearest even); NaN stays NaN."""
    values = xp.asarray(values, dtype=xp.float32)
    if dtype == "fp16":
        return values.astype(xp.float16)
    bits = values.view(xp.uint32)
    rounded = (bits + xp.uint32(0x7FFF) + ((bits >> xp.uint32(16)) & xp.uint32(1))) >> xp.uint32(16)
    return xp.where(xp.isnan(values), xp.uint32(0x7FC0), rounded).astype(xp.uint16)


def to_float32(stored, dtype: str, xp=np):
    if dtype == "fp16":
        return stored.astype(xp.float32)
    return (stored.astype(xp.uint32) << xp.uint32(16)).view(xp.float32)


def bytes_per_element(dtype: str) -> int:
    return 2


@dataclass(frozen=True)
class DecodeShape:
    """(batch, query heads, KV heads, context, head dim); context None means ragged lengths 1..max_context."""

    name: str
    batch: int
    q_heads: int
    kv_heads: int
    context: int | None
    head_dim: int
    max_context: int | None = None

    @property
    def group(self) -> int:
        return self.q_heads // self.kv_heads

    def lengths(self, seed: int) -> np.ndarray:
        if self.context is not None:
            return np.full(self.batch, self.context, dtype=np.int32)
        rng = np.random.default_rng(seed)
        return rng.integers(1, self.max_context + 1, size=self.batch, dtype=np.int32)


# The benchmark shapes (block size 16). The ragged batch uses 32 query / 8 KV heads, head dim 128.
GPU_SHAPES = (
    DecodeShape("b64_h32_kv32_ctx2048", 64, 32, 32, 2048, 128),
    DecodeShape("b128_h32_kv8_ctx4096", 128, 32, 8, 4096, 128),
    DecodeShape("b8_h32_kv8_ctx32768", 8, 32, 8, 32768, 128),
    DecodeShape("ragged64_h32_kv8_ctx1-8192", 64, 32, 8, None, 128, max_context=8192),
)

# Small shapes with the same structure for the NumPy backend (a few seconds in all).
CPU_SHAPES = (
    DecodeShape("b4_h8_kv8_ctx256", 4, 8, 8, 256, 64),
    DecodeShape("b4_h8_kv2_ctx512", 4, 8, 2, 512, 128),
    DecodeShape("b1_h8_kv2_ctx4096", 1, 8, 2, 4096, 128),
    DecodeShape("ragged8_h8_kv2_ctx1-1024", 8, 8, 2, None, 128, max_context=1024),
)


@dataclass
class PagedProblem:
    """One decode step's inputs: queries, a paged KV cache, block tables and sequence lengths."""

    shape: DecodeShape
    dtype: str
    block_size: int
    q: object             # [batch, q_heads, head_dim], storage dtype
    k_cache: object       # [num_blocks, kv_heads, block_size, head_dim]
    v_cache: object
    block_tables: object  # int32 [batch, max_blocks]
    seq_lens: object      # int32 [batch]
    seq_lens_host: np.ndarray = field(repr=False, default=None)
    manager: BlockManager | None = field(repr=False, default=None)

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.shape.head_dim)

    @property
    def kv_bytes(self) -> int:
        """K and V bytes a decode step must read once: sum of lengths * kv_heads * head_dim * 2 (K, V)."""
        s = self.shape
        return int(self.seq_lens_host.sum()) * s.kv_heads * s.head_dim * 2 * bytes_per_element(self.dtype)


def random_values(shape, dtype: str, xp, rng, chunk_elements: int = 1 << 27):
    """Standard-normal values in storage dtype, generated in chunks so fp32 temporaries stay small."""
    out = xp.empty(shape, dtype=storage_dtype(dtype))
    flat = out.reshape(-1)
    for begin in range(0, flat.size, chunk_elements):
        end = min(flat.size, begin + chunk_elements)
        flat[begin:end] = from_float32(rng.standard_normal(end - begin, dtype=xp.float32), dtype, xp)
    return out


def make_problem(shape: DecodeShape, dtype: str, block_size: int, *, seed: int, xp=np,
                 lengths: np.ndarray | None = None, spare_blocks: int = 8) -> PagedProblem:
    """Random queries and KV, placed in a shuffled block pool by the block manager (as a server would)."""
    lengths = shape.lengths(seed) if lengths is None else np.asarray(lengths, dtype=np.int32)
    blocks_needed = int(sum(-(-int(n) // block_size) for n in lengths))
    manager = BlockManager(blocks_needed + spare_blocks, block_size, shuffle_seed=seed)
    for seq, n in enumerate(lengths):
        manager.add_sequence(seq, int(n))
    seq_ids = list(range(shape.batch))
    rng = xp.random.default_rng(seed) if xp is np else xp.random.default_rng(seed)
    cache_shape = (manager.pool.num_blocks, shape.kv_heads, block_size, shape.head_dim)
    return PagedProblem(
        shape=shape, dtype=dtype, block_size=block_size,
        q=random_values((shape.batch, shape.q_heads, shape.head_dim), dtype, xp, rng),
        k_cache=random_values(cache_shape, dtype, xp, rng),
        v_cache=random_values(cache_shape, dtype, xp, rng),
        block_tables=xp.asarray(manager.block_tables_array(seq_ids)),
        seq_lens=xp.asarray(manager.seq_lens_array(seq_ids)),
        seq_lens_host=np.asarray(lengths, dtype=np.int32),
        manager=manager,
    )
