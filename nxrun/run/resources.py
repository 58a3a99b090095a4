"""Resources granted to a task before it takes a worker: a named resource (`resources = ["gpu"]`)
is held by one task at a time. The scheduling thread asks with `try_grant`, which never blocks: a
task whose resources are busy stays queued, without a worker, and is asked for again when a grant
is released (`on_release` wakes the scheduler). A grant carries the GPU ids it gives the task
(none yet: a GPU slot pool fills them in), which reach the command as CUDA_VISIBLE_DEVICES and
NXRUN_GPU_IDS."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..records import default_factory, record


@record
class Grant:
    """What one task holds while it runs."""

    names: list[str]                                # the named resources it holds
    gpus: list[str] = default_factory(list)         # GPU ids it was given (empty when none)
    released: bool = False


class Resources:
    """The resources of one run. Thread-safe: grants are asked for by the scheduling thread and
    given back by workers."""

    def __init__(self, on_release: Callable[[], None] | None = None):
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._on_release = on_release
        self._interrupted = False
        # names an executor places itself (Ray places `gpu` tasks on the GPUs of its nodes): not
        # held here, or one GPU task at a time would run on a whole cluster
        self.placed_elsewhere: frozenset[str] = frozenset()

    def try_grant(self, task) -> Grant | None:
        """A grant of everything `task` asks for, or None when some of it is held (or the run is
        being stopped): then the task waits, holding nothing."""
        names = task.resources
        if names and self.placed_elsewhere:
            names = [name for name in names if name not in self.placed_elsewhere]
        if not names:
            return Grant([])
        with self._lock:
            if self._interrupted or any(name in self._held for name in names):
                return None
            self._held.update(names)
        return Grant(list(names))

    def release(self, grant: Grant | None) -> None:
        """Give a grant back (a second release of the same grant does nothing)."""
        if grant is None or not grant.names and not grant.gpus:
            return
        with self._lock:
            if grant.released:
                return
            grant.released = True
            self._held.difference_update(grant.names)
        if self._on_release is not None:
            self._on_release()

    def interrupt(self) -> None:
        """The run is stopping: nothing more is granted, and whoever waits for a grant is woken."""
        with self._lock:
            self._interrupted = True
        if self._on_release is not None:
            self._on_release()

    def held(self) -> set[str]:
        with self._lock:
            return set(self._held)
