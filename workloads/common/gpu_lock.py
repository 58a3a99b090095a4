"""Keep compiles away from timed GPU work: a machine-wide reader/writer lock on one file (fcntl.flock).

Timed work holds the lock exclusively (`exclusive()`), compiles share it (`shared()`): a compile that
starts while a bench is timing waits, a bench waits for the compiles already running, and compiles run
beside each other. nxrun's `gpu` resource keeps timed tasks apart from each other; build tasks do not
name it (they would then compile one at a time), so this lock is what stops an nvcc run from taking CPU
and memory bandwidth beside a timed task when the workspace runs four tasks at once.

The lock file is $NXRUN_TIMING_LOCK, else <tmp>/nxrun-gpu-timing.lock. Within one process the lock is
reentrant: a process that holds it exclusively may compile (the autotuner does) without waiting on
itself, and compile threads of one process share one file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ENV = "NXRUN_TIMING_LOCK"


def lock_path() -> Path:
    return Path(os.environ.get(ENV) or Path(tempfile.gettempdir()) / "nxrun-gpu-timing.lock")


class _ProcessLock:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.mode: str | None = None
        self._count = 0
        self._fd: int | None = None
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
            path = lock_path()
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as error:
                print(f"{who}: cannot open the GPU timing lock {path} ({error}); going on without it",
                      file=sys.stderr, flush=True)
                self.mode, self._count, self._fd = mode, 1, None
                return
            operation = fcntl.LOCK_EX if mode == "exclusive" else fcntl.LOCK_SH
            began = time.perf_counter()
            try:
                fcntl.flock(fd, operation | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = "compiles" if mode == "exclusive" else "a timed task"
                print(f"{who}: waiting for {holder} to release the GPU timing lock {path}", file=sys.stderr,
                      flush=True)
                fcntl.flock(fd, operation)
            self.waited_s = time.perf_counter() - began
            self.mode, self._count, self._fd = mode, 1, fd

    def release(self) -> None:
        with self._cond:
            self._count -= 1
            if self._count > 0:
                return
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            self.mode, self._fd = None, None
            self._cond.notify_all()


_LOCK = _ProcessLock()


@contextlib.contextmanager
def exclusive(who: str = "timing") -> Iterator[dict]:
    """Hold the lock for timed work; yields {"path", "waited_s"} for the results JSON."""
    _LOCK.acquire("exclusive", who)
    try:
        yield {"path": str(lock_path()), "mode": "exclusive", "waited_s": round(_LOCK.waited_s, 3)}
    finally:
        _LOCK.release()


@contextlib.contextmanager
def shared(who: str = "compile") -> Iterator[None]:
    """Hold the lock for a compile: many may share it, never beside timed work."""
    _LOCK.acquire("shared", who)
    try:
        yield
    finally:
        _LOCK.release()


def held_mode() -> str | None:
    """"exclusive", "shared" or None: what this process holds now (for tests and assertions)."""
    return _LOCK.mode
