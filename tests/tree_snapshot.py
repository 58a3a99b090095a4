"""What a folder tree holds, for tests that assert an operation left everything outside some paths
unchanged: kind, mode and contents (or link target) of every entry, never following links."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def snapshot(top: Path, skip: list[Path], identity: bool = False) -> dict[str, tuple]:
    """Every entry under `top` but the paths in `skip` (and what lies below them). With `identity`,
    inode and link count too, so a file replaced or hardlinked by identical bytes also shows."""
    found = {}
    for current, dirs, files in os.walk(top):
        here = Path(current)
        dirs[:] = [d for d in dirs if here / d not in skip]
        for name in dirs + files:
            path = here / name
            if path in skip:
                continue
            st = os.lstat(path)
            rel = path.relative_to(top).as_posix()
            ids = (st.st_ino,) if identity else ()
            if os.path.islink(path):
                found[rel] = ("link", os.readlink(path), *ids)
            elif os.path.isdir(path):
                found[rel] = ("dir", st.st_mode, *ids)
            else:
                ids = (st.st_ino, st.st_nlink) if identity else ()
                found[rel] = ("file", st.st_mode, *ids, hashlib.sha256(path.read_bytes()).hexdigest())
    return found
