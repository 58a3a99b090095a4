"""The cache as the scheduler sees it: look an ETag up, restore an entry's outputs, store an
entry. `TieredCache` is the local store first, then the remote tier (tiered.RemoteCache, over any
remote backend): a remote hit is verified, its blobs and entry written through to the local store
(indexed), and restored from there; an entry stored locally is uploaded in the background.

Everything a restore writes goes through restore.py, which refuses what an entry may not do.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from . import CacheEntry, UnsafeEntry
from .local import TOUCH_AFTER, LocalStore
from .restore import restore_entry
from .safety import check_entry


class Cache:
    """What the scheduler calls on a cache (implementations need not inherit from this class)."""

    def lookup(self, etag: str, task, *, local: bool = True, remote: bool = True,
               dry_run: bool = False) -> tuple[CacheEntry | None, str]:
        """(entry, where it was found: "local" or "remote"), or (None, "")."""
        raise NotImplementedError

    def restore(self, task, entry: CacheEntry, origin: str) -> int:
        """Write the entry's outputs into the workspace; how many files it wrote. Raises
        CorruptBlob, UnsafeEntry, or OSError for the workspace's disk."""
        raise NotImplementedError

    def store(self, entry: CacheEntry) -> None:
        """Keep the entry of a task that ran (its blobs are in the local store already)."""
        raise NotImplementedError


class TieredCache(Cache):
    def __init__(self, local: LocalStore, remote, root: Path, restore_mode: str, stat_cache):
        """`remote`: a tiered.RemoteCache, or None; `restore_mode`: [workspace] restore."""
        self.local = local
        self.remote = remote
        self.root = root
        self.restore_mode = restore_mode
        self.stat_cache = stat_cache
        self.touched: list[str] = []   # ETags of local entries to mark used at the end of the run
        self._touch_before = time.time() - TOUCH_AFTER

    def lookup(self, etag: str, task, *, local: bool = True, remote: bool = True,
               dry_run: bool = False) -> tuple[CacheEntry | None, str]:
        entry = self.local.get_hit(etag) if local else None
        if entry is not None:
            if entry.declared_outputs == task.outputs:
                if entry.last_used < self._touch_before:
                    self.touched.append(etag)
                return entry, "local"
        if remote and self.remote is not None and task.cache != "never":
            entry = self.remote.fetch(etag, self.local, dry_run=dry_run)
            if entry is not None:
                return entry, "remote"
        return None, ""

    def restore(self, task, entry: CacheEntry, origin: str) -> int:
        return restore_entry(entry, self.local, self.root, task.outputs, self.stat_cache, self.restore_mode,
                             origin=origin)

    def read_log(self, entry: CacheEntry) -> bytes:
        """The entry's terminal log (CorruptBlob when its blob is damaged or gone)."""
        return self.local.read_blob(entry.log_digest) if entry.log_digest else b""

    def forget(self, etag: str) -> None:
        """Drop a local entry that could not be restored (it will be stored again)."""
        self.local.delete_entry(etag)

    def store(self, entry: CacheEntry) -> None:
        """Into the local index (in the run's next batch write), then uploaded in the background.
        Raises OSError or sqlite3.Error when the local store cannot take it."""
        self.local.put_entry(entry, defer=True)
        if self.remote is not None:
            self.remote.upload(entry, self.local)

    def adopt(self, task, etag: str, entry: CacheEntry | None) -> tuple[CacheEntry | None, str | None]:
        """The entry of a task that ran elsewhere (an executor that stores what it made in the
        remote cache): (the entry, now indexed locally with its blobs, None), or (None, why not).
        It is untrusted as any remote entry is."""
        if entry is None:
            return None, "the executor returned no cache entry"
        if entry.etag != etag or entry.declared_outputs != task.outputs:
            return None, f"the executor returned a cache entry of another task or ETag ({str(entry.etag)[:12]})"
        try:
            check_entry(entry, task.outputs)
        except UnsafeEntry as exc:
            return None, f"rejected unsafe cache entry: {exc}"
        if not all(self.local.has_blob(digest) for digest in entry.blob_digests()):
            if self.remote is None:
                return None, "its outputs are in no cache this run can read (no remote cache is configured)"
            # the blobs of this very entry: the one stored under the ETag may be another run's
            # (write-once, a second driver or --skip-cache) or absent (cache = "never")
            problem = self.remote.fetch_blobs(entry, self.local)
            if problem is not None:
                return None, problem
        try:
            self.local.put_entry(entry, origin="remote")
        except (OSError, sqlite3.Error) as exc:
            return None, f"could not index its cache entry ({exc})"
        return entry, None

    def summary(self) -> dict:
        """The remote tier's counts (hits, uploads, skipped...); empty without one."""
        return self.remote.summary() if self.remote is not None else {}

    def mark_used(self) -> None:
        """Mark the local entries this run used (for least-recently-used pruning)."""
        if self.touched:
            self.local.touch_entries(self.touched)
            self.touched = []
