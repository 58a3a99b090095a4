"""The upgrade of a layout-7 index leaves no byte of what it removes in the file, whatever the
SQLite build: many (python.org's, macOS's) keep deleted rows in free pages unless told not to."""

from __future__ import annotations

import json
import sqlite3

import pytest

from nxrun.store.local import LocalStore

UNKEYED_DIGEST = "7d1e1ba2a7a0f4b7a2c4b0f5c8f1e3a9"
ETAG = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def sqlite_without_secure_delete(monkeypatch):
    """Every connection nxrun opens behaves as on a SQLite built without SQLITE_SECURE_DELETE."""
    connect = sqlite3.connect

    def insecure_connect(*args, **kwargs):
        conn = connect(*args, **kwargs)
        conn.execute("PRAGMA secure_delete = OFF")
        return conn

    monkeypatch.setattr(sqlite3, "connect", insecure_connect)


def _layout_7_index(cache_dir) -> None:
    store = LocalStore(cache_dir)
    store.read("SELECT 1")    # the current layout, made
    store.close()
    conn = sqlite3.connect(cache_dir / "index.db", isolation_level=None)
    conn.execute("PRAGMA secure_delete = OFF")
    padding = "x" * 3000     # rows big enough to have pages of their own
    for i in range(20):
        explain = {"format": "nxrun-etag-1", "pad": padding}
        explain.update({"env:PIN": UNKEYED_DIGEST} if i == 7 else {"file:src.c": f"{i:032x}"})
        conn.execute("INSERT INTO explains (etag, explain) VALUES (?, ?)",
                     (ETAG if i == 7 else f"{i:032x}", json.dumps(explain)))
    conn.execute("INSERT INTO runs (started, finished, argv, cwd, status) VALUES (1, 2, ?, '/w', 'ok')",
                 (json.dumps(["run", "p:deploy", "--", "--pin=4821"]),))
    conn.execute("DROP TABLE stat_cache")
    conn.execute('CREATE TABLE "stat_cache" ("path" TEXT PRIMARY KEY, "size" INTEGER, "mtime_ns" INTEGER, '
                 '"inode" INTEGER, "digest" TEXT)')
    conn.execute("PRAGMA user_version = 7")
    conn.close()


def test_an_upgrade_leaves_no_trace_of_unkeyed_digests_or_args_in_the_file(tmp_path, sqlite_without_secure_delete):
    cache_dir = tmp_path / "cache"
    _layout_7_index(cache_dir)
    before = (cache_dir / "index.db").read_bytes()
    assert UNKEYED_DIGEST.encode() in before and b"--pin=4821" in before
    store = LocalStore(cache_dir)
    try:
        assert store.read("SELECT count(*) FROM explains WHERE etag = ?", (ETAG,)) == [(0,)]
        assert store.read("SELECT count(*) FROM explains") == [(19,)]
    finally:
        store.close()
    raw = b"".join(path.read_bytes() for path in cache_dir.glob("index.db*") if path.is_file())
    for secret in (UNKEYED_DIGEST, "--pin=4821", ETAG):
        assert secret.encode() not in raw, secret
