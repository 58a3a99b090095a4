"""File digests, input resolution and the ETag.

Everything that decides whether a task's result can be reused is computed here, in one canonical
encoding: sorted components, each a (name, digest) pair, length-prefixed, with workspace-relative
paths and never an mtime or an absolute path. File contents are hashed with xxh3-128; a stat cache
keyed by (path, size, mtime_ns, inode, ctime_ns) means an unchanged file is never read twice.

Env values, the values a target sets and args after `--` are hashed with a secret key (keyed
BLAKE2b; store/keys.py says where the key comes from), so a digest `show` prints, the index keeps
or a remote manifest carries cannot be matched by hashing guessed values. A symlink among the
inputs is hashed as a link (its target string, plus the contents of the regular file it points
to), and a walk never follows one, so link loops and links to folders are harmless.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

import xxhash

from .errors import NxrunError

FORMAT_VERSION = "nxrun-etag-1"
_READ_CHUNK = 8 << 20
_SMALL_FILE = 1 << 20
# A file changed this recently may change again within the file system's timestamp granularity
# without its stat changing ("racy" entries, as git calls them): hash it, but do not remember it.
# Linux stamps files from a clock that ticks every few milliseconds; a stamp of whole seconds says
# the file system keeps no more than that (FAT keeps two seconds), so such a file is unsure longer.
_RACY_WINDOW_NS = 50_000_000
_COARSE_RACY_WINDOW_NS = 2_000_000_000
_ENV_PERSON = b"nxrun-env-v1"


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


_blake2b = None


def blake2b(*args, **kwargs):
    """hashlib.blake2b, loaded on first use and from CPython's own `_blake2` where it can be: importing
    hashlib loads OpenSSL's bindings too, 3 ms that a no-op run without env inputs would pay."""
    global _blake2b
    if _blake2b is None:
        try:
            from _blake2 import blake2b as loaded
        except ImportError:      # another Python: the public name
            from hashlib import blake2b as loaded
        _blake2b = loaded
    return _blake2b(*args, **kwargs)


def keyed_digest(key: bytes, name: str, value: str) -> str:
    """A 128-bit keyed BLAKE2b of `value` under the component `name`: without `key`, nothing about
    the value can be learnt from it, however few values it could take."""
    name_bytes = name.encode("utf-8", "surrogateescape")
    data = len(name_bytes).to_bytes(4, "big") + name_bytes + value.encode("utf-8", "surrogateescape")
    return blake2b(data, key=key, digest_size=16, person=_ENV_PERSON).hexdigest()


def digest_file(path: str | os.PathLike) -> str:
    """xxh3-128 of a file's contents. Opened without blocking, so a fifo put in a regular file's
    place cannot hang the read (OSError: not a regular file)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{os.fspath(path)} is not a regular file")
    with open(fd, "rb", buffering=0) as handle:
        return digest_handle(handle)


def digest_handle(handle) -> str:
    """xxh3-128 of what is left to read in an unbuffered file."""
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
        name_bytes = name.encode("utf-8", "surrogateescape")
        value_bytes = components[name].encode("utf-8", "surrogateescape")
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
        hasher.update(f"{rel_path}\0{blob_digest}\0{int(executable)}\0{link_target or ''}\n".encode("utf-8", "surrogateescape"))
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


class UnhashableInput(Exception):
    """An input nxrun cannot hash: a folder it may not list, a fifo, a socket, a device. The task
    hasher turns it into an error naming the task."""

    def __init__(self, rel_path: str, reason: str, folder: bool = False):
        super().__init__(f"{rel_path}: {reason}")
        self.rel_path = rel_path
        self.reason = reason
        self.folder = folder


class FileIndex:
    """Lists workspace files (relative posix paths), walking each folder at most once per run.

    A walk never follows a symlink: a link to a folder, a dangling link and a link loop are all
    listed as entries of their own. The folder a pattern names (`data`, or the `data/raw` of
    `data/raw/**/*.csv`) is the one place a link is followed, since the pattern asks for what is
    behind it: such a folder is always walked on its own, never taken from a walk of a folder
    above it (which lists the link, not its contents), so what a pattern matches does not depend
    on which folder was walked first, and a loop can only be entered once."""

    def __init__(self, root: Path, excluded: Iterable[str] = ()):
        self.root = root
        self._root_text = str(root)
        # folders never walked: VCS metadata and the cache itself (workspace-relative)
        self.excluded_dirs = {".git", ".hg", ".svn", *excluded}
        self.excluded_outputs: list[str] = []
        self._outputs: frozenset[str] = frozenset()
        self._walked: dict[str, list[str]] = {}
        self.unreadable: dict[str, str] = {}   # folders a walk could not list -> why
        # every folder a walk listed or tried to list, in order (the run journal stats them)
        self.listed: list[str] = []
        self._lock = threading.Lock()

    def set_excluded_outputs(self, outputs: Iterable[str]) -> None:
        """Declared outputs of any task: globs do not pick them up as sources."""
        self.excluded_outputs = sorted(set(outputs))
        self._outputs = frozenset(self.excluded_outputs)

    def is_output(self, rel: str) -> bool:
        """Whether `rel` is a declared output or lies under one: a set lookup of the path and of
        each folder above it (`output + "/"` is a prefix of `rel` exactly when `output` is `rel` cut
        at one of its slashes), so the cost grows with the path's depth, not with the outputs."""
        outputs = self._outputs
        if not outputs:
            return False
        if rel in outputs:
            return True
        cut = rel.find("/")
        while cut != -1:
            if rel[:cut] in outputs:
                return True
            cut = rel.find("/", cut + 1)
        return False

    def files_under(self, folder: str) -> list[str]:
        with self._lock:
            cached = self._walked.get(folder)
            if cached is not None:
                return cached
            if self._real_folder(folder):
                parent = self._walked_parent(folder)
                if parent is not None:       # a walk of a parent folder already covers it
                    # the parent's sorted list holds the folder's files in one run: slice it
                    files = self._walked[parent]
                    prefix = folder + "/"
                    start = bisect_left(files, prefix)
                    end = bisect_left(files, folder + "0", start)    # "0" is the character after "/"
                    result = files[start:end]
                    self._walked[folder] = result
                    return result
            result = self._walk(folder)
            self._walked[folder] = result
            return result

    def _walked_parent(self, folder: str) -> str | None:
        """The nearest folder above `folder` (the workspace root included) walked already, if any:
        one dict lookup per level."""
        if not folder:
            return None
        cut = folder.rfind("/")
        while cut != -1:
            if folder[:cut] in self._walked:
                return folder[:cut]
            cut = folder.rfind("/", 0, cut)
        return "" if "" in self._walked else None

    def _real_folder(self, folder: str) -> bool:
        """Whether every part of `folder` is a folder and none a symlink: a walk of a folder above
        it lists exactly what a walk of it would."""
        path = self._root_text
        for part in folder.split("/") if folder else ():
            path = os.path.join(path, part)
            try:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    return False
            except OSError:
                return False
        return True

    def _walk(self, folder: str) -> list[str]:
        files: list[str] = []
        start = os.path.join(self._root_text, folder) if folder else self._root_text
        stack = [(start, folder)]
        # Folders that are outputs are not entered, so below the start an entry is an output only by
        # being one itself; the start is checked once, with the folders above it.
        outputs = self._outputs
        inside_output = bool(folder) and self.is_output(folder)
        listed = self.listed
        while stack:
            abs_dir, rel_dir = stack.pop()
            listed.append(rel_dir)
            try:
                entries = os.scandir(abs_dir)
            except (FileNotFoundError, NotADirectoryError):
                continue          # gone since it was listed: nothing of it is there to hash
            except OSError as exc:
                self.unreadable[rel_dir] = exc.strerror or str(exc)
                continue
            with entries:
                for entry in entries:
                    rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                    if entry.is_dir(follow_symlinks=False):
                        if rel in self.excluded_dirs or entry.name in (".git", ".nxrun-tmp"):   # restore's temp folders
                            continue
                        if inside_output or rel in outputs:
                            continue
                        stack.append((entry.path, rel))
                    elif not inside_output and rel not in outputs:
                        files.append(rel)
        files.sort()
        return files

    def expand(self, patterns: list[str]) -> tuple[list[str], list[str]]:
        """Resolve include patterns (and `!` exclusions) into sorted file paths (files, symlinks
        and whatever else a folder holds; the hasher decides what it can hash).

        Returns (files, patterns that matched nothing). UnhashableInput when a folder a pattern
        covers could not be listed and no `!` pattern excludes it."""
        included: set[str] = set()
        unmatched: list[str] = []
        walked: list[str] = []
        excludes = [compile_glob(p[1:]) for p in patterns if p.startswith("!")]
        for pattern in patterns:
            if pattern.startswith("!"):
                continue
            if not has_magic(pattern):
                abs_path = os.path.join(self._root_text, pattern)
                try:
                    mode = os.lstat(abs_path).st_mode
                    if stat.S_ISLNK(mode) and os.path.isdir(abs_path):
                        mode = stat.S_IFDIR         # a link to a folder the pattern names: what is behind it
                except OSError:
                    unmatched.append(pattern)
                    continue
                if stat.S_ISDIR(mode):
                    folder = pattern.rstrip("/")
                    walked.append(folder)
                    found = self.files_under(folder)
                    if not found:
                        unmatched.append(pattern)
                    included.update(found)
                else:
                    included.add(pattern)
                continue
            # every file under the pattern's literal folder starts with it: match only the rest, so
            # `packages/p1/**/*`, `packages/p2/**/*`, ... share one compiled `**/*`
            prefix = literal_prefix(pattern)
            start = len(prefix) + 1 if prefix else 0
            match = compile_glob(pattern[start:]).match
            walked.append(prefix)
            found = [f for f in self.files_under(prefix) if match(f, start)]
            if not found:
                unmatched.append(pattern)
            included.update(found)
        if excludes:
            included = {f for f in included if not any(rx.match(f) for rx in excludes)}
        if self.unreadable:
            self._check_unreadable(walked, excludes)
        return sorted(included), unmatched

    def _check_unreadable(self, walked: list[str], excludes: list[re.Pattern]) -> None:
        for folder, reason in sorted(self.unreadable.items()):
            if not any(w == "" or folder == w or folder.startswith(w + "/") for w in walked):
                continue
            if any(rx.match(folder) or rx.match(folder + "/-") for rx in excludes):
                continue
            raise UnhashableInput(folder, reason, folder=True)


# ---------------------------------------------------------------------------- stat cache

def _unsure(st, now_ns: int) -> bool:
    """Whether a file's stat was taken so soon after its last change that another change, within
    the file system's timestamp granularity, could leave size, mtime and ctime as they are. The
    ctime counts too: it moves with every write and cannot be set back (`touch -d` sets mtime)."""
    for stamp in (st.st_mtime_ns, st.st_ctime_ns):
        window = _COARSE_RACY_WINDOW_NS if stamp % 1_000_000_000 == 0 else _RACY_WINDOW_NS
        if now_ns - stamp < window:
            return True
    return False


StatRow = tuple[int, int, int, int, str]    # size, mtime_ns, inode, ctime_ns, digest


class StatCache:
    """(path, size, mtime_ns, inode, ctime_ns) -> digest, so a no-op run reads no file contents.

    The ctime catches what the others miss: an in-place edit of the same size whose mtime was put
    back (`dd conv=notrunc`, then `touch -d`), since nothing can set a ctime back (git and Bazel
    key on it too). A file whose mtime or ctime is within the file system's timestamp granularity
    of its hashing is hashed but not remembered, so the next run hashes it again.

    Loaded from and saved to the local store's sqlite index by the caller; keys are absolute
    paths because the cache describes this machine's files, never enters an ETag.
    """

    def __init__(self, rows: dict[str, StatRow] | None = None):
        self.rows: dict[str, StatRow] = rows or {}
        self.dirty: dict[str, StatRow] = {}

    def lookup(self, abs_path: str, st: os.stat_result) -> str | None:
        row = self.rows.get(abs_path)
        if row and row[0] == st.st_size and row[1] == st.st_mtime_ns and row[2] == st.st_ino \
                and row[3] == st.st_ctime_ns:
            return row[4]
        return None

    def remember(self, abs_path: str, st: os.stat_result, digest: str, hashed_at: int | None = None) -> None:
        """Keep `digest` for the file whose stat is `st`, unless the file changed within the file
        system's timestamp granularity of `hashed_at` (time_ns when its hashing began; now if not
        given)."""
        if _unsure(st, time.time_ns() if hashed_at is None else hashed_at):
            return
        row = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, digest)
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
        hashed_at = time.time_ns()    # the moment that counts: a write just after it, in the same tick, hides
        digest = digest_file(abs_path)
        after = os.stat(abs_path)
        if (after.st_size, after.st_mtime_ns, after.st_ino, after.st_ctime_ns) == \
                (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns):
            self.remember(abs_path, st, digest, hashed_at)
        return digest


class InputMemo:
    """The stat and digest of each regular input file, shared by the tasks of one run while nothing
    of the run writes to the workspace, so an input that many tasks list (a lockfile, a base config,
    a shared folder) is looked at once per run, not once per task.

    A task's command may change any file, so the memo is empty and unused from the moment a command
    is about to start (its outputs are cleared first) until it has ended, and emptied again then. A
    restore writes only under the task's declared outputs, which the memo never holds (the hasher
    keeps them out); a restore that wrote anything empties it all the same (a path may reach an
    output folder through a symlink). A no-op run runs no command, so its memo is never emptied.

    Threads: the scheduling thread hashes while workers run commands or restore remote hits. A
    digest taken while a worker was writing is not kept: `put` takes the generation read before the
    stat, and a write that began or ended since then has moved it."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[os.stat_result, str]] = {}
        self._writers = 0
        self.generation = 0
        self._lock = threading.Lock()

    def get(self, abs_path: str) -> tuple[os.stat_result, str] | None:
        """(stat, digest) of the file when taken in this run and nothing has written since."""
        return None if self._writers else self._rows.get(abs_path)

    def put(self, abs_path: str, st: os.stat_result, digest: str, generation: int) -> None:
        with self._lock:
            if not self._writers and generation == self.generation:
                self._rows[abs_path] = (st, digest)

    def writing_started(self, forget: bool = True) -> None:
        """Something of the run is about to write to the workspace: a command (`forget`), or a
        restore, which tells at its end whether it changed anything."""
        with self._lock:
            self._writers += 1
            self.generation += 1
            if forget:
                self._rows.clear()

    def writing_ended(self, changed: bool = True) -> None:
        with self._lock:
            self._writers -= 1
            self.generation += 1
            if changed:
                self._rows.clear()


# ---------------------------------------------------------------------------- task ETags

_SPECIAL_KINDS = ((stat.S_ISFIFO, "a fifo (named pipe)"), (stat.S_ISSOCK, "a socket"),
                  (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                  (stat.S_ISDIR, "a folder"))


def _kind_of(mode: int) -> str:
    for test, kind in _SPECIAL_KINDS:
        if test(mode):
            return kind
    return "not a regular file"


class TaskHasher:
    """Computes a task's ETag components (the explain manifest) and its ETag.

    `task` is a graph.Task; `dep_digests` maps each upstream task id to the digest of its outputs.
    `env_key` returns the secret env values are hashed with (store/keys.py); it is called once, the
    first time a task needs it. Without one, a random key of this process is used (tests). With a
    `memo` (InputMemo), a regular input file already digested in this run is not looked at again.
    """

    def __init__(self, root: Path, file_index: FileIndex, stat_cache: StatCache, runtime,
                 env_key: Callable[[], bytes] | None = None, memo: InputMemo | None = None):
        self.root_text = str(root)
        self.file_index = file_index
        self.stat_cache = stat_cache
        self.memo = memo
        # a recording stat cache (input_check) notes the stat of each input a memo answers for
        self._note = getattr(stat_cache, "note", None)
        self.runtime = runtime
        self.warned: set[str] = set()
        self._env_key_source = env_key
        self._env_key: bytes | None = None

    def keyed(self, name: str, value: str) -> str:
        """The keyed digest of a value that must not be recoverable from what is stored."""
        key = self._env_key
        if key is None:
            key = self._env_key = self._env_key_source() if self._env_key_source else os.urandom(32)
        return keyed_digest(key, name, value)

    def components(self, task, dep_digests: dict[str, str], args: list[str] | None = None,
                   environ: dict[str, str] | None = None,
                   gpu_class: str | None = None) -> tuple[dict[str, str], list[str]]:
        """(explain manifest, warnings). An NxrunError naming the task and the path when an input
        cannot be hashed (unreadable, a fifo or socket, gone while it was being hashed).
        `gpu_class`: the fingerprint of the GPUs a `cache = "hardware"` task will be granted
        (default: the pool's first class with enough GPUs, see Runtime.hardware_fingerprint)."""
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
            components["args"] = self.keyed("args", "\0".join(args))
        for name, value in task.env.items():
            components[f"env-set:{name}"] = self.keyed(f"env-set:{name}", value)
        file_patterns = [p for p in task.inputs if not p.startswith(("runtime:", "pkg:", "env:"))]
        if file_patterns:
            try:
                files, unmatched = self._plain_files(task, file_patterns, components)
            except UnhashableInput as exc:
                raise self._input_error(task, exc.rel_path, exc) from None
            for pattern in unmatched:
                key = f"{task.id}\0{pattern}"
                if key not in self.warned:
                    self.warned.add(key)
                    warnings.append(f"{task.id}: input '{pattern}' matches no file ({task.source}). "
                                    "Fix the pattern, or remove it if the file is gone on purpose.")
            join = os.path.join
            root = self.root_text
            digest = self.stat_cache.digest
            lstat = os.lstat
            is_regular = stat.S_ISREG
            memo = self.memo
            rel = ""
            try:
                if memo is None:
                    for rel in files:
                        path = join(root, rel)
                        st = lstat(path)
                        components["file:" + rel] = digest(path, st) if is_regular(st.st_mode) else \
                            self._other_digest(rel, path, st)
                else:
                    for rel in files:
                        components["file:" + rel] = self._memo_digest(rel, join(root, rel))
            except (OSError, UnhashableInput) as exc:
                raise self._input_error(task, rel, exc) from None
        for entry in task.inputs:
            kind, _, name = entry.partition(":")
            if kind == "runtime":
                components[entry] = digest_text(self.runtime.probe(name, task.id, task))
            elif kind == "pkg":
                components[entry] = digest_text(self.runtime.package_version(name))
            elif kind == "env":
                value = environ.get(name)
                components[entry] = self.keyed(entry, "\0unset" if value is None else "=" + value)
        for dep_id, dep_digest in dep_digests.items():
            components["dep:" + dep_id] = dep_digest
        gpus = getattr(task, "gpus", 0)
        if gpus > 1:
            # how many GPUs changes a result (a tensor-parallel run); which ones does not, and one
            # is what the command saw before GPUs were counted, so it adds nothing
            components["gpus"] = str(gpus)
        if task.cache == "hardware":
            components["hardware"] = self.hardware_digest(task, gpu_class)
        return components, warnings

    def hardware_digest(self, task, gpu_class: str | None = None) -> str:
        """The `hardware` component of `task`, granted GPUs of class `gpu_class` (None: the default
        class, see Runtime.hardware_fingerprint)."""
        if gpu_class is None:
            return digest_text(self.runtime.hardware_fingerprint(task))
        return digest_text(self.runtime.hardware_fingerprint(task, gpu_class))

    def _memo_digest(self, rel: str, path: str, st: os.stat_result | None = None, generation: int = -1) -> str:
        """The digest of input `rel` (at `path`) through the run's memo: a regular file digested
        earlier in this run, with nothing written since, is not looked at again (its stat is noted
        for the check after the task's command all the same). `st`: its lstat when the caller took
        it, and `generation`: the memo's generation read before that lstat."""
        memo = self.memo
        assert memo is not None
        known = memo.get(path)
        if known is not None:
            if self._note is not None:
                self._note(path, known[0])
            return known[1]
        if st is None:
            generation = memo.generation
            st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            return self._other_digest(rel, path, st)
        value = self.stat_cache.digest(path, st)
        # never a declared output (a restore rewrites those without emptying the memo), nor a path
        # spelled so that it could be one without looking like one
        if rel == posixpath.normpath(rel) and not self.file_index.is_output(rel):
            memo.put(path, st, value, generation)
        return value

    def _other_digest(self, rel: str, path: str, st: os.stat_result) -> str:
        """The digest of an input that is not a regular file: a symlink is hashed as its target
        string, plus the contents when it leads to a regular file (so an edit of a linked file
        outside the inputs is seen); it is never walked into. Anything else is UnhashableInput."""
        if not stat.S_ISLNK(st.st_mode):
            raise UnhashableInput(rel, _kind_of(st.st_mode))
        target = os.fsencode(os.readlink(path))
        try:
            target_st = os.stat(path)
        except OSError:            # dangling, a loop, a target it may not look at: the link alone
            target_st = None
        contents = b""
        if target_st is not None and stat.S_ISREG(target_st.st_mode):
            contents = self.stat_cache.digest(path, target_st).encode("ascii")
        return xxhash.xxh3_128_hexdigest(b"symlink\0" + target + b"\0" + contents)

    @staticmethod
    def _input_error(task, rel: str, exc: BaseException) -> NxrunError:
        where = f"({task.source})"
        leave_out = (f"leave it out of the task's inputs: add \"!{rel}\" to `inputs` (or to [workspace] "
                     "default-inputs when the task has no `inputs`)")
        if isinstance(exc, UnhashableInput) and exc.folder:
            return NxrunError(f"{task.id}: cannot list input folder '{rel}': {exc.reason} {where}. Make it "
                              f"readable, or {leave_out.replace(f'!{rel}', f'!{rel}/**')}.")
        if isinstance(exc, UnhashableInput):
            return NxrunError(f"{task.id}: input '{rel}' is {exc.reason}; nxrun hashes files and symlinks only "
                              f"{where}. To run without it, {leave_out}.")
        if isinstance(exc, FileNotFoundError):
            return NxrunError(f"{task.id}: input '{rel}' disappeared while nxrun was hashing it {where}: "
                              "something is changing the workspace during the run. Run again once it is done.")
        if isinstance(exc, PermissionError):
            return NxrunError(f"{task.id}: cannot read input '{rel}': permission denied {where}. Make it "
                              f"readable, or {leave_out}.")
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return NxrunError(f"{task.id}: cannot hash input '{rel}': {reason} {where}. Fix the file, or {leave_out}.")

    def _plain_files(self, task, patterns: list[str], components: dict[str, str]) -> tuple[list[str], list[str]]:
        """Digest inputs that name one file each straight into `components` (one stat per file,
        shared with the stat cache); the rest (globs, folders, `!` exclusions) go through the file
        index. Returns (files still to digest, patterns that matched nothing)."""
        if any(p.startswith("!") or has_magic(p) for p in patterns):
            return self.file_index.expand(patterns)
        rest: list[str] = []
        unmatched: list[str] = []
        root = self.root_text
        memo = self.memo
        for pattern in patterns:
            abs_path = os.path.join(root, pattern)
            generation = memo.generation if memo is not None else -1   # before the stat: see InputMemo
            try:
                st = os.lstat(abs_path)
            except OSError:
                unmatched.append(pattern)
                continue
            if not stat.S_ISREG(st.st_mode):
                rest.append(pattern)    # a folder to list; a link or special file hashed like a listed one
                continue
            try:
                components["file:" + pattern] = self.stat_cache.digest(abs_path, st) if memo is None \
                    else self._memo_digest(pattern, abs_path, st, generation)
            except OSError as exc:
                raise self._input_error(task, pattern, exc) from None
        if rest:
            files, more_unmatched = self.file_index.expand(rest)
            return [f for f in files if "file:" + f not in components], unmatched + more_unmatched
        return [], unmatched
