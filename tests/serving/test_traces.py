"""Request traces: the fitted length laws hit the published means, arrivals are Poisson, files are exact."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from workloads.serving import traces
from workloads.serving.lengths import BoundedLogNormal, bounded_mean, fit_mu


def _pmf(dist: BoundedLogNormal) -> np.ndarray:
    """P(K = k) for k = 1..cap, computed directly from the lognormal CDF (independent of bounded_mean)."""
    edges = np.array([0.0, *[k + 0.5 for k in range(1, dist.cap + 1)]])
    cdf = np.array([0.0 if x == 0 else 0.5 * math.erfc(-(math.log(x) - dist.mu) / (dist.sigma * math.sqrt(2)))
                    for x in edges])
    return np.diff(cdf) / cdf[-1]


@pytest.mark.parametrize("target,sigma,cap", [(161.0, 1.0, 1024), (338.0, 1.0, 1024), (19.0, 1.0, 1024),
                                              (58.0, 0.5, 1024), (338.0, 1.5, 1024), (3.0, 2.0, 8)])
def test_fitted_mu_gives_the_target_mean_exactly_on_the_bounded_rounded_law(target, sigma, cap):
    dist = fit_mu(target, sigma, cap)
    pmf = _pmf(dist)
    assert pmf.sum() == pytest.approx(1.0, abs=1e-12)
    assert float(np.arange(1, cap + 1) @ pmf) == pytest.approx(target, abs=1e-6)
    assert dist.mean() == pytest.approx(target, abs=1e-8)


def test_the_bounds_move_the_mean_so_mu_is_solved_on_the_bounded_law():
    # ShareGPT's outputs at sigma 1: the unbounded formula mu = ln(mean) - sigma^2/2 would miss by tokens,
    # because ~7 % of the unbounded law lies above 1024
    naive = math.log(338.0) - 0.5
    assert bounded_mean(naive, 1.0, 1024) < 338.0 - 10
    assert fit_mu(338.0, 1.0, 1024).mu > naive


@pytest.mark.parametrize("dataset", sorted(traces.DATASET_MEANS))
def test_sample_means_of_a_large_trace_are_within_four_standard_errors_of_the_published_means(dataset):
    header, requests = traces.generate(dataset, rate=5.0, num=200_000, seed=11)
    for side, index in (("input", 0), ("output", 1)):
        target = traces.DATASET_MEANS[dataset][index]
        values = np.array([r.input_len if side == "input" else r.output_len for r in requests])
        dist = BoundedLogNormal(header["lengths"][side]["mu"], header["lengths"][side]["sigma"],
                                header["lengths"][side]["max"])
        pmf = _pmf(dist)
        support = np.arange(1, dist.cap + 1)
        std_error = math.sqrt(float((support - target) ** 2 @ pmf) / len(values))
        assert abs(values.mean() - target) < 4 * std_error, (side, values.mean(), target, std_error)
        assert values.min() >= 1 and values.max() <= dist.cap
        assert header["lengths"][side]["sample_mean"] == pytest.approx(values.mean())


def test_poisson_arrivals_have_mean_gap_one_over_rate_and_exponential_spread():
    rate, num = 4.0, 200_000
    _, requests = traces.generate("sharegpt", rate=rate, num=num, seed=5)
    arrivals = np.array([r.arrival_s for r in requests])
    gaps = np.diff(arrivals, prepend=0.0)
    assert np.all(gaps >= 0)
    assert gaps.mean() == pytest.approx(1 / rate, abs=4 * (1 / rate) / math.sqrt(num))
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.02)  # exponential: coefficient of variation 1
    # counts per second are Poisson: variance equals the mean
    counts = np.bincount(arrivals.astype(int))[:-1]
    assert counts.var() / counts.mean() == pytest.approx(1.0, abs=0.05)


def test_infinite_rate_submits_everything_at_once():
    header, requests = traces.generate("alpaca", rate=math.inf, num=50, seed=0)
    assert header["rate"] == "inf" and all(r.arrival_s == 0.0 for r in requests)


def test_same_seed_same_bytes_and_another_seed_another_trace(tmp_path):
    paths = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        path = tmp_path / f"{name}.jsonl"
        assert traces.main(["--dataset", "sharegpt", "--rate", "2", "--num", "300", "--seed", str(seed),
                            "--out", str(path)]) == 0
        paths.append(path)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()
    header, requests = traces.read_trace(paths[0])
    assert header["dataset"] == "sharegpt" and header["seed"] == 7 and len(requests) == 300
    assert [r.id for r in requests] == list(range(300))
    lines = paths[0].read_text().splitlines()
    assert json.loads(lines[1]) == {"arrival_s": requests[0].arrival_s, "id": 0,
                                    "input_len": requests[0].input_len, "output_len": requests[0].output_len}


def test_cli_refuses_unreachable_means_and_bad_rates_with_a_message(tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    with pytest.raises(SystemExit) as excinfo:
        traces.main(["--dataset", "sharegpt", "--rate", "1", "--num", "10", "--seed", "0", "--out", str(out),
                     "--max-output", "200"])
    assert excinfo.value.code == 2 and "out of reach" in capsys.readouterr().err and not out.exists()
    with pytest.raises(SystemExit) as excinfo:
        traces.main(["--dataset", "alpaca", "--rate", "0", "--num", "10", "--seed", "0", "--out", str(out)])
    assert excinfo.value.code == 2 and "positive" in capsys.readouterr().err


@pytest.mark.parametrize("content,message", [
    ("", "empty trace"),
    ('{"id": 0, "arrival_s": 0, "input_len": 1, "output_len": 1}\n', ":1: the first line must be the trace header"),
    ('{"trace": {"format": 1}}\n{"id": 0, "arrival_s": 0.5, "input_len": 3}\n', ":2: request lacks output_len"),
    ('{"trace": {"format": 1}}\n{"id": 0, "arrival_s": 1.0, "input_len": 3, "output_len": 2}\n'
     '{"id": 1, "arrival_s": 0.5, "input_len": 3, "output_len": 2}\n', ":3: requests must be in arrival order"),
    ('{"trace": {"format": 1}}\n{"id": 0, "arrival_s": 0, "input_len": 0, "output_len": 2}\n', ":2: input_len and"),
    ('{"trace": {"format": 1}}\n{"id": 0, "arrival_s": 0, "input_len": 2.5, "output_len": 2}\n', ":2: input_len must"),
    ('{"trace": {"format": 1}}\n{"id": 0, "arrival_s": 0, "input_len": 2, "output_len": 2}\n'
     '{"id": 0, "arrival_s": 0, "input_len": 2, "output_len": 2}\n', ":3: request id 0 appears twice"),
    ('{"trace": {"format": 1}}\nnot json\n', ":2: not JSON"),
    ('{"trace": {"format": 99}}\n', ":1: trace format 99"),
])
def test_malformed_traces_are_reported_with_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(traces.TraceError) as excinfo:
        traces.read_trace(path)
    assert str(path) in str(excinfo.value) and message in str(excinfo.value)
