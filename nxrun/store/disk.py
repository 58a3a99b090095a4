"""Disk problems: which errors mean the local disk cannot take more (full, over quota, read-only,
failing), as opposed to a damaged file or a remote outage, and a one-line description that names
the file system and how much room it has left.
"""

from __future__ import annotations

import errno
import os
import sqlite3

# OSError numbers of a disk that cannot be written: full, over quota, past the file-size limit,
# read-only, failing, or not ours to write
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO, errno.EACCES,
                         errno.EPERM})
# primary SQLite result codes of the same: SQLITE_PERM, SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL,
# SQLITE_CANTOPEN
_SQLITE_DISK_CODES = frozenset({3, 8, 10, 13, 14})
_SQLITE_DISK_TEXT = ("disk i/o error", "database or disk is full", "readonly database", "unable to open",
                     "access permission denied")


def is_disk_problem(exc: BaseException) -> bool:
    """Does `exc` say the local disk could not be read or written (rather than a bug, a damaged
    file or a lost connection)?"""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in _SQLITE_DISK_CODES
        text = str(exc).lower()
        return any(part in text for part in _SQLITE_DISK_TEXT)
    return isinstance(exc, OSError) and exc.errno in DISK_ERRNOS


def mount_point(path: str | os.PathLike) -> str:
    """The mount point of the file system holding `path` (or its nearest existing parent)."""
    current = os.path.abspath(path)
    while not os.path.exists(current) and os.path.dirname(current) != current:
        current = os.path.dirname(current)
    while not os.path.ismount(current):
        current = os.path.dirname(current)
    return current


def _size(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count} B"


def _file_size_limit() -> int | None:
    """RLIMIT_FSIZE when one is set: writes past it fail like a full disk (EFBIG)."""
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def describe(exc: BaseException, path: str | os.PathLike) -> str:
    """`exc` in a few words, with the file system holding `path` and the room left on it, e.g.
    "no space left on device (the file system at /mnt/cache has 0 B free)"."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror[0].lower() + exc.strerror[1:]
    else:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    notes = []
    limit = _file_size_limit()
    if limit is not None:
        notes.append(f"files this process writes may not pass {_size(limit)}: ulimit -f")
    try:
        mount = mount_point(path)
        info = os.statvfs(mount)
    except OSError:
        mount = info = None
    if info is not None:
        free = info.f_bavail * info.f_frsize
        if info.f_files and info.f_favail == 0:
            notes.append(f"the file system at {mount} has no free inodes")
        else:
            if free < (1 << 20) and "space" not in text and "full" not in text:
                text += ": no space left"
            notes.append(f"the file system at {mount} has {_size(free)} free")
    return f"{text} ({'; '.join(notes)})" if notes else text
