"""The CPU pipeline end to end through the same CLIs the tasks call: build (no compiler), verify, bench, report."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from workloads.paged_attention import build, report, verify
from workloads.paged_attention import bench as bench_cli

TASKS = Path(__file__).parents[2] / "workloads" / "paged_attention" / "tasks.toml"


def test_build_without_a_compiler_writes_a_report_and_succeeds(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "compiler_available", lambda: (False, "no nvcc on PATH and NVRTC unusable"))
    assert build.main(["--out", str(tmp_path / "paged")]) == 0
    summary = json.loads((tmp_path / "paged" / "build.json").read_text())
    assert summary["status"] == "unavailable" and "CPU backend" in summary["note"]


@pytest.fixture(scope="module")
def cpu_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("paged")
    assert verify.main(["--backend", "cpu", "--out", str(out / "verify.json"), "--seed", "3"]) == 0
    assert bench_cli.main(["--backend", "cpu", "--out", str(out / "bench.json"), "--repeats", "2",
                           "--shapes", "b4_h8_kv2_ctx512,ragged8_h8_kv2_ctx1-1024"]) == 0
    return out


def test_cpu_verify_and_bench_are_labelled_and_verified(cpu_results):
    verify_doc = json.loads((cpu_results / "verify.json").read_text())
    bench_doc = json.loads((cpu_results / "bench.json").read_text())
    assert verify_doc["backend"] == "cpu" and verify_doc["device"]["backend"] == "cpu" and verify_doc["passed"]
    assert any(check["kernel"] == "scenario_cpu" and check["cow_copies"] > 0 for check in verify_doc["checks"])
    assert bench_doc["backend"] == "cpu" and bench_doc["verified"]
    assert [row["shape"] for row in bench_doc["decode"]] == ["b4_h8_kv2_ctx512", "ragged8_h8_kv2_ctx1-1024"]
    for row in bench_doc["decode"]:
        assert row["best_kernel"] == "numpy_splitk" and row["ratio_to_baseline"] > 0
        assert {"contiguous_numpy", "gather_then_attend"} <= set(row["baselines"])
    assert {row["op"] for row in bench_doc["cache_ops"]} == {"reshape_and_cache", "copy_blocks"}


def test_report_renders_table_from_results(cpu_results, tmp_path):
    assert report.main([str(cpu_results / "bench.json"), str(cpu_results / "verify.json"),
                        "--out", str(tmp_path), "--no-plot"]) == 0
    text = (tmp_path / "README.md").read_text()
    assert "(backend: cpu)" in text and "| ragged8_h8_kv2_ctx1-1024 |" in text and "## Verification" in text


def test_report_draws_the_chart_when_matplotlib_is_installed(cpu_results, tmp_path):
    pytest.importorskip("matplotlib")
    assert report.main([str(cpu_results / "bench.json"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "decode_bandwidth.png").stat().st_size > 1000


def test_tasks_fragment_declares_the_pipeline():
    targets = tomllib.loads(TASKS.read_text())["projects"]["paged"]["targets"]
    assert list(targets) == ["build", "verify", "bench", "report"]
    assert targets["verify"]["depends-on"] == ["build"] and targets["report"]["depends-on"] == ["bench"]
    for name in ("verify", "bench"):
        assert targets[name]["resources"] == ["gpu"] and targets[name]["cache"] == "hardware"
        # a report-only change must not re-run the GPU tasks
        assert not any("report" in entry for entry in targets[name]["inputs"])
