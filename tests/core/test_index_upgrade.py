"""A cache made by nxrun 0.1.0 (index layout 4) keeps its entries, history and bench figures when a
newer nxrun opens it."""

from __future__ import annotations

import json
import sqlite3

from cli_workspace import Workspace

# the index as nxrun 0.1.0 created it (sqlite-utils' DDL, PRAGMA user_version = 4)
LAYOUT_4 = """
CREATE TABLE "entries" ("etag" TEXT PRIMARY KEY, "task_id" TEXT, "manifest" TEXT, "size" INTEGER,
    "created" REAL, "last_used" REAL, "origin" TEXT);
CREATE INDEX "idx_entries_task_id" ON "entries" ("task_id");
CREATE INDEX "idx_entries_last_used" ON "entries" ("last_used");
CREATE TABLE "stat_cache" ("path" TEXT PRIMARY KEY, "size" INTEGER, "mtime_ns" INTEGER, "inode" INTEGER,
    "digest" TEXT);
CREATE TABLE "runs" ("id" INTEGER PRIMARY KEY, "started" REAL, "finished" REAL, "argv" TEXT, "cwd" TEXT,
    "status" TEXT, "tasks" INTEGER, "local_hits" INTEGER, "remote_hits" INTEGER, "misses" INTEGER,
    "failed" INTEGER, "skipped" INTEGER, "time_saved" REAL, "remote_skipped" INTEGER);
CREATE TABLE "run_tasks" ("run_id" INTEGER, "task_id" TEXT, "etag" TEXT, "status" TEXT, "origin" TEXT,
    "duration" REAL, "started" REAL, "saved" REAL, "explain" TEXT, "outputs_digest" TEXT, "error" TEXT);
CREATE INDEX "idx_run_tasks_task_id_run_id" ON "run_tasks" ("task_id", "run_id");
CREATE INDEX "idx_run_tasks_run_id" ON "run_tasks" ("run_id");
CREATE TABLE "bench_results" ("run_id" INTEGER, "task_id" TEXT, "etag" TEXT, "outputs_digest" TEXT,
    "time" REAL, "device" TEXT, "backend" TEXT, "file" TEXT, "series" TEXT, "case" TEXT, "metric" TEXT,
    "value" REAL, "baseline" INTEGER);
PRAGMA user_version = 4;
"""


def _rewrite_as_layout_4(index) -> None:
    """Turn the index the current nxrun wrote into the one 0.1.0 would have written."""
    new = sqlite3.connect(index)
    explains = dict(new.execute("SELECT etag, explain FROM explains"))
    entries = []
    for etag, task_id, manifest, size, created, last_used, origin in new.execute(
            "SELECT etag, task_id, manifest, size, created, last_used, origin FROM entries"):
        data = json.loads(manifest)
        data["explain"] = json.loads(explains[etag])
        entries.append((etag, task_id, json.dumps(data, sort_keys=True, separators=(",", ":")), size, created,
                        last_used, origin))
    runs = new.execute("SELECT * FROM runs").fetchall()
    run_tasks = [(*row[:8], explains.get(row[2], "{}"), *row[8:]) for row in new.execute(
        "SELECT run_id, task_id, etag, status, origin, duration, started, saved, outputs_digest, error "
        "FROM run_tasks")]
    stat_cache = new.execute("SELECT path, size, mtime_ns, inode, digest FROM stat_cache").fetchall()
    new.close()
    for suffix in ("", "-wal", "-shm"):
        index.with_name(index.name + suffix).unlink(missing_ok=True)
    old = sqlite3.connect(index)
    old.executescript(LAYOUT_4)
    old.executemany("INSERT INTO entries VALUES (?,?,?,?,?,?,?)", entries)
    old.executemany(f"INSERT INTO runs VALUES ({','.join('?' * len(runs[0]))})", runs)
    old.executemany("INSERT INTO run_tasks VALUES (?,?,?,?,?,?,?,?,?,?,?)", run_tasks)
    old.executemany("INSERT INTO stat_cache VALUES (?,?,?,?,?)", stat_cache)
    old.execute("INSERT INTO bench_results VALUES (1, 'c:join', 'e', 'd', 1.0, 'dev', 'cpu', 'f', 's', 'c', "
                "'m', 2.5, 0)")
    old.commit()
    old.close()


def test_a_layout_4_cache_keeps_entries_history_and_bench_figures(diamond: Workspace):
    diamond.run_json("c:join")
    diamond.run_json("c:join")
    _rewrite_as_layout_4(diamond.root / ".nxrun" / "index.db")

    summary = diamond.run_json("c:join")
    assert set(diamond.statuses(summary).values()) == {"local-hit"}
    history = json.loads(diamond.nxrun("history", "--json", check=True).stdout)
    assert len(history) == 3 and history[-1]["misses"] == 4
    assert "nothing changed" in diamond.nxrun("why", "a:gen", check=True).stdout
    diamond.write("src/a.txt", "changed\n")
    assert "changed  file:src/a.txt" in diamond.nxrun("why", "a:gen", check=True).stdout
    index = sqlite3.connect(diamond.root / ".nxrun" / "index.db")
    assert index.execute("PRAGMA user_version").fetchone()[0] >= 7
    assert index.execute("SELECT count(*) FROM bench_results").fetchone()[0] == 1
    assert index.execute("SELECT count(*) FROM entries WHERE hit IS NULL").fetchone()[0] == 0
    index.close()
    assert diamond.nxrun("cache", "verify").returncode == 0


def test_a_layout_7_cache_keeps_its_history_but_no_unkeyed_env_digest_or_clear_args(ws: Workspace):
    ws.write("nxrun.toml", """
        [projects.p.targets.deploy]
        command = "echo deployed > out.txt"
        inputs  = ["env:PIN"]
        outputs = ["out.txt"]
        [projects.p.targets.plain]
        command = "echo plain > plain.txt"
        inputs  = []
        outputs = ["plain.txt"]
    """)
    ws.run_json("p:deploy", "p:plain", env={"PIN": "zulu4821"})
    index_path = ws.root / ".nxrun" / "index.db"
    index = sqlite3.connect(index_path)
    (deploy_etag,) = index.execute("SELECT etag FROM task_latest WHERE task_id = 'p:deploy'").fetchone()
    (plain_etag,) = index.execute("SELECT etag FROM task_latest WHERE task_id = 'p:plain'").fetchone()
    # what layout 7 kept: an unkeyed env digest, args in clear, a stat cache without ctimes
    explain = json.loads(index.execute("SELECT explain FROM explains WHERE etag = ?", (deploy_etag,)).fetchone()[0])
    explain["env:PIN"] = "7d1e1ba2a7a0f4b7a2c4b0f5c8f1e3a9"
    index.execute("UPDATE explains SET explain = ? WHERE etag = ?", (json.dumps(explain), deploy_etag))
    index.execute("UPDATE runs SET argv = ?", (json.dumps(["run", "p:deploy", "--", "yankee9034", "--pin=zulu4821"]),))
    index.execute("DROP TABLE stat_cache")
    index.execute('CREATE TABLE "stat_cache" ("path" TEXT PRIMARY KEY, "size" INTEGER, "mtime_ns" INTEGER, '
                  '"inode" INTEGER, "digest" TEXT)')
    index.execute("INSERT INTO stat_cache VALUES ('/x', 1, 2, 3, 'd')")
    index.execute("PRAGMA user_version = 7")
    index.commit()
    index.close()

    history = json.loads(ws.nxrun("history", "--json", check=True).stdout)
    assert len(history) == 1 and history[0]["argv"] == ["run", "p:deploy", "--", "<2 args not recorded>"]
    assert len(json.loads(ws.nxrun("history", "p:deploy", "--json", check=True).stdout)) == 1
    index = sqlite3.connect(index_path)
    try:
        assert index.execute("PRAGMA user_version").fetchone()[0] >= 8
        dump = "\n".join(index.iterdump())
        assert deploy_etag not in dump and "yankee9034" not in dump and "zulu4821" not in dump
        # nor in the file's bytes: deleted rows and old row versions stay in free pages and in the
        # -wal until something writes over them
        raw = b"".join(path.read_bytes() for path in index_path.parent.glob("index.db*") if path.is_file())
        for secret in ("7d1e1ba2a7a0f4b7a2c4b0f5c8f1e3a9", "--pin=zulu4821", deploy_etag):
            assert secret.encode() not in raw, secret
        assert index.execute("SELECT count(*) FROM entries WHERE etag = ?", (plain_etag,)).fetchone()[0] == 1
        assert index.execute("SELECT count(*) FROM run_tasks").fetchone()[0] == 2
        columns = [row[1] for row in index.execute("PRAGMA table_info(stat_cache)")]
        assert "ctime_ns" in columns and index.execute("SELECT count(*) FROM stat_cache").fetchone()[0] == 0
    finally:
        index.close()
    assert ws.statuses(ws.run_json("p:deploy", "p:plain", env={"PIN": "zulu4821"})) == \
        {"p:deploy": "miss", "p:plain": "local-hit"}


def test_a_layout_8_cache_keeps_its_history_and_records_gpus_from_now_on(ws: Workspace):
    ws.write("nxrun.toml", '[projects.p.targets.t]\ncommand = "echo hi > out.txt"\noutputs = ["out.txt"]\n')
    ws.run_json("p:t")
    index_path = ws.root / ".nxrun" / "index.db"
    index = sqlite3.connect(index_path)
    index.execute('ALTER TABLE run_tasks DROP COLUMN "gpus"')
    index.execute("PRAGMA user_version = 8")
    index.commit()
    index.close()
    rows = json.loads(ws.nxrun("history", "p:t", "--json", check=True).stdout)
    assert len(rows) == 1 and rows[0]["gpus"] == []
    index = sqlite3.connect(index_path)
    try:
        assert index.execute("PRAGMA user_version").fetchone()[0] >= 9
        assert "gpus" in {row[1] for row in index.execute('PRAGMA table_info("run_tasks")')}
    finally:
        index.close()
