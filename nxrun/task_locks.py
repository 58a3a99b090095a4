"""Per-task locks of one workspace, so that two nxrun runs in the same workspace never prepare,
run, restore or store one task's outputs at the same time: the second waits, then finds the
first's entry as a hit.

A lock is a one-byte record lock in one lock file per workspace,
`<cache-dir>/locks/<digest of the workspace root>`, at an offset derived from the task id: one
system call to take and one to give back, and no file per task. Workspaces that share a cache
folder use different lock files, so they never wait for each other.

On Linux the locks are open-file-description locks (F_OFD_SETLK): they belong to the run's one
open description of the file, which the run's watchdog (task_watchdog.py) inherits. When nxrun is
killed, its locks therefore stay taken until the watchdog has stopped the tasks it left behind,
and a run started at once waits instead of running a task beside its orphan. Elsewhere they are
POSIX process locks (lockf), which go with the process. Either kind vanishes with the last holder,
however it dies, and the threads of one run share them.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import sys
import threading
from pathlib import Path

import xxhash

# offsets below 2**62: a lock's start plus its length stays far inside a signed 64-bit off_t
_OFFSET_BITS = 62
_OFD = sys.platform.startswith("linux") and hasattr(fcntl, "F_OFD_SETLK") and sys.maxsize > 2**32


def _set_lock(fd: int, kind: int, start: int, length: int = 1) -> None:
    """Take (F_WRLCK) or give back (F_UNLCK) a byte range without waiting; OSError EAGAIN or
    EACCES when another holder has it."""
    if _OFD:   # struct flock of 64-bit Linux: type, whence, start, length, pid (0 here), padding
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", kind, os.SEEK_SET, start, length, 0))
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN if kind == fcntl.F_UNLCK else fcntl.LOCK_EX | fcntl.LOCK_NB, length, start)


class TaskLocks:
    """The task locks this run holds in one workspace. Every method is thread-safe.

    Where locking is impossible (a read-only or full cache folder, a file system without record
    locks), `on_broken` is called once with the error and every lock is granted from then on: the
    run goes on as runs did before there were locks, rather than failing."""

    def __init__(self, cache_dir: Path, root: Path, on_broken=None):
        self.folder = Path(cache_dir) / "locks"
        self.path = self.folder / xxhash.xxh3_128_hexdigest(os.fsencode(os.path.realpath(root)))
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

    def inheritable_fd(self) -> int | None:
        """The descriptor a child that should hold this run's locks with it inherits (the
        watchdog), when locks are open-file-description locks and the file is open."""
        return self._fd if _OFD and self.broken is None else None

    def try_acquire(self, task_id: str) -> bool:
        """Take the task's lock if no other run holds it; never waits."""
        if self.broken is not None:
            return True
        try:
            _set_lock(self._file(), fcntl.F_WRLCK, self._offset(task_id))
            return True
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES) and self._fd is not None:   # another run holds it
                return False
            self._break(exc)
            return True

    def acquire(self, task_id: str, stop: threading.Event, on_wait=None, poll: float = 0.05) -> bool:
        """Take the task's lock, waiting for the run that holds it (`on_wait` is called once, when
        that is needed). Polls rather than blocks, so that a run being stopped (`stop` set) stops
        waiting at once: False then, and the lock is not held."""
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
        _set_lock(self._fd, fcntl.F_UNLCK, self._offset(task_id))

    def close(self) -> None:
        """Give back every lock this run holds in the workspace (a child that inherited the
        descriptor keeps none)."""
        with self._open_lock:
            if self._fd is not None:
                try:
                    _set_lock(self._fd, fcntl.F_UNLCK, 0, 0)   # length 0: to the end of every offset
                except OSError:
                    pass
                os.close(self._fd)
                self._fd = None
