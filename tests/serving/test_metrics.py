"""Serving metrics computed by hand on a three-request trace."""

from __future__ import annotations

import pytest

from workloads.serving.metrics import compute

RECORDS = [
    # arrival 0, tokens at 1, 2, 4: TTFT 1, e2e 4, TPOT 1.5, gaps 1 and 2, normalized 4/3
    {"id": 0, "arrival_s": 0.0, "input_len": 10, "output_len": 3, "token_times": [1.0, 2.0, 4.0], "preemptions": 1},
    # arrival 1, one token at 1.5: TTFT 0.5, e2e 0.5, no TPOT, normalized 0.5
    {"id": 1, "arrival_s": 1.0, "input_len": 4, "output_len": 1, "token_times": [1.5], "preemptions": 0},
    # arrival 2, tokens at 5, 5.5: TTFT 3, e2e 3.5, TPOT 0.5, gap 0.5, normalized 1.75
    {"id": 2, "arrival_s": 2.0, "input_len": 6, "output_len": 2, "token_times": [5.0, 5.5], "preemptions": 0},
]
ITERATIONS = [
    {"kind": "prefill", "batch": 1, "allocated_tokens": 32, "token_states": 10},
    {"kind": "decode", "batch": 2, "allocated_tokens": 64, "token_states": 16},
    {"kind": "decode", "batch": 1, "allocated_tokens": 16, "token_states": 8},
]


def test_metrics_on_a_hand_made_trace():
    m = compute(RECORDS, ITERATIONS, 128, slo_ttft_s=1.0, slo_tpot_s=1.0)
    assert m["requests"] == 3
    assert m["duration_s"] == pytest.approx(5.5)
    assert m["ttft_s"]["mean"] == pytest.approx((1 + 0.5 + 3) / 3)
    assert m["ttft_s"]["p50"] == pytest.approx(1.0)
    assert m["ttft_s"]["p90"] == pytest.approx(1 + 0.8 * 2)    # linear between 1 and 3
    assert m["e2e_s"]["p50"] == pytest.approx(3.5)
    assert m["e2e_s"]["p99"] == pytest.approx(3.5 + 0.98 * 0.5)
    assert m["tpot_s"]["mean"] == pytest.approx((1.5 + 0.5) / 2)
    assert m["itl_s"]["mean"] == pytest.approx((1 + 2 + 0.5) / 3) and m["itl_s"]["p50"] == pytest.approx(1.0)
    assert m["normalized_latency_s_per_token"] == pytest.approx((4 / 3 + 0.5 + 1.75) / 3)
    assert m["throughput_req_s"] == pytest.approx(3 / 5.5)
    assert m["throughput_output_tok_s"] == pytest.approx(6 / 5.5)
    assert m["throughput_total_tok_s"] == pytest.approx(26 / 5.5)
    # SLO TTFT <= 1 and TPOT <= 1: request 1 (no TPOT) only; request 0 has TPOT 1.5, request 2 TTFT 3
    assert m["goodput_req_s"] == pytest.approx(1 / 5.5) and m["slo_attained"] == pytest.approx(1 / 3)
    assert m["kv"]["allocated_peak"] == pytest.approx(0.5)
    assert m["kv"]["allocated_mean"] == pytest.approx((32 + 64 + 16) / 3 / 128)
    assert m["kv"]["token_states_of_allocated_mean"] == pytest.approx((10 / 32 + 16 / 64 + 8 / 16) / 3)
    assert m["preemptions"] == 1
    assert m["mean_decode_batch"] == pytest.approx(1.5)


def test_a_looser_slo_counts_more_requests():
    m = compute(RECORDS, ITERATIONS, 128, slo_ttft_s=3.0, slo_tpot_s=2.0)
    assert m["slo_attained"] == pytest.approx(1.0)


def test_token_times_must_match_the_output_length():
    broken = [dict(RECORDS[0], token_times=[1.0, 2.0])]
    with pytest.raises(ValueError, match="request 0: 2 token times for 3 tokens"):
        compute(broken, ITERATIONS, 128, slo_ttft_s=1.0, slo_tpot_s=1.0)
