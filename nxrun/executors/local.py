"""The local executor: each cache miss runs through the shell in the task's folder on this
machine, in a process group of its own that dies with nxrun (task_process.py, with the watchdog of
task_watchdog.py), its output streamed line by line and captured for the cache entry."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..runtime import command_environment
from ..store.capture import LogCapture


class LocalExecutor:
    """An executors.base.Executor (not a subclass: base.py's records are imported at the first
    miss, so a run where every task is cached does not pay for them)."""

    name = "local"
    produces_entries = False

    def __init__(self, root: Path, store, watchdog_holds: Callable[[], object] | None = None):
        """`store`: where a captured log spills to and is stored from; `watchdog_holds`: the
        descriptors the watchdog keeps open until it exits (the run's task locks)."""
        self.root = root
        self.store = store
        self.watchdog_holds = watchdog_holds
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._processes = None   # a task_process.TaskProcesses from the first command on

    def check(self) -> None:
        return None

    def run(self, job, on_line: Callable[[bytes], None]):
        """Run `job` (a base.Job); a base.Finished."""
        from .base import Finished

        env = command_environment()
        env.update(job.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        tick = time.monotonic()
        processes = self._task_processes()
        try:
            process = processes.start(job.command, self.root / job.cwd, env)
        except OSError as exc:
            return Finished(-1, time.monotonic() - tick, None, None, problem=f"could not start the command: {exc}")
        log = LogCapture(self.store)
        try:
            assert process.stdout is not None
            for line in iter(process.stdout.readline, b""):
                log.write(line)
                on_line(line)
            exit_code = processes.wait(process)
        except BaseException:
            log.discard()
            raise
        finally:
            process.stdout.close()
            log.close()
        return Finished(exit_code, time.monotonic() - tick, log, None)

    def cancel_all(self) -> None:
        """No command starts from now on (one starting right now is killed by the worker that
        starts it), and running ones are stopped: SIGTERM, then SIGKILL after a grace period, at
        once on a second Ctrl-C or SIGTERM during the grace period."""
        self.stopping.set()
        with self._lock:
            processes = self._processes
        if processes is not None:
            try:
                processes.stop_all()
            except KeyboardInterrupt:
                processes.kill_all()

    def close(self, clean: bool) -> None:
        with self._lock:
            processes = self._processes
        if processes is not None:
            processes.close(clean)

    def _task_processes(self):
        """The run's task processes (and their watchdog), from the first command on: a run where
        every task is cached imports no subprocess module and starts no watchdog."""
        with self._lock:
            if self._processes is None:
                from .task_process import TaskProcesses

                self._processes = TaskProcesses(self.stopping, watchdog_holds=self.watchdog_holds)
            return self._processes
