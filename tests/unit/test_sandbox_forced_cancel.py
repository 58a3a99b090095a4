"""A forced Ray cancel SIGKILLs the worker running a sandboxed command: RayExecutor._wait's docstring says
"the worker process ends, the command with it". PR_SET_PDEATHSIG reaches the shell only; what the shell
started (the command itself, in `sh -c "a; b"`) runs on. This fails on the code it was written against."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

WORKER = textwrap.dedent("""
    import subprocess, sys
    from nxrun.executors.sandbox import _die_with_parent
    process = subprocess.Popen(["/bin/sh", "-c", "sleep 300; true"], start_new_session=True,
                               preexec_fn=_die_with_parent)
    print(process.pid, flush=True)
    process.wait()
""")


def _alive_in_group(pgid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[2]) == pgid:      # state, pgrp; a zombie has ended
                found.append(int(name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_worker_killed_by_a_forced_cancel_takes_its_command_group_with_it():
    worker = subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE, text=True)
    group = int(worker.stdout.readline())
    deadline = time.monotonic() + 30
    while len(_alive_in_group(group)) < 2 and time.monotonic() < deadline:   # the shell and its sleep
        time.sleep(0.05)
    assert len(_alive_in_group(group)) >= 2
    worker.send_signal(signal.SIGKILL)          # ray.cancel(force=True) ends the worker process
    worker.wait(timeout=30)
    try:
        deadline = time.monotonic() + 10
        while _alive_in_group(group) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive_in_group(group), "the command outlived the worker a forced cancel killed"
    finally:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
