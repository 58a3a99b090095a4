"""A Llama-shaped decoder with random weights: shapes, seeded weights and the plain reference forward.

The serving engine needs a model whose cost is that of a real one, not its knowledge, so the weights are
random (as vLLM's load_format="dummy" does for profiling): RMSNorm, rotary embeddings (the rotate-half
form Llama uses), attention with grouped KV heads, SwiGLU MLP, untied LM head.

`reference_logits` is the plain forward: every token of one sequence, causal attention recomputed from
scratch, float64 NumPy, no KV cache. The engines' logits are checked against it (CPU tests; the GPU test
runs the same check in float32 torch, `runner_gpu.reference_logits_torch`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ModelConfig:
    name: str
    vocab: int
    hidden: int
    layers: int
    q_heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    max_len: int = 2048
    rope_theta: float = 10000.0
    eps: float = 1e-5

    @property
    def group(self) -> int:
        return self.q_heads // self.kv_heads

    @property
    def qkv_dim(self) -> int:
        return (self.q_heads + 2 * self.kv_heads) * self.head_dim

    def parameters(self) -> int:
        per_layer = (self.hidden * self.qkv_dim + self.q_heads * self.head_dim * self.hidden
                     + 3 * self.hidden * self.intermediate + 2 * self.hidden)
        return self.layers * per_layer + 2 * self.vocab * self.hidden + self.hidden

    def kv_bytes_per_token(self, itemsize: int = 2) -> int:
        """K and V of one token over every layer."""
        return 2 * self.layers * self.kv_heads * self.head_dim * itemsize

    def as_dict(self) -> dict:
        return {**asdict(self), "parameters": self.parameters(), "kv_bytes_per_token": self.kv_bytes_per_token()}


SHAPES = {
    # Llama-2-7B: 6.74 B parameters, multi-head attention (32 query and 32 KV heads of 128)
    "llama-7b": ModelConfig("llama-7b", 32000, 4096, 32, 32, 32, 128, 11008, max_len=4096),
    # Llama-2-13B
    "llama-13b": ModelConfig("llama-13b", 32000, 5120, 40, 40, 40, 128, 13824, max_len=4096),
    # a GQA variant of the 7B shape (8 KV heads), for the grouped kernels
    "llama-7b-gqa": ModelConfig("llama-7b-gqa", 32000, 4096, 32, 32, 8, 128, 11008, max_len=4096),
    # small enough for NumPy on two cores; GQA (group 2) so the grouped path is exercised
    "tiny": ModelConfig("tiny", 512, 128, 2, 4, 2, 32, 256, max_len=2048),
}


def model_config(name: str) -> ModelConfig:
    try:
        return SHAPES[name]
    except KeyError:
        raise ValueError(f"unknown model shape {name!r}; choose one of {', '.join(SHAPES)}") from None


def init_weights_numpy(config: ModelConfig, seed: int = 0) -> dict:
    """float32 weights: matrices ~ N(0, 1/fan_in) (activations stay O(1)), norms ~ 1 + N(0, 0.1)."""
    rng = np.random.default_rng(seed)

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) / np.sqrt(cols)).astype(np.float32)

    def norm() -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(config.hidden, dtype=np.float32)).astype(np.float32)

    layers = []
    for _ in range(config.layers):
        layers.append({"attn_norm": norm(), "wqkv": matrix(config.qkv_dim, config.hidden),
                       "wo": matrix(config.hidden, config.q_heads * config.head_dim), "mlp_norm": norm(),
                       "w_gate_up": matrix(2 * config.intermediate, config.hidden),
                       "w_down": matrix(config.hidden, config.intermediate)})
    return {"embed": rng.standard_normal((config.vocab, config.hidden), dtype=np.float32),
            "layers": layers, "norm": norm(), "lm_head": matrix(config.vocab, config.hidden)}


def rope_tables(config: ModelConfig, max_pos: int, xp=np):
    """cos, sin [max_pos, head_dim / 2] (float32) for the rotate-half rotary embedding."""
    inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, config.head_dim, 2, dtype=np.float64) / config.head_dim))
    angles = np.outer(np.arange(max_pos, dtype=np.float64), inv_freq)
    return xp.asarray(np.cos(angles).astype(np.float32)), xp.asarray(np.sin(angles).astype(np.float32))


def apply_rope(x, cos, sin):
    """x [tokens, heads, D]; cos/sin [tokens, D/2]: rotate (x1, x2) halves as Llama does."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]
    out = x.copy() if hasattr(x, "copy") else x.clone()
    out[..., :half] = x1 * c - x2 * s
    out[..., half:] = x2 * c + x1 * s
    return out


def rms_norm(x, weight, eps: float, xp=np):
    return x / xp.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * weight


def silu(x, xp=np):
    return x / (1.0 + xp.exp(-x))


def split_qkv(config: ModelConfig, qkv):
    """[tokens, qkv_dim] -> q [tokens, q_heads, D], k and v [tokens, kv_heads, D]."""
    d = config.head_dim
    q_end = config.q_heads * d
    k_end = q_end + config.kv_heads * d
    tokens = qkv.shape[0]
    return (qkv[:, :q_end].reshape(tokens, config.q_heads, d), qkv[:, q_end:k_end].reshape(tokens, config.kv_heads, d),
            qkv[:, k_end:].reshape(tokens, config.kv_heads, d))


def mlp(config: ModelConfig, layer: dict, h, xp=np):
    gate_up = h @ layer["w_gate_up"].T
    gate, up = gate_up[:, :config.intermediate], gate_up[:, config.intermediate:]
    return (silu(gate, xp) * up) @ layer["w_down"].T


def reference_logits(config: ModelConfig, weights: dict, tokens) -> np.ndarray:
    """float64 logits [len(tokens), vocab] of one sequence, computed from scratch with causal attention."""
    w = _as_float64(weights)
    tokens = np.asarray(tokens, dtype=np.int64)
    n = tokens.size
    cos, sin = rope_tables(config, n)
    cos, sin = cos.astype(np.float64), sin.astype(np.float64)
    x = w["embed"][tokens]
    scale = 1.0 / np.sqrt(config.head_dim)
    mask = np.triu(np.full((n, n), -np.inf), k=1)
    for layer in w["layers"]:
        h = rms_norm(x, layer["attn_norm"], config.eps)
        q, k, v = split_qkv(config, h @ layer["wqkv"].T)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k = np.repeat(k, config.group, axis=1)
        v = np.repeat(v, config.group, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) * scale + mask
        scores -= scores.max(axis=-1, keepdims=True)
        p = np.exp(scores)
        p /= p.sum(axis=-1, keepdims=True)
        attn = np.einsum("hqk,khd->qhd", p, v).reshape(n, -1)
        x = x + attn @ layer["wo"].T
        x = x + mlp(config, layer, rms_norm(x, layer["mlp_norm"], config.eps))
    return rms_norm(x, w["norm"], config.eps) @ w["lm_head"].T


def _as_float64(weights: dict) -> dict:
    return {"embed": weights["embed"].astype(np.float64), "norm": weights["norm"].astype(np.float64),
            "lm_head": weights["lm_head"].astype(np.float64),
            "layers": [{key: value.astype(np.float64) for key, value in layer.items()} for layer in weights["layers"]]}


def prompt_tokens(request_id: int, length: int, vocab: int, seed: int = 0) -> list[int]:
    """The token ids of a request's prompt: seeded by (seed, request id), so every engine sees the same."""
    rng = np.random.default_rng([seed, request_id])
    return rng.integers(1, vocab, size=length).tolist()
