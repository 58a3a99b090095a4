"""Synthetic serving request traces: Poisson arrivals, token lengths fitted to published dataset means.

CLI: python -m workloads.serving.traces --dataset sharegpt|alpaca --rate R --num N --seed S --out F.jsonl
     [--sigma S] [--max-input T] [--max-output T]

A trace is JSON lines: first a header `{"trace": {...}}` (dataset, the fitted distributions, rate, seed,
sample statistics), then one request per line `{"id", "arrival_s", "input_len", "output_len"}` in arrival
order. Nothing in it depends on the clock or the machine, so the same arguments give the same bytes (and
the cached task's dependents see an unchanged input).

Lengths: input and output drawn independently, each a rounded lognormal on [1, cap] (draws above the cap
redrawn) whose mean on that range equals the dataset's published mean (workloads/serving/lengths.py); sigma =
1.0 by default (workloads/serving/NOTES.md says why, and what the replay does with other values). Arrivals: a Poisson process,
exponential gaps of mean 1/rate; `--rate inf` submits everything at t = 0 (an offline batch). No dataset is
downloaded: only the published means are used.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from workloads.serving.lengths import fit_mu

TRACE_FORMAT = 1

# Mean input / output tokens as the PagedAttention paper (SOSP 2023, section 6.1 and Figure 11) reports them
# for its ShareGPT and Alpaca workloads (OPT tokenizer).
DATASET_MEANS: dict[str, tuple[float, float]] = {"sharegpt": (161.0, 338.0), "alpaca": (19.0, 58.0)}

DEFAULT_SIGMA = 1.0
# vLLM's benchmark samplers keep prompts <= 1024 tokens and prompt + output <= 2048 (OPT's context); capping
# each side at 1024 keeps every request within a 2048-token model.
DEFAULT_MAX_INPUT = 1024
DEFAULT_MAX_OUTPUT = 1024


class TraceError(ValueError):
    """A trace file that cannot be read: the message names the file, the line and what to do."""


@dataclass(frozen=True)
class Request:
    id: int
    arrival_s: float
    input_len: int
    output_len: int

    @property
    def total_len(self) -> int:
        return self.input_len + self.output_len


def poisson_arrivals(rng: np.random.Generator, rate: float, num: int) -> np.ndarray:
    """Arrival times (s) of `num` requests of a Poisson process of `rate` requests/s; all 0 when rate is inf."""
    if not rate > 0:
        raise ValueError(f"the request rate must be positive (or inf), got {rate}")
    if math.isinf(rate):
        return np.zeros(num)
    return np.cumsum(rng.exponential(1.0 / rate, num))


def generate(dataset: str, rate: float, num: int, seed: int, *, sigma: float = DEFAULT_SIGMA,
             max_input: int = DEFAULT_MAX_INPUT, max_output: int = DEFAULT_MAX_OUTPUT) -> tuple[dict, list[Request]]:
    """(header, requests) of a trace. Arrivals, input and output lengths use independent seeded streams."""
    if dataset not in DATASET_MEANS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(DATASET_MEANS))}")
    if num <= 0:
        raise ValueError(f"--num must be positive, got {num}")
    input_mean, output_mean = DATASET_MEANS[dataset]
    input_dist = fit_mu(input_mean, sigma, max_input)
    output_dist = fit_mu(output_mean, sigma, max_output)
    arrival_rng, input_rng, output_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    arrivals = poisson_arrivals(arrival_rng, rate, num)
    inputs = input_dist.sample(input_rng, num)
    outputs = output_dist.sample(output_rng, num)
    requests = [Request(i, round(float(arrivals[i]), 6), int(inputs[i]), int(outputs[i])) for i in range(num)]
    header = {
        "format": TRACE_FORMAT, "dataset": dataset, "num": num, "seed": seed,
        "rate": "inf" if math.isinf(rate) else rate,
        "lengths": {
            name: {"family": "lognormal, rounded, on [1, max] (longer draws redrawn)", "target_mean": target, "mu": dist.mu,
                   "sigma": dist.sigma, "min": 1, "max": dist.cap, "expected_mean": dist.mean(),
                   "sample_mean": float(values.mean()), "sample_p50": float(np.median(values)),
                   "sample_p99": float(np.percentile(values, 99)), "share_at_max": float((values == dist.cap).mean())}
            for name, target, dist, values in (("input", input_mean, input_dist, inputs),
                                               ("output", output_mean, output_dist, outputs))},
        "sample_mean_gap_s": float(np.diff(arrivals, prepend=0.0).mean()),
    }
    return header, requests


def write_trace(path: Path | str, header: dict, requests: list[Request]) -> None:
    """Write the trace atomically (temporary file, then rename), one JSON document per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps({"trace": header}, sort_keys=True) + "\n")
            for request in requests:
                handle.write(json.dumps(asdict(request), sort_keys=True) + "\n")
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def _parse_request(document, where: str) -> Request:
    if not isinstance(document, dict):
        raise TraceError(f"{where}: expected a request object, got {type(document).__name__}")
    missing = [key for key in ("id", "arrival_s", "input_len", "output_len") if key not in document]
    if missing:
        raise TraceError(f"{where}: request lacks {', '.join(missing)}; regenerate the trace with "
                         "python -m workloads.serving.traces")
    for key in ("id", "input_len", "output_len"):
        if not isinstance(document[key], int) or isinstance(document[key], bool):
            raise TraceError(f"{where}: {key} must be an integer, got {document[key]!r}")
    arrival = document["arrival_s"]
    if not isinstance(arrival, (int, float)) or isinstance(arrival, bool) or not math.isfinite(arrival) or arrival < 0:
        raise TraceError(f"{where}: arrival_s must be a finite number >= 0, got {arrival!r}")
    if document["input_len"] < 1 or document["output_len"] < 1:
        raise TraceError(f"{where}: input_len and output_len must be at least 1 token, got "
                         f"{document['input_len']} and {document['output_len']}")
    return Request(document["id"], float(arrival), document["input_len"], document["output_len"])


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with open(path) as handle:
            yield from enumerate(handle, start=1)
    except OSError as error:
        raise TraceError(f"{path}: cannot read the trace ({error.strerror}); run the trace task first "
                         "(nxrun run serving:trace)") from None


def read_trace(path: Path | str) -> tuple[dict, list[Request]]:
    """(header, requests) of a trace file; TraceError (file:line and the fix) for anything malformed."""
    path = Path(path)
    header: dict | None = None
    requests: list[Request] = []
    seen_ids: set[int] = set()
    last_arrival = 0.0
    for number, line in _lines(path):
        where = f"{path}:{number}"
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except json.JSONDecodeError as error:
            raise TraceError(f"{where}: not JSON ({error.msg}); the trace is damaged, regenerate it") from None
        if header is None:
            if not (isinstance(document, dict) and isinstance(document.get("trace"), dict)):
                raise TraceError(f"{where}: the first line must be the trace header {{\"trace\": {{...}}}}; "
                                 "generate traces with python -m workloads.serving.traces")
            header = document["trace"]
            if header.get("format") != TRACE_FORMAT:
                raise TraceError(f"{where}: trace format {header.get('format')!r}, expected {TRACE_FORMAT}; "
                                 "regenerate the trace")
            continue
        request = _parse_request(document, where)
        if request.id in seen_ids:
            raise TraceError(f"{where}: request id {request.id} appears twice")
        if request.arrival_s < last_arrival:
            raise TraceError(f"{where}: requests must be in arrival order ({request.arrival_s} s after "
                             f"{last_arrival} s)")
        seen_ids.add(request.id)
        last_arrival = request.arrival_s
        requests.append(request)
    if header is None:
        raise TraceError(f"{path}: empty trace; regenerate it with python -m workloads.serving.traces")
    if not requests:
        raise TraceError(f"{path}: the trace has a header but no requests")
    return header, requests


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"the rate must be positive requests/s (or inf), got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workloads.serving.traces", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, choices=sorted(DATASET_MEANS))
    parser.add_argument("--rate", required=True, type=_rate, help="requests per second (inf: all at t = 0)")
    parser.add_argument("--num", required=True, type=int, help="number of requests")
    parser.add_argument("--seed", required=True, type=int)
    parser.add_argument("--out", required=True, type=Path, help="trace file (JSON lines)")
    parser.add_argument("--sigma", type=float, default=DEFAULT_SIGMA, help="lognormal sigma of both lengths")
    parser.add_argument("--max-input", type=int, default=DEFAULT_MAX_INPUT, help="input length cap (tokens)")
    parser.add_argument("--max-output", type=int, default=DEFAULT_MAX_OUTPUT, help="output length cap (tokens)")
    args = parser.parse_args(argv)
    try:
        header, requests = generate(args.dataset, args.rate, args.num, args.seed, sigma=args.sigma,
                                    max_input=args.max_input, max_output=args.max_output)
    except ValueError as error:
        parser.error(str(error))
    write_trace(args.out, header, requests)
    lengths = header["lengths"]
    print(f"trace {args.dataset}: {args.num} requests at {header['rate']} req/s (seed {args.seed}) -> {args.out}; "
          f"input mean {lengths['input']['sample_mean']:.1f} (target {lengths['input']['target_mean']:g}), "
          f"output mean {lengths['output']['sample_mean']:.1f} (target {lengths['output']['target_mean']:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
