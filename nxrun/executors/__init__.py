"""Executors: how a cache miss's command runs (the contract is in base.py). `local` runs it on this
machine (local.py: a process group per command, task_process.py, watched by a process that
outlives nxrun, task_watchdog.py); `ray` runs each miss as a Ray task in a sandbox on a cluster
node, files travelling through the remote cache (ray.py, action.py, sandbox.py)."""

from __future__ import annotations

from ..errors import NxrunError

EXECUTORS = ("local", "ray")


def make_executor(name: str, workspace, remote, console, *, store=None, watchdog_holds=None, graph=None):
    """The executor called `name` for a run in `workspace` (its config), with the run's remote
    cache (or None) and console. `store` and `watchdog_holds` are the local executor's: the local
    store a captured log goes to, and the descriptors its watchdog keeps open (the task locks);
    `graph` the Ray executor's (a task's sandbox holds its upstream tasks' outputs). Ray is
    imported only when its executor is checked (executors/ray.py)."""
    if name == "local":
        from .local import LocalExecutor

        return LocalExecutor(workspace.root, store, watchdog_holds=watchdog_holds)
    if name == "ray":
        from .ray import RayExecutor

        return RayExecutor(workspace, remote, console, graph=graph)
    raise NxrunError(f"unknown executor '{name}'; use one of {', '.join(EXECUTORS)}.")
