"""Run records: every invocation and every task in it (ETag, status, origin, durations, the
explain manifest), kept in the local store's sqlite index. `why` and `history` read them.

Explain manifests hold digests only (env values, set env values and args after `--` keyed with a
secret, see hashing.py), and a run's command line is kept without its args after `--`: they go to
the task's command and may be secrets, so `history` shows how many there were, never what.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from operator import itemgetter

from ..records import default_factory, record
from ..store import encode_explain
from ..store.local import LocalStore

STATUSES = ("local-hit", "remote-hit", "miss", "failed", "skipped")


@record
class TaskRecord:
    task_id: str
    etag: str | None
    status: str                   # one of STATUSES
    origin: str = ""              # where a hit came from: local, remote, or this run (dedup)
    duration: float = 0.0         # seconds this run spent on the task
    started: float = 0.0
    saved: float = 0.0            # seconds the cached run originally took (time a hit saved)
    explain: dict[str, str] = default_factory(dict)
    outputs_digest: str | None = None
    error: str = ""
    explain_stored: bool = False  # a hit: its explain was stored with the entry it came from
    gpus: list[str] = default_factory(list)   # the GPU ids it held while its command ran


@record
class RunRecord:
    started: float
    argv: list[str]
    cwd: str
    tasks: list[TaskRecord] = default_factory(list)
    finished: float = 0.0
    status: str = "running"
    remote_skipped: int = 0

    def count(self, status: str) -> int:
        return sum(1 for t in self.tasks if t.status == status)


def redact_argv(argv: list[str]) -> list[str]:
    """A command line as the history keeps it: what follows `--` is replaced by how many args
    there were."""
    if "--" not in argv:
        return list(argv)
    cut = argv.index("--") + 1
    count = len(argv) - cut
    return argv[:cut] + ([f"<{count} arg{'s' if count != 1 else ''} not recorded>"] if count else [])


# a task's row as save_rows takes it: the columns of run_tasks after run_id
TaskRow = tuple[str, str | None, str, str, float, float, float, str | None, str, str | None]


def task_row(t: TaskRecord) -> TaskRow:
    return (t.task_id, t.etag, t.status, t.origin, t.duration, t.started, t.saved, t.outputs_digest, t.error,
            ",".join(t.gpus) if t.gpus else None)


def local_hit_row(task_id: str, etag: str, duration: float, started: float, saved: float,
                  outputs_digest: str | None) -> TaskRow:
    """The row of a local cache hit, as task_row gives it for TaskRecord(task_id, etag,
    "local-hit", origin="local", ...) (a replayed no-op builds its rows without the records)."""
    return (task_id, etag, "local-hit", "local", duration, started, saved, outputs_digest, "", None)


def save_run(store: LocalStore, run: RunRecord) -> int:
    """Write the run and its task rows in one transaction; returns the run id."""
    return save_rows(store, run, [task_row(t) for t in run.tasks],
                     [(t.etag, encode_explain(t.explain)) for t in run.tasks
                      if t.etag and t.explain and not t.explain_stored])


def save_rows(store: LocalStore, run: RunRecord, rows: list[TaskRow],
              explains: list[tuple[str, str]] | None = None) -> int:
    """save_run with the task rows given (`run.tasks` is not read): the run, its rows, each task's
    latest row with an ETag, and the explain manifests (etag, encoded) a task brought; one
    transaction; returns the run id."""
    statuses = Counter(map(itemgetter(2), rows))
    saved = sum(row[6] for row in rows if row[2].endswith("hit"))

    def write(conn):
        cursor = conn.execute(
            "INSERT INTO runs (started, finished, argv, cwd, status, tasks, local_hits, remote_hits, misses, "
            "failed, skipped, time_saved, remote_skipped) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (run.started, run.finished or time.time(), json.dumps(redact_argv(run.argv)), run.cwd, run.status,
             len(rows), statuses["local-hit"], statuses["remote-hit"], statuses["miss"], statuses["failed"],
             statuses["skipped"], saved, run.remote_skipped))
        run_id = int(cursor.lastrowid)
        # rows of this run start after every row already there: an index rebuilt with run_tasks rows
        # whose run was lost can give their id again, and those rows must not move task_latest
        first_row = conn.execute("SELECT coalesce(max(rowid), 0) FROM run_tasks").fetchone()[0]
        conn.executemany(
            "INSERT INTO run_tasks (run_id, task_id, etag, status, origin, duration, started, saved, "
            f"outputs_digest, error, gpus) VALUES ({run_id},?,?,?,?,?,?,?,?,?,?)", rows)
        # each task's latest row with an ETag, copied from the rows just written (in their order, so
        # a task written twice keeps its last): cheaper than binding every value again
        conn.execute(
            "INSERT INTO task_latest (task_id, run_id, etag, status, origin, duration, started) "
            "SELECT task_id, run_id, etag, status, origin, duration, started FROM run_tasks "
            "WHERE run_id = ? AND rowid > ? AND etag IS NOT NULL AND etag != '' ORDER BY rowid "
            "ON CONFLICT(task_id) DO UPDATE SET run_id = excluded.run_id, "
            "etag = excluded.etag, status = excluded.status, origin = excluded.origin, "
            "duration = excluded.duration, started = excluded.started", (run_id, first_row))
        # explain manifests live in one table by ETag; a hit's was stored with the entry it came
        # from, so only the others (misses, failures) may bring a new one
        if explains:
            conn.executemany("INSERT OR IGNORE INTO explains (etag, explain) VALUES (?, ?)", explains)
        return run_id
    return store.write(write)


def last_task_record(store: LocalStore, task_id: str) -> dict | None:
    """The most recent recorded run of a task."""
    sql = ("SELECT r.run_id, r.etag, r.status, r.origin, r.duration, r.started, e.explain, runs.started "
           "FROM task_latest r JOIN runs ON runs.id = r.run_id LEFT JOIN explains e ON e.etag = r.etag "
           "WHERE r.task_id = ?")
    rows = store.read(sql, (task_id,))
    if not rows:
        return None
    run_id, etag, status, origin, duration, started, explain, run_started = rows[0]
    return {"run_id": run_id, "etag": etag, "status": status, "origin": origin, "duration": duration,
            "started": started or run_started, "explain": json.loads(explain or "{}")}


def task_history(store: LocalStore, task_id: str | None = None, limit: int = 20) -> list[dict]:
    sql = ("SELECT r.run_id, r.task_id, r.etag, r.status, r.origin, r.duration, r.saved, runs.started, r.error, "
           "r.gpus FROM run_tasks r JOIN runs ON runs.id = r.run_id")
    params: list = []
    if task_id:
        sql += " WHERE r.task_id = ?"
        params.append(task_id)
    sql += " ORDER BY r.run_id DESC, r.rowid ASC LIMIT ?"
    params.append(limit)
    keys = ("run_id", "task_id", "etag", "status", "origin", "duration", "saved", "time", "error", "gpus")
    rows = [dict(zip(keys, row)) for row in store.read(sql, params)]
    for row in rows:
        row["gpus"] = row["gpus"].split(",") if row["gpus"] else []
    return rows


def runs(store: LocalStore, limit: int = 50) -> list[dict]:
    keys = ("id", "started", "finished", "argv", "status", "tasks", "local_hits", "remote_hits", "misses",
            "failed", "skipped", "time_saved", "remote_skipped")
    rows = store.read(f"SELECT {', '.join(keys)} FROM runs ORDER BY id DESC LIMIT ?", (limit,))
    result = []
    for row in rows:
        record = dict(zip(keys, row))
        record["argv"] = json.loads(record["argv"] or "[]")
        result.append(record)
    return result


def diff_explain(previous: dict[str, str], current: dict[str, str]) -> list[tuple[str, str]]:
    """(component, change) pairs: 'added', 'removed' or 'changed', sorted by component."""
    changes = []
    for name in sorted(set(previous) | set(current)):
        if name not in previous:
            changes.append((name, "added"))
        elif name not in current:
            changes.append((name, "removed"))
        elif previous[name] != current[name]:
            changes.append((name, "changed"))
    return changes
