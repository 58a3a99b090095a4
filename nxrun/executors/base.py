"""The executor contract: what the scheduler hands an executor for one cache miss (Job), what it
gets back (Finished), and the methods every executor has (Executor).

The scheduler owns everything around `Executor.run`: resources and GPUs granted before a worker
slot is taken, task locks, clearing declared outputs (local executor only), the input re-check
after the command, scanning outputs and storing the entry (local), or indexing and restoring
`Finished.entry` (executors that produce entries, such as a remote one).

`Executor` is a plain class rather than a typing.Protocol: the run path does not import `typing`
(its import costs a measurable part of a cached run). Executors need not inherit from it; it
documents the methods the scheduler calls.
"""

from __future__ import annotations

from collections.abc import Callable

from ..graph import Task
from ..records import default_factory, record
from ..store import CacheEntry
from ..store.capture import LogCapture


@record
class Job:
    """One cache miss, as the scheduler hands it to an executor."""

    task: Task                    # the graph task (id, source, outputs, cache, resources...)
    etag: str
    command: str                  # the task's command, args after `--` already appended
    env: dict[str, str]           # what the task adds: task.env, NXRUN_TASK, NXRUN_WORKSPACE,
                                  # CUDA_VISIBLE_DEVICES / NXRUN_GPU_IDS when granted GPUs; NOT
                                  # os.environ (each executor adds its own base environment)
    cwd: str                      # the task's working folder, relative to the workspace root
    inputs: list[tuple[str, str]]  # (workspace-relative path, content digest) of every input file
                                  # the ETag hashed (what a remote sandbox must materialise)
    gpus: list[str] = default_factory(list)   # GPU ids granted (empty when none)
    args: list[str] = default_factory(list)   # the args after `--` (already in `command`): secrets, so
                                              # an executor that stores the command keeps them out
    cpus: int = 1


@record
class Finished:
    """How a job ended."""

    exit_code: int                # negative: killed by that signal
    duration: float               # seconds the command ran
    log: LogCapture | None        # local: the captured log (the scheduler stores or discards it)
    entry: CacheEntry | None      # executors that produce entries: the manifest the worker stored
                                  # (write-once) in the remote cache; restored like a remote hit
    problem: str | None = None    # the executor's own failure, said to the user (could not start,
                                  # worker died, cluster lost): the task fails, nothing is cached


class Executor:
    """What the scheduler calls on an executor (see the module docstring)."""

    name: str = ""                # "local", "ray"
    produces_entries: bool = False   # False: outputs appear in the workspace (local); True: they
                                  # come back as Finished.entry and are restored from the cache

    def check(self) -> None:
        """At run start: raise NxrunError with a clear message when the executor cannot work."""
        raise NotImplementedError

    def run(self, job: Job, on_line: Callable[[bytes], None]) -> Finished:
        """Run the job's command, blocking (called from a worker thread); `on_line` gets the log
        as it comes (an executor may deliver it all when the job ends)."""
        raise NotImplementedError

    def cancel_all(self) -> None:
        """Ctrl-C, or the first failure without --keep-going: stop every job, and start none."""
        raise NotImplementedError

    def close(self, clean: bool) -> None:
        """The run is over; `clean`: every job finished (nothing left to sweep up)."""
        raise NotImplementedError
