"""File digests, input resolution and the ETag.

Everything that decides whether a task's result can be reused is computed here, in one canonical
encoding: sorted components, each a (name, digest) pair, length-prefixed, with workspace-relative
paths and never an mtime or an absolute path. File contents are hashed with xxh3-128; a stat cache
keyed by (path, size, mtime_ns, inode) means an unchanged file is never read twice.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import xxhash

FORMAT_VERSION = "nxrun-etag-1"
_READ_CHUNK = 8 << 20
_SMALL_FILE = 1 << 20
# A file modified this recently may change again within the file system's timestamp granularity
# without its stat changing ("racy" entries, as git calls them): hash it, but do not remember it.
_RACY_WINDOW_NS = 50_000_000


def digest_bytes(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def digest_text(text: str) -> str:
    return xxhash.xxh3_128_hexdigest(text.encode("utf-8"))


def read_head(handle) -> tuple[bytes, bool]:
    """(the first bytes of an unbuffered file, whether that was all of it). Most files nxrun
    hashes or stores are small: they take one read, and no large buffer is allocated and zeroed."""
    head = handle.read(_SMALL_FILE)
    if len(head) < _SMALL_FILE:
        more = handle.read(_SMALL_FILE)   # b"" at the end of the file (a read may come up short)
        if not more:
            return head, True
        head += more
    return head, False


def hash_rest(handle, hasher, write=None) -> int:
    """Feed the rest of an unbuffered file to `hasher` in large chunks (several GB/s from the page
    cache), passing each chunk to `write` too when given; how many bytes were read."""
    buffer = bytearray(_READ_CHUNK)
    view = memoryview(buffer)
    total = 0
    while count := handle.readinto(buffer):
        hasher.update(view[:count])
        if write is not None:
            write(view[:count])
        total += count
    return total


def digest_file(path: str | os.PathLike) -> str:
    """xxh3-128 of a file's contents."""
    with open(path, "rb", buffering=0) as handle:
        head, whole = read_head(handle)
        if whole:
            return xxhash.xxh3_128_hexdigest(head)
        hasher = xxhash.xxh3_128(head)
        hash_rest(handle, hasher)
    return hasher.hexdigest()


def encode_components(components: dict[str, str]) -> bytes:
    """The canonical byte string of an ETag's components: sorted, each part length-prefixed."""
    parts: list[bytes] = []
    append = parts.append
    for name in sorted(components):
        name_bytes = name.encode("utf-8")
        value_bytes = components[name].encode("utf-8")
        append(len(name_bytes).to_bytes(4, "big"))
        append(name_bytes)
        append(len(value_bytes).to_bytes(4, "big"))
        append(value_bytes)
    return b"".join(parts)


def etag_of(components: dict[str, str]) -> str:
    return xxhash.xxh3_128_hexdigest(encode_components(components))


def outputs_digest(files: Iterable[tuple[str, str, bool, str | None]]) -> str:
    """Digest of a task's outputs: sorted (relative path, content digest, executable, link target).

    Only the executable bit of the mode counts, so umask differences between machines do not
    change downstream ETags.
    """
    hasher = xxhash.xxh3_128()
    for rel_path, blob_digest, executable, link_target in sorted(files):
        hasher.update(f"{rel_path}\0{blob_digest}\0{int(executable)}\0{link_target or ''}\n".encode())
    return hasher.hexdigest()


# ---------------------------------------------------------------------------- globs

_MAGIC = re.compile(r"[*?\[]")


def has_magic(pattern: str) -> bool:
    return bool(_MAGIC.search(pattern))


@lru_cache(maxsize=4096)
def compile_glob(pattern: str) -> re.Pattern:
    """A regex for a workspace-relative glob: `*` and `?` stay inside one folder, `**` crosses folders,
    and a pattern naming a folder matches every file below it."""
    out = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1:end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + "(?:/.*)?\\Z", re.DOTALL)


def literal_prefix(pattern: str) -> str:
    """The folder part of a glob before its first wildcard ('' for the workspace root)."""
    parts = pattern.split("/")
    prefix = []
    for part in parts[:-1]:
        if has_magic(part):
            break
        prefix.append(part)
    return "/".join(prefix)


class FileIndex:
    """Lists workspace files (relative posix paths), walking each folder at most once per run."""

    def __init__(self, root: Path, excluded: Iterable[str] = ()):
        self.root = root
        self._root_text = str(root)
        # folders never walked: VCS metadata and the cache itself (workspace-relative)
        self.excluded_dirs = {".git", ".hg", ".svn", *excluded}
        self.excluded_outputs: list[str] = []
        self._walked: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def set_excluded_outputs(self, outputs: Iterable[str]) -> None:
        """Declared outputs of any task: globs do not pick them up as sources."""
        self.excluded_outputs = sorted(set(outputs))

    def _is_output(self, rel: str) -> bool:
        for output in self.excluded_outputs:
            if rel == output or rel.startswith(output + "/"):
                return True
        return False

    def files_under(self, folder: str) -> list[str]:
        with self._lock:
            cached = self._walked.get(folder)
            if cached is not None:
                return cached
            for walked, files in self._walked.items():  # a walk of a parent folder already covers it
                if walked == "" or folder.startswith(walked + "/"):
                    prefix = folder + "/" if folder else ""
                    result = [f for f in files if f.startswith(prefix)]
                    self._walked[folder] = result
                    return result
            result = self._walk(folder)
            self._walked[folder] = result
            return result

    def _walk(self, folder: str) -> list[str]:
        files: list[str] = []
        start = os.path.join(self._root_text, folder) if folder else self._root_text
        stack = [(start, folder)]
        while stack:
            abs_dir, rel_dir = stack.pop()
            try:
                entries = os.scandir(abs_dir)
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue
            with entries:
                for entry in entries:
                    rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                    if entry.is_dir(follow_symlinks=False):
                        if rel in self.excluded_dirs or entry.name in (".git", ".nxrun-tmp"):   # restore's temp folders
                            continue
                        if self._is_output(rel):
                            continue
                        stack.append((entry.path, rel))
                    elif not self._is_output(rel):
                        files.append(rel)
        files.sort()
        return files

    def expand(self, patterns: list[str]) -> tuple[list[str], list[str]]:
        """Resolve include patterns (and `!` exclusions) into sorted file paths.

        Returns (files, patterns that matched nothing)."""
        included: set[str] = set()
        unmatched: list[str] = []
        excludes = [compile_glob(p[1:]) for p in patterns if p.startswith("!")]
        for pattern in patterns:
            if pattern.startswith("!"):
                continue
            if not has_magic(pattern):
                abs_path = os.path.join(self._root_text, pattern)
                try:
                    mode = os.stat(abs_path).st_mode
                except OSError:
                    unmatched.append(pattern)
                    continue
                if stat.S_ISDIR(mode):
                    found = self.files_under(pattern.rstrip("/"))
                    if not found:
                        unmatched.append(pattern)
                    included.update(found)
                else:
                    included.add(pattern)
                continue
            regex = compile_glob(pattern)
            found = [f for f in self.files_under(literal_prefix(pattern)) if regex.match(f)]
            if not found:
                unmatched.append(pattern)
            included.update(found)
        if excludes:
            included = {f for f in included if not any(rx.match(f) for rx in excludes)}
        return sorted(included), unmatched


# ---------------------------------------------------------------------------- stat cache

class StatCache:
    """(path, size, mtime_ns, inode) -> digest, so a no-op run reads no file contents.

    Loaded from and saved to the local store's sqlite index by the caller; keys are absolute
    paths because the cache describes this machine's files, never enters an ETag.
    """

    def __init__(self, rows: dict[str, tuple[int, int, int, str]] | None = None):
        self.rows: dict[str, tuple[int, int, int, str]] = rows or {}
        self.dirty: dict[str, tuple[int, int, int, str]] = {}

    def lookup(self, abs_path: str, st: os.stat_result) -> str | None:
        row = self.rows.get(abs_path)
        if row and row[0] == st.st_size and row[1] == st.st_mtime_ns and row[2] == st.st_ino:
            return row[3]
        return None

    def remember(self, abs_path: str, st: os.stat_result, digest: str) -> None:
        if time.time_ns() - st.st_mtime_ns < _RACY_WINDOW_NS:
            return
        row = (st.st_size, st.st_mtime_ns, st.st_ino, digest)
        if self.rows.get(abs_path) != row:
            self.rows[abs_path] = row
            self.dirty[abs_path] = row

    def digest(self, abs_path: str, st: os.stat_result | None = None) -> str:
        """The content digest of a file, from the cache when its stat is unchanged (`st`: the
        file's stat when the caller just took it)."""
        if st is None:
            st = os.stat(abs_path)
        cached = self.lookup(abs_path, st)
        if cached is not None:
            return cached
        digest = digest_file(abs_path)
        after = os.stat(abs_path)
        if (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino):
            self.remember(abs_path, st, digest)
        return digest


# ---------------------------------------------------------------------------- task ETags

class TaskHasher:
    """Computes a task's ETag components (the explain manifest) and its ETag.

    `task` is a graph.Task; `dep_digests` maps each upstream task id to the digest of its outputs.
    """

    def __init__(self, root: Path, file_index: FileIndex, stat_cache: StatCache, runtime):
        self.root_text = str(root)
        self.file_index = file_index
        self.stat_cache = stat_cache
        self.runtime = runtime
        self.warned: set[str] = set()

    def components(self, task, dep_digests: dict[str, str], args: list[str] | None = None,
                   environ: dict[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
        """(explain manifest, warnings). Raises FileNotFoundError only for races with deletion."""
        environ = os.environ if environ is None else environ
        warnings: list[str] = []
        components = {
            "format": FORMAT_VERSION,
            # the declared outputs, not the task's name: renaming a task keeps its cache, and two tasks
            # that would compute the same files from the same inputs share one ETag (run once)
            "outputs": digest_text("\n".join(task.outputs)),
            "command": digest_text(task.command or ""),
            "cwd": task.cwd,
            "cache": task.cache,
        }
        if args:
            components["args"] = digest_text("\0".join(args))
        for name, value in task.env.items():
            components[f"env-set:{name}"] = digest_text(value)
        file_patterns = [p for p in task.inputs if not p.startswith(("runtime:", "pkg:", "env:"))]
        if file_patterns:
            files, unmatched = self._plain_files(file_patterns, components)
            for pattern in unmatched:
                key = f"{task.id}\0{pattern}"
                if key not in self.warned:
                    self.warned.add(key)
                    warnings.append(f"{task.id}: input '{pattern}' matches no file ({task.source}). "
                                    "Fix the pattern, or remove it if the file is gone on purpose.")
            join = os.path.join
            root = self.root_text
            digest = self.stat_cache.digest
            for rel in files:
                components["file:" + rel] = digest(join(root, rel))
        for entry in task.inputs:
            kind, _, name = entry.partition(":")
            if kind == "runtime":
                components[entry] = digest_text(self.runtime.probe(name, task.id))
            elif kind == "pkg":
                components[entry] = digest_text(self.runtime.package_version(name))
            elif kind == "env":
                value = environ.get(name)
                components[entry] = digest_text("\0unset" if value is None else "=" + value)
        for dep_id, dep_digest in dep_digests.items():
            components["dep:" + dep_id] = dep_digest
        if task.cache == "hardware":
            components["hardware"] = digest_text(self.runtime.hardware_fingerprint())
        return components, warnings

    def _plain_files(self, patterns: list[str], components: dict[str, str]) -> tuple[list[str], list[str]]:
        """Digest inputs that name one file each straight into `components` (one stat per file,
        shared with the stat cache); the rest (globs, folders, `!` exclusions) go through the file
        index. Returns (files still to digest, patterns that matched nothing)."""
        if any(p.startswith("!") or has_magic(p) for p in patterns):
            return self.file_index.expand(patterns)
        rest: list[str] = []
        unmatched: list[str] = []
        root = self.root_text
        for pattern in patterns:
            abs_path = os.path.join(root, pattern)
            try:
                st = os.stat(abs_path)
            except OSError:
                unmatched.append(pattern)
                continue
            if stat.S_ISDIR(st.st_mode):
                rest.append(pattern)
            else:
                components["file:" + pattern] = self.stat_cache.digest(abs_path, st)
        if rest:
            files, more_unmatched = self.file_index.expand(rest)
            return [f for f in files if "file:" + f not in components], unmatched + more_unmatched
        return [], unmatched
