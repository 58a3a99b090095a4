"""The stat of each input file as it was when a task was hashed, and the check after its command
exits that none of them changed: an input edited while its task runs must not give an entry keyed
on the old content and holding outputs made from the new.

The comparison is by stat (size, mtime_ns, ctime_ns, inode), as git and Bazel compare: a write
that puts the old size and mtime back still moves ctime, and an edit that is later undone still
counts, since the command may have read the edited file in between.
"""

from __future__ import annotations

import os
import stat

# (absolute path, whether the hasher took the stat of a link itself, the stat's key). A key, not
# the stat: tasks waiting to run hold one per input, and a stat object is several times larger.
InputStats = list[tuple[str, bool, int]]


def stat_key(st: os.stat_result) -> int:
    """What a change of the file moves: size, mtime, ctime, inode, device and type."""
    return hash((st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, stat.S_IFMT(st.st_mode)))


def compact(seen: list[tuple[str, os.stat_result]]) -> InputStats:
    """InputStats of what RecordingStatCache.take() returned."""
    return [(path, stat.S_ISLNK(st.st_mode), stat_key(st)) for path, st in seen]


def first_changed(inputs: InputStats) -> tuple[str, str] | None:
    """(path, what happened) of the first input whose stat differs from when it was hashed, or
    None when none does. Files that were not inputs then (created since) do not count."""
    for path, is_link, key in inputs:
        try:
            # the same kind of stat as the hasher took: of the link itself when it took one
            after = os.lstat(path) if is_link else os.stat(path)
        except FileNotFoundError:
            return path, "was deleted"
        except OSError as exc:
            return path, f"can no longer be read ({exc.strerror})"
        if stat_key(after) != key:
            return path, "changed"
    return None


class RecordingStatCache:
    """The stat cache as the task hasher sees it: it digests files exactly as the cache it wraps
    does, and remembers the stat of every file digested since the last `take()`. Only the
    scheduling thread hashes tasks, so one list serves one task at a time."""

    def __init__(self, stat_cache):
        self._inner = stat_cache
        self._seen: list[tuple[str, os.stat_result]] = []

    def digest(self, abs_path: str, st: os.stat_result | None = None) -> str:
        if st is None:
            st = os.stat(abs_path)
        self._seen.append((abs_path, st))
        return self._inner.digest(abs_path, st)

    def note(self, abs_path: str, st: os.stat_result) -> None:
        """Remember the stat of a file digested without asking the cache (the run's InputMemo
        knew its digest), as digest() would have."""
        self._seen.append((abs_path, st))

    def take(self) -> list[tuple[str, os.stat_result]]:
        """(path, stat) of the files digested since the last call (and forget them); compact()
        turns them into InputStats for a task that is going to run."""
        seen, self._seen = self._seen, []
        return seen

    def __getattr__(self, name: str):
        return getattr(self._inner, name)
