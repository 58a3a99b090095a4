"""GPU slots through the real CLI: tasks that take GPUs share a pool and each sees only its own;
a task asking for more than the pool fails the run before anything starts; --gpus beats NXRUN_GPUS
beats [workspace] gpus; a `cache = "hardware"` result is stored under the model it ran on.

The GPUs come from a stand-in nvidia-smi (tests/fake_nvidia_smi.py), so this runs anywhere. Tasks
log "start"/"end" lines to one file (appends are atomic), and a task that should run beside another
waits for it to start, so the log order alone shows what ran at the same time; no fixed sleeps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_workspace import Workspace
from fake_nvidia_smi import A100, H100, install, uuid_of

RECORDER = """
import json, os, sys, time
log, role, singles = sys.argv[1], sys.argv[2], int(sys.argv[3])   # argv[4]: tells the tasks' ETags apart
me = os.environ["NXRUN_TASK"]

def append(event):
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, (json.dumps(event) + "\\n").encode())
    os.close(fd)

def events():
    with open(log) as handle:
        return [json.loads(line) for line in handle if line.strip()]

append({"event": "start", "task": me, "role": role, "ids": os.environ.get("NXRUN_GPU_IDS"),
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "t": time.time()})
if role == "single":
    # stay until another single runs beside this one, or every single has started (60 s at most:
    # a run that never gives two tasks GPUs at once ends, and the test fails on the log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen = events()
        starts = sum(1 for e in seen if e["event"] == "start" and e["role"] == "single")
        ends = sum(1 for e in seen if e["event"] == "end" and e["role"] == "single")
        if starts - ends >= 2 or starts >= singles:
            break
        time.sleep(0.005)
append({"event": "end", "task": me, "role": role, "t": time.time()})
"""


def gpu_workspace(ws: Workspace, singles: int = 4, extra: str = "", workspace_gpus: str = "") -> Path:
    log = ws.root / "events.log"
    ws.write("recorder.py", RECORDER)
    targets = "".join(f"""
[projects.p.targets.g{n}]
command   = "python recorder.py {log} single {singles} g{n}"
resources = ["gpu"]
cache     = "never"
""" for n in range(1, singles + 1))
    ws.write("nxrun.toml", f"""
[workspace]
parallel = 8
{workspace_gpus}
{targets}
{extra}
""")
    return log


def read_events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def check_overlaps(events: list[dict], pool: set[str]) -> int:
    """Replay the log: tasks running at once never share a GPU id and never hold more than the
    pool; the most tasks that ran at once."""
    running: dict[str, set[str]] = {}
    most = 0
    for event in events:
        if event["event"] == "start":
            ids = set((event["ids"] or "").split(","))
            assert ids <= pool, event
            for other, held in running.items():
                assert not ids & held, f"{event['task']} got {ids} while {other} held {held}"
            running[event["task"]] = ids
            assert len(set().union(*running.values())) <= len(pool)
            most = max(most, len(running))
        else:
            running.pop(event["task"])
    return most


@pytest.fixture
def two_gpus(tmp_path) -> dict[str, str]:
    return install(tmp_path / "bin", [H100, H100])


def test_four_gpu_tasks_on_a_pool_of_two_run_two_at_a_time_on_distinct_gpus(ws: Workspace, two_gpus):
    log = gpu_workspace(ws)
    summary = ws.run_json("p:g1", "p:g2", "p:g3", "p:g4", env={**two_gpus, "NXRUN_GPUS": "0,1"})
    events = read_events(log)
    assert check_overlaps(events, {"0", "1"}) == 2
    for event in events:
        if event["event"] == "start":
            assert event["ids"] in ("0", "1") and event["cuda"] == event["ids"], event
    held = {t["id"]: t["gpus"] for t in summary["tasks"]}
    starts = {e["task"]: [e["ids"]] for e in events if e["event"] == "start"}
    assert held == starts
    # the history keeps them
    history = json.loads(ws.nxrun("history", "p:g3", "--json", check=True).stdout)
    assert history[0]["gpus"] == starts["p:g3"]


def test_a_pool_declared_without_a_gpu_schedules_the_same(ws: Workspace, tmp_path):
    failing = tmp_path / "nogpu"
    failing.mkdir()
    smi = failing / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the driver'\n"
                   "exit 9\n")
    smi.chmod(0o755)
    log = gpu_workspace(ws)
    import os

    env = {"PATH": f"{failing}{os.pathsep}{os.environ['PATH']}", "NXRUN_GPUS": "0,1"}
    ws.run_json("p:g1", "p:g2", "p:g3", "p:g4", env=env)
    assert check_overlaps(read_events(log), {"0", "1"}) == 2


def test_a_two_gpu_task_gets_both_and_runs_alone(ws: Workspace, two_gpus):
    log = gpu_workspace(ws, singles=2, extra="""
[projects.p.targets.tp]
command = "python recorder.py {log} tp 2"
gpus    = 2
cache   = "never"
""".replace("{log}", str(ws.root / "events.log")))
    summary = ws.run_json("p:g1", "p:g2", "p:tp", env={**two_gpus, "NXRUN_GPUS": "0,1"})
    events = read_events(log)
    check_overlaps(events, {"0", "1"})
    (tp,) = [e for e in events if e["event"] == "start" and e["role"] == "tp"]
    assert tp["ids"] == "0,1" and tp["cuda"] == "0,1"
    assert {t["id"]: t["gpus"] for t in summary["tasks"]}["p:tp"] == ["0", "1"]
    # the console names the GPUs a task holds when it starts
    shown = ws.nxrun("run", "p:tp", env={**two_gpus, "NXRUN_GPUS": "0,1"}, check=True).stdout
    assert "> p:tp  [GPU 0,1]  $ python recorder.py" in shown


def test_a_task_asking_for_more_gpus_than_the_pool_fails_the_run_before_anything_runs(ws: Workspace, two_gpus):
    log = gpu_workspace(ws, singles=1, extra="""
[projects.p.targets.big]
command = "touch big-ran"
gpus    = 3
""")
    result = ws.nxrun("run", "p:g1", "p:big", env={**two_gpus, "NXRUN_GPUS": "0,1"})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "p:big" in result.stderr and "3 GPUs" in result.stderr and "NXRUN_GPUS" in result.stderr
    assert "nxrun.toml:" in result.stderr
    assert not log.exists() and not (ws.root / "big-ran").exists()


def test_cli_beats_environment_beats_workspace(ws: Workspace, two_gpus):
    log = gpu_workspace(ws, singles=1, workspace_gpus='gpus = ["1"]')

    def ids_seen(*args: str, env: dict | None = None) -> str:
        if log.exists():
            log.unlink()
        ws.run_json("p:g1", *args, env={**two_gpus, **(env or {})})
        return read_events(log)[0]["ids"]

    assert ids_seen() == "1"
    assert ids_seen(env={"NXRUN_GPUS": "0"}) == "0"
    assert ids_seen("--gpus", "1", env={"NXRUN_GPUS": "0"}) == "1"
    assert ids_seen("--gpus", "0") == "0"
    # "auto" on the command line undoes the narrower settings: both GPUs, by UUID
    assert ids_seen("--gpus", "auto", env={"NXRUN_GPUS": "0"}) in (uuid_of(0), uuid_of(1))


def test_a_workspace_count_and_a_bad_id_name_where_they_were_set(ws: Workspace, two_gpus):
    gpu_workspace(ws, singles=1, workspace_gpus="gpus = 3")
    result = ws.nxrun("run", "p:g1", env=two_gpus)
    assert result.returncode != 0 and "nxrun.toml:4" in result.stderr and "gpus = 3" in result.stderr
    result = ws.nxrun("run", "p:g1", "--gpus", "0,5", env=two_gpus)
    assert result.returncode != 0 and "--gpus" in result.stderr and "'5'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_hardware_result_is_stored_under_the_model_it_ran_on(ws: Workspace, tmp_path):
    env = install(tmp_path / "bin", [H100, A100])
    ws.write("nxrun.toml", """
[workspace]
parallel = 2

[projects.p.targets.bench]
command   = "echo $CUDA_VISIBLE_DEVICES > result.txt"
outputs   = ["result.txt"]
resources = ["gpu"]
cache     = "hardware"
""")

    def run(*args: str) -> str:
        summary = ws.run_json("p:bench", *args, env=env)
        return {t["id"]: t["status"] for t in summary["tasks"]}["p:bench"]

    # given by index, the command sees the index (nvidia-smi's order)
    assert run("--gpus", "0") == "miss" and ws.read("result.txt").strip() == "0"
    assert run("--gpus", "1") == "miss" and ws.read("result.txt").strip() == "1"   # the A100: its own
    assert run("--gpus", "0") == "local-hit" and ws.read("result.txt").strip() == "0"
    assert run("--gpus", uuid_of(1)) == "local-hit" and ws.read("result.txt").strip() == "1"
    # both in the pool, both cached: a hit of either model, never a run
    assert run() == "local-hit"


def test_a_hardware_task_runs_on_the_model_its_etag_names(ws: Workspace, tmp_path):
    env = install(tmp_path / "bin", [A100, H100, H100])
    ws.write("nxrun.toml", """
[projects.p.targets.bench]
command   = "echo $CUDA_VISIBLE_DEVICES > result.txt"
outputs   = ["result.txt"]
gpus      = 2
cache     = "hardware"
""")
    summary = ws.run_json("p:bench", env=env)
    (task,) = summary["tasks"]
    # two GPUs of one model: only the H100s qualify
    assert task["gpus"] == [uuid_of(1), uuid_of(2)]
    assert ws.read("result.txt").strip() == f"{uuid_of(1)},{uuid_of(2)}"
    assert ws.run_json("p:bench", "--gpus", "1,2", env=env)["tasks"][0]["status"] == "local-hit"
