"""Keep compiles away from timed GPU work, one GPU at a time: a machine-wide reader/writer lock per GPU
on files (fcntl.flock).

Timed work holds the lock of its GPUs exclusively (`exclusive()`), compiles share it (`shared()`): a
compile that starts while a bench is timing waits, a bench waits for the compiles already running, and
compiles run beside each other. nxrun grants each timed task its own GPUs (the `gpu` slot pool), and
build tasks take none; this lock is what stops an nvcc run from taking CPU and memory bandwidth beside a
timed block when the workspace runs several tasks at once.

Which GPUs a process works on: those nxrun granted it (NXRUN_GPU_UUIDS, else NXRUN_GPU_IDS), else those
of CUDA_VISIBLE_DEVICES when it names UUIDs. Timed blocks on different GPUs then run at the same time,
and a compile in a process bound to one GPU (the autotuner's) waits only for that GPU. A process bound
to no GPU (a build task, a bench run by hand) counts as using every GPU: its compile waits for every
timed block on the machine, and its timed work shuts out every compile and every other timed block.

Files: the base $NXRUN_TIMING_LOCK, else <tmp>/nxrun-gpu-timing.lock, and one `<base>.<gpu id>` per GPU.
A process bound to no GPU holds the base file (in its own mode) and every GPU file that exists, taken
without waiting: when one is busy it lets all go, waits for that one alone and tries again, so a compile
waiting for one GPU never holds up timed work on the others. A process bound to GPUs creates their files
under the base file held exclusively, so no GPU file appears while an unbound holder holds the lock, and
then holds only its GPUs' files, in sorted order, so no two processes wait on each other. Within one
process the lock is reentrant: a process that holds it exclusively may compile (the autotuner does)
without waiting on itself, and compile threads of one process share one set of file locks.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ENV = "NXRUN_TIMING_LOCK"


def lock_path() -> Path:
    return Path(os.environ.get(ENV) or Path(tempfile.gettempdir()) / "nxrun-gpu-timing.lock")


def gpu_keys() -> list[str] | None:
    """The GPUs this process works on (sorted ids), or None when it is bound to none (every GPU)."""
    for name in ("NXRUN_GPU_UUIDS", "NXRUN_GPU_IDS"):
        parts = [part.strip() for part in os.environ.get(name, "").split(",") if part.strip()]
        if parts:
            return sorted(set(parts))
    visible = [part.strip() for part in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if part.strip()]
    if visible and all(part.startswith(("GPU-", "MIG-")) for part in visible):
        return sorted(set(visible))
    return None   # indices mean different GPUs to different processes: assume every GPU


def gpu_lock_path(key: str) -> Path:
    base = lock_path()
    return base.with_name(f"{base.name}.{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}")


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)


class _ProcessLock:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.mode: str | None = None
        self._count = 0
        self._fds: list[int] = []
        self.keys: list[str] | None = None
        self.waited_s = 0.0

    def acquire(self, mode: str, who: str) -> None:
        with self._cond:
            while True:
                if self.mode == "exclusive" or (self.mode == "shared" and mode == "shared"):
                    self._count += 1
                    return
                if self.mode is None:
                    break
                self._cond.wait()  # this process shares it and now wants it exclusively: wait for its compiles
            keys = gpu_keys()
            began = time.perf_counter()
            try:
                fds = self._lock_files(mode, keys, who)
            except OSError as error:
                print(f"{who}: cannot open the GPU timing lock {lock_path()} ({error}); going on without it",
                      file=sys.stderr, flush=True)
                fds = []
            self.waited_s = time.perf_counter() - began
            self.mode, self._count, self._fds, self.keys = mode, 1, fds, keys

    def _lock_files(self, mode: str, keys: list[str] | None, who: str) -> list[int]:
        operation = fcntl.LOCK_EX if mode == "exclusive" else fcntl.LOCK_SH
        if keys is None:
            return self._lock_every_gpu(operation, mode, who)
        paths = [gpu_lock_path(key) for key in keys]
        if not all(path.exists() for path in paths):
            # new GPU files only while no unbound holder holds the lock (it could not see them)
            base = _open(lock_path())
            try:
                _flock(base, fcntl.LOCK_EX, "exclusive", who, lock_path())
                for path in paths:
                    os.close(_open(path))
            finally:
                os.close(base)   # closing the descriptor lets the lock go
        fds: list[int] = []
        try:
            for path in paths:
                fds.append(_open(path))
                _flock(fds[-1], operation, mode, who, path)
        except BaseException:
            _close(fds)
            raise
        return fds

    def _lock_every_gpu(self, operation: int, mode: str, who: str) -> list[int]:
        """The base file, then every GPU file, each without waiting; when one is busy, let all go and
        wait for that one alone before trying again, so a compile waiting for one GPU's timed block
        never keeps the other GPUs from their next ones."""
        said = False
        while True:
            fds = [_open(lock_path())]
            busy: tuple[int, Path] | None = None
            try:
                _flock(fds[0], operation, mode, who, lock_path())
                for name in sorted(glob.glob(glob.escape(str(lock_path())) + ".*")):
                    fd = _open(Path(name))
                    try:
                        fcntl.flock(fd, operation | fcntl.LOCK_NB)
                    except BlockingIOError:
                        busy = (fd, Path(name))
                        break
                    fds.append(fd)
            except BaseException:
                _close(fds + ([busy[0]] if busy else []))
                raise
            if busy is None:
                return fds
            _close(fds)
            fd, path = busy
            try:
                if not said:
                    holder = "compiles" if mode == "exclusive" else "a timed task"
                    print(f"{who}: waiting for {holder} to release the GPU timing lock {path}", file=sys.stderr,
                          flush=True)
                    said = True
                fcntl.flock(fd, operation)   # until that GPU is free; then try them all again
            finally:
                os.close(fd)

    def release(self) -> None:
        with self._cond:
            self._count -= 1
            if self._count > 0:
                return
            for fd in reversed(self._fds):
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            self.mode, self._fds, self.keys = None, [], None
            self._cond.notify_all()


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _flock(fd: int, operation: int, mode: str, who: str, path: Path) -> None:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = "compiles" if mode == "exclusive" else "a timed task"
        print(f"{who}: waiting for {holder} to release the GPU timing lock {path}", file=sys.stderr, flush=True)
        fcntl.flock(fd, operation)


_LOCK = _ProcessLock()


@contextlib.contextmanager
def exclusive(who: str = "timing") -> Iterator[dict]:
    """Hold the lock of this process's GPUs for timed work; yields {"path", "mode", "gpus", "waited_s"}
    for the results JSON ("gpus": the GPU ids locked, None for every GPU)."""
    _LOCK.acquire("exclusive", who)
    try:
        yield {"path": str(lock_path()), "mode": "exclusive", "gpus": _LOCK.keys,
               "waited_s": round(_LOCK.waited_s, 3)}
    finally:
        _LOCK.release()


@contextlib.contextmanager
def shared(who: str = "compile") -> Iterator[None]:
    """Hold the lock for a compile: many may share it, never beside timed work on the same GPUs."""
    _LOCK.acquire("shared", who)
    try:
        yield
    finally:
        _LOCK.release()


def held_mode() -> str | None:
    """"exclusive", "shared" or None: what this process holds now (for tests and assertions)."""
    return _LOCK.mode
