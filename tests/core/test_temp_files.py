"""Temp files a killed run leaves in the cache's tmp/ are removed by the next run that has the cache
to itself; a run never removes the temp files of another run still in progress."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cli_workspace import Workspace

CONFIG = """
[projects.p.targets.big]
command = "python3 -c \\"import os; open('big.bin','wb').write(os.urandom(48 << 20))\\""
inputs  = ["seed.txt"]
outputs = ["big.bin"]

[projects.p.targets.small]
command = "echo small > small.txt"
inputs  = []
outputs = ["small.txt"]

[projects.p.targets.chatty]
command = "python3 -c \\"print('x' * (9 << 20))\\"; while [ ! -e go ]; do sleep 0.02; done; echo done > chatty.txt"
inputs  = []
outputs = ["chatty.txt"]
"""


def _start(ws: Workspace, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nxrun", "run", *args], cwd=ws.root,
                            env=dict(os.environ, NO_COLOR="1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _temp_files(ws: Workspace) -> list[Path]:
    tmp = ws.root / ".nxrun" / "tmp"
    return list(tmp.iterdir()) if tmp.is_dir() else []


def test_temp_files_of_a_killed_run_are_removed_by_the_next_run(ws: Workspace):
    ws.write("nxrun.toml", CONFIG)
    ws.write("seed.txt", "1")
    process = _start(ws, "p:big")
    try:
        # the store copies big.bin into a temp file of the cache: kill nxrun in the middle of it
        _wait_for(lambda: any(p.stat().st_size > (1 << 20) for p in _temp_files(ws)) or process.poll() is not None,
                  "the store to start copying")
        process.send_signal(signal.SIGKILL)
    finally:
        process.communicate(timeout=60)
    left = _temp_files(ws)
    assert left, "the store finished before it could be interrupted"
    assert ws.statuses(ws.run_json("p:small")) == {"p:small": "miss"}
    assert _temp_files(ws) == []


def test_a_run_keeps_the_temp_files_of_a_run_in_progress(ws: Workspace):
    ws.write("nxrun.toml", CONFIG)
    chatty = _start(ws, "p:chatty")
    try:
        # past 8 MiB the log of the running task goes to a temp file in the cache
        _wait_for(lambda: _temp_files(ws) or chatty.poll() is not None, "the log to spill to a temp file")
        in_flight = _temp_files(ws)
        assert in_flight and chatty.poll() is None
        assert ws.statuses(ws.run_json("p:small")) == {"p:small": "miss"}
        assert all(path.exists() for path in in_flight)
    finally:
        (ws.root / "go").touch()
        output, _ = chatty.communicate(timeout=60)
    assert chatty.returncode == 0 and "warning" not in output, output[-2000:]
    # the entry of the long-log task was stored whole: its log replays from the cache
    replay = ws.nxrun("run", "p:chatty")
    assert replay.returncode == 0 and "local" in replay.stdout
    assert replay.stdout.count("x" * 1000) >= (9 << 20) // 1000 - 1
