"""Per-task locks of one workspace, so that two nxrun runs in the same workspace never prepare,
run, restore or store one task's outputs at the same time: the second waits, then finds the
first's entry as a hit.

A lock is a one-byte POSIX record lock (fcntl F_SETLK) in one lock file per workspace,
`<cache-dir>/locks/<digest of the workspace root>`, at an offset derived from the task id: one
system call to take and one to give back, and no file per task. Record locks belong to the
process (its threads share them), are never inherited by a child, and vanish when the process
dies, however it dies. Workspaces that share a cache folder use different lock files, so they
never wait for each other.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path

import xxhash

# offsets below 2**62: a lock's start plus its length stays far inside a signed 64-bit off_t
_OFFSET_BITS = 62


class TaskLocks:
    """The task locks this process holds in one workspace. Every method is thread-safe.

    Where locking is impossible (a read-only or full cache folder, a file system without record
    locks), `on_broken` is called once with the error and every lock is granted from then on: the
    run goes on as runs did before there were locks, rather than failing."""

    def __init__(self, cache_dir: Path, root: Path, on_broken=None):
        self.folder = Path(cache_dir) / "locks"
        self.path = self.folder / xxhash.xxh3_128_hexdigest(os.path.realpath(root).encode())
        self.on_broken = on_broken
        self.broken: OSError | None = None
        self._fd: int | None = None
        self._open_lock = threading.Lock()

    def _file(self) -> int:
        if self._fd is None:
            with self._open_lock:
                if self._fd is None:
                    self.folder.mkdir(parents=True, exist_ok=True)
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return self._fd

    def _break(self, exc: OSError) -> None:
        with self._open_lock:
            first = self.broken is None
            self.broken = exc
        if first and self.on_broken is not None:
            self.on_broken(exc)

    @staticmethod
    def _offset(task_id: str) -> int:
        return xxhash.xxh3_64_intdigest(task_id.encode()) >> (64 - _OFFSET_BITS)

    def try_acquire(self, task_id: str) -> bool:
        """Take the task's lock if no other process holds it; never waits."""
        if self.broken is not None:
            return True
        try:
            fcntl.lockf(self._file(), fcntl.LOCK_EX | fcntl.LOCK_NB, 1, self._offset(task_id))
            return True
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES) and self._fd is not None:   # another process holds it
                return False
            self._break(exc)
            return True

    def acquire(self, task_id: str, stop: threading.Event, on_wait=None, poll: float = 0.05) -> bool:
        """Take the task's lock, waiting for the process that holds it (`on_wait` is called once,
        when that is needed). Polls rather than blocks, so that a run being stopped (`stop` set)
        stops waiting at once: False then, and the lock is not held."""
        if self.try_acquire(task_id):
            return True
        if on_wait is not None:
            on_wait()
        while not stop.wait(poll):
            if self.try_acquire(task_id):
                return True
            poll = min(poll * 1.5, 0.25)
        return False

    def release(self, task_id: str) -> None:
        if self.broken is not None or self._fd is None:
            return
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, self._offset(task_id))

    def close(self) -> None:
        """Give back every lock this process holds in the workspace."""
        with self._open_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
