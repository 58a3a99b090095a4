"""Checks an entry must pass before any of its files is written: every path stays inside the
task's declared outputs, no symlink leads out of the workspace, no setuid/setgid bits.

Entries from a remote are untrusted; local ones get the same checks because they are cheap.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from pathlib import Path

from . import CacheEntry, UnsafeEntry

_DIGEST = re.compile("[0-9a-f]{32}")


def _inside(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r + "/") for r in roots)


def check_entry(entry: CacheEntry, workspace_root: Path, declared_outputs: list[str],
                check_symlinked_parents: bool = True) -> None:
    """Raise UnsafeEntry naming the first offending record.

    `check_symlinked_parents` also refuses paths whose existing parent folder is a symlink out of
    the workspace: always for remote entries; local restores skip it (a user may link an output
    folder to another disk on purpose, and the check costs a realpath per file)."""
    root_real = os.path.realpath(workspace_root) if check_symlinked_parents else ""
    for record in entry.outputs:
        path = record.path
        if not path or path.startswith("/") or "\\" in path or "\0" in path:
            raise UnsafeEntry(f"{entry.task_id}: entry path {path!r} is absolute or malformed")
        parts = path.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise UnsafeEntry(f"{entry.task_id}: entry path {path!r} contains '..', '.' or an empty part")
        if not _inside(path, declared_outputs):
            raise UnsafeEntry(f"{entry.task_id}: entry path {path!r} is not under the task's declared outputs "
                              f"{declared_outputs}")
        if record.kind not in ("file", "symlink", "dir"):
            raise UnsafeEntry(f"{entry.task_id}: entry path {path!r} has unknown kind {record.kind!r}")
        if record.mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX) or record.mode & ~0o7777:
            raise UnsafeEntry(f"{entry.task_id}: entry path {path!r} has mode {oct(record.mode)} "
                              "(setuid/setgid/sticky bits are never restored)")
        if record.kind == "file" and not (isinstance(record.digest, str) and _DIGEST.fullmatch(record.digest)):
            raise UnsafeEntry(f"{entry.task_id}: entry path {path!r} has a malformed blob digest")
        if record.kind == "symlink":
            target = record.target or ""
            if not target or target.startswith("/") or "\0" in target:
                raise UnsafeEntry(f"{entry.task_id}: symlink {path!r} -> {target!r} is absolute or empty")
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
            if resolved == ".." or resolved.startswith("../"):
                raise UnsafeEntry(f"{entry.task_id}: symlink {path!r} -> {target!r} leads out of the workspace")
        if not check_symlinked_parents:
            continue
        # an existing folder on the way (in the workspace) that is a symlink out of it
        parent = os.path.dirname(os.path.join(root_real, path))
        while parent and not os.path.lexists(parent):
            parent = os.path.dirname(parent)
        parent_real = os.path.realpath(parent)
        if parent_real != root_real and not parent_real.startswith(root_real + os.sep):
            raise UnsafeEntry(f"{entry.task_id}: entry path {path!r} passes through a symlink that leads out "
                              "of the workspace")
