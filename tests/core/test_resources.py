"""Resources are granted before a task takes a worker: tasks waiting for a busy resource hold no
worker, so tasks that need none are not delayed behind them (the real CLI, timestamps written by
the commands themselves)."""

from __future__ import annotations

import sys
from pathlib import Path

from cli_workspace import Workspace

# a task's command: note when it starts; a task holding the resource then waits (up to a deadline)
# until every free task has started, so that free tasks kept from starting show as starting after it ends
TOOL = """
import os, pathlib, sys, time
name, kind = sys.argv[1], sys.argv[2]
marks = pathlib.Path(os.environ["MARKS"])
(marks / f"{name}.start").write_text(repr(time.time()))
if kind == "held":
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline and len(list(marks.glob("free-*.start"))) < 3:
        time.sleep(0.01)
(marks / f"{name}.end").write_text(repr(time.time()))
"""


def test_tasks_waiting_for_a_resource_hold_no_worker(ws: Workspace, tmp_path: Path):
    marks = tmp_path / "marks"
    marks.mkdir()
    ws.write("tool.py", TOOL)
    held = [f"held-{i}" for i in range(3)]
    free = [f"free-{i}" for i in range(3)]
    body = "".join(f"""
        [projects.p.targets.{name}]
        command   = "{sys.executable} tool.py {name} {name.split('-')[0]}"
        inputs    = ["tool.py"]
        resources = {'["lab"]' if name in held else '[]'}
    """ for name in held + free)
    ws.write("nxrun.toml", body)
    # the tasks that hold the resource come first, and three workers: before, two of them took a
    # worker each to wait for the resource, and the free tasks waited behind them
    summary = ws.run_json(*(f"p:{name}" for name in held + free), "-p", "3", env={"MARKS": str(marks)})
    assert set(ws.statuses(summary).values()) == {"miss"}

    def stamp(name: str, what: str) -> float:
        return float((marks / f"{name}.{what}").read_text())

    spans = sorted((stamp(n, "start"), stamp(n, "end")) for n in held)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end, f"tasks holding the resource overlapped: {spans}"
    # the first holder waits for the free tasks to start: they need no worker it or its queue holds
    last_free_start = max(stamp(n, "start") for n in free)
    assert last_free_start < spans[0][1], (
        f"free tasks waited behind tasks waiting for the resource: last free start {last_free_start}, "
        f"resource holders {spans}")
