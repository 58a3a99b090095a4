"""nxrun/executors/task_process.py and nxrun/executors/task_watchdog.py: a command started while the run stops is
killed at once, the watchdog's protocol, and its sweep when its input ends without a goodbye."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nxrun.executors.task_process import TaskProcesses
from nxrun.executors.task_watchdog import read_registrations


def test_watchdog_protocol_keeps_only_groups_not_yet_reaped():
    import io

    groups, clean = read_registrations(io.BytesIO(b"+100\n+200\n-100\n+junk\n+1\n+300"))
    assert groups == {200, 300} and not clean
    groups, clean = read_registrations(io.BytesIO(b"+100\nbye\n+200\n"))
    assert clean


def test_a_process_started_while_the_run_stops_is_killed_at_once(tmp_path: Path):
    """The stop flag is set (a SIGTERM handled by the main thread) while a worker is in Popen."""
    stopping = threading.Event()
    processes = TaskProcesses(stopping, grace=1)
    stopping.set()
    started = time.monotonic()
    process = processes.start("sleep 300", tmp_path, dict(os.environ))
    assert process.stdout is not None
    process.stdout.read()
    assert processes.wait(process) < 0
    assert time.monotonic() - started < 10
    processes.close(clean=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the token sweep reads /proc")
def test_watchdog_kills_registered_groups_and_token_carriers_when_its_input_ends(tmp_path: Path):
    token = os.urandom(8).hex()
    group = subprocess.Popen(["sleep", "300"], start_new_session=True)
    # a process that left every group it was registered with, but carries the run's token
    escaped = subprocess.Popen(["sleep", "300"], start_new_session=True,
                               env=dict(os.environ, NXRUN_RUN_TOKEN=token))
    watchdog = subprocess.Popen([sys.executable, "-m", "nxrun.executors.task_watchdog", token, "2"], stdin=subprocess.PIPE)
    try:
        watchdog.stdin.write(f"+{group.pid}\n".encode())
        watchdog.stdin.close()
        assert watchdog.wait(timeout=30) == 0
        assert group.wait(timeout=10) == -signal.SIGTERM
        assert escaped.wait(timeout=10) == -signal.SIGTERM
    finally:
        for process in (group, escaped, watchdog):
            if process.poll() is None:
                process.kill()
                process.wait()
