"""The report's headline: the highest rate an engine sustains under the normalized-latency bound."""

from __future__ import annotations

import pytest

from workloads.serving.report import engine_section, sustained_rate


def test_sustained_rate_interpolates_the_crossing():
    points = [(1.0, 0.01), (2.0, 0.02), (4.0, 0.06)]
    assert sustained_rate(points, 0.04) == pytest.approx(3.0)   # halfway from 0.02 to 0.06
    assert sustained_rate(points, 0.1) == 4.0                   # never over: the highest measured rate
    assert sustained_rate(points, 0.005) is None                # over already at the lowest rate
    assert sustained_rate(list(reversed(points)), 0.04) == pytest.approx(3.0)


def _run(engine: str, rate: float, latency: float) -> dict:
    stats = {"p50": 0.1, "p90": 0.2, "p99": 0.3, "mean": 0.1}
    return {"engine": engine, "rate": rate, "backend": "cpu", "device": {"name": "x86_64"}, "dtype": "float32",
            "trace": {"requests": 3, "dataset": "sharegpt"},
            "model": {"name": "tiny", "parameters": 1000},
            "config": {"kv_tokens": 160, "block_size": 16, "max_len": 64, "max_batch": 8, "preemption": "recompute",
                       "kernel": None, "cuda_graphs": False, "clock": "virtual"},
            "metrics": {"normalized_latency_s_per_token": latency, "ttft_s": stats, "tpot_s": stats, "itl_s": stats,
                        "e2e_s": stats, "throughput_req_s": 1.0, "throughput_output_tok_s": 10.0,
                        "goodput_req_s": 1.0, "mean_decode_batch": 2.0, "preemptions": 0,
                        "slo": {"ttft_s": 1.0, "tpot_s": 0.1},
                        "kv": {"allocated_mean": 0.5, "token_states_of_allocated_mean": 0.9}},
            "decode_step_s": stats}


def test_headline_marks_lower_bounds_when_an_engine_never_crosses():
    runs = [_run("paged", r, 0.01) for r in (1, 2, 4)] + [_run("reservation", 1, 0.01), _run("reservation", 2, 0.02),
                                                          _run("reservation", 4, 0.06)]
    text = "\n".join(engine_section(runs, 0.04, None))
    assert "| **headline** | 0.04 | >= 4 | 3 | >= 1.33 |" in text
    assert "| paged | 4 |" in text and "| reservation | 2 |" in text
