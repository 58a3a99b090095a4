"""Offline throughput against the peer: our paged engine vs transformers' continuous batching, same call.

CLI: python -m workloads.serving.peer --out FILE [--num 256] [--output-len 256] [--kernels build/paged]
        [--skip-transformers] [--rounds 2]

Workload (issue 13): a random-weight Llama-2-7B shape in bf16; `--num` prompts with lognormal lengths
(mean 156 tokens, at most 1024, sigma 1, seeded); `--output-len` new tokens each; EOS off; all submitted
at once. Rounds alternate ours and transformers' (ours, theirs, ours, ...), each timed from submission to
the last token. Beside them, the physical bound: every decode step of our run must read the weights
(all but the embedding table) and the KV of every running sequence; those bytes over the measured read
bandwidth of the device give the fastest any engine could decode that schedule.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np

from workloads.common.results import write_results
from workloads.serving.engine import Engine, EngineConfig, PagedKV, Sequence
from workloads.serving.lengths import fit_mu
from workloads.serving.model import model_config, prompt_tokens
from workloads.serving.serve import gpu_state


def prompts(num: int, seed: int, vocab: int) -> list[list[int]]:
    lengths = fit_mu(156, 1.0, 1024).sample(np.random.default_rng(seed), num)
    return [prompt_tokens(i, int(n), vocab, seed) for i, n in enumerate(lengths)]


def read_bandwidth(torch, kernels) -> float:
    """Bytes/s of our read kernel over a 4 GiB buffer (median of 20)."""
    import cupy

    from workloads.paged_attention.kernels import KernelLibrary, read_reduce

    data = torch.randn(1 << 31, dtype=torch.bfloat16, device="cuda")  # 4 GiB
    lib = KernelLibrary(kernels)
    sm = torch.cuda.get_device_properties(0).multi_processor_count
    result = cupy.zeros(1, dtype=cupy.uint64)
    view = cupy.from_dlpack(data.view(torch.int16))
    times = []
    for _ in range(23):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        with cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
            read_reduce(lib, view, result, sm)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del data, view
    return (1 << 32) / float(np.median(times[3:]))


def run_ours(torch, prompt_ids, output_len: int, kernels, seed: int) -> dict:
    from workloads.serving.runner_gpu import TorchRunner

    config = model_config("llama-7b")
    max_len = max(len(p) for p in prompt_ids) + output_len
    max_len = -(-max_len // 16) * 16
    weights_bytes = (config.parameters()) * 2
    free, _ = torch.cuda.mem_get_info()
    block_bytes = config.kv_bytes_per_token() * 16
    num_blocks = int((free - weights_bytes - (6 << 30)) // block_bytes)
    num_blocks = min(num_blocks, -(-len(prompt_ids) * max_len // 16))
    setup = time.perf_counter()
    runner = TorchRunner(config, num_blocks=num_blocks, dtype="bf16", kernels_dir=kernels, max_batch=len(prompt_ids),
                         max_len=max_len, seed=seed)
    setup = time.perf_counter() - setup
    # warm-up: one short request through prefill and decode
    warm = Engine(runner, PagedKV(num_blocks, 16), EngineConfig(max_len=max_len, max_batch=len(prompt_ids)))
    warm.run([Sequence(0, 0.0, prompt_ids[0][:32], 4)])
    kv = PagedKV(num_blocks, 16)
    engine = Engine(runner, kv, EngineConfig(max_len=max_len, max_batch=len(prompt_ids), max_batched_tokens=16384))
    seqs = [Sequence(i, 0.0, p, output_len) for i, p in enumerate(prompt_ids)]
    start = time.perf_counter()
    done = engine.run(seqs)
    torch.cuda.synchronize()
    wall = time.perf_counter() - start
    tokens = sum(len(s.output) for s in done)
    decode = [it for it in engine.iterations if it["kind"] == "decode"]
    prefill = [it for it in engine.iterations if it["kind"] == "prefill"]
    weight_read = runner.decode_weight_bytes()
    kv_read = sum(it["token_states"] for it in decode) * config.kv_bytes_per_token()
    out = {"engine": "ours (paged, CUDA graphs)", "wall_s": wall, "generated_tokens": tokens,
           "tokens_per_s": tokens / wall, "setup_s": setup, "kv_blocks": num_blocks, "kernel": runner.kernel_version,
           "decode_steps": len(decode), "decode_s": sum(it["elapsed_s"] for it in decode),
           "prefill_iterations": len(prefill), "prefill_s": sum(it["elapsed_s"] for it in prefill),
           "preemptions": engine.preemptions, "mean_decode_batch": float(np.mean([it["batch"] for it in decode])),
           "decode_bytes": len(decode) * weight_read + kv_read, "weight_bytes_per_step": weight_read,
           "step_s_by_batch": {}}
    for low, high in ((1, 64), (65, 192), (193, 100000)):
        steps = [it["elapsed_s"] for it in decode if low <= it["batch"] <= high]
        if steps:
            out["step_s_by_batch"][f"{low}-{high}"] = float(np.median(steps))
    full = [it for it in decode if it["batch"] == len(prompt_ids)]
    if full:
        out["full_batch_step_s"] = float(np.median([it["elapsed_s"] for it in full]))
        out["full_batch_step_bytes"] = float(np.median([weight_read + it["token_states"] * config.kv_bytes_per_token()
                                                        for it in full]))
    del runner, engine, warm
    gc.collect()
    torch.cuda.empty_cache()
    return out


def run_transformers(torch, prompt_ids, output_len: int, seed: int) -> dict:
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.generation import GenerationConfig

    c = model_config("llama-7b")
    config = LlamaConfig(vocab_size=c.vocab, hidden_size=c.hidden, intermediate_size=c.intermediate,
                         num_hidden_layers=c.layers, num_attention_heads=c.q_heads, num_key_value_heads=c.kv_heads,
                         max_position_embeddings=c.max_len, rms_norm_eps=c.eps, tie_word_embeddings=False)
    torch.manual_seed(seed)
    setup = time.perf_counter()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model = model.to(torch.bfloat16).eval()
    setup = time.perf_counter() - setup
    generation = GenerationConfig(max_new_tokens=output_len, min_new_tokens=output_len, do_sample=False,
                                  eos_token_id=None, pad_token_id=0)
    start = time.perf_counter()
    with torch.no_grad():
        outputs = model.generate_batch(inputs=prompt_ids, generation_config=generation, progress_bar=False)
    torch.cuda.synchronize()
    wall = time.perf_counter() - start
    tokens = 0
    for output in outputs.values():
        generated = getattr(output, "generated_tokens", None)
        tokens += len(generated) if generated is not None else 0
    if tokens == 0:
        raise RuntimeError(f"transformers generated no tokens for {len(prompt_ids)} prompts (see its log)")
    del model, outputs
    gc.collect()
    torch.cuda.empty_cache()
    return {"engine": f"transformers {transformers.__version__} generate_batch (continuous batching)",
            "wall_s": wall, "generated_tokens": tokens, "tokens_per_s": tokens / wall, "setup_s": setup}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workloads.serving.peer", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--num", type=int, default=256)
    parser.add_argument("--output-len", type=int, default=256)
    parser.add_argument("--kernels", type=Path, default=Path("build/paged"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1, help="rounds of (ours, transformers); ours runs once more")
    parser.add_argument("--skip-transformers", action="store_true")
    args = parser.parse_args(argv)
    from workloads.common.device import cuda_available

    if not cuda_available():
        write_results(args.out, {"task": "serving:peer", "backend": "cpu",
                                 "skipped": "no CUDA device: the offline comparison with transformers runs on a GPU"})
        print(f"peer: no CUDA device, nothing measured -> {args.out}")
        return 0
    import torch

    config = model_config("llama-7b")
    prompt_ids = prompts(args.num, args.seed, config.vocab)
    before = gpu_state()
    bandwidth = read_bandwidth(torch, args.kernels)
    runs = []
    for round_index in range(args.rounds):
        runs.append({"round": round_index, **run_ours(torch, prompt_ids, args.output_len, args.kernels, args.seed)})
        print(json.dumps({k: v for k, v in runs[-1].items() if not isinstance(v, dict)}), flush=True)
        if not args.skip_transformers:
            try:
                runs.append({"round": round_index, **run_transformers(torch, prompt_ids, args.output_len, args.seed)})
            except Exception as error:  # noqa: BLE001 -- the peer's failure is a result, not a crash
                runs.append({"round": round_index, "engine": "transformers", "error": f"{type(error).__name__}: {error}"})
            print(json.dumps(runs[-1]), flush=True)
    runs.append({"round": args.rounds, **run_ours(torch, prompt_ids, args.output_len, args.kernels, args.seed)})
    after = gpu_state()
    ours = [r for r in runs if r["engine"].startswith("ours")]
    theirs = [r for r in runs if r["engine"].startswith("transformers") and r.get("tokens_per_s")]
    best = max(ours, key=lambda r: r["tokens_per_s"])
    bound_s = best["decode_bytes"] / bandwidth
    summary = {
        "ours_tokens_per_s": [r["tokens_per_s"] for r in ours],
        "transformers_tokens_per_s": [r["tokens_per_s"] for r in theirs],
        "read_bandwidth_bytes_per_s": bandwidth,
        "decode_bound_s": bound_s,
        "bound_tokens_per_s": best["generated_tokens"] / bound_s,
        "ratio_ours_over_transformers": (float(np.median([r["tokens_per_s"] for r in ours]))
                                         / float(np.median([r["tokens_per_s"] for r in theirs])) if theirs else None),
    }
    if "full_batch_step_s" in best:
        summary["full_batch_step_s"] = best["full_batch_step_s"]
        summary["full_batch_step_bound_s"] = best["full_batch_step_bytes"] / bandwidth
    write_results(args.out, {"task": "serving:peer", "backend": "cuda", "model": config.as_dict(), "dtype": "bf16",
                             "workload": {"prompts": args.num, "input_mean_target": 156, "input_max": 1024,
                                          "input_lengths_mean": float(np.mean([len(p) for p in prompt_ids])),
                                          "output_len": args.output_len, "eos": "off", "arrival": "all at once"},
                             "runs": runs, "summary": summary, "gpu_before": before, "gpu_after": after})
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
