"""The report's headline: the highest rate an engine sustains under the normalized-latency bound."""

from __future__ import annotations

import pytest

from workloads.serving.report import engine_section, measured_bracket, offered_rate, sustained_rate


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
                        "goodput_req_s": 1.0, "slo_attained": 1.0, "mean_decode_batch": 2.0, "preemptions": 0,
                        "slo": {"ttft_s": 1.0, "tpot_s": 0.1},
                        "kv": {"allocated_mean": 0.5, "token_states_of_allocated_mean": 0.9}},
            "decode_step_s": stats}


def test_headline_marks_lower_bounds_when_an_engine_never_crosses():
    runs = [_run("paged", r, 0.01) for r in (1, 2, 4)] + [_run("reservation", 1, 0.01), _run("reservation", 2, 0.02),
                                                          _run("reservation", 4, 0.06)]
    text = "\n".join(engine_section(runs, 0.04, None))
    assert "| normalized latency <= 0.04 s/token (**headline**) | >= 4 | 3 | >= 1.33 | [1.00, open] |" in text
    assert "| capacity: the most requests/s served at any offered rate | 1 | 1 | 1.00 |" in text
    assert "| paged | 4 |" in text and "| reservation | 2 |" in text


def test_the_rate_column_shows_the_rate_as_configured():
    # a three-significant-figure float format printed 10 as "10.0" beside 4 and 2.5
    text = "\n".join(engine_section([_run("paged", r, 0.01) for r in (2.5, 4, 10, 12)], 0.04, None))
    assert "| paged | 10 |" in text and "| paged | 12 |" in text and "| paged | 2.5 |" in text


def test_the_offered_rate_is_what_arrived_in_the_window_not_the_nominal_rate():
    run = _run("paged", 7, 0.02)
    assert offered_rate(run) == 7.0  # no window recorded: the nominal rate
    run["trace"].update(requests=437, duration_s=60, arrival_span_s=59.9)
    assert offered_rate(run) == pytest.approx(437 / 60)
    run["trace"].update(requests=60, arrival_span_s=65.0)  # raised to the minimum count: a longer span
    assert offered_rate(run) == pytest.approx(60 / 65)


def test_the_bracket_uses_measured_points_only():
    def points(*pairs):
        return [(rate, {"v": v}) for rate, v in pairs]

    value = lambda d: d["v"]  # noqa: E731
    paged = points((6.0, 0.01), (7.0, 0.02), (7.5, 0.035))
    reserved = points((2.5, 0.012), (3.0, 0.022), (3.5, 0.047))
    # paged's highest passing 7 over reservation's lowest failing 3.5; paged's lowest failing 7.5 over 3
    assert measured_bracket(paged, reserved, value, 0.025) == "[2.00, 2.50]"
    assert measured_bracket(paged, reserved, value, 0.1) is None  # reservation never fails: no lower end
    assert measured_bracket(paged[:2], reserved, value, 0.025) == "[2.00, open]"
