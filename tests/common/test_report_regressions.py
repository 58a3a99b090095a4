"""`nxrun report` judges a bench regression from the intervals the results carry, not a fixed 5 %.

End to end through the real CLI: a bench task writes results JSON shaped like the GEMM bench's
(`tflops` with `tflops_ci`), run twice with different figures, then `nxrun report`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BENCH = '''
import json, pathlib, sys
params = json.loads(pathlib.Path("params.json").read_text())
out = pathlib.Path("results/gemm/k.json")
out.parent.mkdir(parents=True, exist_ok=True)
timing = {"dtype": "fp16", "shape": "8192", "tflops": params["value"], "baseline": "cublas",
          "baseline_tflops": 700.0, "ratio": params["value"] / 700.0}
if params.get("ci"):
    timing["tflops_ci"] = params["ci"]
out.write_text(json.dumps({"schema": 1, "device": {"name": "NVIDIA H200", "backend": "cuda"},
                           "workload": "gemm", "kernel": "t4_wgmma_tma", "timings": [timing]}))
'''


def _workspace(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "bench.py").write_text(BENCH)
    (root / "nxrun.toml").write_text(textwrap.dedent('''
        [workspace]
        cache-dir = ".nxrun"

        [projects.gemm.targets.bench]
        command = "python bench.py"
        inputs  = ["bench.py", "params.json"]
        outputs = ["results/gemm"]
    '''))
    return root


def _nxrun(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_COLOR="1")
    env.pop("NXRUN_REMOTE", None)
    result = subprocess.run([sys.executable, "-m", "nxrun", *args], cwd=root, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _report_after(root: Path, runs: list[dict], out: Path) -> tuple[dict, str]:
    for params in runs:
        (root / "params.json").write_text(json.dumps(params))
        _nxrun(root, "run", "gemm:bench")
    _nxrun(root, "report", "--out", str(out))
    data = json.loads((out / "report.json").read_text())
    rows = {r["series"]: r for r in data["comparisons"]["gemm:bench"]}
    return rows["t4_wgmma_tma"], (out / "report.md").read_text()


@pytest.mark.parametrize("runs, regressed, rule", [
    # 3 % lower, but both intervals are tight and disjoint: outside the noise, a regression
    ([{"value": 730.0, "ci": [728.0, 732.0]}, {"value": 708.0, "ci": [706.0, 710.0]}], True, "intervals"),
    # 8 % lower, but the runs are noisy and the intervals overlap: not shown by the samples
    ([{"value": 730.0, "ci": [650.0, 760.0]}, {"value": 672.0, "ci": [600.0, 700.0]}], False, "intervals"),
    # no intervals recorded: the fixed 5 % rule, and the report says so
    ([{"value": 730.0}, {"value": 680.0}], True, "5% (no interval recorded)"),
])
def test_regression_is_judged_from_the_intervals(tmp_path, runs, regressed, rule):
    pytest.importorskip("matplotlib")
    root = _workspace(tmp_path / "ws")
    row, markdown = _report_after(root, runs, tmp_path / "out")
    assert row["regressed"] is regressed and row["rule"] == rule
    if rule == "intervals":
        assert row["interval"] == runs[1]["ci"] and row["previous_interval"] == runs[0]["ci"]
    if regressed and rule == "intervals":
        assert "outside the measured noise" in markdown
    if regressed and rule != "intervals":
        assert "no interval recorded" in markdown
    if not regressed:
        assert "**Regression:**" not in markdown
