"""Resources granted to a task before it takes a worker: a named resource (`resources = ["name"]`)
is held by one task at a time, and GPUs come from the run's GPU pool (gpus.py): `resources = ["gpu"]`
is one GPU, `gpus = N` is N at once. The scheduling thread asks with `try_grant`, which never blocks:
a task whose resources are busy stays queued, without a worker, and is asked for again when a grant
is released (`on_release` wakes the scheduler). A grant carries the GPU ids it gives the task, which
reach the command as CUDA_VISIBLE_DEVICES and NXRUN_GPU_IDS (GpuPool.env_for)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..records import default_factory, record

if TYPE_CHECKING:
    from .gpus import GpuPool

GPU = "gpu"   # the resource name that means one GPU of the pool, not a mutex


@record
class Grant:
    """What one task holds while it runs."""

    names: list[str]                                # the named resources it holds
    gpus: list[str] = default_factory(list)         # GPU ids it was given (empty when none)
    released: bool = False
    from_pool: bool = False                         # it holds a slot of the GPU pool (maybe deviceless)


class Resources:
    """The resources of one run. Thread-safe: grants are asked for by the scheduling thread and
    given back by workers."""

    def __init__(self, on_release: Callable[[], None] | None = None, gpu_pool: GpuPool | None = None):
        """`gpu_pool`: where GPUs come from; None when something else places GPU tasks (Ray)."""
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._on_release = on_release
        self._interrupted = False
        self.gpu_pool = gpu_pool
        # names an executor places itself (Ray places `gpu` tasks on the GPUs of its nodes): not
        # held here, or one GPU task at a time would run on a whole cluster
        self.placed_elsewhere: frozenset[str] = frozenset()

    def try_grant(self, task, gpu_class: str | None = None) -> Grant | None:
        """A grant of everything `task` asks for, or None when some of it is held (or the run is
        being stopped): then the task waits, holding nothing. Its GPUs are all of one class, of
        `gpu_class` when given (the class its ETag was computed for)."""
        names = [name for name in task.resources if name != GPU and name not in self.placed_elsewhere]
        count = (getattr(task, "gpus", 0) or (1 if GPU in task.resources else 0)) if self.gpu_pool is not None else 0
        if not names and not count:
            return Grant([])
        with self._lock:
            if self._interrupted or any(name in self._held for name in names):
                return None
            gpus: list[str] = []
            if count:
                taken = self.gpu_pool.try_take(count, gpu_class)   # type: ignore[union-attr]
                if taken is None:
                    return None
                gpus = taken
            self._held.update(names)
        return Grant(names, gpus, from_pool=bool(count))

    def release(self, grant: Grant | None) -> None:
        """Give a grant back (a second release of the same grant does nothing)."""
        if grant is None or not grant.names and not grant.from_pool:
            return
        with self._lock:
            if grant.released:
                return
            grant.released = True
            self._held.difference_update(grant.names)
            if grant.from_pool:
                self.gpu_pool.give_back(grant.gpus)   # type: ignore[union-attr]
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
