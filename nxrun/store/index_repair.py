"""A damaged cache index (index.db): recognise the damage, move the file aside for inspection and
copy into a fresh index the rows that can still be read.

Only the index is lost: blobs are content-addressed, so a task that runs again and writes the same
outputs reuses them. Rows are read table by table, by rowid, forwards until the first damaged page
and then backwards from the end, so one bad page costs the rows on it and not the whole table.
Entries are copied only when they pass `keep_entry` (the caller checks them against their blobs);
the stat cache is never copied (re-hashing is cheap, a wrong digest is not).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

# primary SQLite result codes of a damaged file: SQLITE_CORRUPT, SQLITE_NOTADB
_DAMAGE_CODES = frozenset({11, 26})
_DAMAGE_TEXT = ("malformed", "file is not a database", "file is encrypted or is not a database")
_NOT_COPIED = frozenset({"stat_cache"})


def is_damage(exc: BaseException) -> bool:
    """Does this sqlite error say the database file is damaged?"""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _DAMAGE_CODES
    text = str(exc).lower()
    return any(part in text for part in _DAMAGE_TEXT)


def check(conn: sqlite3.Connection, thorough: bool = False) -> list[str]:
    """Problems `PRAGMA quick_check` (or integrity_check) finds; [] when the index is sound."""
    pragma = "integrity_check(20)" if thorough else "quick_check(20)"
    try:
        rows = [row[0] for row in conn.execute(f"PRAGMA {pragma}").fetchall()]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    return [] if rows == ["ok"] else rows


def move_aside(db_path: Path) -> Path:
    """Rename the index and its -wal/-shm files to `<name>.corrupt-<time>` (the -wal first, so no
    reader can open the damaged file without it); the new path of the index."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = db_path.with_name(f"{db_path.name}.corrupt-{stamp}")
    counter = 1
    while target.exists():
        counter += 1
        target = db_path.with_name(f"{db_path.name}.corrupt-{stamp}-{counter}")
    for suffix in ("-wal", "-shm", ""):
        try:
            os.replace(f"{db_path}{suffix}", f"{target}{suffix}")
        except FileNotFoundError:
            pass
    return target


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")').fetchall()]


def _readable_rows(conn: sqlite3.Connection, table: str, columns: list[str]) -> list[tuple]:
    """Every row of `table` that can be read: forwards by rowid until a damaged page, then
    backwards from the end down to the last row read forwards."""
    select = ", ".join(f'"{c}"' for c in columns)
    rows: dict[int, tuple] = {}
    last = None
    try:
        for row in conn.execute(f'SELECT rowid, {select} FROM "{table}" ORDER BY rowid'):
            rows[row[0]] = row[1:]
            last = row[0]
        return list(rows.values())
    except sqlite3.DatabaseError:
        pass
    try:
        query = f'SELECT rowid, {select} FROM "{table}"' + (" WHERE rowid > ?" if last is not None else "")
        for row in conn.execute(query + " ORDER BY rowid DESC", (last,) if last is not None else ()):
            rows[row[0]] = row[1:]
    except sqlite3.DatabaseError:
        pass
    return [rows[key] for key in sorted(rows)]


def salvage(damaged: Path, fresh: sqlite3.Connection,
            keep_row: Callable[[str, dict], bool] | None = None) -> dict[str, int]:
    """Copy what can be read from the damaged index into `fresh` (a new index with the current
    schema, outside any transaction): tables of both, their common columns, rows that pass
    `keep_row(table, row)`. Tables only the damaged index has are created as they were there.
    Returns rows copied per table; nothing when the damaged file cannot be opened at all."""
    copied: dict[str, int] = {}
    opened = _open_readable(damaged)
    if opened is None:
        return copied
    old, tables, patched = opened
    try:
        present = {row[0] for row in fresh.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table, sql in tables:
            if table in _NOT_COPIED:
                continue
            try:
                if table not in present:
                    if not sql:
                        continue
                    fresh.execute(sql)
                wanted = set(_columns(fresh, table))
                columns = [c for c in _columns(old, table) if c in wanted]
            except sqlite3.DatabaseError:
                continue
            if not columns:
                continue
            rows = _readable_rows(old, table, columns)
            if keep_row is not None:
                rows = [r for r in rows if keep_row(table, dict(zip(columns, r)))]
            names = ", ".join(f'"{c}"' for c in columns)
            marks = ", ".join("?" for _ in columns)
            fresh.execute("BEGIN IMMEDIATE")
            try:
                fresh.executemany(f'INSERT OR IGNORE INTO "{table}" ({names}) VALUES ({marks})', rows)
                fresh.execute("COMMIT")
            except sqlite3.Error:
                fresh.execute("ROLLBACK")
                continue
            copied[table] = len(rows)
    finally:
        old.close()
        if patched is not None:
            patched.unlink(missing_ok=True)
        _drop_empty_companions(damaged)
    return copied


def _drop_empty_companions(path: Path) -> None:
    """Reading a WAL database, even read-only, may leave an -shm (an index of the -wal, rebuilt
    whenever needed) and an empty -wal beside it: remove those, keep a -wal that holds pages."""
    Path(f"{path}-shm").unlink(missing_ok=True)
    wal = Path(f"{path}-wal")
    try:
        if wal.stat().st_size == 0:
            wal.unlink()
    except FileNotFoundError:
        pass


_TABLES_SQL = "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"


def _open_readable(damaged: Path) -> tuple[sqlite3.Connection, list, Path | None] | None:
    """(connection, its tables, patched copy or None) for the damaged index, read-only; None when
    not even its schema can be read. A file cut short (a truncated copy, a disk that filled up)
    is unreadable as it is, because its header counts pages that are gone: then a copy whose
    header counts the pages that are there is read instead."""
    for path in (damaged, _header_fixed_copy(damaged)):
        if path is None:
            continue
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        except sqlite3.Error:
            continue
        try:
            return conn, conn.execute(_TABLES_SQL).fetchall(), (None if path == damaged else path)
        except sqlite3.DatabaseError:
            conn.close()
            if path != damaged:
                path.unlink(missing_ok=True)
    return None


def _header_fixed_copy(damaged: Path) -> Path | None:
    """A copy of the damaged file cut to whole pages, its header's page count set to match."""
    try:
        data = bytearray(damaged.read_bytes())
    except OSError:
        return None
    if len(data) < 512 or not data.startswith(b"SQLite format 3\0"):
        return None
    page_size = int.from_bytes(data[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return None
    pages = len(data) // page_size
    if pages == 0 or int.from_bytes(data[28:32], "big") == pages:
        return None
    del data[pages * page_size:]
    data[28:32] = pages.to_bytes(4, "big")
    data[18:20] = b"\x01\x01"   # rollback-journal mode: read without making a -wal and -shm beside it
    copy = damaged.with_name(damaged.name + ".readable")
    try:
        copy.write_bytes(bytes(data))
    except OSError:
        copy.unlink(missing_ok=True)
        return None
    return copy
