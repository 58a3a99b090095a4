"""The serving pipeline through the real nxrun CLI (`nxrun run bench:serving`), the report, and the task inputs.

The end-to-end test runs the real root nxrun.toml and tasks.toml in a copy of the repository's workloads,
with the traces cut to 500 requests to keep it short; everything else is as a user runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from workloads.serving import allocator, report
from workloads.serving.traces import generate, write_trace

REPO = Path(__file__).parents[2]
TASKS = REPO / "workloads" / "serving" / "tasks.toml"
SERVING_TASKS = {"serving:trace[dataset=sharegpt]", "serving:trace[dataset=alpaca]",
                 "serving:replay[dataset=sharegpt]", "serving:replay[dataset=alpaca]", "serving:report",
                 "serving:peer", "serving:stepbench", "paged:build", "paged:verify",
                 *(f"serving:engine-paged[rate={r}]" for r in ("4", "6", "8", "9", "10", "11", "12", "14")),
                 *(f"serving:engine-reservation[rate={r}]" for r in ("1", "2", "2.5", "3", "3.5", "4"))}


def _workspace(root: Path) -> Path:
    shutil.copytree(REPO / "workloads", root / "workloads", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "nxrun.toml", root / "nxrun.toml")
    tasks = root / "workloads" / "serving" / "tasks.toml"
    tasks.write_text(tasks.read_text().replace("--num 2000", "--num 500").replace("--cpu-num 6", "--cpu-num 3"))
    return root


def _run(root: Path) -> dict[str, str]:
    env = dict(os.environ, NO_COLOR="1", CUDA_VISIBLE_DEVICES="")
    env.pop("NXRUN_REMOTE", None)
    result = subprocess.run([sys.executable, "-m", "nxrun", "run", "--json", "bench:serving"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return {t["id"]: t["status"] for t in json.loads(result.stdout)["tasks"] if t["status"] != "aggregate"}


def _outputs(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes()
            for path in sorted((root / "results" / "serving").rglob("*")) if path.is_file()}


@pytest.mark.slow
def test_bench_serving_runs_traces_replay_and_report_and_a_second_run_restores_everything(tmp_path):
    root = _workspace(tmp_path / "ws")
    first = _run(root)
    assert set(first) == SERVING_TASKS and set(first.values()) == {"miss"}
    results = root / "results" / "serving"
    trace_header = json.loads((results / "traces" / "sharegpt.jsonl").read_text().splitlines()[0])["trace"]
    assert trace_header["dataset"] == "sharegpt" and trace_header["num"] == 500
    for dataset in ("sharegpt", "alpaca"):
        document = json.loads((results / "replay" / f"{dataset}.json").read_text())
        assert document["backend"] == "cpu" and document["task"] == "serving:replay"
        assert {p["policy"] for p in document["policies"]} >= {"orca-max", "orca-pow2", "orca-oracle", "paged"}
    readme = (results / "report" / "README.md").read_text()
    assert "backend: cpu" in readme and "| paged |" in readme and "## sharegpt" in readme and "## alpaca" in readme
    assert "## Engine sweep" in readme and "| reservation | 4 | 4 | 3 |" in readme  # the tiny model on the NumPy runner
    for path in (results / "engine").glob("*.json"):
        document = json.loads(path.read_text())
        assert document["backend"] == "cpu" and document["model"]["name"] == "tiny"
        assert document["metrics"]["requests"] == 3
    assert json.loads((results / "peer.json").read_text())["backend"] == "cpu"
    assert json.loads((results / "stepbench.json").read_text())["backend"] == "cpu"
    assert "Not measured here" in readme
    for name in ("memory_sharegpt.png", "memory_alpaca.png", "token_states_sharegpt.png"):
        assert (results / "report" / name).read_bytes()[:4] == b"\x89PNG"
    produced = _outputs(root)

    assert set(_run(root).values()) == {"local-hit"}
    shutil.rmtree(root / "results")
    assert set(_run(root).values()) == {"local-hit"}
    assert _outputs(root) == produced  # every output restored byte for byte


def test_report_table_only_and_error_without_replay_results(tmp_path, capsys):
    header, requests = generate("sharegpt", rate=100.0, num=120, seed=4)
    write_trace(tmp_path / "t.jsonl", header, requests)
    assert allocator.main([str(tmp_path / "t.jsonl"), "--out", str(tmp_path / "r" / "sharegpt.json"),
                           "--capacity-tokens", "4096", "--policies", "orca-oracle,paged"]) == 0
    assert report.main([str(tmp_path / "r"), "--out", str(tmp_path / "out"), "--no-plot"]) == 0
    text = (tmp_path / "out" / "README.md").read_text()
    assert "| Orca (Oracle) |" in text and "| paged |" in text and "38.2" in text and "96.3" in text
    assert not list((tmp_path / "out").glob("*.png"))
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty"), "--out", str(tmp_path / "out2")]) == 2
    assert "no serving:replay result" in capsys.readouterr().err


def test_the_serving_targets_are_the_pipeline_steps():
    # that each one declares what its command imports: tests/common/test_task_inputs.py
    targets = tomllib.loads(TASKS.read_text())["projects"]["serving"]["targets"]
    assert list(targets) == ["trace", "replay", "report", "peer", "stepbench", "engine-paged", "engine-reservation"]


def test_the_report_reads_exactly_the_sweep_files_its_dependencies_declare():
    targets = tomllib.loads(TASKS.read_text())["projects"]["serving"]["targets"]
    declared = {target["outputs"][0].replace("${matrix.rate}", rate)
                for name in ("engine-paged", "engine-reservation")
                for target in [targets[name]] for rate in target["matrix"]["rate"]}
    named = {word for word in targets["report"]["command"].split() if word.startswith("results/serving/engine")}
    assert named == declared, "the report's command must name every sweep result and nothing else"
    assert "results/serving/engine " not in targets["report"]["command"] + " "  # no folder: stale files would count
