"""An input edited (or deleted) while its task runs: the result is not cached, and a warning names
the task and the file. Otherwise the entry would be keyed on the old content and hold outputs
made from the new."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from cli_workspace import Workspace
from run_processes import json_summary, start_nxrun
from waiting import wait_until


WAITS_FOR_GO = """
[projects.p.targets.t]
command = "touch started && while [ ! -f go ]; do sleep 0.01; done && cat src/in.txt > out.txt"
inputs  = ["src/in.txt"]
outputs = ["out.txt"]
"""


def _write_old(path: Path, text: str, mtime: float) -> None:
    path.write_text(text)
    os.utime(path, (mtime, mtime))


@pytest.mark.parametrize("edit", ["same-size-and-mtime", "deleted"])
def test_an_input_edited_while_its_task_runs_is_not_cached(ws: Workspace, edit: str):
    ws.write("nxrun.toml", WAITS_FOR_GO)
    source = ws.write("src/in.txt", "old\n")
    mtime = time.time() - 100
    _write_old(source, "old\n", mtime)
    run = start_nxrun(ws.root, "run", "--json", "p:t", output=ws.root / "run.log")
    try:
        wait_until(lambda: (ws.root / "started").exists(), what="the command to start")
        if edit == "deleted":
            source.unlink()
            source.write_text("new\n")   # a new file (new inode) in its place
        else:
            _write_old(source, "new\n", mtime)   # same size, and the old mtime put back
        (ws.root / "go").touch()
        assert run.wait(timeout=60) == 0, ws.read("run.log")
    finally:
        (ws.root / "go").touch()
        if run.poll() is None:
            run.kill()
            run.wait()
    summary = json_summary(ws.read("run.log"))
    assert ws.statuses(summary) == {"p:t": "miss"}
    assert [w for w in summary["warnings"] if "p:t" in w and "src/in.txt" in w and "not cached" in w], summary
    assert ws.read("out.txt") == "new\n"
    # the workspace as the run hashed it: the same ETag again, which must not have an entry
    _write_old(source, "old\n", mtime)
    again = ws.run_json("p:t")
    assert ws.statuses(again) == {"p:t": "miss"}
    assert ws.read("out.txt") == "old\n"
    assert ws.statuses(ws.run_json("p:t")) == {"p:t": "local-hit"}


def test_a_file_created_during_the_run_is_not_a_change(ws: Workspace):
    ws.write("nxrun.toml", """
        [projects.p.targets.t]
        command = "cat src/*.txt > out.txt && echo more > src/new.txt"
        inputs  = ["src/**/*.txt"]
        outputs = ["out.txt"]
    """)
    ws.write("src/a.txt", "a\n")
    summary = ws.run_json("p:t")
    assert not summary["warnings"]
    (ws.root / "src/new.txt").unlink()
    assert ws.statuses(ws.run_json("p:t")) == {"p:t": "local-hit"}
