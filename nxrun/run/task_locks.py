"""Per-task locks of one workspace, so that two nxrun runs in the same workspace never prepare,
run, restore or store one task's outputs at the same time: the second waits, then finds the
first's entry as a hit.

A lock is a one-byte record lock in one lock file per workspace,
`<cache-dir>/locks/<digest of the workspace root>`, at an offset derived from the task id: one
system call to take and one to give back, and no file per task. Workspaces that share a cache
folder use different lock files, so they never wait for each other. The same byte is also locked
in a second file of the workspace in a folder of the user's (`$XDG_RUNTIME_DIR/nxrun`, else
`$TMPDIR/nxrun-<uid>`), which does not depend on the cache folder: a run with NXRUN_CACHE_DIR
set elsewhere still waits for one using the workspace's own cache. Both are only ever tried,
never waited on while one is held, so two runs cannot deadlock on them.

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
import stat
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


def user_lock_folder() -> Path | None:
    """This user's folder for the lock files that belong to a workspace whatever its cache folder:
    `$XDG_RUNTIME_DIR/nxrun`, else `$TMPDIR/nxrun-<uid>` (`/tmp` without TMPDIR). None when it
    cannot be made, or is not a folder of this user's that nobody else may write to (in a shared
    temp folder another user could have made it first)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        folder = os.path.join(runtime, "nxrun")
    else:
        tmp = os.environ.get("TMPDIR")
        folder = os.path.join(tmp if tmp and os.path.isabs(tmp) else "/tmp", f"nxrun-{os.geteuid()}")
    try:
        os.makedirs(folder, 0o700, exist_ok=True)
        st = os.lstat(folder)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return None
    return Path(folder)


class TaskLocks:
    """The task locks this run holds in one workspace. Every method is thread-safe.

    Where locking is impossible (a read-only or full cache folder, a file system without record
    locks), `on_broken` is called once with the error and every lock is granted from then on: the
    run goes on as runs did before there were locks, rather than failing."""

    def __init__(self, cache_dir: Path, root: Path, on_broken=None, user_folder=user_lock_folder):
        """`user_folder`: returns the folder of the second lock file, or None for none."""
        self.folder = Path(cache_dir) / "locks"
        self.name = xxhash.xxh3_128_hexdigest(os.fsencode(os.path.realpath(root)))
        self.path = self.folder / self.name
        self.on_broken = on_broken
        self.broken: OSError | None = None
        self._user_folder = user_folder
        self._fd: int | None = None
        self._fds: tuple[int, ...] = ()   # _fd, then the user folder's file when it could be opened
        self._open_lock = threading.Lock()

    def _files(self) -> tuple[int, ...]:
        if self._fd is None:
            with self._open_lock:
                if self._fd is None:
                    # either file alone still keeps runs of this workspace apart: a read-only cache
                    # folder leaves the user folder's, a run without a user folder the cache's
                    fds: tuple[int, ...] = ()
                    problem: OSError | None = None
                    try:
                        self.folder.mkdir(parents=True, exist_ok=True)
                        fds += (os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644),)
                    except OSError as exc:
                        problem = exc
                    folder = self._user_folder() if self._user_folder is not None else None
                    if folder is not None:
                        try:
                            fds += (os.open(folder / self.name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                                            0o600),)
                        except OSError:
                            pass
                    if not fds:
                        raise problem or OSError(errno.ENOENT, "no folder for task lock files")
                    self._fds = fds
                    self._fd = fds[0]
        return self._fds

    def _break(self, exc: OSError) -> None:
        with self._open_lock:
            first = self.broken is None
            self.broken = exc
        if first and self.on_broken is not None:
            self.on_broken(exc)

    @staticmethod
    def _offset(task_id: str) -> int:
        return xxhash.xxh3_64_intdigest(task_id.encode()) >> (64 - _OFFSET_BITS)

    def inheritable_fds(self) -> tuple[int, ...]:
        """The descriptors a child that should hold this run's locks with it inherits (the
        watchdog), when locks are open-file-description locks and the files are open."""
        return self._fds if _OFD and self.broken is None else ()

    def try_acquire(self, task_id: str) -> bool:
        """Take the task's lock if no other run holds it; never waits."""
        if self.broken is not None:
            return True
        offset = self._offset(task_id)
        taken: list[int] = []
        try:
            for fd in self._files():
                _set_lock(fd, fcntl.F_WRLCK, offset)
                taken.append(fd)
            return True
        except OSError as exc:
            for fd in taken:   # one file's lock without the other's is no lock: give it back
                _set_lock(fd, fcntl.F_UNLCK, offset)
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

    def try_acquire_all(self) -> bool:
        """Take the lock of every task of the workspace at once (the whole range), never waiting:
        True only when no other run holds any of them. Given back by close(). False where locking
        is impossible, since then nobody can tell whether another run is on."""
        if self.broken is not None:
            return False
        taken: list[int] = []
        try:
            for fd in self._files():
                _set_lock(fd, fcntl.F_WRLCK, 0, 0)   # length 0: to the end of every offset
                taken.append(fd)
            return True
        except OSError:
            for fd in taken:
                _set_lock(fd, fcntl.F_UNLCK, 0, 0)
            return False

    def release(self, task_id: str) -> None:
        if self.broken is not None or self._fd is None:
            return
        for fd in self._fds:
            _set_lock(fd, fcntl.F_UNLCK, self._offset(task_id))

    def close(self) -> None:
        """Give back every lock this run holds in the workspace (a child that inherited the
        descriptors keeps none)."""
        with self._open_lock:
            for fd in self._fds:
                try:
                    _set_lock(fd, fcntl.F_UNLCK, 0, 0)   # length 0: to the end of every offset
                except OSError:
                    pass
                os.close(fd)
            self._fds = ()
            self._fd = None
