"""The NumPy backend of the serving engine: the model's prefill and paged decode steps on the CPU.

Same interface as the GPU runner (`runner_gpu.TorchRunner`): the engine hands it token ids, positions,
cache slots and block tables from its KV manager, and gets the next greedy tokens (and, when asked, the
logits) back. KV lives in a paged cache [layers, blocks, kv_heads, block_size, head_dim]; writes go
through the NumPy twin of reshape_and_cache and decode attention gathers each sequence's KV through its
block table (workloads/paged_attention/reference.py). float32 throughout: a tiny model on two cores.
"""

from __future__ import annotations

import numpy as np

from workloads.paged_attention.reference import gather_kv, reshape_and_cache_cpu
from workloads.serving.model import ModelConfig, apply_rope, mlp, rms_norm, rope_tables, split_qkv


class NumpyRunner:
    backend = "cpu"

    def __init__(self, config: ModelConfig, weights: dict, num_blocks: int, block_size: int = 16,
                 keep_logits: bool = False) -> None:
        self.config = config
        self.w = weights
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.keep_logits = keep_logits
        shape = (config.layers, num_blocks, config.kv_heads, block_size, config.head_dim)
        self.k_cache = np.zeros(shape, dtype=np.float32)
        self.v_cache = np.zeros(shape, dtype=np.float32)
        self.cos, self.sin = rope_tables(config, config.max_len)
        self.scale = 1.0 / np.sqrt(config.head_dim)

    # -- model pieces --------------------------------------------------------------------------------
    def _layers(self, x: np.ndarray, positions: np.ndarray, slots: np.ndarray, attend) -> np.ndarray:
        c = self.config
        cos, sin = self.cos[positions], self.sin[positions]
        for index, layer in enumerate(self.w["layers"]):
            h = rms_norm(x, layer["attn_norm"], c.eps)
            q, k, v = split_qkv(c, h @ layer["wqkv"].T)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            reshape_and_cache_cpu(k, v, self.k_cache[index], self.v_cache[index], slots)
            x = x + attend(index, q, k, v).reshape(x.shape[0], -1) @ layer["wo"].T
            x = x + mlp(c, layer, rms_norm(x, layer["mlp_norm"], c.eps))
        return x

    def _logits(self, x: np.ndarray) -> np.ndarray:
        return rms_norm(x, self.w["norm"], self.config.eps) @ self.w["lm_head"].T

    def _softmax_attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, causal: bool) -> np.ndarray:
        """q [n, Hq, D], k/v [m, Hkv, D] -> [n, Hq, D]; causal aligns q to the last n keys."""
        g = self.config.group
        k = np.repeat(k, g, axis=1)
        v = np.repeat(v, g, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) * self.scale
        if causal:
            n, m = q.shape[0], k.shape[0]
            scores = scores + np.triu(np.full((n, m), -np.inf, dtype=np.float32), k=m - n + 1)
        scores -= scores.max(axis=-1, keepdims=True)
        p = np.exp(scores)
        p /= p.sum(axis=-1, keepdims=True)
        return np.einsum("hqk,khd->qhd", p, v)

    # -- the engine's interface ------------------------------------------------------------------------
    def prefill(self, prompts: list[list[int]], slot_mappings: list[np.ndarray]):
        """Whole prompts (no cached prefix): write their KV, return (next tokens, last-position logits)."""
        tokens = np.concatenate([np.asarray(p, dtype=np.int64) for p in prompts])
        positions = np.concatenate([np.arange(len(p)) for p in prompts])
        slots = np.concatenate(slot_mappings).astype(np.int64)
        bounds = np.cumsum([0] + [len(p) for p in prompts])

        def attend(index, q, k, v):
            out = np.empty_like(q)
            for start, end in zip(bounds[:-1], bounds[1:]):
                out[start:end] = self._softmax_attention(q[start:end], k[start:end], v[start:end], causal=True)
            return out

        x = self._layers(self.w["embed"][tokens], positions, slots, attend)
        logits = self._logits(x[bounds[1:] - 1])
        return logits.argmax(axis=-1), (logits if self.keep_logits else None)

    def decode(self, tokens: np.ndarray, positions: np.ndarray, slots: np.ndarray, block_tables: np.ndarray,
               seq_lens: np.ndarray):
        """One token per sequence, attending to its whole paged KV (this token's included)."""

        def attend(index, q, k, v):
            out = np.empty_like(q)
            for b in range(q.shape[0]):
                n = int(seq_lens[b])
                keys = gather_kv(self.k_cache[index], block_tables[b], n, self.block_size).transpose(1, 0, 2)
                values = gather_kv(self.v_cache[index], block_tables[b], n, self.block_size).transpose(1, 0, 2)
                out[b] = self._softmax_attention(q[b:b + 1], keys, values, causal=False)[0]
            return out

        x = self._layers(self.w["embed"][np.asarray(tokens, dtype=np.int64)], np.asarray(positions),
                         np.asarray(slots, dtype=np.int64), attend)
        logits = self._logits(x)
        return logits.argmax(axis=-1), (logits if self.keep_logits else None)

    def swap_out(self, blocks: list[int]):
        """Copy blocks to host memory (here: another NumPy array) before they are freed."""
        index = np.asarray(blocks, dtype=np.int64)
        return self.k_cache[:, index].copy(), self.v_cache[:, index].copy()

    def swap_in(self, saved, blocks: list[int]) -> None:
        index = np.asarray(blocks, dtype=np.int64)
        self.k_cache[:, index], self.v_cache[:, index] = saved

    def synchronize(self) -> None:
        """Nothing runs asynchronously on the CPU."""
