"""Put a cache entry's outputs back into the workspace.

Files come from verified blobs: reflinked or copied (or hardlinked when the workspace asks for
read-only linked outputs), each written beside its destination and renamed over it, so a reader
never sees a half-written file. A file already identical is left alone; files in a declared
output folder that the entry does not list are removed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

import xxhash

from ..hashing import StatCache, digest_file, hash_rest
from . import CacheEntry, CorruptBlob, OutputRecord
from .local import LocalStore, write_all
from .safety import check_entry

_FICLONE = 0x40049409


def _remove(path: str) -> None:
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        import shutil

        shutil.rmtree(path)


_reflink_works: bool | None = None   # learnt from the first attempt, so copies stop paying for it
_SMALL = 8 << 20


def _open_blob(blob: Path | str, digest: str):
    try:
        return open(blob, "rb", buffering=0)
    except FileNotFoundError:
        raise CorruptBlob(digest) from None


def _copy_verified(blob: Path, temp: str, digest: str, mode: int) -> os.stat_result:
    """Copy a blob to `temp` (created with `mode`), hashing what is read; raise CorruptBlob on a
    mismatch. Small blobs (nearly all outputs) take one read and one write. Returns the new
    file's stat (a rename keeps what the stat cache keys on)."""
    global _reflink_works
    hasher = xxhash.xxh3_128()
    with _open_blob(blob, digest) as src:
        size = os.fstat(src.fileno()).st_size
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "wb", buffering=0) as dst:
            cloned = False
            if _reflink_works is not False and size > _SMALL:
                try:
                    fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
                    cloned = _reflink_works = True
                except OSError:
                    _reflink_works = False
            if size <= _SMALL:
                data = src.read()
                hasher.update(data)
                write_all(dst, memoryview(data))
            else:
                hash_rest(src, hasher, None if cloned else lambda chunk: write_all(dst, chunk))
            os.fchmod(dst.fileno(), mode)
            written = os.fstat(dst.fileno())
    if hasher.hexdigest() != digest:
        os.unlink(temp)
        raise CorruptBlob(digest)
    return written


def _verify_blob(blob: Path, digest: str) -> None:
    try:
        actual = digest_file(blob)
    except FileNotFoundError:
        raise CorruptBlob(digest) from None
    if actual != digest:
        raise CorruptBlob(digest)


def restore_entry(entry: CacheEntry, store: LocalStore, root: Path, declared_outputs: list[str],
                  stat_cache: StatCache, mode: str = "auto") -> int:
    """Write the entry's outputs under `root`; returns how many files were written.

    Raises UnsafeEntry before touching anything, or CorruptBlob (the blob is discarded and the
    caller treats the entry as a miss)."""
    check_entry(entry, root, declared_outputs, check_symlinked_parents=False)
    root_text = str(root)
    listed = {record.path for record in entry.outputs}
    listed_dirs = {os.path.dirname(p) for p in listed}
    known: dict[str, os.stat_result | None] = {}   # lstat of declared outputs, taken once
    # stale files in declared output folders
    for declared in declared_outputs:
        base = os.path.join(root_text, declared)
        try:
            base_st = os.lstat(base)
        except FileNotFoundError:
            known[declared] = None
            continue
        base_mode = base_st.st_mode
        known[declared] = base_st
        if stat.S_ISDIR(base_mode):
            for folder, dirs, files in os.walk(base, topdown=False):
                rel_folder = os.path.relpath(folder, root_text).replace(os.sep, "/")
                for name in files:
                    rel = f"{rel_folder}/{name}"
                    if rel not in listed:
                        os.unlink(os.path.join(folder, name))
                for name in dirs:
                    rel = f"{rel_folder}/{name}"
                    full = os.path.join(folder, name)
                    if os.path.islink(full) and rel not in listed:
                        os.unlink(full)
                    elif rel not in listed and not any(p.startswith(rel + "/") for p in listed_dirs | listed):
                        import shutil

                        shutil.rmtree(full, ignore_errors=True)
        elif declared not in listed and not any(p.startswith(declared + "/") for p in listed):
            _remove(base)
            known[declared] = None
    written = 0
    for record in entry.outputs:
        written += _restore_record(record, store, root_text, stat_cache, mode, known.get(record.path, _UNKNOWN))
    return written


_UNKNOWN = object()


def _restore_record(record: OutputRecord, store: LocalStore, root_text: str, stat_cache: StatCache,
                    mode: str, st=_UNKNOWN) -> int:
    """Write one record; `st` is the destination's lstat when the caller just took it."""
    destination = os.path.join(root_text, record.path)
    if record.kind == "dir":
        if os.path.lexists(destination) and not os.path.isdir(destination):
            _remove(destination)
        os.makedirs(destination, exist_ok=True)
        return 0
    if record.kind == "symlink":
        if os.path.islink(destination) and os.readlink(destination) == record.target:
            return 0
        if os.path.lexists(destination):
            _remove(destination)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        os.symlink(record.target, destination)
        return 1
    # a regular file
    if st is _UNKNOWN:
        try:
            st = os.lstat(destination)
        except FileNotFoundError:
            st = None
    if st is not None and stat.S_ISREG(st.st_mode):
        if (st.st_mode & 0o777) == (record.mode & 0o777) and st.st_size == record.size:
            # unchanged since we last saw it (the stat cache, no read), or freshly written and
            # identical when hashed: reading is cheaper than rewriting, and keeps the file's inode
            known = stat_cache.lookup(destination, st)
            if (known or stat_cache.digest(destination)) == record.digest:
                return 0
    elif st is not None:
        _remove(destination)
    parent = os.path.dirname(destination)
    if st is None and not os.path.isdir(parent):
        os.makedirs(parent, exist_ok=True)
    blob = store.blob_path(record.digest)
    temp = os.path.join(parent, f".nxrun-{os.urandom(12).hex()}.tmp")
    written = None
    import shutil  # here, not at the top: a run with nothing to restore never needs it

    try:
        if mode == "hardlink":
            try:
                _verify_blob(blob, record.digest)
            except CorruptBlob:
                store.discard_blob(record.digest)
                raise
            try:
                os.link(blob, temp)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
                shutil.copyfile(blob, temp)
                os.chmod(temp, record.mode & 0o555)
        else:
            if record.digest in store.verified and record.size > _SMALL:
                # hashed moments ago by this process: a kernel-side copy, no second hash
                shutil.copyfile(blob, temp)
                os.chmod(temp, record.mode & 0o777)
            else:
                try:
                    written = _copy_verified(blob, temp, record.digest, record.mode & 0o777)
                except CorruptBlob:
                    store.discard_blob(record.digest)
                    raise
        os.replace(temp, destination)
        temp = None
    finally:
        if temp is not None:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
    stat_cache.remember(destination, written or os.stat(destination), record.digest)
    return 1
