"""`nxrun history` and `nxrun report` on a workspace run several times with changes in between."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .workspaces import PIPELINE_TASKS, nxrun

pytest.importorskip("matplotlib", reason="nxrun report needs matplotlib: pip install 'nxrun[report]'")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_runs_recorded_with_expected_statuses(history_workspace):
    _, runs = history_workspace
    statuses = [{t["id"]: t["status"] for t in run["tasks"]} for run in runs]
    assert set(statuses[0].values()) == {"miss"}
    assert statuses[1] == {"data:prepare": "local-hit", "gemm:build": "local-hit", "gemm:bench": "miss",
                           "paged:bench": "miss", "report:summary": "miss"}
    assert set(statuses[2].values()) == {"local-hit"}
    assert [s["gemm:bench"] for s in statuses] == ["miss", "miss", "local-hit", "miss"]


def test_history_of_a_task_lists_runs_with_origin(history_workspace):
    root, _ = history_workspace
    rows = json.loads(nxrun(root, "history", "gemm:bench", "--json").stdout)
    assert [r["status"] for r in rows] == ["miss", "local-hit", "miss", "miss"]  # newest first
    assert [r["origin"] for r in rows] == ["", "local", "", ""]
    assert rows[1]["etag"] == rows[2]["etag"] and rows[0]["etag"] != rows[1]["etag"]
    text = nxrun(root, "history", "gemm:bench").stdout
    assert "local-hit" in text and rows[0]["etag"][:16] in text
    overall = json.loads(nxrun(root, "history", "--json").stdout)
    assert [r["local_hits"] for r in overall] == [2, 5, 2, 0]


def test_report_hit_rates_time_saved_and_bench_trends(history_workspace, tmp_path):
    root, _ = history_workspace
    out = tmp_path / "report"
    summary = tmp_path / "summary.md"
    result = nxrun(root, "report", "--out", str(out), "--summary-md", str(summary))
    data = json.loads((out / "report.json").read_text())

    assert [r["hit_rate"] for r in data["runs"]] == [0.0, 0.4, 1.0, 0.4]
    assert [r["ran"] for r in data["runs"]] == [5, 3, 0, 3]
    # time saved per run = what the restored tasks took when they ran (their cache entries' durations)
    rows = json.loads(nxrun(root, "history", "--json", "-n", "100").stdout)
    task_rows = {t: json.loads(nxrun(root, "history", t, "--json").stdout) for t in PIPELINE_TASKS}
    for run in data["runs"]:
        saved = sum(r["saved"] for rs in task_rows.values() for r in rs if r["run_id"] == run["run"])
        assert run["time_saved"] == pytest.approx(saved, abs=1e-3)
    assert data["runs"][0]["time_saved"] == 0.0
    assert data["runs"][2]["time_saved"] >= 3 * 0.2       # three step tasks that sleep 0.2 s were restored
    assert data["runs"][2]["time_saved"] > data["runs"][1]["time_saved"] > 0
    assert data["totals"]["hit_rate"] == pytest.approx(9 / 20)
    assert {r["id"] for r in rows} == {r["run"] for r in data["runs"]}

    gemm = data["bench"]["gemm:bench"]
    assert (gemm["metric"], gemm["unit"], gemm["case"]) == ("tflops", "TFLOP/s", "4096x4096x4096 fp32")
    assert gemm["baselines"] == ["cublas"]
    assert [p["values"]["10_autotuned"] for p in gemm["points"]] == pytest.approx([45.0, 54.0, 27.0])
    assert [p["values"]["cublas"] for p in gemm["points"]] == [50.0, 50.0, 50.0]
    assert [p["device"] for p in gemm["points"]] == ["cpu (x86_64)", "cpu (x86_64)", "cpu (H200)"]
    paged = data["bench"]["paged:bench"]
    assert (paged["metric"], paged["unit"]) == ("tb_per_s", "TB/s")
    assert [p["values"]["decode_v2"] for p in paged["points"]] == pytest.approx([3.5, 4.2, 2.1])
    assert "contiguous" in paged["baselines"]

    # a different device is never compared with the last: no regression flagged across devices
    comparison = {r["series"]: r for r in data["comparisons"]["gemm:bench"]}
    assert comparison["10_autotuned"]["previous"] is None
    assert comparison["10_autotuned"]["vs_baseline"] == pytest.approx(27.0 / 50.0)

    for name in ["cache.png", "bench-gemm-bench.png", "bench-paged-bench.png"]:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
        assert f"wrote {out / name}" in result.stdout
    assert data["images"] == {"cache": "cache.png", "bench": {"gemm:bench": "bench-gemm-bench.png",
                                                              "paged:bench": "bench-paged-bench.png"}}
    report = (out / "report.md").read_text()
    assert "![cache hit rate and time saved](cache.png)" in report and "| 10_autotuned | 27.0 | 54% |" in report
    text = summary.read_text()
    assert text.startswith("## nxrun") and "hit rate 40%" in text and "### gemm:bench" in text
    nxrun(root, "report", "--out", str(out), "--summary-md", str(summary))
    assert summary.read_text().count("## nxrun") == 2, "a job summary is appended to, as GitHub expects"


def test_report_flags_a_regression_on_the_same_device(history_workspace, tmp_path):
    root, _ = history_workspace
    from .workspaces import set_params

    set_params(root, 0.3, "H200")                     # half of the previous H200 result
    nxrun(root, "run", "gemm:bench")
    nxrun(root, "report", "--out", str(tmp_path))
    data = json.loads((tmp_path / "report.json").read_text())
    comparison = {r["series"]: r for r in data["comparisons"]["gemm:bench"]}
    assert comparison["10_autotuned"]["change"] == pytest.approx(-0.5)
    assert comparison["10_autotuned"]["regressed"] and not comparison["cublas"]["regressed"]
    assert "**Regression:** 10_autotuned, 05_2d_register_tiling" in (tmp_path / "report.md").read_text()


def test_report_without_matplotlib_says_how_to_install(history_workspace, tmp_path):
    root, _ = history_workspace
    code = ("import sys; sys.modules['matplotlib'] = None; sys.argv = ['nxrun', '-C', sys.argv[1], 'report', "
            "'--out', sys.argv[2]]; from nxrun.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", code, str(root), str(tmp_path)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "matplotlib" in result.stderr and "pip install 'nxrun[report]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_report_on_an_empty_history(tmp_path):
    from .workspaces import make_pipeline

    root = make_pipeline(tmp_path / "ws")
    nxrun(root, "report", "--out", str(tmp_path / "out"))
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["runs"] == [] and data["bench"] == {}
    assert "No runs recorded yet" in (tmp_path / "out" / "report.md").read_text()
