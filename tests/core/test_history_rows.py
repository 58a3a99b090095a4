"""The history's rows (nxrun/run/history.py): save_run and the rows a replayed no-op writes without
task records (save_rows with local_hit_row) record the same thing, and each task's latest row
with an ETag is what `why` and `show` read."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from nxrun.run.history import (RunRecord, TaskRecord, last_task_record, local_hit_row, runs, save_rows, save_run,
                               task_history, task_row)
from nxrun.store.local import LocalStore


def _records() -> list[TaskRecord]:
    return [
        TaskRecord("p:hit", "e1", "local-hit", origin="local", duration=0.5, started=10.0, saved=3.0,
                   outputs_digest="o1", explain_stored=True, explain={"file:a": "d"}),
        TaskRecord("p:remote", "e2", "remote-hit", origin="remote", duration=0.25, started=11.0, saved=2.0),
        TaskRecord("p:ran", "e3", "miss", duration=1.5, started=12.0, explain={"file:b": "d2"},
                   outputs_digest="o3", gpus=["0", "1"]),
        TaskRecord("p:broke", "e4", "failed", duration=0.75, started=13.0, error="exit 1"),
        TaskRecord("p:skipped", None, "skipped"),
        TaskRecord("p:blank", "", "skipped"),
    ]


def _run(tasks: list[TaskRecord], started: float = 1.0) -> RunRecord:
    run = RunRecord(started=started, argv=["run", "x", "--", "secret"], cwd="/ws", tasks=tasks)
    run.finished, run.status = started + 5, "failed"
    return run


def test_save_run_records_the_run_its_tasks_their_latest_rows_and_new_explains(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "cache")
    run_id = save_run(store, _run(_records()))
    (row,) = runs(store)
    assert row["id"] == run_id and row["argv"] == ["run", "x", "--", "<1 arg not recorded>"]
    assert (row["tasks"], row["local_hits"], row["remote_hits"], row["misses"], row["failed"], row["skipped"]) == \
        (6, 1, 1, 1, 1, 2)
    assert row["time_saved"] == 5.0 and row["status"] == "failed"
    history = {r["task_id"]: r for r in task_history(store, limit=100)}
    assert history["p:ran"]["gpus"] == ["0", "1"] and history["p:broke"]["error"] == "exit 1"
    assert [r["task_id"] for r in task_history(store, limit=100)] == [t.task_id for t in _records()]
    assert last_task_record(store, "p:hit")["explain"] == {}         # stored with its entry, not here
    assert last_task_record(store, "p:ran")["explain"] == {"file:b": "d2"}
    assert last_task_record(store, "p:skipped") is None and last_task_record(store, "p:blank") is None

    # a later run moves each task's latest row; a task it did not record keeps its own
    later = save_run(store, _run([TaskRecord("p:hit", "e9", "local-hit", origin="local", duration=0.125,
                                             started=20.0)], started=19.0))
    latest = last_task_record(store, "p:hit")
    assert (latest["run_id"], latest["etag"], latest["duration"], latest["started"]) == (later, "e9", 0.125, 20.0)
    assert last_task_record(store, "p:ran")["run_id"] == run_id


def test_a_local_hit_row_is_the_row_of_its_task_record() -> None:
    record = TaskRecord("p:t", "etag", "local-hit", origin="local", duration=0.5, started=7.0, saved=2.5,
                        outputs_digest="out", explain_stored=True)
    assert local_hit_row("p:t", "etag", 0.5, 7.0, 2.5, "out") == task_row(record)


def test_rows_saved_without_records_read_back_as_those_saved_from_records(tmp_path: Path) -> None:
    hits = [TaskRecord(f"p{i}:b", f"e{i}", "local-hit", origin="local", duration=0.001 * i, started=100.0 + i,
                       saved=float(i), outputs_digest=f"o{i}", explain_stored=True) for i in range(5)]
    one, two = LocalStore(tmp_path / "one"), LocalStore(tmp_path / "two")
    save_run(one, _run(hits))
    save_rows(two, _run([]), [local_hit_row(t.task_id, t.etag, t.duration, t.started, t.saved, t.outputs_digest)
                              for t in hits])

    def tables(store: LocalStore) -> list:
        with sqlite3.connect(store.cache_dir / "index.db") as conn:
            return [conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
                    for table in ("runs", "run_tasks", "task_latest", "explains")]

    assert tables(one) == tables(two)



def test_a_run_moves_only_the_latest_rows_of_the_tasks_it_recorded(tmp_path: Path) -> None:
    """An index rebuilt from a damaged one keeps what it could read: `run_tasks` rows (and the
    latest rows) of runs whose own rows were lost, whose ids the next runs are given again. A run
    that did not record a task leaves that task's latest row as it was."""
    store = LocalStore(tmp_path / "cache")
    save_run(store, _run([TaskRecord("p:x", "x1", "local-hit", origin="local", started=1.0)]))
    lost = [save_run(store, _run([TaskRecord("p:y", etag, "miss", started=float(n))], started=float(n)))
            for n, etag in ((2, "y-old"), (3, "y-latest"))]
    store.close()

    def latest_y() -> list:
        with sqlite3.connect(store.cache_dir / "index.db") as conn:
            return conn.execute("SELECT run_id, etag FROM task_latest WHERE task_id = 'p:y'").fetchall()

    with sqlite3.connect(store.cache_dir / "index.db") as conn:     # the rows of these runs were lost
        conn.executemany("DELETE FROM runs WHERE id = ?", [(run_id,) for run_id in lost])
    before = latest_y()
    assert before == [(lost[1], "y-latest")]
    store = LocalStore(tmp_path / "cache")
    again = save_run(store, _run([TaskRecord("p:x", "x2", "local-hit", origin="local", started=4.0)], started=4.0))
    assert again == lost[0]                                         # an id given again
    assert last_task_record(store, "p:x")["etag"] == "x2"
    assert latest_y() == before
