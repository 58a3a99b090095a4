"""Decode step of the engine on paged KV (our kernel) vs the same step on contiguous KV (torch SDPA).

CLI: python -m workloads.serving.stepbench --out FILE [--shapes 32x1024,96x512] [--kernels build/paged]

For each (batch, context) shape: the Llama-2-7B-shaped model (random bf16 weights), every sequence holding
`context` tokens of random KV, one decode step captured as a CUDA graph twice: attention by our paged
kernel through shuffled block tables (the engine's path), and attention by torch SDPA over a contiguous
[batch, heads, context + 1, head_dim] cache per layer (what a reservation engine with contiguous KV would
run). Everything else in the step is the same code. Rounds alternate the two graphs; medians of CUDA-event
times. The issue's target: paged within 10 % of contiguous at equal batch.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import numpy as np

from workloads.common.results import write_results
from workloads.serving.model import model_config
from workloads.serving.serve import gpu_state

# Relative logit error allowed between the paged and the contiguous step before anything is timed: the two
# differ only in attention's summation order, which bf16 through 32 random-weight layers turns into 2.8-2.9e-2
# (measured on an H200); a wrong kernel or block table gives an error of order 1.
LOGIT_TOLERANCE = 5e-2


def bench_shape(torch, batch: int, context: int, kernels, rounds: int, seed: int) -> dict:
    from workloads.serving.runner_gpu import TorchRunner

    c = model_config("llama-7b")
    blocks_per_seq = -(-(context + 1) // 16)
    max_len = blocks_per_seq * 16
    runner = TorchRunner(c, num_blocks=batch * blocks_per_seq, dtype="bf16", kernels_dir=kernels, max_batch=batch,
                         max_len=max_len, seed=seed, cuda_graphs=False)
    runner.k_cache.normal_()
    runner.v_cache.normal_()
    rng = np.random.default_rng(seed)
    tables = rng.permutation(batch * blocks_per_seq).astype(np.int32).reshape(batch, blocks_per_seq)
    positions = np.full(batch, context, dtype=np.int64)
    slots = tables[:, context // 16].astype(np.int64) * 16 + context % 16
    tokens = rng.integers(1, c.vocab, batch).astype(np.int64)
    runner._set_inputs(batch, tokens, positions, slots, tables, (positions + 1).astype(np.int32))
    shape = (c.layers, batch, c.kv_heads, context + 1, c.head_dim)
    # the same KV, laid out contiguously per sequence (gathered through the block tables)
    k_contig = torch.empty(shape, dtype=runner.dtype, device="cuda")
    v_contig = torch.empty(shape, dtype=runner.dtype, device="cuda")
    index_t = torch.from_numpy(tables).long().cuda()
    for layer in range(c.layers):
        for paged, contig in ((runner.k_cache, k_contig), (runner.v_cache, v_contig)):
            gathered = paged[layer][index_t].permute(0, 2, 1, 3, 4).reshape(batch, c.kv_heads, -1, c.head_dim)
            contig[layer].copy_(gathered[:, :, :context + 1])
    F = torch.nn.functional

    def contiguous_body():
        def attend(index, q, k, v):
            k_contig[index][:, :, context] = k
            v_contig[index][:, :, context] = v
            out = F.scaled_dot_product_attention(q[:, :, None], k_contig[index], v_contig[index],
                                                 enable_gqa=c.group > 1)
            return out[:, :, 0]

        x = runner.embed[runner.s_tokens[:batch]]
        x = runner._layers(x, runner.s_positions[:batch], runner.s_slots[:batch], attend)
        return runner._logits(x)

    tname = "bf16"
    variants = {}
    for version in ("v2", "v3", "v5"):
        if version == "v5" and c.group == 1:
            continue  # v5 is the grouped-query kernel (the paged notes: v2/v3 lead for MHA)
        variants[f"paged-{version}"] = runner.lib.function(f"decode_{version}",
                                                           f"paged_decode_{version}_{tname}_d{c.head_dim}_g{c.group}")

    def paged_body():
        return runner._decode_body(batch)[1]

    graphs, outputs = {}, {}
    with torch.inference_mode():
        bodies = [(name, paged_body, kernel) for name, kernel in variants.items()] + [("contiguous", contiguous_body, None)]
        for name, body, kernel in bodies:
            if kernel is not None:
                runner.k_decode = kernel  # baked into the graph at capture
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                outputs[name] = body().float()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                body()
            graphs[name] = graph
    torch.cuda.synchronize()
    reference = outputs["contiguous"]
    errors = {name: float((out - reference).norm() / reference.norm()) for name, out in outputs.items()}
    wrong = {name: error for name, error in errors.items() if error > LOGIT_TOLERANCE}
    if wrong:  # verified before timing: a wrong step is not timed
        raise RuntimeError(f"batch {batch} x context {context}: logits differ from the contiguous step by "
                           + ", ".join(f"{name} {error:.2e}" for name, error in wrong.items())
                           + f" (relative; tolerance {LOGIT_TOLERANCE:g})")
    times = {name: [] for name in graphs}
    for _ in range(rounds):
        for name, graph in graphs.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(5):
                graph.replay()
            end.record()
            end.synchronize()
            times[name].append(start.elapsed_time(end) / 5e3)
    paged_name = f"paged-{runner.kernel_version}"  # the engine's choice
    ratios = np.array(times[paged_name]) / np.array(times["contiguous"])
    weights = runner.decode_weight_bytes()
    kv = batch * (context + 1) * c.kv_bytes_per_token()
    result = {"batch": batch, "context": context, "kernel": runner.kernel_version,
              "paged_step_s": float(np.median(times[paged_name])), "contiguous_step_s": float(np.median(times["contiguous"])),
              "step_s": {name: float(np.median(values)) for name, values in times.items()},
              "paged_over_contiguous": float(np.median(ratios)), "ratio_p10_p90": [float(np.percentile(ratios, 10)),
                                                                                 float(np.percentile(ratios, 90))],
              "step_bytes": weights + kv, "rounds": rounds,
              "logits_rel_err_vs_contiguous": errors}
    return result  # the runner, caches and graphs are freed with this frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workloads.serving.stepbench", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--shapes", default="32x1024,96x512", help="batch x context pairs")
    parser.add_argument("--kernels", type=Path, default=Path("build/paged"))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from workloads.common.device import cuda_available

    if not cuda_available():
        write_results(args.out, {"task": "serving:stepbench", "backend": "cpu",
                                 "skipped": "no CUDA device: the decode-step comparison runs on a GPU"})
        print(f"stepbench: no CUDA device, nothing measured -> {args.out}")
        return 0
    import torch

    shapes = [tuple(int(v) for v in text.split("x")) for text in args.shapes.split(",")]
    before = gpu_state()
    results = []
    for batch, context in shapes:
        try:
            results.append(bench_shape(torch, batch, context, args.kernels, args.rounds, args.seed))
        except RuntimeError as error:
            print(f"stepbench: {error}; nothing written", file=sys.stderr)
            return 1
        gc.collect()
        torch.cuda.empty_cache()
    write_results(args.out, {"task": "serving:stepbench", "backend": "cuda", "model": model_config("llama-7b").as_dict(),
                             "dtype": "bf16", "shapes": results, "gpu_before": before, "gpu_after": gpu_state()})
    for r in results:
        print(f"batch {r['batch']} context {r['context']}: paged {1e3 * r['paged_step_s']:.2f} ms, contiguous SDPA "
              f"{1e3 * r['contiguous_step_s']:.2f} ms, paged/contiguous {r['paged_over_contiguous']:.3f} "
              f"[{r['ratio_p10_p90'][0]:.3f}, {r['ratio_p10_p90'][1]:.3f}], step bytes {r['step_bytes'] / 1e9:.1f} GB; "
              + ", ".join(f"{name} {1e3 * t:.2f} ms" for name, t in r["step_s"].items())
              + "; logits rel. err vs contiguous " + ", ".join(f"{k} {v:.1e}" for k, v in r["logits_rel_err_vs_contiguous"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
