"""Task processes die with nxrun: a SIGKILL of nxrun leaves none running (the watchdog), a SIGTERM
stops them also while they are starting, and a CI cancel (SIGTERM, then SIGKILL after a grace
period) leaves nothing behind, not even a process that ignores SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from cli_workspace import Workspace
from run_processes import is_alive, kill_leftovers, start_nxrun, task_processes
from waiting import wait_until


GRANDCHILD = """
[projects.p.targets.t]
command = "sleep 300 & echo $! > child.pid; wait"
inputs  = []
"""


def _pid_in(path: Path) -> int | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return int(text) if text.endswith("\n") else None


def test_kill_9_of_nxrun_takes_the_tasks_grandchildren_with_it(ws: Workspace):
    ws.write("nxrun.toml", GRANDCHILD)
    run = start_nxrun(ws.root, "run", "p:t")
    try:
        child = wait_until(lambda: _pid_in(ws.root / "child.pid"), what="the task's grandchild to start")
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
        wait_until(lambda: not is_alive(child), timeout=30, what=f"the orphaned grandchild {child} to die")
        wait_until(lambda: not task_processes(ws.root), timeout=30, what="every task process to die")
    finally:
        if run.poll() is None:
            run.kill()
        kill_leftovers(ws.root)


def test_sigterm_stops_a_task_that_starts_after_the_stop(ws: Workspace):
    """The second task waits for the resource the first holds; the stop kills the first, which
    frees the resource, and the second must not then start its command and be waited for."""
    ws.write("nxrun.toml", """
        [workspace]
        parallel = 2
        [projects.p.targets.a]
        command   = "touch a.started; sleep 300"
        inputs    = []
        resources = ["gpu"]
        [projects.p.targets.b]
        command   = "touch b.started; sleep 300"
        inputs    = []
        resources = ["gpu"]
        [projects.p.targets.all]
        depends-on = ["a", "b"]
    """)
    run = start_nxrun(ws.root, "run", "p:all", output=ws.root / "run.log")
    try:
        wait_until(lambda: (ws.root / "a.started").exists() or (ws.root / "b.started").exists(),
                   what="one task to start")
        stopped = time.monotonic()
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=60)
        assert time.monotonic() - stopped < 15, "nxrun waited for a task that started after the stop"
        assert run.returncode != 0 and "interrupted" in ws.read("run.log")
        wait_until(lambda: not task_processes(ws.root), timeout=30, what="every task process to die")
    finally:
        if run.poll() is None:
            run.kill()
        kill_leftovers(ws.root)


def test_sigterm_soon_after_start_leaves_no_task_running(ws: Workspace):
    ws.write("nxrun.toml", """
        [workspace]
        parallel = 4
        [projects.p.targets.a]
        command = "sleep 300 & wait"
        inputs  = []
        [projects.p.targets.b]
        command = "sleep 300 & wait"
        inputs  = []
        [projects.p.targets.c]
        command = "sleep 300"
        inputs  = []
        [projects.p.targets.all]
        depends-on = ["a", "b", "c"]
    """)
    try:
        # the signal lands at different moments of start-up: before the handler is installed,
        # while hashing, while a worker is inside Popen, once the commands run
        for delay in (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.6, 1.0):
            run = start_nxrun(ws.root, "run", "p:all")
            time.sleep(delay)   # the moment the signal lands is what this test varies
            stopped = time.monotonic()
            run.send_signal(signal.SIGTERM)
            try:
                run.wait(timeout=20)
            finally:
                if run.poll() is None:
                    run.kill()
            assert time.monotonic() - stopped < 15, f"nxrun took too long to stop (signal after {delay} s)"
            wait_until(lambda: not task_processes(ws.root), timeout=30,
                       what=f"every task process to die (signal after {delay} s)")
    finally:
        kill_leftovers(ws.root)


def test_a_ci_cancel_leaves_no_task_running_even_one_that_ignores_sigterm(ws: Workspace):
    ws.write("nxrun.toml", """
        [projects.p.targets.t]
        command = "trap '' TERM; sleep 300 & echo $! > child.pid; wait"
        inputs  = []
    """)
    run = start_nxrun(ws.root, "run", "p:t")
    try:
        wait_until(lambda: _pid_in(ws.root / "child.pid"), what="the task to start")
        run.send_signal(signal.SIGTERM)
        try:   # the CI's grace period, shorter than nxrun's own
            run.wait(timeout=1)
        except subprocess.TimeoutExpired:
            run.send_signal(signal.SIGKILL)
            run.wait(timeout=30)
        wait_until(lambda: not task_processes(ws.root), timeout=30, what="every task process to die")
    finally:
        if run.poll() is None:
            run.kill()
        kill_leftovers(ws.root)


def test_a_run_started_right_after_a_kill_9_waits_for_the_orphans_to_go(ws: Workspace):
    """The killed run's task ignores SIGTERM, so it lives on for the watchdog's grace period: the
    next run must wait for it, not run the task beside it."""
    ws.write("nxrun.toml", """
        [projects.p.targets.t]
        command = "python task.py"
        inputs  = []
        outputs = ["out.txt"]
    """)
    ws.write("task.py", """
        import os, subprocess, sys
        if os.environ["RUN_NAME"] == "second":
            # the first run's orphan must be gone (a zombie not yet reaped counts as gone)
            try:
                with open(f"/proc/{open('child.pid').read().strip()}/stat") as handle:
                    if handle.read().rsplit(")", 1)[1].split()[0] not in "ZX":
                        open("overlap.txt", "w").write("the orphan was still running")
            except FileNotFoundError:
                pass
            open("out.txt", "w").write("done")
            sys.exit(0)
        subprocess.run("trap '' TERM; sleep 300 & echo $! > child.pid; wait", shell=True)
    """)
    first = start_nxrun(ws.root, "run", "p:t", env={"RUN_NAME": "first"})
    second = None
    try:
        child = wait_until(lambda: _pid_in(ws.root / "child.pid"), what="the first run's task to start")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        second = start_nxrun(ws.root, "run", "p:t", env={"RUN_NAME": "second"}, output=ws.root / "second.log")
        assert second.wait(timeout=60) == 0, ws.read("second.log")
        assert "waiting for another nxrun run in this workspace that holds p:t" in ws.read("second.log")
        assert not (ws.root / "overlap.txt").exists(), "the task ran beside the killed run's orphan"
        assert not is_alive(child)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
        kill_leftovers(ws.root)


def test_a_second_sigterm_during_the_grace_period_kills_at_once(ws: Workspace):
    ws.write("nxrun.toml", """
        [projects.p.targets.t]
        command = "python task.py"
        inputs  = []
    """)
    ws.write("task.py", """
        import signal, time
        signal.signal(signal.SIGTERM, lambda *_: open("term.txt", "w").write("asked to stop, staying"))
        open("started.txt", "w").write("started")
        while True:
            time.sleep(1)
    """)
    run = start_nxrun(ws.root, "run", "p:t", output=ws.root / "run.log")
    try:
        wait_until(lambda: (ws.root / "started.txt").exists(), what="the task to start")
        run.send_signal(signal.SIGTERM)
        wait_until(lambda: (ws.root / "term.txt").exists(), what="the task to get SIGTERM")
        second = time.monotonic()
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=30)
        # nxrun's own grace period is 5 s: a second signal cuts it short
        assert time.monotonic() - second < 4, ws.read("run.log")
        wait_until(lambda: not task_processes(ws.root), timeout=30, what="every task process to die")
    finally:
        if run.poll() is None:
            run.kill()
        kill_leftovers(ws.root)


def test_a_stopped_task_gets_its_grace_period_even_when_its_shell_exits_at_once(ws: Workspace):
    """SIGTERM reaches the whole process group: the shell dies at once, the program it started
    cleans up first. It must not be SIGKILLed just because the shell is gone."""
    ws.write("nxrun.toml", """
        [projects.p.targets.t]
        command = "python task.py; true"
        inputs  = []
    """)
    ws.write("task.py", """
        import signal, time
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        open("started.txt", "w").write("started")
        while not stop:
            time.sleep(0.01)
        time.sleep(0.3)   # the task's own clean-up takes a while
        open("cleaned.txt", "w").write("cleaned up")
    """)
    run = start_nxrun(ws.root, "run", "p:t", output=ws.root / "run.log")
    try:
        wait_until(lambda: (ws.root / "started.txt").exists(), what="the task to start")
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=30)
        assert (ws.root / "cleaned.txt").exists(), ws.read("run.log")
    finally:
        if run.poll() is None:
            run.kill()
        kill_leftovers(ws.root)
