"""Start, track and stop the processes of a run's task commands, so that they die with nxrun.

Each command runs through the shell in a session (and process group) of its own, so that a
Ctrl-C on the terminal reaches nxrun only and nxrun stops whole process trees, grandchildren
included. That also means nothing stops them when nxrun itself is killed: a watchdog process
(task_watchdog.py), started with the run's first command, is told each task's process group and
kills them all if nxrun goes away without saying goodbye.

A stop (SIGTERM or SIGINT to nxrun) can arrive while a worker thread is inside Popen: the
process is registered and the stop flag re-checked under one lock, so either the stop sees the
process or the worker sees the stop, and kills what it just started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

from . import task_watchdog
from .task_watchdog import TOKEN_VARIABLE, live_groups

# how long a stopped task's processes get between SIGTERM and SIGKILL
GRACE_SECONDS = 5.0


class TaskProcesses:
    """The running task commands of one run. `stopping` is the run's stop flag."""

    def __init__(self, stopping: threading.Event, grace: float = GRACE_SECONDS, watchdog_holds=None):
        """`watchdog_holds`: called when the watchdog starts, the descriptors it should inherit and
        keep open until it exits (the run's task locks: task_locks.py)."""
        self.stopping = stopping
        self.grace = grace
        self.watchdog_holds = watchdog_holds
        self.token = os.urandom(16).hex()
        self._running: dict[int, subprocess.Popen] = {}   # pid (= process group id) -> process
        self._lock = threading.Lock()
        self._watchdog: subprocess.Popen | None = None

    def start(self, command: str, cwd, env: dict[str, str]) -> subprocess.Popen:
        """Start `command` through the shell (`env` gains the run's token), output to a pipe. If
        the run is being stopped, the process is killed at once (the caller then reads its output
        to the end as usual). Raises OSError when it cannot be started."""
        env[TOKEN_VARIABLE] = self.token
        with self._lock:
            self._start_watchdog()
        process = subprocess.Popen(command, shell=True, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        with self._lock:
            self._running[process.pid] = process
            self._tell_watchdog(f"+{process.pid}")
            stopping = self.stopping.is_set()
        if stopping:   # the stop came while Popen ran: it has nothing to save yet
            _signal_group(process.pid, signal.SIGKILL)
        return process

    def wait(self, process: subprocess.Popen) -> int:
        """Wait for a started process; its exit code (negative: the signal that killed it). When
        the run is stopped meanwhile, its group gets SIGKILL after the grace period."""
        while True:
            try:
                code = process.wait(timeout=None if not self.stopping.is_set() else self.grace)
                break
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
        with self._lock:
            self._running.pop(process.pid, None)
            self._tell_watchdog(f"-{process.pid}")
        return code

    def stop_all(self) -> None:
        """Stop every running command (the caller has set `stopping`): SIGTERM to each process
        group, SIGKILL to those with a live member after the grace period. The whole group gets
        the grace period, not only the shell at its head, which usually exits at once."""
        with self._lock:
            groups = {process.pid for process in self._running.values()}
        for pgid in groups:
            _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while groups and time.monotonic() < deadline:
            groups = live_groups(groups)
            if groups:
                time.sleep(0.02)
        for pgid in groups:
            # while any member is left, the kernel hands the group's id to no new process
            _signal_group(pgid, signal.SIGKILL)

    def kill_all(self) -> None:
        """SIGKILL every running command's process group at once (a second stop signal)."""
        with self._lock:
            processes = list(self._running.values())
        for process in processes:
            _signal_group(process.pid, signal.SIGKILL)

    def close(self, clean: bool) -> None:
        """The run is over. `clean`: every command finished, so the watchdog leaves without
        killing anything; otherwise it sweeps up whatever of the run's processes remain. Does not
        wait for it: it exits on its own, and nxrun's exit is not delayed."""
        with self._lock:
            watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        assert watchdog.stdin is not None
        try:
            if clean:
                watchdog.stdin.write(b"bye\n")
            watchdog.stdin.close()
        except OSError:   # it died: nothing to tell
            pass

    # ------------------------------------------------------------------ the watchdog
    def _start_watchdog(self) -> None:
        if self._watchdog is not None:
            return
        held = tuple(self.watchdog_holds()) if self.watchdog_holds is not None else ()
        self._watchdog = task_watchdog.start(self.token, self.grace, held)

    def _tell_watchdog(self, line: str) -> None:
        if self._watchdog is not None and not task_watchdog.tell(self._watchdog, line):
            self._watchdog = None   # it died: the run goes on without one


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
