"""The GPU backend of the serving engine: the Llama-shaped model in torch, attention on our paged kernels.

- Weights: random on the device (seeded), or given as NumPy arrays (tests); fp16 or bf16; QKV and
  gate/up projections fused into one matrix each (one GEMM instead of three / two).
- KV: one paged cache per K and V, [layers, blocks + 1, kv_heads, block_size, head_dim]; the extra block
  is a scratch block that padding rows of a decode batch write to and read from.
- Prefill (eager): packed prompts through the GEMMs, K/V into the cache by our reshape_and_cache kernel,
  causal attention by torch SDPA per sequence, logits of each last position only.
- Decode: our split-K paged decode kernel (v3 for multi-head attention, v5 for grouped KV heads: the
  fastest of workloads/paged_attention on those shapes), launched through CuPy on torch's stream; the
  whole step (embedding, 32 layers, LM head, greedy argmax) is captured once per batch-size bucket as a
  CUDA graph and replayed, so a step costs its kernels, not Python.
- `attention="torch"` swaps both attention paths for plain torch (gather + SDPA): the check of the
  kernel path, and what runs where no cubins are built.
"""

from __future__ import annotations

import math

import numpy as np

from workloads.serving.model import ModelConfig, rope_tables

DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


def buckets(max_batch: int) -> list[int]:
    """Batch sizes a decode graph is captured for: 1, 2, 4, 8, then steps of 8 up to 32, of 16 up to 128,
    of 32 beyond (the padding a batch pays is under 25%)."""
    sizes = [1, 2, 4, 8, 16, 24, 32] + list(range(48, 129, 16)) + list(range(160, max(max_batch, 160) + 1, 32))
    out = sorted({min(s, max_batch) for s in sizes if s <= max_batch} | {max_batch})
    return out


class TorchRunner:
    backend = "cuda"

    def __init__(self, config: ModelConfig, *, num_blocks: int, block_size: int = 16, dtype: str = "bf16",
                 attention: str = "paged", kernels_dir=None, max_batch: int = 256, max_len: int = 2048,
                 seed: int = 0, weights: dict | None = None, cuda_graphs: bool = True, keep_logits: bool = False,
                 partition_tokens: int = 512, kernel: str = "auto") -> None:
        import torch

        self.torch = torch
        self.config = config
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.scratch_block = num_blocks
        self.dtype = getattr(torch, DTYPES[dtype])
        self.dtype_name = dtype
        self.attention = attention
        self.max_batch = max_batch
        self.max_len = max_len
        self.width = -(-max_len // block_size)
        self.keep_logits = keep_logits
        self.device = torch.device("cuda")
        from torch.nn.attention import SDPBackend, sdpa_kernel

        self._sdpa_kernel = sdpa_kernel     # once here, not per sequence and layer of every prefill
        self._prefill_backends = [getattr(SDPBackend, name) for name in self.PREFILL_SDPA]
        self._load_weights(weights, seed)
        c = config
        shape = (c.layers, num_blocks + 1, c.kv_heads, block_size, c.head_dim)
        self.k_cache = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.v_cache = torch.zeros(shape, dtype=self.dtype, device=self.device)
        cos, sin = rope_tables(c, max_len)
        self.cos = torch.from_numpy(cos).to(self.device)
        self.sin = torch.from_numpy(sin).to(self.device)
        self.scale = 1.0 / math.sqrt(c.head_dim)
        # static decode inputs (graphs read these)
        self.s_tokens = torch.zeros(max_batch, dtype=torch.int64, device=self.device)
        self.s_positions = torch.zeros(max_batch, dtype=torch.int64, device=self.device)
        self.s_slots = torch.zeros(max_batch, dtype=torch.int64, device=self.device)
        self.s_tables = torch.zeros((max_batch, self.width), dtype=torch.int32, device=self.device)
        self.s_lens = torch.ones(max_batch, dtype=torch.int32, device=self.device)
        self.graphs: dict[int, tuple] = {}
        if attention == "paged":
            self._setup_kernels(kernels_dir, partition_tokens, kernel)
        elif attention != "torch":
            raise ValueError(f"attention must be paged or torch, not {attention!r}")
        if cuda_graphs and attention == "paged":
            self._capture()

    # -- set-up ---------------------------------------------------------------------------------------
    def _load_weights(self, weights: dict | None, seed: int) -> None:
        torch, c = self.torch, self.config
        if weights is not None:
            def tensor(array):
                return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, self.dtype)
        else:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(seed)

            def tensor(shape_or_array, std=None, mean=0.0):
                out = torch.empty(shape_or_array, dtype=self.dtype, device=self.device)
                return out.normal_(mean, std, generator=generator)
        layers = []
        for index in range(c.layers):
            if weights is not None:
                src = weights["layers"][index]
                layers.append({key: tensor(value) for key, value in src.items()})
            else:
                layers.append({"attn_norm": tensor((c.hidden,), 0.1, 1.0),
                               "wqkv": tensor((c.qkv_dim, c.hidden), 1 / math.sqrt(c.hidden)),
                               "wo": tensor((c.hidden, c.q_heads * c.head_dim), 1 / math.sqrt(c.q_heads * c.head_dim)),
                               "mlp_norm": tensor((c.hidden,), 0.1, 1.0),
                               "w_gate_up": tensor((2 * c.intermediate, c.hidden), 1 / math.sqrt(c.hidden)),
                               "w_down": tensor((c.hidden, c.intermediate), 1 / math.sqrt(c.intermediate))})
        self.layers = layers
        if weights is not None:
            self.embed, self.norm, self.lm_head = (tensor(weights["embed"]), tensor(weights["norm"]),
                                                   tensor(weights["lm_head"]))
        else:
            self.embed = tensor((c.vocab, c.hidden), 1.0)
            self.norm = tensor((c.hidden,), 0.1, 1.0)
            self.lm_head = tensor((c.vocab, c.hidden), 1 / math.sqrt(c.hidden))

    def weight_bytes(self) -> int:
        tensors = [self.embed, self.norm, self.lm_head] + [t for layer in self.layers for t in layer.values()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def decode_weight_bytes(self) -> int:
        """Weights a decode step reads: all but the embedding table (of which it reads B rows)."""
        return self.weight_bytes() - self.embed.numel() * self.embed.element_size()

    def _setup_kernels(self, kernels_dir, partition_tokens: int, kernel: str) -> None:
        import cupy

        from workloads.paged_attention.kernels import KernelLibrary

        c = self.config
        self.cupy = cupy
        self.lib = KernelLibrary(kernels_dir)
        self.group = c.group
        if c.group not in (1, 2, 4, 8):
            raise ValueError(f"the paged kernels take KV groups of 1, 2, 4 or 8 query heads, not {c.group}")
        version = kernel if kernel != "auto" else ("v3" if c.group == 1 else "v5")
        self.kernel_version = version
        tname = {"fp16": "f16", "bf16": "bf16"}[self.dtype_name]
        self.k_decode = self.lib.function(f"decode_{version}", f"paged_decode_{version}_{tname}_d{c.head_dim}_g{c.group}")
        self.k_reduce = self.lib.function("decode_v2", f"paged_decode_v2_reduce_{tname}_d{c.head_dim}")
        self.k_cache_write = self.lib.function("reshape_and_cache", "reshape_and_cache_16b")
        self.shared_mem = self.lib.v5_ring_bytes(c.head_dim) if version == "v5" else 0
        if self.shared_mem and self.k_decode.max_dynamic_shared_size_bytes < self.shared_mem:
            self.k_decode.max_dynamic_shared_size_bytes = self.shared_mem
        self.partition_tokens = partition_tokens
        self.max_partitions = max(1, -(-self.max_len // partition_tokens))
        rows = self.max_batch * c.q_heads * self.max_partitions
        torch = self.torch
        self.part_o = torch.empty((rows, c.head_dim), dtype=torch.float32, device=self.device)
        self.part_m = torch.empty(rows, dtype=torch.float32, device=self.device)
        self.part_l = torch.empty(rows, dtype=torch.float32, device=self.device)

    def _stream(self):
        return self.cupy.cuda.ExternalStream(self.torch.cuda.current_stream().cuda_stream)

    @staticmethod
    def _ptr(tensor) -> np.uint64:
        return np.uint64(tensor.data_ptr())

    # -- model pieces ---------------------------------------------------------------------------------
    def _rope(self, x, cos, sin):
        half = x.shape[-1] // 2
        xf = x.float()
        x1, x2 = xf[..., :half], xf[..., half:]
        c, s = cos[:, None, :], sin[:, None, :]
        return self.torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype)

    def _write_cache(self, layer: int, k, v, slots) -> None:
        if self.attention == "paged":
            c = self.config
            vecs = c.head_dim * k.element_size() // 16
            with self._stream():
                self.k_cache_write((k.shape[0],), (min(256, c.kv_heads * vecs),),
                                   (self._ptr(k), self._ptr(v), self._ptr(self.k_cache[layer]),
                                    self._ptr(self.v_cache[layer]), self._ptr(slots), np.int32(c.kv_heads),
                                    np.int32(vecs), np.int32(self.block_size)))
        else:
            blocks, offsets = slots // self.block_size, slots % self.block_size
            self.k_cache[layer][blocks, :, offsets] = k
            self.v_cache[layer][blocks, :, offsets] = v

    def _layers(self, x, positions, slots, attend):
        torch, c = self.torch, self.config
        F = torch.nn.functional
        cos, sin = self.cos[positions], self.sin[positions]
        k_end = (c.q_heads + c.kv_heads) * c.head_dim
        for index, layer in enumerate(self.layers):
            h = F.rms_norm(x, (c.hidden,), layer["attn_norm"], c.eps)
            qkv = F.linear(h, layer["wqkv"])
            tokens = qkv.shape[0]
            # one rotary pass over the query and key heads together (fewer small kernels per layer)
            qk = self._rope(qkv[:, :k_end].view(tokens, c.q_heads + c.kv_heads, c.head_dim), cos, sin)
            q, k = qk[:, :c.q_heads].contiguous(), qk[:, c.q_heads:].contiguous()
            v = qkv[:, k_end:].reshape(tokens, c.kv_heads, c.head_dim).contiguous()
            self._write_cache(index, k, v, slots)
            x = x + F.linear(attend(index, q, k, v).reshape(tokens, -1), layer["wo"])
            h = F.rms_norm(x, (c.hidden,), layer["mlp_norm"], c.eps)
            gate, up = F.linear(h, layer["w_gate_up"]).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, layer["w_down"])
        return x

    def _logits(self, x):
        F = self.torch.nn.functional
        return F.linear(F.rms_norm(x, (self.config.hidden,), self.norm, self.config.eps), self.lm_head)

    # torch's SDPA backends for prefill (and the torch-attention engine). cuDNN's is left out: it builds a
    # plan for every new sequence length, 45 ms of host time on an H200 (66-69 ms for a 160-token prefill of
    # a new length against 15 ms for a repeated one), and every prompt of a trace, every re-prefill after a
    # preemption, has a new length. Flash and memory-efficient attention need no plan; math is the fallback.
    PREFILL_SDPA = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")

    def _sdpa(self, q, k, v, causal: bool):
        """q [n, Hq, D], k/v [m, Hkv, D] -> [n, Hq, D]."""
        F = self.torch.nn.functional
        with self._sdpa_kernel(self._prefill_backends):
            out = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None],
                                                 v.transpose(0, 1)[None], is_causal=causal,
                                                 enable_gqa=self.config.group > 1)
        return out[0].transpose(0, 1)

    # -- prefill --------------------------------------------------------------------------------------
    def prefill(self, prompts: list[list[int]], slot_mappings: list[np.ndarray]):
        torch = self.torch
        lengths = [len(p) for p in prompts]
        tokens = torch.from_numpy(np.concatenate([np.asarray(p, dtype=np.int64) for p in prompts])).to(self.device)
        positions = torch.from_numpy(np.concatenate([np.arange(n) for n in lengths])).to(self.device)
        slots = torch.from_numpy(np.concatenate(slot_mappings).astype(np.int64)).to(self.device)
        bounds = np.cumsum([0] + lengths)

        def attend(index, q, k, v):
            out = torch.empty_like(q)
            for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
                out[start:end] = self._sdpa(q[start:end], k[start:end], v[start:end], causal=True)
            return out

        with torch.inference_mode():
            x = self._layers(self.embed[tokens], positions, slots, attend)
            last = torch.from_numpy(bounds[1:] - 1).to(self.device)
            logits = self._logits(x[last]).float()
            next_tokens = logits.argmax(dim=-1).cpu().numpy()
        return next_tokens, (logits.cpu().numpy() if self.keep_logits else None)

    # -- decode ---------------------------------------------------------------------------------------
    def _paged_attention(self, layer: int, q, batch: int):
        c = self.config
        out = self.torch.empty_like(q)
        with self._stream():
            self.k_decode((self.max_partitions, c.q_heads // self.group, batch), (128,),
                          (self._ptr(q), self._ptr(self.k_cache[layer]), self._ptr(self.v_cache[layer]),
                           self._ptr(self.s_tables), self._ptr(self.s_lens), self._ptr(out),
                           self._ptr(self.part_o), self._ptr(self.part_m), self._ptr(self.part_l),
                           np.int32(c.q_heads), np.int32(c.kv_heads), np.int32(self.width),
                           np.int32(self.block_size.bit_length() - 1), np.float32(self.scale),
                           np.int32(self.partition_tokens), np.int32(self.max_partitions)),
                          shared_mem=self.shared_mem)
            if self.max_partitions > 1:
                self.k_reduce((c.q_heads, batch), (128,),
                              (self._ptr(self.part_o), self._ptr(self.part_m), self._ptr(self.part_l),
                               self._ptr(self.s_lens), self._ptr(out), np.int32(c.q_heads),
                               np.int32(self.partition_tokens), np.int32(self.max_partitions)))
        return out

    def _torch_attention(self, layer: int, q, batch: int):
        c, torch = self.config, self.torch
        out = torch.empty_like(q)
        lens = self.s_lens[:batch].tolist()
        tables = self.s_tables[:batch]
        for b in range(batch):
            n = lens[b]
            blocks = tables[b, :-(-n // self.block_size)].long()
            k = self.k_cache[layer][blocks].permute(0, 2, 1, 3).reshape(-1, c.kv_heads, c.head_dim)[:n]
            v = self.v_cache[layer][blocks].permute(0, 2, 1, 3).reshape(-1, c.kv_heads, c.head_dim)[:n]
            out[b] = self._sdpa(q[b:b + 1], k, v, causal=False)[0]
        return out

    def _decode_body(self, batch: int):
        attention = self._paged_attention if self.attention == "paged" else self._torch_attention
        x = self.embed[self.s_tokens[:batch]]
        x = self._layers(x, self.s_positions[:batch], self.s_slots[:batch],
                         lambda index, q, k, v: attention(index, q, batch))
        logits = self._logits(x)
        return logits.float().argmax(dim=-1), logits

    def _set_inputs(self, batch: int, tokens, positions, slots, tables, lens) -> None:
        """Copy one step's inputs into the static buffers, padding rows to `batch` (scratch block, length 1)."""
        torch = self.torch
        n = len(tokens)
        pad = batch - n
        scratch_slot = self.scratch_block * self.block_size
        host_tables = np.full((batch, self.width), self.scratch_block, dtype=np.int32)
        host_tables[:n, :tables.shape[1]] = tables
        # padded table columns are never read (lengths bound them)
        self.s_tokens[:batch].copy_(torch.from_numpy(np.concatenate([tokens, np.zeros(pad, np.int64)]).astype(np.int64)))
        self.s_positions[:batch].copy_(torch.from_numpy(np.concatenate([positions, np.zeros(pad, np.int64)]).astype(np.int64)))
        self.s_slots[:batch].copy_(torch.from_numpy(np.concatenate([slots, np.full(pad, scratch_slot)]).astype(np.int64)))
        self.s_lens[:batch].copy_(torch.from_numpy(np.concatenate([lens, np.ones(pad)]).astype(np.int32)))
        self.s_tables[:batch].copy_(torch.from_numpy(host_tables))

    def _capture(self) -> None:
        torch = self.torch
        pool = torch.cuda.graph_pool_handle()
        for batch in sorted(buckets(self.max_batch), reverse=True):
            self._set_inputs(batch, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
                             np.zeros((0, self.width), np.int32), np.zeros(0, np.int32))
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.inference_mode(), torch.cuda.stream(side):
                self._decode_body(batch)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(graph, pool=pool):
                outputs = self._decode_body(batch)
            self.graphs[batch] = (graph, outputs)
        torch.cuda.synchronize()

    def decode(self, tokens, positions, slots, block_tables, seq_lens):
        n = len(tokens)
        if n > self.max_batch:
            raise ValueError(f"decode batch {n} exceeds max_batch {self.max_batch}")
        if self.graphs:
            batch = next(b for b in sorted(self.graphs) if b >= n)
            self._set_inputs(batch, tokens, positions, slots, block_tables, seq_lens)
            graph, (next_tokens, logits) = self.graphs[batch]
            graph.replay()
        else:
            batch = n
            self._set_inputs(batch, tokens, positions, slots, block_tables, seq_lens)
            with self.torch.inference_mode():
                next_tokens, logits = self._decode_body(batch)
        out = next_tokens[:n].cpu().numpy()
        return out, (logits[:n].float().cpu().numpy() if self.keep_logits else None)

    # -- swapping -------------------------------------------------------------------------------------
    def swap_out(self, blocks: list[int]):
        index = self.torch.tensor(blocks, dtype=self.torch.int64, device=self.device)
        return self.k_cache[:, index].to("cpu"), self.v_cache[:, index].to("cpu")

    def swap_in(self, saved, blocks: list[int]) -> None:
        index = self.torch.tensor(blocks, dtype=self.torch.int64, device=self.device)
        self.k_cache[:, index] = saved[0].to(self.device)
        self.v_cache[:, index] = saved[1].to(self.device)

    def synchronize(self) -> None:
        self.torch.cuda.synchronize()


def reference_logits_torch(runner: TorchRunner, tokens: list[int]):
    """float32 logits [len(tokens), vocab] of one sequence from the runner's own weights, computed from
    scratch with causal SDPA and no cache: the plain PyTorch reference."""
    torch, c = runner.torch, runner.config
    F = torch.nn.functional
    with torch.inference_mode():
        ids = torch.tensor(tokens, dtype=torch.int64, device=runner.device)
        n = ids.numel()
        positions = torch.arange(n, device=runner.device)
        cos, sin = runner.cos[positions], runner.sin[positions]
        x = runner.embed[ids].float()
        q_end, k_end = c.q_heads * c.head_dim, (c.q_heads + c.kv_heads) * c.head_dim
        for layer in runner.layers:
            w = {key: value.float() for key, value in layer.items()}
            h = F.rms_norm(x, (c.hidden,), w["attn_norm"], c.eps)
            qkv = h @ w["wqkv"].T
            q = runner._rope(qkv[:, :q_end].view(n, c.q_heads, c.head_dim), cos, sin)
            k = runner._rope(qkv[:, q_end:k_end].view(n, c.kv_heads, c.head_dim), cos, sin)
            v = qkv[:, k_end:].reshape(n, c.kv_heads, c.head_dim)
            x = x + runner._sdpa(q, k, v, causal=True).reshape(n, -1) @ w["wo"].T
            h = F.rms_norm(x, (c.hidden,), w["mlp_norm"], c.eps)
            gate, up = (h @ w["w_gate_up"].T).chunk(2, dim=-1)
            x = x + (F.silu(gate) * up) @ w["w_down"].T
        return (F.rms_norm(x, (c.hidden,), runner.norm.float(), c.eps) @ runner.lm_head.float().T).cpu().numpy()
