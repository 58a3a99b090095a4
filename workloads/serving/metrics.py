"""Serving metrics from per-request token times (vLLM's benchmark definitions) and the engine's iterations.

Per request, with t_1..t_n the times its n output tokens were produced and a its arrival:
  TTFT = t_1 - a;  end-to-end = t_n - a;  TPOT = (t_n - t_1) / (n - 1) (requests with n > 1);
  ITL = every gap t_{i+1} - t_i (pooled over requests);  normalized latency = end-to-end / n, averaged
  over requests (the PagedAttention paper's Figure 12 metric, s/token).
Over the run, duration = last token time - first arrival: throughput = requests / duration and output
tokens / duration; goodput = requests meeting the SLO (TTFT and TPOT bounds) / duration.
KV use, over the iterations (each weighted equally): allocated share of the KV pool (peak, mean) and
token states as a share of what is allocated.
"""

from __future__ import annotations

import numpy as np

PERCENTILES = (50, 90, 99)


def _stats(values) -> dict:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"mean": None, **{f"p{p}": None for p in PERCENTILES}}
    return {"mean": float(values.mean()), **{f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES}}


def compute(records: list[dict], iterations: list[dict], capacity_tokens: int, *, slo_ttft_s: float,
            slo_tpot_s: float) -> dict:
    """The metrics document for one run (records: Sequence.record() dicts; iterations: Engine.iterations)."""
    if not records:
        raise ValueError("no finished requests to compute metrics from")
    ttft, e2e, tpot, itl, normalized, good = [], [], [], [], [], 0
    for record in records:
        times = record["token_times"]
        if len(times) != record["output_len"] or not times:
            raise ValueError(f"request {record['id']}: {len(times)} token times for {record['output_len']} tokens")
        first, last = times[0] - record["arrival_s"], times[-1] - record["arrival_s"]
        ttft.append(first)
        e2e.append(last)
        normalized.append(last / len(times))
        gaps = np.diff(times)
        itl.extend(gaps.tolist())
        per_token = float(gaps.mean()) if gaps.size else None
        if per_token is not None:
            tpot.append(per_token)
        if first <= slo_ttft_s and (per_token is None or per_token <= slo_tpot_s):
            good += 1
    start = min(r["arrival_s"] for r in records)
    duration = max(r["token_times"][-1] for r in records) - start
    output_tokens = sum(r["output_len"] for r in records)
    input_tokens = sum(r["input_len"] for r in records)
    allocated = np.array([it["allocated_tokens"] for it in iterations], dtype=np.float64)
    states = np.array([it["token_states"] for it in iterations], dtype=np.float64)
    of_allocated = states[allocated > 0] / allocated[allocated > 0]
    return {
        "requests": len(records),
        "duration_s": duration,
        "ttft_s": _stats(ttft), "tpot_s": _stats(tpot), "itl_s": _stats(itl), "e2e_s": _stats(e2e),
        "normalized_latency_s_per_token": float(np.mean(normalized)),
        "throughput_req_s": len(records) / duration if duration > 0 else None,
        "throughput_output_tok_s": output_tokens / duration if duration > 0 else None,
        "throughput_total_tok_s": (input_tokens + output_tokens) / duration if duration > 0 else None,
        "slo": {"ttft_s": slo_ttft_s, "tpot_s": slo_tpot_s},
        "goodput_req_s": good / duration if duration > 0 else None,
        "slo_attained": good / len(records),
        "kv": {
            "capacity_tokens": capacity_tokens,
            "allocated_peak": float(allocated.max() / capacity_tokens) if allocated.size else 0.0,
            "allocated_mean": float(allocated.mean() / capacity_tokens) if allocated.size else 0.0,
            "token_states_peak": float(states.max() / capacity_tokens) if states.size else 0.0,
            "token_states_mean": float(states.mean() / capacity_tokens) if states.size else 0.0,
            "token_states_of_allocated_mean": float(of_allocated.mean()) if of_allocated.size else None,
        },
        "preemptions": int(sum(r["preemptions"] for r in records)),
        "iterations": len(iterations),
        "mean_decode_batch": (float(np.mean([it["batch"] for it in iterations if it["kind"] == "decode"]))
                              if any(it["kind"] == "decode" for it in iterations) else None),
    }
