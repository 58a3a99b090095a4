"""Serve a trace through one engine at one request rate and write its metrics (one point of the sweep).

CLI: python -m workloads.serving.serve TRACE --engine paged|reservation --rate R --out FILE
        [--duration S [--min-requests M]] [--num N] [--backend auto|cpu|cuda] [--model llama-7b]
        [--dtype bf16] [--kv-tokens 15360] [--max-len 2048] [--preemption recompute|swap]
        [--kernels build/paged] [--slo-ttft 1] [--slo-tpot 0.1]

The trace's arrival times are rescaled to `--rate` (a Poisson process scaled in time is a Poisson process
of the new rate, so every rate sees the same requests in the same order). `--duration S` serves the
requests arriving in the first S seconds (at least `--min-requests`): every rate then sees the same span
of arrivals, so a rate over an engine's capacity queues for as long at every point of the sweep, and the
run is long against a request's lifetime (a few seconds), which a fixed count of requests is not at high
rates. `--num N` serves the first N instead (or caps the window). Backend cpu runs the `tiny` model
through the NumPy runner (results say `backend: cpu`); cuda runs the chosen shape with random weights on
the GPU, attention on our paged kernels (built in --kernels), and records the GPU's UUID, clocks and
power limit before and after.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

from workloads.common.device import cuda_available
from workloads.common.results import write_results
from workloads.serving import metrics
from workloads.serving.engine import Engine, EngineConfig, PagedKV, ReservedKV, sequences_from_trace
from workloads.serving.model import init_weights_numpy, model_config
from workloads.serving.traces import TraceError, read_trace

GPU_QUERY = "uuid,name,driver_version,power.limit,clocks.sm,clocks.mem,clocks.max.sm,temperature.gpu,power.draw"


def gpu_state() -> dict | None:
    """nvidia-smi's view of the CUDA device this process uses, found by its PCI bus id (so the GPU nxrun
    granted through CUDA_VISIBLE_DEVICES, not nvidia-smi's GPU 0); None without nvidia-smi."""
    try:
        import cupy

        device = cupy.cuda.Device().pci_bus_id
    except Exception:  # noqa: BLE001 -- no CuPy or no device: nvidia-smi's first GPU is the best guess
        device = "0"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={GPU_QUERY}", "--format=csv,noheader,nounits", "-i", device],
                             capture_output=True, text=True, timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return dict(zip(GPU_QUERY.split(","), [part.strip() for part in out.split(",")]))


def make_runner(backend: str, model: str, *, num_blocks: int, block_size: int, max_batch: int, max_len: int,
                dtype: str, kernels, seed: int, keep_logits: bool = False, attention: str = "paged"):
    if backend == "cpu":
        from workloads.serving.runner_cpu import NumpyRunner

        config = model_config(model)
        return NumpyRunner(config, init_weights_numpy(config, seed), num_blocks, block_size, keep_logits=keep_logits)
    from workloads.serving.runner_gpu import TorchRunner

    return TorchRunner(model_config(model), num_blocks=num_blocks, block_size=block_size, dtype=dtype,
                       attention=attention, kernels_dir=kernels, max_batch=max_batch, max_len=max_len, seed=seed,
                       keep_logits=keep_logits)


def make_kv(engine: str, num_blocks: int, block_size: int, max_len: int):
    if engine == "paged":
        return PagedKV(num_blocks, block_size)
    if engine == "reservation":
        return ReservedKV(num_blocks, block_size, max_len)
    raise ValueError(f"unknown engine {engine!r} (paged or reservation)")


def serve(args) -> dict:
    header, requests = read_trace(args.trace)
    backend = args.backend
    if backend == "auto":
        backend = "cuda" if cuda_available() else "cpu"
    base_rate = header["rate"]
    if args.rate == "inf" or (isinstance(args.rate, float) and math.isinf(args.rate)):
        scale = 0.0
    elif base_rate == "inf":
        raise ValueError(f"{args.trace}: an offline trace (rate inf) cannot be rescaled to {args.rate} req/s")
    else:
        scale = float(base_rate) / args.rate
    cpu_num = backend == "cpu" and args.cpu_num
    requests = select_requests(requests, scale, duration=None if cpu_num else args.duration,
                               min_requests=args.min_requests, num=args.cpu_num if cpu_num else args.num,
                               where=f"{args.trace} at {args.rate} req/s")
    model = args.model or ("tiny" if backend == "cpu" else "llama-7b")
    config = model_config(model)
    block_size = 16
    num_blocks = args.kv_tokens // block_size
    started = time.perf_counter()
    runner = make_runner(backend, model, num_blocks=num_blocks, block_size=block_size, max_batch=args.max_batch,
                         max_len=args.max_len, dtype=args.dtype, kernels=args.kernels, seed=args.seed)
    setup_s = time.perf_counter() - started
    kv = make_kv(args.engine, num_blocks, block_size, args.max_len)
    engine = Engine(runner, kv, EngineConfig(max_batch=args.max_batch, max_batched_tokens=args.max_batched_tokens,
                                             preemption=args.preemption, max_len=args.max_len))
    seqs = sequences_from_trace(requests, config.vocab, seed=args.seed, time_scale=scale)
    before = gpu_state() if backend == "cuda" else None
    wall = time.perf_counter()
    finished = engine.run(seqs)
    wall = time.perf_counter() - wall
    after = gpu_state() if backend == "cuda" else None
    records = [seq.record() for seq in finished]
    result = metrics.compute(records, engine.iterations, kv.capacity_tokens(), slo_ttft_s=args.slo_ttft,
                             slo_tpot_s=args.slo_tpot)
    decode = [it for it in engine.iterations if it["kind"] == "decode"]
    return {
        "task": "serving:engine", "backend": backend, "engine": args.engine, "rate": args.rate,
        "trace": {"path": str(args.trace), "dataset": header.get("dataset"), "requests": len(requests),
                  "base_rate": base_rate, "seed": header.get("seed"),
                  "duration_s": None if cpu_num else args.duration, "min_requests": args.min_requests,
                  "arrival_span_s": requests[-1].arrival_s * scale if requests else 0.0},
        "model": config.as_dict(), "dtype": args.dtype if backend == "cuda" else "float32",
        "config": {"kv_tokens": kv.capacity_tokens(), "block_size": block_size, "max_len": args.max_len,
                   "max_batch": args.max_batch, "max_batched_tokens": args.max_batched_tokens,
                   "preemption": args.preemption, "clock": "virtual (measured iteration times, idle skipped)",
                   "kernel": getattr(runner, "kernel_version", None), "cuda_graphs": bool(getattr(runner, "graphs", None)),
                   "prefill_sdpa": list(getattr(runner, "PREFILL_SDPA", ()))},
        "metrics": result,
        "preemptions_by_mode": engine.preemptions,
        "decode_step_s": metrics._stats([it["elapsed_s"] for it in decode]),
        "setup_s": setup_s, "run_wall_s": wall,
        "gpu_before": before, "gpu_after": after,
    }


def select_requests(requests: list, scale: float, *, duration: float | None, min_requests: int, num: int,
                    where: str) -> list:
    """The requests one sweep point serves: those arriving (after rescaling by `scale`) before `duration`
    seconds, at least `min_requests` of them; or, without a duration, the first `num` (0: all). A trace too
    short for the window is an error, not a silently shorter run."""
    if duration is None:
        return requests[:num] if num else list(requests)
    inside = sum(1 for r in requests if r.arrival_s * scale < duration)
    wanted = max(inside, min_requests)
    if num:
        wanted = min(wanted, num)
    if wanted > len(requests) or (inside == len(requests) and not num):
        span = requests[-1].arrival_s * scale if requests else 0.0
        raise ValueError(f"{where}: the trace's {len(requests)} requests arrive within {span:.1f} s, shorter than "
                         f"the {duration:g} s window (or {min_requests} requests) asked for; generate a longer "
                         "trace (traces --num) or shorten --duration")
    return requests[:wanted]


def _rate(text: str):
    if text == "inf":
        return float("inf")
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"the rate must be positive requests/s, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workloads.serving.serve", description=__doc__.split("\n")[0])
    parser.add_argument("trace", type=Path)
    parser.add_argument("--engine", required=True, choices=["paged", "reservation"])
    parser.add_argument("--rate", required=True, type=_rate, help="requests/s the trace is rescaled to (inf: all at 0)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--duration", type=float, default=None,
                        help="serve the requests arriving in the first S seconds at --rate (the same span at every rate)")
    parser.add_argument("--min-requests", type=int, default=0, help="with --duration: serve at least this many")
    parser.add_argument("--num", type=int, default=0, help="serve the first N requests (0: all; with --duration: a cap)")
    parser.add_argument("--cpu-num", type=int, default=0, help="requests served on the cpu backend (0: --num)")
    parser.add_argument("--backend", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--model", default=None, help="model shape (default: llama-7b on cuda, tiny on cpu)")
    parser.add_argument("--dtype", default="bf16", choices=["fp16", "bf16"])
    parser.add_argument("--kv-tokens", type=int, default=15360, help="KV cache size in token slots")
    parser.add_argument("--max-len", type=int, default=2048)
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--max-batched-tokens", type=int, default=8192)
    parser.add_argument("--preemption", default="recompute", choices=["recompute", "swap"])
    parser.add_argument("--kernels", type=Path, default=Path("build/paged"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slo-ttft", type=float, default=1.0, help="goodput SLO: time to first token (s)")
    parser.add_argument("--slo-tpot", type=float, default=0.1, help="goodput SLO: time per output token (s)")
    args = parser.parse_args(argv)
    try:
        payload = serve(args)
    except (TraceError, ValueError, FileNotFoundError) as error:
        print(f"serve: {error}", file=sys.stderr)
        return 2
    write_results(args.out, payload)
    m = payload["metrics"]
    print(f"serve {payload['engine']} ({payload['backend']}, {payload['model']['name']}) at {args.rate} req/s: "
          f"{m['requests']} requests, normalized latency {m['normalized_latency_s_per_token']:.4f} s/token, "
          f"{m['throughput_req_s']:.2f} req/s, {m['throughput_output_tok_s']:.0f} tok/s, "
          f"TTFT p50 {m['ttft_s']['p50']:.3f} s, preemptions {m['preemptions']}, "
          f"KV allocated mean {100 * m['kv']['allocated_mean']:.1f}% -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
