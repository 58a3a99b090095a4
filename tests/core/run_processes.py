"""Helpers for tests that start `nxrun run` in the background and watch processes: start it with
its output in a file, read its JSON summary, and find the live processes a workspace's tasks
started (by the NXRUN_WORKSPACE variable every task command inherits). Waiting is tests/waiting.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def start_nxrun(root: Path, *args: str, env: dict | None = None, output: Path | None = None) -> subprocess.Popen:
    """`nxrun ARGS` in `root`, in the background; stdout and stderr go to `output` when given."""
    full_env = dict(os.environ, NO_COLOR="1")
    full_env.pop("NXRUN_REMOTE", None)
    full_env.update(env or {})
    sink = open(output, "wb") if output is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen([sys.executable, "-m", "nxrun", *args], cwd=root, env=full_env,
                                stdout=sink, stderr=subprocess.STDOUT)
    finally:
        if output is not None:
            sink.close()


def is_alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def task_processes(root: Path) -> list[int]:
    """Live processes whose environment says they belong to a task of the workspace at `root`."""
    marker = f"NXRUN_WORKSPACE={os.path.realpath(root)}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
        except OSError:
            continue
        if marker in environ and is_alive(int(name)):
            found.append(int(name))
    return found


def kill_leftovers(root: Path) -> None:
    """Clean up after a failed test: SIGKILL whatever the workspace's tasks left running."""
    for pid in task_processes(root):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def json_summary(output: str) -> dict:
    """The summary `nxrun run --json` printed last, from its output with the console lines before."""
    start = 0 if output.startswith("{") else output.index("\n{\n") + 1
    return json.loads(output[start:])
