"""Read a finished task's declared outputs off disk: records for a cache entry (storing the
blobs) or just the outputs digest that downstream ETags use."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..hashing import StatCache, outputs_digest
from . import OutputRecord
from .local import LocalStore


def _walk_output(root_text: str, declared: str):
    """(relative path, lstat) for everything under one declared output, files before folders."""
    top = os.path.join(root_text, declared)
    try:
        st = os.lstat(top)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        yield declared, st
        return
    found_any = False
    for folder, dirs, files in os.walk(top):
        dirs.sort()
        rel_folder = os.path.relpath(folder, root_text).replace(os.sep, "/")
        for name in sorted(files):
            found_any = True
            yield f"{rel_folder}/{name}", os.lstat(os.path.join(folder, name))
        for name in list(dirs):
            full = os.path.join(folder, name)
            if os.path.islink(full):
                found_any = True
                dirs.remove(name)
                yield f"{rel_folder}/{name}", os.lstat(full)
            elif not os.listdir(full):
                found_any = True
                yield f"{rel_folder}/{name}", os.lstat(full)
    if not found_any:
        yield declared, st


def scan_outputs(root: Path, declared_outputs: list[str], stat_cache: StatCache,
                 store: LocalStore | None = None) -> tuple[list[OutputRecord], list[str]]:
    """Records for every declared output on disk (blobs stored when `store` is given).

    Returns (records, declared outputs that do not exist)."""
    root_text = str(root)
    records: list[OutputRecord] = []
    missing: list[str] = []
    for declared in declared_outputs:
        before = len(records)
        for rel, st in _walk_output(root_text, declared):
            full = os.path.join(root_text, rel)
            if stat.S_ISLNK(st.st_mode):
                records.append(OutputRecord(rel, "symlink", target=os.readlink(full), mode=0o777))
            elif stat.S_ISDIR(st.st_mode):
                records.append(OutputRecord(rel, "dir", mode=st.st_mode & 0o777))
            elif stat.S_ISREG(st.st_mode):
                known = stat_cache.lookup(full, st)
                if store is not None:
                    digest, size = store.put_file(full, known_digest=known)
                    stat_cache.remember(full, st, digest)
                else:
                    digest = known or stat_cache.digest(full)
                    size = st.st_size
                records.append(OutputRecord(rel, "file", digest=digest, size=size, mode=st.st_mode & 0o777))
        if len(records) == before:
            missing.append(declared)
    return records, missing


class LogCapture:
    """A running task's terminal output: kept in memory (most logs are short, and a file per task
    is a file created and deleted per task), written to a temp file in the cache past `spill_at`."""

    def __init__(self, store: LocalStore, spill_at: int = 8 << 20):
        self.store = store
        self.spill_at = spill_at
        self.parts: list[bytes] = []
        self.size = 0
        self.path: Path | None = None
        self._file = None
        self._stay_in_memory = False
        self._error: OSError | None = None

    def write(self, data: bytes) -> None:
        """Never raises: a task's output keeps streaming even when its log cannot be kept."""
        self.size += len(data)
        if self._error is not None:
            return
        if self._file is not None:
            try:
                self._file.write(data)
            except OSError as exc:   # the disk filled up: the log (and so the entry) is lost
                self._error = exc
                try:
                    self.store.disk_problem(exc)   # in a run: caching goes off, with one warning
                except Exception:  # noqa: BLE001 - never stop the task's output
                    pass
            return
        self.parts.append(data)
        if self.size > self.spill_at and not self._stay_in_memory:
            try:
                self.path, self._file = self.store.open_temp()
                self._file.write(b"".join(self.parts))
            except OSError:   # a full disk, say: keep the log in memory rather than fail the task
                self.discard()
                self.path, self._file = None, None
                self._stay_in_memory = True
                return
            self.parts = []

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def store_blob(self) -> str:
        """Put the log in the blob store; its digest. OSError when it could not be kept."""
        self.close()
        if self._error is not None:
            raise self._error
        if self.path is not None:
            return self.store.put_file(self.path)[0]
        return self.store.put_bytes(b"".join(self.parts))[0]

    def discard(self) -> None:
        self.close()
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def digest_of_records(records: list[OutputRecord]) -> str:
    return outputs_digest((r.path, r.digest or "", r.executable if r.kind == "file" else False, r.target)
                          for r in records)
