"""The local cache: content-addressed blobs on disk and an sqlite index (WAL) of entries,
file digests (the stat cache) and run history.

Every blob is written to a temp file and renamed into place; an entry row is written last, in
one transaction, so a crash, a kill or a full disk never leaves an entry whose blobs are missing
or partial. Blobs are not fsynced one by one (two fsyncs per task were the largest cost of a
cold run): `sync()` flushes the cache's file system once at the end of a run, and because every
blob is re-hashed on restore, even a power loss before that flush can only cost a cache miss,
never restore wrong bytes. Several nxrun processes may share one cache folder at once.

The schema is created through sqlite-utils; the hot path (a no-op run) talks to sqlite3 directly,
because importing sqlite-utils costs more than a whole no-op run is allowed to take.

A damaged index is moved aside and rebuilt with what can still be read (index_repair.py). A disk
that cannot take more (full, read-only, over quota) fails maintenance commands with a clear error,
and turns a run's caching off with one warning (uncached_on_disk_problems). Each process holds
`index.lock` shared while its connection is open; a rebuild takes it exclusively, so no process
still has the damaged file open when it is moved aside.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import shutil
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import xxhash

from ..errors import NxrunError
from ..hashing import digest_handle, hash_rest, read_head
from . import CacheEntry, CorruptBlob, OutputRecord, encode_explain

SCHEMA_VERSION = 9
_DEFER_MAX = 200          # deferred entries written together at most this many ...
_DEFER_SECONDS = 1.0      # ... or this long after the first


def _retry_locked(operation: Callable, attempts: int = 200):
    """Run an sqlite operation, retrying while another process holds the write lock."""
    delay = 0.005
    for attempt in range(attempts):
        try:
            return operation()
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if ("locked" not in text and "busy" not in text) or attempt == attempts - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


class CacheUnavailable(NxrunError):
    """The cache cannot be opened or written: a full, read-only or failing disk, or a damaged index."""


class CachingOff(OSError):
    """A write after a disk problem turned this run's caching off (reported once already)."""


# entries handed out more recently than this are not marked used again (LRU order for prune)
TOUCH_AFTER = 3600.0


def write_all(handle, data: memoryview) -> None:
    """Unbuffered writes may be short (a file-size limit, a nearly full disk): loop until all is
    written, so the failure surfaces as an OSError instead of a silently truncated blob. `handle`
    is an unbuffered file, or a file descriptor."""
    write = (lambda chunk: os.write(handle, chunk)) if isinstance(handle, int) else handle.write
    written = 0
    while written < len(data):
        count = write(data[written:])
        if not count:
            raise OSError(f"short write ({written} of {len(data)} bytes)")
        written += count


class LocalStore:
    def __init__(self, cache_dir: Path):
        self.cache_dir = Path(cache_dir)
        self.blob_dir = self.cache_dir / "blobs"
        self.tmp_dir = self.cache_dir / "tmp"
        self.db_path = self.cache_dir / "index.db"
        self._conn: sqlite3.Connection | None = None
        self.lock = threading.RLock()
        # blobs this process wrote or downloaded and hashed itself: a restore in the same run need
        # not hash them again (everything else is re-hashed on restore)
        self.verified: set[str] = set()
        self._tmp_ready = False
        self._blob_folders: set[str] = set()   # blobs/ab folders known to exist
        self._deferred: dict[str, tuple[CacheEntry, str]] = {}   # put_entry(defer=True), not yet written
        self._deferred_since = 0.0
        self._prefetched: dict[str, tuple] = {}   # etag -> (task_id, hit, last_used), see prefetch_hits
        self._index_lock: int | None = None       # fd of index.lock, held shared while _conn is open
        self._index_id: tuple[int, int, str] | None = None   # _index_file_id() of the index _conn opened
        self._warn: Callable[[str], None] | None = None  # where warnings go (stderr when None)
        self._degrade = False                # a run: see uncached_on_disk_problems
        self.unusable: str | None = None     # why this run cannot use the cache at all (runs only)
        # why this run stores no more blobs or entries (runs only); the index is still written, as
        # far as it goes: entries whose blobs are in place, the stat cache, the run's history
        self.writes_off: str | None = None
        self.repairs: list[str] = []         # rebuilds of a damaged index this process made

    # ------------------------------------------------------------------ database
    def uncached_on_disk_problems(self, warn: Callable[[str], None]) -> None:
        """For a run: a disk that cannot take more (full, read-only, over quota, failing), or a
        damaged index that other processes still have open, turns caching off for the rest of the
        process with one warning through `warn`, instead of failing. Without this, such problems
        raise CacheUnavailable (a clear error for maintenance commands)."""
        self._warn = warn
        self._degrade = True

    def report_to(self, notice: Callable[[str], None]) -> None:
        """Send the store's warnings (a rebuilt index, say) to `notice` instead of stderr."""
        self._warn = notice

    def _notify(self, message: str) -> None:
        if self._warn is not None:
            self._warn(message)
        else:
            import sys

            print(f"warning: {message}", file=sys.stderr, flush=True)

    @property
    def conn(self) -> sqlite3.Connection:
        """The open index (a damaged one is rebuilt first)."""
        conn = self._with_index(lambda conn: conn, None, writing=False)
        if conn is None:
            raise CacheUnavailable(f"the cache {self.cache_dir} is not usable in this run: {self.unusable}")
        return conn

    def _connection(self) -> sqlite3.Connection | None:
        """The open index (opened on first use), None once this run has turned the cache off.
        Call with self.lock held."""
        if self._conn is None and self.unusable is None:
            self._conn = self._open()
        return self._conn

    def _open(self, locked: bool = False) -> sqlite3.Connection:
        """Connect to the index (creating or upgrading its schema). `locked`: index.lock is held."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(exist_ok=True)
        if not locked:
            self._lock_index(fcntl.LOCK_SH)
        try:
            self._index_id = self._index_file_id()
            if self._index_id is not None and self._index_id[2] != "file":
                # SQLite would fail with "unable to open" (read as a disk problem nothing frees) or
                # follow a dangling link to make its target: damage, moved aside like any other
                raise sqlite3.DatabaseError(f"file is not a database: it is {self._index_id[2]}")
            conn = sqlite3.connect(self.db_path, timeout=60, check_same_thread=False, isolation_level=None)
            try:
                self._index_id = self._index_file_id()
                conn.execute("PRAGMA busy_timeout = 60000")
                version = _retry_locked(lambda: conn.execute("PRAGMA user_version").fetchone()[0])
                if version != SCHEMA_VERSION:
                    _retry_locked(lambda: self._create_schema(conn))
                conn.execute("PRAGMA synchronous = NORMAL")
            except BaseException:
                conn.close()
                raise
        except BaseException:
            self._unlock_index()
            raise
        return conn

    def _index_file_id(self) -> tuple[int, int, str] | None:
        """(st_dev, st_ino, what it is) of index.db, following a link to a file; "file" for a
        regular file, else a description (a folder, a dangling symlink, ...); None when absent."""
        try:
            st = os.stat(self.db_path)
        except FileNotFoundError:
            try:
                st = os.lstat(self.db_path)
            except FileNotFoundError:
                return None
            return (st.st_dev, st.st_ino, "a dangling symlink")
        except OSError as exc:          # a link loop, say
            st = os.lstat(self.db_path)
            return (st.st_dev, st.st_ino, f"a symlink that cannot be followed ({exc.strerror or exc})")
        if stat.S_ISREG(st.st_mode):
            return (st.st_dev, st.st_ino, "file")
        return (st.st_dev, st.st_ino, "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file")

    def _lock_index(self, kind: int, blocking: bool = True) -> None:
        """Take index.lock (shared while a connection is open; exclusive to replace the index)."""
        if self._index_lock is None:
            self._index_lock = os.open(self.cache_dir / "index.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._index_lock, kind if blocking else kind | fcntl.LOCK_NB)

    def _unlock_index(self) -> None:
        if self._index_lock is not None:
            os.close(self._index_lock)   # closing releases the lock
            self._index_lock = None

    def _close_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None
        self._unlock_index()

    def _with_index(self, operation: Callable[[sqlite3.Connection], object], default, writing: bool):
        """operation(conn), retried while another process holds the write lock. A damaged index is
        rebuilt and the operation tried once more; a disk problem gives `default` in a run (see
        uncached_on_disk_problems), a CacheUnavailable error elsewhere."""
        with self.lock:
            damage = None
            for attempt in (1, 2):
                opening = self._conn is None
                try:
                    if damage is not None:
                        self._rebuild(damage)
                    conn = self._connection()
                    if conn is None:
                        return default
                    return _retry_locked(functools.partial(operation, conn))
                except sqlite3.DatabaseError as exc:
                    from .index_repair import is_damage

                    if is_damage(exc):
                        if attempt == 1:
                            damage = _first_line(exc)
                            continue
                        self._give_up("open", f"its index {self.db_path} is still damaged after a rebuild "
                                              f"({_first_line(exc)})", exc)
                        return default
                    problem = exc
                except OSError as exc:
                    problem = exc
                from .disk import describe, is_disk_problem

                if not is_disk_problem(problem):
                    raise problem
                self._give_up("open" if opening or not writing else "write",
                              describe(problem, self.cache_dir), problem)
                return default
        return default

    def _give_up(self, action: str, reason: str, exc: BaseException | None = None) -> None:
        """The cache cannot be opened (action "open") or written ("write"): in a run, stop using
        it (or stop writing it) with one warning; elsewhere raise CacheUnavailable."""
        if not self._degrade:
            from .disk import is_disk_problem

            verb = "open" if action == "open" else "write to"
            hint = (" Free some space there, or point [workspace] cache-dir (or NXRUN_CACHE_DIR) at another disk."
                    if exc is not None and is_disk_problem(exc) else "")
            raise CacheUnavailable(f"cannot {verb} the cache {self.cache_dir}: {reason}.{hint}") from exc
        with self.lock:    # blob writes fail in worker threads: one of them warns
            first = self.writes_off is None and self.unusable is None
            self.writes_off = self.writes_off or reason
            if action == "open":
                self.unusable = self.unusable or reason
                self._close_connection()
                self._prefetched.clear()
        if first:
            if action == "open":
                self._notify(f"cannot use the cache {self.cache_dir}: {reason}; this run goes on without it "
                             "(nothing is looked up or stored).")
            else:
                self._notify(f"could not write to the cache {self.cache_dir}: {reason}; the rest of this run "
                             "stores no outputs in it.")

    def disk_problem(self, exc: OSError) -> None:
        """A write of the cache failed: when the disk is to blame, turn caching off for this run
        (one warning), or raise CacheUnavailable outside a run. Other errors are left to the caller."""
        from .disk import describe, is_disk_problem

        if isinstance(exc, CachingOff) or not is_disk_problem(exc):
            return
        self._give_up("write", describe(exc, self.cache_dir), exc)

    def _check_writable(self) -> None:
        if self.writes_off is not None:
            raise CachingOff(f"caching is off in this run: {self.writes_off}")

    def _rebuild(self, damage: str) -> None:
        """The index is damaged: move it aside and start a new one holding what can still be read
        of it. Waits for (or, in a run, does not wait for) other processes to close the index."""
        from .index_repair import move_aside, salvage

        self._close_connection()
        self._prefetched.clear()
        try:
            self._lock_index(fcntl.LOCK_EX, blocking=False)
        except BlockingIOError:
            if self._degrade:
                self._unlock_index()
                self._give_up("open", f"its index {self.db_path} is damaged ({damage}) and other nxrun processes "
                                      "have it open (a run on its own will rebuild it)")
                return
            self._notify(f"the cache index {self.db_path} is damaged ({damage}); waiting for the other nxrun "
                         "processes using it to finish, to rebuild it...")
            self._lock_index(fcntl.LOCK_EX)
        try:
            current = self._index_file_id()
            if current is None or current != self._index_id:
                self._conn = self._open(locked=True)   # another process rebuilt it already
                return
            moved = move_aside(self.db_path)
            self._conn = self._open(locked=True)
            copied = salvage(moved, self._conn, self._keep_row)
        except BaseException:
            self._close_connection()
            raise
        finally:
            if self._index_lock is not None:
                fcntl.flock(self._index_lock, fcntl.LOCK_SH)
        entries = copied.get("entries", 0)
        message = (f"the cache index {self.db_path} was damaged ({damage}); moved it to {moved.name} and started a "
                   f"new one with what could be read ({entries} entr{'y' if entries == 1 else 'ies'} kept; "
                   "blobs are kept, tasks whose entries were lost run again).")
        self.repairs.append(message)
        self._notify(message)

    def _keep_row(self, table: str, row: dict) -> bool:
        """Whether a row read from a damaged index may go into the new one: an entry only when its
        manifest parses, agrees with its key and its compact hit row, and its blobs are present."""
        if table == "entries":
            try:
                entry = CacheEntry.from_json(row["manifest"])
            except (ValueError, TypeError, KeyError):
                return False
            return (entry.etag == row.get("etag") and row.get("hit") == _hit_row(entry)
                    and all(self.has_blob(d) for d in entry.blob_digests()))
        if table == "explains":
            try:
                return isinstance(json.loads(row["explain"]), dict)
            except (TypeError, ValueError, KeyError):
                return False
        return True

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        db = _sqlite_utils().Database(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA_VERSION:
                conn.execute("COMMIT")
                return
            if version in (4, 7, 8):
                if version in (4, 7):
                    # what the upgrade removes must not stay in free pages or old cells of the file:
                    # SQLite builds differ in whether they overwrite deleted content by default
                    conn.execute("PRAGMA secure_delete = ON")
                    if version == 4:
                        _migrate_from_4(db, conn)
                    _migrate_from_7(db, conn)
                _migrate_from_8(conn)
            else:   # a new cache, or one of a layout never released: start again
                for stale in _TABLES:
                    if db[stale].exists():
                        db[stale].drop()
                for name in _TABLES:
                    _create_table(db, name)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        _retry_locked(lambda: db.enable_wal())

    def write(self, operation: Callable[[sqlite3.Connection], object]):
        """Run `operation` in one IMMEDIATE transaction, retrying while the database is locked.
        Returns its result; None in a run whose cache disk cannot take it (see uncached_on_disk_problems)."""
        def attempt(conn):
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = operation(conn)
                conn.execute("COMMIT")
                return result
            except BaseException:
                _rollback(conn)
                raise
        return self._with_index(attempt, None, writing=True)

    def read(self, sql: str, params=()) -> list[tuple]:
        """The rows of one query; none when this run has turned the cache off."""
        return self._with_index(lambda conn: conn.execute(sql, params).fetchall(), [], writing=False)

    def close(self) -> None:
        with self.lock:
            try:
                self.flush_entries()
            finally:
                self._close_connection()

    # ------------------------------------------------------------------ blobs
    def blob_path(self, digest: str) -> Path:
        return self.blob_dir / digest[:2] / digest[2:]

    def has_blob(self, digest: str) -> bool:
        return _is_blob_file(os.path.join(self.blob_dir, digest[:2], digest[2:]))

    def temp_path(self) -> Path:
        """A fresh path in the cache's temp folder (same file system as the blobs: renames are atomic)."""
        if not self._tmp_ready:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            self._tmp_ready = True
        return self.tmp_dir / f"{os.getpid()}-{os.urandom(12).hex()}"

    def open_temp(self) -> tuple[Path, object]:
        """A new temp file in the cache, open for writing: (path, unbuffered file)."""
        self._check_writable()
        try:
            temp = self.temp_path()
            try:
                return temp, open(temp, "wb", buffering=0)
            except FileNotFoundError:   # the folder was removed under us: make it again
                self._tmp_ready = False
                temp = self.temp_path()
                return temp, open(temp, "wb", buffering=0)
        except OSError as exc:
            self.disk_problem(exc)
            raise

    def _write(self, handle, data: memoryview) -> None:
        """write_all into a temp file of the cache; a disk problem is reported (disk_problem)."""
        try:
            write_all(handle, data)
        except OSError as exc:
            self.disk_problem(exc)
            raise

    def put_file(self, source: str | os.PathLike, known_digest: str | None = None) -> tuple[str, int]:
        """Copy a file into the blob store; returns (digest, size). Hashes while copying."""
        if known_digest and self.has_blob(known_digest):
            return known_digest, os.path.getsize(source)
        self._check_writable()
        with open(source, "rb", buffering=0) as src:
            head, whole = read_head(src)
            if whole:
                return self.put_bytes(head)
            temp, dst = self.open_temp()
            try:
                with dst:
                    hasher = xxhash.xxh3_128(head)
                    self._write(dst, memoryview(head))
                    size = len(head) + hash_rest(src, hasher, lambda chunk: self._write(dst, chunk))
                return self._adopt(temp, hasher.hexdigest()), size
            finally:
                if temp.exists():
                    temp.unlink()

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        """Store `data` as a blob (no write at all when it is already stored); (digest, size)."""
        digest = xxhash.xxh3_128_hexdigest(data)
        # `verified`: blobs this process stored. While it runs it holds the cache shared (in_use), so
        # nothing that deletes blobs (prune, clear, verify) can run beside it
        if digest in self.verified or self.has_blob(digest):
            return digest, len(data)
        temp, dst = self.open_temp()
        try:
            with dst:
                self._write(dst, memoryview(data))
            return self._adopt(temp, digest), len(data)
        finally:
            if temp.exists():
                temp.unlink()

    def _adopt(self, temp: Path, digest: str) -> str:
        try:
            self._commit_blob(temp, digest)
        except OSError as exc:
            self.disk_problem(exc)
            raise
        self.verified.add(digest)
        return digest

    def put_verified_file(self, temp: Path, digest: str) -> None:
        """Adopt a temp file (already hashed to `digest`) as a blob."""
        try:
            self._adopt(temp, digest)
        finally:
            if temp.exists():
                temp.unlink()

    def sync(self) -> None:
        """Flush the cache's file system to disk, once, when this process wrote blobs."""
        if not self.verified:
            return
        try:
            import ctypes

            fd = os.open(self.cache_dir, os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).syncfs(fd) != 0:
                    os.sync()
            finally:
                os.close(fd)
        except (OSError, AttributeError):
            os.sync()

    def _commit_blob(self, temp: Path, digest: str) -> None:
        folder = os.path.join(self.blob_dir, digest[:2])
        destination = os.path.join(folder, digest[2:])
        if _is_blob_file(destination):
            return
        if os.path.lexists(destination):
            _remove_blob_path(destination)  # a fifo, link or folder where the blob belongs
        if folder not in self._blob_folders:
            os.makedirs(folder, exist_ok=True)
            self._blob_folders.add(folder)
        os.chmod(temp, 0o444)
        try:
            os.replace(temp, destination)
        except FileNotFoundError:   # the folder went away (another process cleared the cache)
            os.makedirs(folder, exist_ok=True)
            os.replace(temp, destination)

    def read_blob(self, digest: str) -> bytes:
        """A blob's contents, verified against its digest (CorruptBlob when wrong or missing)."""
        with open(open_blob(self.blob_path(digest), digest), "rb") as handle:
            data = handle.read()
        if xxhash.xxh3_128_hexdigest(data) != digest:
            self.discard_blob(digest)
            raise CorruptBlob(digest)
        return data

    def discard_blob(self, digest: str) -> None:
        self.verified.discard(digest)
        _remove_blob_path(self.blob_path(digest))

    # ------------------------------------------------------------------ entries
    def get_entry(self, etag: str, explain: bool = False) -> CacheEntry | None:
        """The entry for `etag`, or None. Its explain manifest is read only when asked for."""
        entry = self._read_entry(etag, full=True)
        if entry is not None and explain and not entry.explain:
            entry.explain = self.get_explain(etag) or {}
        return entry

    def get_hit(self, etag: str) -> CacheEntry | None:
        """The entry for `etag` with what restoring it needs: outputs, declared outputs, outputs
        and log digests, duration. Reads a compact row instead of parsing the whole manifest (a
        cached run does this for every task); runtime facts, created and explain are left empty,
        so use get_entry for anything else."""
        return self._read_entry(etag, full=False)

    def prefetch_hits(self, task_ids: list[str]) -> None:
        """Read, in one query, the entries of the ETags these tasks had in their latest run: a run
        where little changed then asks get_hit for those and finds them without a query each."""
        try:
            rows = self.read("SELECT e.etag, e.task_id, e.hit, e.last_used FROM task_latest t JOIN entries e "
                             "ON e.etag = t.etag WHERE t.task_id IN (SELECT value FROM json_each(?))",
                             (json.dumps(task_ids),))
        except sqlite3.OperationalError:   # an SQLite built without JSON functions: one query per hit
            return
        self._prefetched = {row[0]: row[1:] for row in rows}

    def _read_entry(self, etag: str, full: bool) -> CacheEntry | None:
        deferred = self._deferred.get(etag)
        if deferred is not None:
            return deferred[0]
        row = None if full else self._prefetched.pop(etag, None)
        if row is None:
            rows = self.read(
                f"SELECT task_id, {'manifest' if full else 'hit'}, last_used FROM entries WHERE etag = ?", (etag,))
            if not rows:
                return None
            row = rows[0]
        task_id, text, last_used = row
        try:
            if full:
                entry = CacheEntry.from_json(text)
            else:
                outputs_digest, log_digest, duration, declared, files = json.loads(text)
                entry = CacheEntry(etag, task_id, [OutputRecord(*f) for f in files], declared, outputs_digest,
                                   log_digest, 0, duration)
        except (ValueError, TypeError, KeyError):
            return None
        entry.last_used = last_used or 0.0
        return entry

    def get_explain(self, etag: str) -> dict[str, str] | None:
        rows = self.read("SELECT explain FROM explains WHERE etag = ?", (etag,))
        return json.loads(rows[0][0]) if rows else None

    def put_entry(self, entry: CacheEntry, origin: str = "local", defer: bool = False) -> None:
        """Record an entry; all its blobs must already be in place.

        With `defer`, the entry is written with others in one transaction (flush_entries, at the
        latest when the run ends): one write transaction per task was the largest cost of a cold
        run after the commands themselves. Until then get_entry sees it in memory; a crash before
        the flush loses only entries, never leaves one without its blobs."""
        self._check_writable()
        missing = [d for d in entry.blob_digests() if d not in self.verified and not self.has_blob(d)]
        if missing:
            raise FileNotFoundError(f"entry {entry.etag} needs blobs that are not stored: {missing[:3]}")
        if not defer:
            self.write(lambda conn: self._insert_entries(conn, [(entry, origin)]))
            return
        with self.lock:
            if not self._deferred:
                self._deferred_since = time.monotonic()
            self._deferred[entry.etag] = (entry, origin)
        self.flush_due()

    def flush_entries(self) -> None:
        """Write deferred entries in one transaction. put_entry checked their blobs, and the run's
        shared lock (in_use) keeps anything that deletes blobs away until it ends."""
        with self.lock:
            if not self._deferred:
                return
            batch = list(self._deferred.values())
            self.write(lambda conn: self._insert_entries(conn, batch))
            self._deferred.clear()

    def flush_due(self) -> None:
        """flush_entries when enough entries are deferred or the oldest has waited its time (the
        scheduler calls this while tasks run too, so finished work is recorded within about a
        second). A write that fails keeps them in memory: flush_entries at the end of the run
        tries again and reports it."""
        if self._deferred and (len(self._deferred) >= _DEFER_MAX
                               or time.monotonic() - self._deferred_since > _DEFER_SECONDS):
            try:
                self.flush_entries()
            except (OSError, sqlite3.Error):
                pass

    def is_deferred(self, etag: str) -> bool:
        """Whether the entry for `etag` waits in memory for its batch write (put_entry(defer=True))."""
        return etag in self._deferred

    def drop_deferred(self) -> list[str]:
        """Forget deferred entries that could not be written; their ETags."""
        with self.lock:
            etags = list(self._deferred)
            self._deferred.clear()
            return etags

    # ------------------------------------------------------------------ who may delete
    @contextlib.contextmanager
    def in_use(self, on_wait=None):
        """Held (shared) by a run for its whole length: prune, clear and verify take the lock
        exclusively, so they never delete blobs a running process has written but not yet
        recorded in an entry. `on_wait` is called once if the run has to wait for one of them.

        A run that finds the lock free removes the temp files that killed runs left in tmp/."""
        try:
            fd = self._open_cache_lock()
        except OSError as exc:
            from .disk import describe, is_disk_problem

            if not self._degrade or not is_disk_problem(exc):
                raise
            self._give_up("open", describe(exc, self.cache_dir), exc)
            fd = None          # nothing of the cache is used in this run: no lock needed
        try:
            if fd is not None:
                stale = self._stale_temp_files(fd)
                self._take_lock(fd, fcntl.LOCK_SH, on_wait)
                for name in stale:
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.tmp_dir, name))
            yield
        finally:
            if fd is not None:
                os.close(fd)   # closing releases the lock

    def _stale_temp_files(self, fd: int) -> list[str]:
        """The temp files in tmp/ when no other process holds the cache lock (so none of them is
        being written: every writer holds it): what runs killed mid-write left behind. Takes the
        lock exclusively to find out, but only when tmp/ is not empty (nearly always it is, and
        listing an empty folder costs a few microseconds)."""
        try:
            with os.scandir(self.tmp_dir) as entries:
                if next(entries, None) is None:
                    return []
        except OSError:
            return []
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return []          # another process uses the cache: its temp files may be in flight
        try:
            return os.listdir(self.tmp_dir)
        except OSError:
            return []

    @contextlib.contextmanager
    def exclusive(self, on_wait=None):
        """Held by commands that delete blobs or entries; waits for running processes (calling
        `on_wait` once, when it has to)."""
        fd = self._open_cache_lock()
        try:
            self._take_lock(fd, fcntl.LOCK_EX, on_wait)
            yield
        finally:
            os.close(fd)   # closing releases the lock

    def _open_cache_lock(self) -> int:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        return os.open(self.cache_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)

    @staticmethod
    def _take_lock(fd: int, kind: int, on_wait=None) -> None:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, kind)

    @staticmethod
    def _insert_entries(conn, batch: list[tuple[CacheEntry, str]]) -> None:
        now = time.time()
        conn.executemany(
            "INSERT OR REPLACE INTO entries (etag, task_id, manifest, hit, size, created, last_used, origin) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(entry.etag, entry.task_id, entry.to_json(explain=False), _hit_row(entry), entry.total_size(),
              entry.created or now, now, origin) for entry, origin in batch])
        conn.executemany("INSERT OR REPLACE INTO explains (etag, explain) VALUES (?, ?)",
                         [(entry.etag, encode_explain(entry.explain)) for entry, _ in batch if entry.explain])

    def touch_entries(self, etags: list[str]) -> None:
        if etags:
            now = time.time()
            self.write(lambda conn: conn.executemany("UPDATE entries SET last_used = ? WHERE etag = ?",
                                                     [(now, e) for e in etags]))

    def delete_entry(self, etag: str) -> None:
        with self.lock:
            self._deferred.pop(etag, None)
            self._prefetched.pop(etag, None)
        self.write(lambda conn: conn.execute("DELETE FROM entries WHERE etag = ?", (etag,)))

    # ------------------------------------------------------------------ stat cache
    def load_stat_cache(self, under: str | None = None) -> dict[str, tuple[int, int, int, int, str]]:
        """path -> (size, mtime_ns, inode, ctime_ns, digest), as hashing.StatCache keeps them; with
        `under` (a workspace root), only the rows of paths below it: a cache shared by many clones
        or workspaces holds theirs too, and a run keys every file it stats as root + "/" + path.
        A primary-key range scan, so the rows of other workspaces cost nothing."""
        sql = "SELECT path, size, mtime_ns, inode, ctime_ns, digest FROM stat_cache"
        if under is None:
            return {row[0]: tuple(row[1:]) for row in self.read(sql)}
        low = under.rstrip("/") + "/"
        high = low[:-1] + "0"          # "0" is the character after "/": the end of the paths below it
        return {row[0]: tuple(row[1:]) for row in self.read(sql + " WHERE path >= ? AND path < ?", (low, high))}

    def prune_stat_cache(self) -> int:
        """Drop the rows that can never match again: of files that are gone, or whose stat moved
        since (a ctime never goes back). Only ever costs a re-hash if wrong; how many were dropped."""
        stale = []
        for path, (size, mtime_ns, inode, ctime_ns, _digest) in self.load_stat_cache().items():
            try:
                st = os.stat(path)    # a row of a symlink input holds the stat of its target
            except OSError:
                stale.append((path, size, mtime_ns, inode, ctime_ns))
                continue
            if (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns) != (size, mtime_ns, inode, ctime_ns):
                stale.append((path, size, mtime_ns, inode, ctime_ns))
        if not stale:
            return 0
        # by the whole row: a row a run saved meanwhile for the same path stays
        return self.write(lambda conn: conn.executemany(
            "DELETE FROM stat_cache WHERE path = ? AND size = ? AND mtime_ns = ? AND inode = ? AND ctime_ns = ?",
            stale).rowcount) or 0

    def save_stat_cache(self, rows: dict[str, tuple[int, int, int, int, str]]) -> None:
        # a path that is not valid UTF-8 (os.fsdecode's surrogates) cannot be an SQLite text key: it is
        # not remembered, so its file is hashed again by every run, which is slower, never wrong
        rows = {path: row for path, row in rows.items() if _utf8(path)}
        if rows:
            self.write(lambda conn: conn.executemany(
                "INSERT OR REPLACE INTO stat_cache (path, size, mtime_ns, inode, ctime_ns, digest) "
                "VALUES (?, ?, ?, ?, ?, ?)", [(path, *row) for path, row in rows.items()]))

    # ------------------------------------------------------------------ secret keys
    @property
    def keys_dir(self) -> Path:
        return self.cache_dir / "keys"

    def own_key(self) -> bytes:
        """This cache's own secret (32 random bytes in `keys/cache`, mode 0600), made by the first
        run that needs it. Concurrent first runs agree: the file appears whole or not at all (a
        hard link of a finished temp file, which fails when the name exists), and the loser reads
        the winner's."""
        key = self.read_key("cache")
        if key is not None:
            return key
        fresh = os.urandom(32)
        self._publish_key("cache", fresh, replace=False)
        deadline = time.monotonic() + 5
        while (key := self.read_key("cache")) is None and self._key_being_written("cache") \
                and time.monotonic() < deadline:
            time.sleep(0.01)        # a file system without hard links: the winner is still writing it
        if key is None:             # left empty by a process that died writing it, or not a key: start again
            self._publish_key("cache", fresh, replace=True)
            key = fresh
        return key

    def _key_being_written(self, name: str) -> bool:
        """Whether `keys/<name>` is a regular file shorter than a key: on a file system without
        hard links, a concurrent first run may still be writing it. Anything else in its place
        (a symlink, a fifo, a folder, a full-length file that is no key) will never become one."""
        try:
            st = os.lstat(self.keys_dir / name)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size < 65

    def read_key(self, name: str) -> bytes | None:
        """A key kept in `keys/<name>`, or None (missing or malformed). NxrunError when this user
        may not read it (a cache several users share needs NXRUN_ENV_KEY instead)."""
        path = self.keys_dir / name
        try:
            # never blocks: a fifo in its place would wait for a writer
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except PermissionError:
            raise NxrunError(f"cannot read {path} (permission denied): it is the secret env values are hashed "
                             "with, readable by the cache's owner only. Users who share a cache set "
                             "NXRUN_ENV_KEY to one secret instead.") from None
        except OSError:             # a symlink put in its place, say: not a key of ours
            return None
        with open(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            text = handle.read(200).strip()
        try:
            key = bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None
        return key if len(key) == 32 else None

    def write_key(self, name: str, key: bytes) -> None:
        """Keep `key` in `keys/<name>` (mode 0600), replacing what is there."""
        self._publish_key(name, key, replace=True)

    def _publish_key(self, name: str, key: bytes, replace: bool) -> None:
        folder = self.keys_dir
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        temp = folder / f".{name}.{os.getpid()}-{os.urandom(6).hex()}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            with open(fd, "wb") as handle:
                handle.write(key.hex().encode("ascii") + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            if replace:
                os.replace(temp, folder / name)
                return
            try:
                os.link(temp, folder / name)
            except FileExistsError:
                pass
            except OSError:          # no hard links here: create it exclusively, then write it
                try:
                    fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                except FileExistsError:
                    return
                with open(fd, "wb") as handle:
                    handle.write(key.hex().encode("ascii") + b"\n")
        finally:
            if temp.exists():
                temp.unlink()

    # ------------------------------------------------------------------ maintenance
    def iter_blobs(self):
        if not self.blob_dir.is_dir():
            return
        for prefix in sorted(os.listdir(self.blob_dir)):
            folder = self.blob_dir / prefix
            if folder.is_symlink() or not folder.is_dir():
                continue        # a link there leads out of the cache: verify and prune would remove what is there
            for name in sorted(os.listdir(folder)):
                yield prefix + name, folder / name

    def stats(self) -> dict:
        blob_count = 0
        blob_bytes = 0
        for _digest, path in self.iter_blobs():
            blob_count += 1
            blob_bytes += path.lstat().st_size      # a link or folder planted there: never followed
        (entries,), = self.read("SELECT count(*) FROM entries")
        origins = dict(self.read("SELECT origin, count(*) FROM entries GROUP BY origin"))
        return {"cache_dir": str(self.cache_dir), "entries": entries, "entries_by_origin": origins,
                "blobs": blob_count, "blob_bytes": blob_bytes}

    def referenced_blobs(self) -> set[str]:
        referenced: set[str] = set()
        for (manifest,) in self.read("SELECT manifest FROM entries"):
            try:
                referenced.update(CacheEntry.from_json(manifest).blob_digests())
            except (ValueError, TypeError, KeyError):
                continue
        return referenced

    def prune(self, max_size: int, keep_runs: int | None = None) -> dict:
        """Evict least-recently-used entries until referenced blobs fit in max_size bytes,
        then delete blobs no entry references. With keep_runs, drop the per-task history rows of
        all but the last keep_runs runs (each task's latest row, run totals and bench figures stay)."""
        rows = self.read("SELECT etag, manifest FROM entries ORDER BY last_used DESC")
        kept: set[str] = set()
        kept_bytes = 0
        evicted = []
        sizes = {digest: path.lstat().st_size for digest, path in self.iter_blobs()}
        for etag, manifest in rows:
            try:
                digests = CacheEntry.from_json(manifest).blob_digests()
            except (ValueError, TypeError, KeyError):
                evicted.append(etag)
                continue
            extra = sum(sizes.get(d, 0) for d in digests if d not in kept)
            if kept_bytes + extra > max_size:
                evicted.append(etag)
                continue
            kept.update(digests)
            kept_bytes += extra
        if evicted:
            self.write(lambda conn: conn.executemany("DELETE FROM entries WHERE etag = ?",
                                                     [(e,) for e in evicted]))
        history_removed = 0
        if keep_runs is not None:
            history_removed = self.write(lambda conn: conn.execute(
                "DELETE FROM run_tasks WHERE run_id < (SELECT coalesce(min(id), 0) FROM "
                "(SELECT id FROM runs ORDER BY id DESC LIMIT ?))", (keep_runs,)).rowcount)
        self.write(lambda conn: conn.execute(
            "DELETE FROM explains WHERE etag NOT IN (SELECT etag FROM entries) "
            "AND etag NOT IN (SELECT etag FROM run_tasks WHERE etag IS NOT NULL) "
            "AND etag NOT IN (SELECT etag FROM task_latest WHERE etag IS NOT NULL)"))
        removed_blobs, removed_bytes = self.collect_garbage()
        stat_rows_removed = self.prune_stat_cache()
        return {"entries_evicted": len(evicted), "blobs_removed": removed_blobs, "bytes_removed": removed_bytes,
                "bytes_kept": kept_bytes, "history_rows_removed": history_removed,
                "stat_rows_removed": stat_rows_removed}

    def collect_garbage(self) -> tuple[int, int]:
        referenced = self.referenced_blobs()
        removed = 0
        removed_bytes = 0
        for digest, path in list(self.iter_blobs()):
            if digest not in referenced:
                removed_bytes += path.lstat().st_size
                _remove_blob_path(path)     # a link or folder planted there goes too
                removed += 1
        # temp files of processes that died mid-write (older than an hour: never one in use)
        if self.tmp_dir.is_dir():
            cutoff = time.time() - 3600
            for name in os.listdir(self.tmp_dir):
                path = self.tmp_dir / name
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                except OSError:
                    pass
        return removed, removed_bytes

    def clear(self) -> None:
        import shutil

        self.write(lambda conn: (conn.execute("DELETE FROM entries"), conn.execute("DELETE FROM stat_cache")))
        self.verified.clear()
        self._prefetched.clear()
        self._blob_folders.clear()
        self._tmp_ready = False
        for folder in (self.blob_dir, self.tmp_dir):
            if folder.exists():
                for root, dirs, _files in os.walk(folder):
                    for d in dirs:
                        if not os.path.islink(os.path.join(root, d)):     # chmod would follow it out of the cache
                            os.chmod(os.path.join(root, d), 0o755)
                shutil.rmtree(folder)

    def verify(self, repair: bool = True) -> dict:
        """Check the index (`PRAGMA integrity_check`; a damaged one is rebuilt with what can be
        read), re-hash every blob, and report (and with repair, drop) corrupt blobs and the
        entries that need them or need blobs that are gone. `index_repairs` lists the rebuilds
        this process made, including one when the index could not even be opened."""
        from .index_repair import check

        index_problems = self._with_index(lambda conn: check(conn, thorough=True), [], writing=False)
        if index_problems and repair:
            try:
                with self.lock:
                    self._rebuild(index_problems[0])
            except (OSError, sqlite3.Error) as exc:
                from .disk import describe

                raise CacheUnavailable(f"cannot rebuild the damaged cache index {self.db_path}: "
                                       f"{describe(exc, self.cache_dir)}") from exc
        corrupt = []
        for digest, path in self.iter_blobs():
            if blob_digest(path) != digest:
                corrupt.append(digest)
                if repair:
                    _remove_blob_path(path)
        broken = []
        for etag, task_id, manifest in self.read("SELECT etag, task_id, manifest FROM entries"):
            try:
                digests = CacheEntry.from_json(manifest).blob_digests()
            except (ValueError, TypeError, KeyError):
                broken.append((etag, task_id, "unreadable manifest"))
                continue
            bad = [d for d in digests if d in corrupt or not self.has_blob(d)]
            if bad:
                broken.append((etag, task_id, f"{len(bad)} blob(s) corrupt or missing"))
        if repair and broken:
            self.write(lambda conn: conn.executemany("DELETE FROM entries WHERE etag = ?",
                                                     [(b[0],) for b in broken]))
        return {"corrupt_blobs": corrupt, "broken_entries": broken, "index_problems": index_problems,
                "index_repairs": list(self.repairs)}


def _is_blob_file(path: str) -> bool:
    """Whether `path` is a regular file itself (not a link to one, not a fifo: neither can be read as a blob)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _remove_blob_path(path: str | os.PathLike) -> None:
    """Remove whatever is at a blob's path: the blob, or a fifo, link or folder put in its place."""
    try:
        os.unlink(path)
    except (FileNotFoundError, NotADirectoryError):     # NotADirectoryError: its folder is not one
        pass
    except IsADirectoryError:
        shutil.rmtree(path, ignore_errors=True)


def open_blob(path: str | os.PathLike, digest: str) -> int:
    """A descriptor to read the blob `digest` at `path`, or CorruptBlob. Opened without blocking and
    without following a link: a fifo, socket, device or symlink put at a blob's path is a corrupt blob,
    not a read that waits for a writer forever or reads some other file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CorruptBlob(digest) from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.ENOTDIR):
            raise CorruptBlob(digest) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CorruptBlob(digest)
    return fd


def blob_digest(path: str | os.PathLike) -> str | None:
    """The xxh3-128 of the blob file at `path`; None when it is not a readable regular file."""
    try:
        fd = open_blob(path, "")
    except (CorruptBlob, PermissionError):
        return None
    with open(fd, "rb", buffering=0) as handle:
        return digest_handle(handle)


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is open, keeping the error that got us here (a failed COMMIT, a full disk, may
    have ended the transaction already)."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _hit_row(entry: CacheEntry) -> str:
    """The compact JSON that get_hit reads back (OutputRecord fields in declaration order)."""
    files = [[o.path, o.kind, o.digest, o.size, o.mode, o.target] for o in entry.outputs]
    return json.dumps([entry.outputs_digest, entry.log_digest, entry.duration, entry.declared_outputs, files],
                      separators=(",", ":"))


def _sqlite_utils():
    """sqlite-utils, imported without numpy: it imports numpy, when installed, only to map numpy
    types on insert, which nxrun never does, and that import is about half the cost of making a
    new cache (0.1 s of a cold run)."""
    import sys

    if "sqlite_utils" in sys.modules or "numpy" in sys.modules:
        import sqlite_utils

        return sqlite_utils
    sys.modules["numpy"] = None  # type: ignore[assignment]  # `import numpy` raises ImportError
    try:
        import sqlite_utils
    finally:
        del sys.modules["numpy"]
    return sqlite_utils


_TABLES = ("entries", "explains", "stat_cache", "runs", "run_tasks", "task_latest", "bench_results")


def _create_table(db, name: str) -> None:
    if name == "entries":
        # `hit` holds what a cache hit reads, compactly (see get_hit); `manifest` the whole entry
        db["entries"].create({"etag": str, "task_id": str, "manifest": str, "hit": str, "size": int,
                              "created": float, "last_used": float, "origin": str}, pk="etag")
        db["entries"].create_index(["task_id"])
        db["entries"].create_index(["last_used"])
    elif name == "explains":
        # explain manifests by ETag, apart from the entries: a hit reads a small manifest however
        # many input files its task has, and a run's history rows point here instead of copying
        db["explains"].create({"etag": str, "explain": str}, pk="etag")
    elif name == "stat_cache":
        db["stat_cache"].create({"path": str, "size": int, "mtime_ns": int, "inode": int, "ctime_ns": int,
                                 "digest": str}, pk="path")
    elif name == "runs":
        db["runs"].create({"id": int, "started": float, "finished": float, "argv": str, "cwd": str,
                           "status": str, "tasks": int, "local_hits": int, "remote_hits": int,
                           "misses": int, "failed": int, "skipped": int, "time_saved": float,
                           "remote_skipped": int}, pk="id")
    elif name == "run_tasks":
        db["run_tasks"].create({"run_id": int, "task_id": str, "etag": str, "status": str, "origin": str,
                                "duration": float, "started": float, "saved": float,
                                "outputs_digest": str, "error": str, "gpus": str})
        # run_tasks only grows at its end (indexed by run_id alone): an index by task would take a
        # write to nearly every one of its pages per run, a cost that grew with the history
        db["run_tasks"].create_index(["run_id"])
    elif name == "task_latest":
        # each task's latest recorded run with an ETag, updated in place: what `why` and `show` read
        db["task_latest"].create({"task_id": str, "run_id": int, "etag": str, "status": str, "origin": str,
                                  "duration": float, "started": float}, pk="task_id")
    elif name == "bench_results":
        # benchmark figures read from bench tasks' JSON outputs (nxrun/run/bench_results.py), one row per
        # (series, case, metric) of a distinct outputs digest: the trends `nxrun report` plots
        db["bench_results"].create({"run_id": int, "task_id": str, "etag": str, "outputs_digest": str,
                                    "time": float, "device": str, "backend": str, "file": str,
                                    "series": str, "case": str, "metric": str, "value": float,
                                    "baseline": int})
        db["bench_results"].create_index(["task_id", "time"])
        db["bench_results"].create_index(["task_id", "outputs_digest"])


def _migrate_from_4(db, conn: sqlite3.Connection) -> None:
    """Layout 4 (nxrun 0.1.0 as first released) kept each explain inside its entry's manifest and
    in every history row. Keep entries, history and bench figures; move the explains out."""
    db["entries"].add_column("hit", str)
    _create_table(db, "explains")
    _create_table(db, "task_latest")
    broken = []
    for etag, manifest in conn.execute("SELECT etag, manifest FROM entries").fetchall():
        try:
            entry = CacheEntry.from_json(manifest)
        except (ValueError, TypeError, KeyError):
            broken.append((etag,))
            continue
        if entry.explain:
            conn.execute("INSERT OR REPLACE INTO explains (etag, explain) VALUES (?, ?)",
                         (etag, encode_explain(entry.explain)))
        conn.execute("UPDATE entries SET manifest = ?, hit = ? WHERE etag = ?",
                     (entry.to_json(explain=False), _hit_row(entry), etag))
    conn.executemany("DELETE FROM entries WHERE etag = ?", broken)
    conn.execute("INSERT OR IGNORE INTO explains (etag, explain) SELECT etag, explain FROM run_tasks "
                 "WHERE etag IS NOT NULL AND explain IS NOT NULL AND explain != '{}'")
    conn.execute("INSERT INTO task_latest (task_id, run_id, etag, status, origin, duration, started) "
                 "SELECT task_id, run_id, etag, status, origin, duration, started FROM (SELECT *, ROW_NUMBER() "
                 "OVER (PARTITION BY task_id ORDER BY run_id DESC, rowid DESC) AS position FROM run_tasks "
                 "WHERE etag IS NOT NULL) WHERE position = 1")
    conn.execute('DROP INDEX IF EXISTS "idx_run_tasks_task_id_run_id"')
    try:
        conn.execute('ALTER TABLE run_tasks DROP COLUMN "explain"')
    except sqlite3.OperationalError:
        pass   # SQLite before 3.35: the column stays, unused (rows are written with named columns)


def _migrate_from_8(conn: sqlite3.Connection) -> None:
    """Layout 8 did not record which GPUs a task held; older rows have none."""
    if "gpus" not in {row[1] for row in conn.execute('PRAGMA table_info("run_tasks")')}:
        conn.execute('ALTER TABLE run_tasks ADD COLUMN "gpus" TEXT')


def _migrate_from_7(db, conn: sqlite3.Connection) -> None:
    """Layout 7 keyed the stat cache without the ctime, hashed env values unkeyed and kept args
    after `--` in the history in clear. The stat cache is only a cache: start it again. History
    and bench figures stay, but the args are dropped from each run's command line, and every trace
    of an ETag with an unkeyed env, set-env or args digest goes: its explain manifest, its entry
    (no ETag computed now can match it) and the ETag in history rows. With the workspace's sources
    at hand, a value of a few digits could be found from such an ETag alone."""
    from ..run.history import redact_argv

    db["stat_cache"].drop()
    _create_table(db, "stat_cache")
    argvs = []
    for run_id, argv_text in conn.execute("SELECT id, argv FROM runs WHERE argv LIKE '%\"--\"%'").fetchall():
        try:
            argvs.append((json.dumps(redact_argv(json.loads(argv_text))), run_id))
        except (ValueError, TypeError):
            argvs.append(("[]", run_id))
    conn.executemany("UPDATE runs SET argv = ? WHERE id = ?", argvs)
    unkeyed = []
    for etag, text in conn.execute("SELECT etag, explain FROM explains WHERE explain LIKE '%\"env:%' OR "
                                   "explain LIKE '%\"env-set:%' OR explain LIKE '%\"args\"%'").fetchall():
        try:
            names = json.loads(text)
        except ValueError:
            names = {"args": ""}
        if not isinstance(names, dict) or any(n == "args" or n.startswith(("env:", "env-set:")) for n in names):
            unkeyed.append((etag,))
    if not unkeyed:
        return
    conn.execute("CREATE TEMP TABLE unkeyed_etags (etag TEXT PRIMARY KEY)")
    conn.executemany("INSERT OR IGNORE INTO unkeyed_etags (etag) VALUES (?)", unkeyed)
    for sql in ("DELETE FROM explains WHERE etag IN (SELECT etag FROM unkeyed_etags)",
                "DELETE FROM entries WHERE etag IN (SELECT etag FROM unkeyed_etags)",
                "DELETE FROM task_latest WHERE etag IN (SELECT etag FROM unkeyed_etags)",
                "UPDATE run_tasks SET etag = NULL WHERE etag IN (SELECT etag FROM unkeyed_etags)",
                "UPDATE bench_results SET etag = NULL WHERE etag IN (SELECT etag FROM unkeyed_etags)"):
        conn.execute(sql)
    conn.execute("DROP TABLE unkeyed_etags")


def _utf8(text: str) -> bool:
    """Whether `text` encodes as UTF-8 (a name decoded with surrogateescape from other bytes does not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
