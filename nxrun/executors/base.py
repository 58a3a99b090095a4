"""The executor contract (provisional copy; the runner split provides the real module)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..graph import Task
from ..records import default_factory, record
from ..store import CacheEntry
from ..store.capture import LogCapture


@record
class Job:
    task: Task
    etag: str
    command: str
    env: dict[str, str]
    cwd: str
    inputs: list[tuple[str, str]]
    gpus: list[str] = default_factory(list)
    cpus: int = 1


@record
class Finished:
    exit_code: int
    duration: float
    log: LogCapture | None
    entry: CacheEntry | None
    problem: str | None = None


class Executor(Protocol):
    name: str
    produces_entries: bool

    def check(self) -> None: ...
    def run(self, job: Job, on_line: Callable[[bytes], None]) -> Finished: ...
    def cancel_all(self) -> None: ...
    def close(self, clean: bool) -> None: ...
