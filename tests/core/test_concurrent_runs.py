"""Runs in one workspace never race on one task's outputs: a second run waits for the task's lock,
says so, and then finds the first run's entry as a hit. Workspaces that share a cache folder do
not wait for each other (test_durability.py runs two at once)."""

from __future__ import annotations

import shutil

from cli_workspace import Workspace
from run_processes import json_summary, start_nxrun
from waiting import wait_until


WAITS_FOR_GO = """
[projects.p.targets.t]
command = "mkdir -p out && echo begin >> out/log.txt && touch started-$RUN_NAME && while [ ! -f go ]; do sleep 0.01; done && echo end >> out/log.txt"
inputs  = ["in.txt"]
outputs = ["out"]
"""


def test_a_second_run_of_a_running_task_waits_and_then_hits(ws: Workspace):
    ws.write("nxrun.toml", WAITS_FOR_GO)
    ws.write("in.txt", "x")
    first = start_nxrun(ws.root, "run", "--json", "p:t", env={"RUN_NAME": "first"}, output=ws.root / "first.log")
    second = None
    try:
        wait_until(lambda: (ws.root / "started-first").exists(), what="the first run's command to start")
        second = start_nxrun(ws.root, "run", "--json", "p:t", env={"RUN_NAME": "second"},
                             output=ws.root / "second.log")
        message = "waiting for another nxrun run in this workspace that holds p:t"
        wait_until(lambda: message in ws.read("second.log") or (ws.root / "started-second").exists(),
                   what="the second run to wait (or to start the command beside the first)")
        assert not (ws.root / "started-second").exists(), "the second run ran the task beside the first"
        assert second.poll() is None
        (ws.root / "go").touch()
        assert first.wait(timeout=60) == 0, ws.read("first.log")
        assert second.wait(timeout=60) == 0, ws.read("second.log")
    finally:
        (ws.root / "go").touch()
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert not (ws.root / "started-second").exists()
    assert ws.read("second.log").count(message) == 1
    summary = json_summary(ws.read("second.log"))
    assert ws.statuses(summary) == {"p:t": "local-hit"}
    assert ws.read("out/log.txt") == "begin\nend\n"
    shutil.rmtree(ws.root / "out")
    assert ws.statuses(ws.run_json("p:t")) == {"p:t": "local-hit"}
    assert ws.read("out/log.txt") == "begin\nend\n"


def _graph(tasks: int) -> str:
    lines = ["[workspace]", "parallel = 4"]
    for i in range(tasks):
        deps = [f"t{j}" for j in range(max(0, i - 2), i)]
        reads = " ".join(f"out/t{j}.txt" for j in range(max(0, i - 2), i)) or "in.txt"
        lines += [f"[projects.p.targets.t{i}]",
                  # two writes with work between them: a run that reads or stores the file while
                  # another writes it sees it truncated or half written
                  f'command = "mkdir -p out && echo {i} begin > out/t{i}.txt && cat {reads} > /dev/null '
                  f'&& sleep 0.02 && echo {i} end >> out/t{i}.txt"',
                  'inputs = ["in.txt"]',
                  f'outputs = ["out/t{i}.txt"]',
                  "depends-on = [" + ", ".join(f'"{d}"' for d in deps) + "]"]
    lines += ["[projects.p.targets.all]", "depends-on = [" + ", ".join(f'"t{i}"' for i in range(tasks)) + "]"]
    return "\n".join(lines) + "\n"


def test_three_runs_of_one_graph_run_each_task_once_and_cache_whole_outputs(ws: Workspace):
    tasks = 40
    ws.write("nxrun.toml", _graph(tasks))
    ws.write("in.txt", "x")
    runs = [start_nxrun(ws.root, "run", "--json", "p:all", output=ws.root / f"run{k}.log") for k in range(3)]
    try:
        for k, process in enumerate(runs):
            assert process.wait(timeout=180) == 0, ws.read(f"run{k}.log")
    finally:
        for process in runs:
            if process.poll() is None:
                process.kill()
                process.wait()
    summaries = [json_summary(ws.read(f"run{k}.log")) for k in range(3)]
    ran = [task for s in summaries for task, status in ws.statuses(s).items() if status == "miss"]
    assert sorted(ran) == sorted(f"p:t{i}" for i in range(tasks)), "some task ran in two runs at once"
    expected = {f"out/t{i}.txt": f"{i} begin\n{i} end\n" for i in range(tasks)}
    assert {rel: ws.read(rel) for rel in expected} == expected
    shutil.rmtree(ws.root / "out")
    statuses = ws.statuses(ws.run_json("p:all"))
    assert set(statuses.values()) == {"local-hit"}
    assert {rel: ws.read(rel) for rel in expected} == expected
    verify = ws.nxrun("cache", "verify")
    assert verify.returncode == 0, verify.stdout


def test_runs_of_one_workspace_with_different_cache_folders_still_wait(ws: Workspace, tmp_path):
    """The lock belongs to the workspace, not to the cache: a run with NXRUN_CACHE_DIR set
    elsewhere waits for one using the workspace's own cache folder instead of running the task
    beside it (and caching the mix of both runs' writes)."""
    ws.write("nxrun.toml", WAITS_FOR_GO)
    ws.write("in.txt", "x")
    other_cache = {"NXRUN_CACHE_DIR": str(tmp_path / "other-cache"), "RUN_NAME": "second"}
    first = start_nxrun(ws.root, "run", "--json", "p:t", env={"RUN_NAME": "first"}, output=ws.root / "first.log")
    second = None
    try:
        wait_until(lambda: (ws.root / "started-first").exists(), what="the first run's command to start")
        second = start_nxrun(ws.root, "run", "--json", "p:t", env=other_cache, output=ws.root / "second.log")
        message = "waiting for another nxrun run in this workspace that holds p:t"
        wait_until(lambda: message in ws.read("second.log") or (ws.root / "started-second").exists(),
                   what="the second run to wait (or to start the command beside the first)")
        assert not (ws.root / "started-second").exists(), "the second run ran the task beside the first"
        (ws.root / "go").touch()
        assert first.wait(timeout=60) == 0, ws.read("first.log")
        assert second.wait(timeout=60) == 0, ws.read("second.log")
    finally:
        (ws.root / "go").touch()
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    # the second cache has no entry of the first run: it ran the task itself, after the first
    assert ws.statuses(json_summary(ws.read("second.log"))) == {"p:t": "miss"}
    assert ws.read("out/log.txt") == "begin\nend\n"
    shutil.rmtree(ws.root / "out")
    assert ws.statuses(ws.run_json("p:t")) == {"p:t": "local-hit"}
    assert ws.read("out/log.txt") == "begin\nend\n"
