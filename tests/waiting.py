"""Waiting in tests: poll a condition until it holds, with a generous deadline, and read a child
process's output while it runs. Never a fixed sleep to wait for something: on a busy machine it
is either too short (a flaky failure) or too long (a slow suite)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 30, what: str = "the condition",
               interval: float = 0.02) -> T:
    """Call `predicate` until it returns something truthy, and return that. After `timeout`
    seconds, fail naming `what` was waited for."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g}s for {what}, in vain")
        time.sleep(interval)


class OutputReader:
    """Collects a Popen's text stdout in a thread, so a test can wait for a line while the
    process runs (communicate() would block until it exits)."""

    def __init__(self, process: subprocess.Popen, stream=None):
        self.process = process
        self._stream = stream if stream is not None else process.stdout
        self._chunks: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            with self._lock:
                self._chunks.append(line)

    @property
    def text(self) -> str:
        with self._lock:
            return "".join(self._chunks)

    def wait_for(self, needle: str, timeout: float = 30) -> None:
        """Until `needle` appears in the output; fails early, with the output, if the output ends
        (the process exited) without it."""
        def seen_or_ended():
            return needle in self.text or not self._thread.is_alive()

        wait_until(seen_or_ended, timeout, what=f"{needle!r} in the output of {self.process.args}")
        assert needle in self.text, f"the output ended without {needle!r}:\n{self.text}"

    def finish(self, timeout: float = 60) -> str:
        """Wait for the process to exit and its output to be read; all of it."""
        self.process.wait(timeout=timeout)
        self._thread.join(timeout=timeout)
        return self.text
