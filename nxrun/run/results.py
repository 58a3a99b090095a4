"""What a run is asked to do (RunOptions) and what it did (TaskResult per task, RunResult)."""

from __future__ import annotations

from ..records import default_factory, record


@record
class RunOptions:
    parallel: int = 4
    keep_going: bool = False
    skip_cache: bool = False
    only: bool = False
    dry_run: bool = False
    args: list[str] = default_factory(list)
    args_for: set[str] = default_factory(set)   # task ids the args after `--` go to
    gpus: str | None = None                      # --gpus: the GPU pool of this run (run/gpus.py)


@record
class TaskResult:
    task_id: str
    status: str
    etag: str | None = None
    duration: float = 0.0
    origin: str = ""
    note: str = ""
    outputs_digest: str | None = None
    gpus: list[str] = default_factory(list)      # the GPU ids it held while its command ran


@record
class RunResult:
    results: dict[str, TaskResult]
    duration: float
    warnings: list[str]
    remote_summary: dict = default_factory(dict)

    @property
    def failed(self) -> bool:
        return any(r.status == "failed" for r in self.results.values())

    def count(self, status: str) -> int:
        return sum(1 for r in self.results.values() if r.status == status)

    def counts(self) -> dict[str, int]:
        """How many tasks ended in each status (those that none did: absent), in one pass."""
        counts: dict[str, int] = {}
        for r in self.results.values():
            counts[r.status] = counts.get(r.status, 0) + 1
        return counts

    def to_json(self) -> dict:
        counts = self.counts()
        return {
            "ok": not counts.get("failed"),
            "duration": round(self.duration, 4),
            "counts": {s: counts[s] for s in ("local-hit", "remote-hit", "miss", "failed", "skipped",
                                              "predicted-hit", "predicted-miss", "unknown")
                       if counts.get(s)},
            "tasks": [{"id": r.task_id, "status": r.status, "etag": r.etag, "duration": round(r.duration, 4),
                       "origin": r.origin, "note": r.note, "gpus": r.gpus} for r in self.results.values()],
            "warnings": self.warnings,
            "remote": self.remote_summary,
        }
