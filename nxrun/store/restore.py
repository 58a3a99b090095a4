"""Put a cache entry's outputs back into the workspace: the only code that writes restored files.

The rules (DESIGN.md §4 "Restore safety"; docs/remote-cache.md states them for users), for local
and remote entries alike:
- `safety.check_entry` judges the manifest first; nothing is written for an entry it refuses.
- No write goes through a link. Every folder at or below a declared output is opened from its
  parent's descriptor with O_NOFOLLOW, starting from a descriptor of the workspace root, and
  every name is created, renamed or removed relative to such a descriptor. Whatever the disk has
  where the entry has a folder (a link, a file) is stale output: it is removed, never followed;
  that includes a declared output that is itself a link (as when the runner clears outputs, and
  as capture records such a link as a link, never as a folder). Stale files are removed with
  unlinkat and a descriptor-based rmtree, which never follow links either.
- The folders above a declared output are the user's, out of any entry's reach, and are never
  changed beyond creating missing ones. A local entry is restored through a link there (a user
  who put `build -> /scratch/build` on another disk; the task itself wrote through it), unless
  one of its links climbs above a declared output on the way back into one (it might then land
  elsewhere on that disk). A remote entry is refused when one of them is a link.
- The entry's own links are created last.
- Files are written to a temp file outside every declared output and renamed into place: in the
  cache's tmp folder when it is on the destination's file system, else in a `.nxrun-tmp` folder
  at the workspace root or beside the declared output (globs never see it), and only where none
  of those shares the destination's file system, beside the file. So a reader never sees a
  half-written file, a kill leaves no temp file among the outputs, and an existing file is never
  written in place: with `restore = "hardlink"` a blob is never written through its link.
- A file already identical is left alone (size, mode and the stat cache: no read on a no-op run).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

import xxhash

from ..hashing import StatCache, digest_file, hash_rest
from . import CacheEntry, CorruptBlob, OutputRecord, UnsafeEntry
from .local import LocalStore, write_all
from .safety import EntryLayout, root_of, check_entry

_FICLONE = 0x40049409
_DIR = os.O_RDONLY | os.O_DIRECTORY
_DIR_NOFOLLOW = _DIR | os.O_NOFOLLOW
WORKSPACE_TEMP = ".nxrun-tmp"     # restore's temp folder when the cache is on another file system

_reflink_works: bool | None = None   # learnt from the first attempt, so copies stop paying for it
_SMALL = 8 << 20


def restore_entry(entry: CacheEntry, store: LocalStore, root: Path, declared_outputs: list[str],
                  stat_cache: StatCache, mode: str = "auto", origin: str = "local") -> int:
    """Write the entry's outputs under `root`; returns how many files and links were written.

    `origin` "remote" refuses links in the folders above the declared outputs (see the module
    docstring). Raises UnsafeEntry before touching anything, or CorruptBlob (the blob is discarded
    and the caller treats the entry as a miss)."""
    layout = check_entry(entry, declared_outputs)
    restore = _Restore(layout, store, str(root), stat_cache, mode, follow_links_above=origin != "remote")
    try:
        return restore.run()
    finally:
        restore.close()


class _Restore:
    def __init__(self, layout: EntryLayout, store: LocalStore, root_text: str, stat_cache: StatCache,
                 mode: str, follow_links_above: bool):
        self.layout = layout
        self.store = store
        self.root_text = root_text
        self.stat_cache = stat_cache
        self.mode = mode
        self.follow_links_above = follow_links_above
        self._fds: list[int] = []
        self.root_fd = self._keep(os.open(root_text, _DIR))
        self.temps = _TempPlaces(store, self.root_fd, root_text, layout.roots)
        # filled by the sweep: listed files found on disk (their lstat), listed links and folders
        # found as the entry has them
        self.found_files: dict[str, os.stat_result] = {}
        self.in_place: set[str] = set()

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def close(self) -> None:
        for fd in reversed(self._fds):
            os.close(fd)
        self._fds.clear()
        self.temps.close()

    # ------------------------------------------------------------------ the order of work
    def run(self) -> int:
        layout = self.layout
        # 1. the folders above each declared output, only read: a refusal here writes nothing
        above: dict[str, tuple[int | None, list[str]]] = {}
        link_above = None
        for root in layout.roots:
            fd, missing, link, problem = self._walk_above(root.split("/")[:-1])
            link_above = link_above or link
            if problem is not None and (root in layout.folders or root in layout.records):
                raise UnsafeEntry(f"cannot restore '{root}': {problem}")
            above[root] = (fd, missing)
        if link_above is not None and layout.climbing_links:
            raise UnsafeEntry(f"link {layout.climbing_links[0]!r} climbs above its declared output on its way, and "
                              f"'{link_above}' above the declared outputs is a link on this machine: where it "
                              "would land cannot be known from the entry")
        # 2. each declared output: what the entry does not list removed, what it lists compared
        bases: dict[str, int] = {}             # declared output (its parent, for a file) -> descriptor
        holders: dict[str, tuple[int, str]] = {}   # declared output -> the folder holding it
        for root in layout.roots:
            fd, missing = above[root]
            covered = root in layout.folders or root in layout.records
            if fd is None or (missing and not covered):
                continue                      # not there, and nothing to write
            holder_path = _parent(root)
            if missing:
                fd = self._make_folders(fd, missing, holder_path)
            holders[root] = (fd, holder_path)
            name = root.rsplit("/", 1)[-1]
            st = _lstat_at(fd, name)
            if not covered:
                if st is not None:
                    _remove_at(fd, name, st)
                continue
            record = layout.records.get(root)
            if record is not None and record.kind != "dir":
                self._check_in_place(fd, name, root, record, st)
                bases[root] = fd
                continue
            root_fd = self._folder_at(fd, name, st, root)
            bases[root] = root_fd
            self.in_place.add(root)
            self._sweep(root_fd, root)
        # 3. folders and files, then links: only those not already as the entry has them
        to_write = [(path, record) for path, record in layout.records.items()
                    if path not in self.in_place and not (
                        record.kind == "file" and self._unchanged(path, record, self.found_files.get(path)))]
        if not to_write:
            return 0
        written = 0
        links = sorted((p, r) for p, r in to_write if r.kind == "symlink")
        others = sorted(((p, r) for p, r in to_write if r.kind != "symlink"), key=lambda item: item[0].split("/"))
        folders = _Folders(bases)
        try:
            for path, record in others:
                root = root_of(path, layout.roots)
                if record.kind == "dir":
                    folders.open(path, root)
                    continue
                parent_fd = folders.open_parent(path, root)
                written += self._write_file(parent_fd, holders[root], path, record)
            for path, record in links:
                parent_fd = folders.open_parent(path, root_of(path, layout.roots))
                name = path.rsplit("/", 1)[-1]
                try:
                    os.symlink(record.target, name, dir_fd=parent_fd)
                except FileExistsError:       # put there since the sweep, by another process
                    _remove_at(parent_fd, name, os.stat(name, dir_fd=parent_fd, follow_symlinks=False))
                    os.symlink(record.target, name, dir_fd=parent_fd)
                written += 1
        finally:
            folders.close()
        return written

    # ------------------------------------------------------------------ above the declared outputs
    def _walk_above(self, parts: list[str]) -> tuple[int | None, list[str], str | None, str | None]:
        """Open the folders above a declared output: (descriptor of the deepest one that exists,
        the names missing below it, the first link met on the way, why the walk stopped short).
        The descriptor is None when the walk stopped short."""
        fd = self.root_fd
        link = None
        for index, name in enumerate(parts):
            try:
                fd = self._keep(os.open(name, _DIR_NOFOLLOW, dir_fd=fd))
                continue
            except FileNotFoundError:
                return fd, parts[index:], link, None
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
            where = "/".join(parts[:index + 1])
            st = _lstat_at(fd, name)
            if st is None:
                return fd, parts[index:], link, None
            if not stat.S_ISLNK(st.st_mode):
                return None, [], link, f"'{where}' is a file, where a folder holding a declared output should be"
            link = link or where
            if not self.follow_links_above:
                return None, [], link, (f"'{where}', a folder above a declared output, is a link on this machine; "
                                        "a remote entry is only written through real folders")
            try:
                fd = self._keep(os.open(name, _DIR, dir_fd=fd))
            except (FileNotFoundError, NotADirectoryError):
                return None, [], link, f"'{where}', a folder above a declared output, is a link to no folder"
        return fd, [], link, None

    def _make_folders(self, fd: int, names: list[str], holder_path: str) -> int:
        done = holder_path.split("/")[:len(holder_path.split("/")) - len(names)] if holder_path else []
        for name in names:
            done.append(name)
            try:
                os.mkdir(name, dir_fd=fd)
            except FileExistsError:
                pass
            fd = self._keep(_open_folder(name, fd, "/".join(done)))
        return fd

    # ------------------------------------------------------------------ at and below them
    def _folder_at(self, parent_fd: int, name: str, st: os.stat_result | None, path: str) -> int:
        """A descriptor of the folder `name`, made a real folder first if it is anything else."""
        if st is not None and not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=parent_fd)       # a link loses the link, never its target
            st = None
        if st is None:
            try:
                os.mkdir(name, dir_fd=parent_fd)
            except FileExistsError:
                pass
        return self._keep(_open_folder(name, parent_fd, path))

    def _check_in_place(self, parent_fd: int, name: str, path: str, record: OutputRecord,
                        st: os.stat_result | None) -> None:
        """Note whether the file or link `record` wants is already there; clear the way if not."""
        if st is None:
            return
        if record.kind == "symlink":
            if stat.S_ISLNK(st.st_mode) and os.readlink(name, dir_fd=parent_fd) == record.target:
                self.in_place.add(path)
                return
            _remove_at(parent_fd, name, st)
        elif stat.S_ISREG(st.st_mode):
            self.found_files[path] = st
        else:
            _remove_at(parent_fd, name, st)

    def _sweep(self, dir_fd: int, rel_dir: str) -> None:
        """Remove what the entry does not list under one folder (never following a link) and note
        what it lists that is already there."""
        records = self.layout.records
        folders = self.layout.folders
        with os.scandir(dir_fd) as listing:
            items = list(listing)
        for item in items:
            name = item.name
            rel = f"{rel_dir}/{name}"
            if item.is_dir(follow_symlinks=False):
                if rel in folders:
                    self.in_place.add(rel)
                    sub = _open_folder(name, dir_fd, rel)
                    try:
                        self._sweep(sub, rel)
                    finally:
                        os.close(sub)
                else:
                    _rmtree_at(dir_fd, name, missing_ok=True)
                continue
            record = records.get(rel)
            if record is not None:
                if record.kind == "file" and item.is_file(follow_symlinks=False):
                    self.found_files[rel] = item.stat(follow_symlinks=False)
                    continue
                if record.kind == "symlink" and item.is_symlink() and \
                        os.readlink(name, dir_fd=dir_fd) == record.target:
                    self.in_place.add(rel)
                    continue
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                pass

    # ------------------------------------------------------------------ one file
    def _wanted_mode(self, record: OutputRecord) -> int:
        """Read-only with `restore = "hardlink"`: a link shares its mode with the blob (0o444), and a
        file that cannot share it (executable, or not readable by all) is a read-only copy."""
        return record.mode & (0o555 if self.mode == "hardlink" else 0o777)

    def _unchanged(self, path: str, record: OutputRecord, st: os.stat_result | None) -> bool:
        """Whether the file on disk (`st`, its lstat) is already what the record says: unchanged
        since we last saw it (the stat cache, no read), or freshly written and identical when
        hashed: reading is cheaper than rewriting, and keeps the file's inode."""
        if st is None or (st.st_mode & 0o777) != self._wanted_mode(record) or st.st_size != record.size:
            return False
        destination = f"{self.root_text}/{path}"
        known = self.stat_cache.lookup(destination, st)
        return (known or self.stat_cache.digest(destination, st)) == record.digest

    def _write_file(self, parent_fd: int, holder: tuple[int, str], path: str, record: OutputRecord) -> int:
        destination = f"{self.root_text}/{path}"
        name = path.rsplit("/", 1)[-1]
        wanted_mode = self._wanted_mode(record)
        link = self.mode == "hardlink" and wanted_mode == 0o444
        for _attempt in range(4):
            temp_fd, temp_name = self.temps.place_for(parent_fd, holder)
            try:
                self._fill_temp(temp_fd, temp_name, record, link, wanted_mode)
                try:
                    os.replace(temp_name, name, src_dir_fd=temp_fd, dst_dir_fd=parent_fd)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    self.temps.not_for(parent_fd, temp_fd)   # one file system, two mounts: next place
                    continue
            finally:
                # gone after the rename; still there when it failed, or when the destination was
                # already the same inode (a rename between two links of one file does nothing)
                _unlink_quietly(temp_name, temp_fd)
            break
        else:
            raise OSError(errno.EXDEV, f"no temp folder can be renamed into the folder of {destination}")
        # the stat after the rename: a rename may change the inode's ctime
        self.stat_cache.remember(destination, os.stat(name, dir_fd=parent_fd, follow_symlinks=False), record.digest)
        return 1

    def _fill_temp(self, temp_fd: int, temp_name: str, record: OutputRecord, link: bool,
                   wanted_mode: int) -> os.stat_result | None:
        """Create `temp_name` with the record's contents; its stat when known."""
        store = self.store
        blob = store.blob_path(record.digest)
        if link:
            try:
                _verify_blob(blob, record.digest)
            except CorruptBlob:
                store.discard_blob(record.digest)
                raise
            try:
                os.link(blob, temp_name, dst_dir_fd=temp_fd)
                linked = os.stat(temp_name, dir_fd=temp_fd, follow_symlinks=False)
                if linked.st_mode & 0o7777 == 0o444:
                    return linked
                os.unlink(temp_name, dir_fd=temp_fd)     # the blob's mode was changed: hand out a copy
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
            return _copy_plain(blob, record.digest, temp_fd, temp_name, wanted_mode)
        if record.digest in store.verified and record.size > _SMALL:
            # hashed moments ago by this process: a kernel-side copy, no second hash
            return _copy_plain(blob, record.digest, temp_fd, temp_name, wanted_mode)
        try:
            return _copy_verified(blob, temp_fd, temp_name, record.digest, wanted_mode)
        except CorruptBlob:
            store.discard_blob(record.digest)
            raise


class _Folders:
    """Descriptors of the folders files are written into, opened (and made when missing) one part
    at a time with O_NOFOLLOW from their declared output's descriptor. Only the chain to the
    latest folder stays open, so a deep tree never holds more descriptors than its depth."""

    def __init__(self, bases: dict[str, int]):
        self.bases = bases            # declared output -> its descriptor (its parent's, for a file)
        self.chain: list[tuple[str, int]] = []

    def open_parent(self, path: str, root: str) -> int:
        """The folder holding `path`, under (or, for a file output, above) the declared output `root`."""
        return self.bases[root] if path == root else self.open(_parent(path), root)

    def open(self, path: str, root: str) -> int:
        if path == root:
            return self.bases[root]
        while self.chain and not (path == self.chain[-1][0] or path.startswith(self.chain[-1][0] + "/")):
            os.close(self.chain.pop()[1])
        if self.chain and self.chain[-1][0] == path:
            return self.chain[-1][1]
        start, fd = self.chain[-1] if self.chain else (root, self.bases[root])
        for name in path[len(start) + 1:].split("/"):
            start = f"{start}/{name}"
            try:
                os.mkdir(name, dir_fd=fd)
            except FileExistsError:
                pass
            fd = _open_folder(name, fd, start)
            self.chain.append((start, fd))
        return fd

    def close(self) -> None:
        while self.chain:
            os.close(self.chain.pop()[1])


class _TempPlaces:
    """Where a restored file is written before it is renamed into place: a folder on the
    destination's file system and outside every declared output. In order: the cache's tmp
    folder; `<workspace>/.nxrun-tmp`; `.nxrun-tmp` in the folder holding the declared output (a
    folder above it may be a link to another disk); the destination folder itself, only when
    none of those can be renamed from."""

    def __init__(self, store: LocalStore, root_fd: int, root_text: str, roots: list[str]):
        self.store = store
        self.root_fd = root_fd
        self.root_text = root_text
        self.roots = roots
        self.workspace_allowed = not _near_outputs(WORKSPACE_TEMP, roots)
        self.chosen: dict[tuple[int, int], int] = {}      # (device, holder) -> temp folder
        self.refused: set[tuple[int, int]] = set()        # (device, temp folder) a rename failed from
        self._common: dict[str, int | None] = {}
        self._beside: dict[int, int | None] = {}           # holder -> its .nxrun-tmp
        self._fds: list[int] = []

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()

    def place_for(self, parent_fd: int, holder: tuple[int, str]) -> tuple[int, str]:
        """(folder descriptor, fresh name) for a temp file to be renamed into `parent_fd`, which is
        at or under the declared output held by the folder `holder` (descriptor, path)."""
        device = os.fstat(parent_fd).st_dev
        key = (device, holder[0])
        fd = self.chosen.get(key, -1)
        if fd == -1 or (device, fd) in self.refused:
            fd = self._choose(device, holder)
            self.chosen[key] = fd
        if fd is None:
            return parent_fd, f".nxrun-{os.urandom(12).hex()}.tmp"
        return fd, f"{os.getpid()}-restore-{os.urandom(12).hex()}"

    def not_for(self, parent_fd: int, temp_fd: int) -> None:
        self.refused.add((os.fstat(parent_fd).st_dev, temp_fd))

    def _choose(self, device: int, holder: tuple[int, str]) -> int | None:
        for make in (self._cache_candidate, lambda: self._workspace_candidate(device),
                     lambda: self._beside_candidate(device, *holder)):
            fd = make()            # each folder is made only when the ones before it do not fit
            if fd is not None and (device, fd) not in self.refused and os.fstat(fd).st_dev == device:
                return fd
        return None

    def _cache_candidate(self) -> int | None:
        if "cache" not in self._common:
            self._common["cache"] = None
            inside = os.path.relpath(self.store.tmp_dir, self.root_text).replace(os.sep, "/")
            if not inside.startswith("../") and _near_outputs(inside, self.roots):
                return None                   # a cache kept inside a declared output
            try:
                self.store.tmp_dir.mkdir(parents=True, exist_ok=True)
                self._common["cache"] = self._own(os.open(self.store.tmp_dir, _DIR))
            except OSError:
                pass
        return self._common["cache"]

    def _workspace_candidate(self, device: int) -> int | None:
        if "workspace" not in self._common:
            if os.fstat(self.root_fd).st_dev != device:
                return None
            fd = _make_temp_folder(self.root_fd) if self.workspace_allowed else None
            self._common["workspace"] = None if fd is None else self._own(fd)
        return self._common["workspace"]

    def _beside_candidate(self, device: int, holder_fd: int, holder_path: str) -> int | None:
        if not holder_path:
            return None                   # the workspace's own temp folder, tried already
        if holder_fd not in self._beside:
            if os.fstat(holder_fd).st_dev != device:
                return None
            fd = None
            if not _near_outputs(f"{holder_path}/{WORKSPACE_TEMP}", self.roots):
                fd = _make_temp_folder(holder_fd)
            self._beside[holder_fd] = None if fd is None else self._own(fd)
        return self._beside[holder_fd]

    def _own(self, fd: int) -> int:
        self._fds.append(fd)
        return fd


def _near_outputs(folder: str, roots: list[str]) -> bool:
    """Whether `folder` is, holds or lies in a declared output."""
    return any(r == folder or r.startswith(folder + "/") or folder.startswith(r + "/") for r in roots)


def _make_temp_folder(fd: int) -> int | None:
    try:
        os.mkdir(WORKSPACE_TEMP, 0o700, dir_fd=fd)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        return os.open(WORKSPACE_TEMP, _DIR_NOFOLLOW, dir_fd=fd)
    except OSError:
        return None


# ---------------------------------------------------------------------- small helpers
def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _open_folder(name: str, dir_fd: int, path: str) -> int:
    try:
        return os.open(name, _DIR_NOFOLLOW, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeEntry(f"'{path}' became a link or a file while its outputs were restored (another "
                              "process is writing there)") from None
        raise


def _remove_at(dir_fd: int, name: str, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        _rmtree_at(dir_fd, name)
    else:
        os.unlink(name, dir_fd=dir_fd)


def _rmtree_at(dir_fd: int, name: str, missing_ok: bool = False) -> None:
    """Remove a folder and what it holds; the descriptor-based rmtree never follows a link."""
    import shutil  # here, not at the top: a run with nothing to remove never needs it

    try:
        shutil.rmtree(name, dir_fd=dir_fd)
    except FileNotFoundError:
        if not missing_ok:
            raise


def _unlink_quietly(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def _open_blob(blob: Path | str, digest: str):
    try:
        return open(blob, "rb", buffering=0)
    except FileNotFoundError:
        raise CorruptBlob(digest) from None


def _create_temp(temp_fd: int, temp_name: str) -> int:
    return os.open(temp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=temp_fd)


def _copy_verified(blob: Path, temp_fd: int, temp_name: str, digest: str, mode: int) -> os.stat_result:
    """Copy a blob to a new temp file (given `mode`), hashing what is read; raise CorruptBlob on a
    mismatch. Small blobs (nearly all outputs) take one read and one write. Returns the new
    file's stat (a rename keeps what the stat cache keys on)."""
    global _reflink_works
    hasher = xxhash.xxh3_128()
    with _open_blob(blob, digest) as src:
        size = os.fstat(src.fileno()).st_size
        with open(_create_temp(temp_fd, temp_name), "wb", buffering=0) as dst:
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
        os.unlink(temp_name, dir_fd=temp_fd)
        raise CorruptBlob(digest)
    return written


def _copy_plain(blob: Path, digest: str, temp_fd: int, temp_name: str, mode: int) -> os.stat_result:
    """Copy a blob already verified by this process to a new temp file, in the kernel."""
    with _open_blob(blob, digest) as src:
        size = os.fstat(src.fileno()).st_size
        with open(_create_temp(temp_fd, temp_name), "wb", buffering=0) as dst:
            offset = 0
            try:
                while offset < size:
                    sent = os.sendfile(dst.fileno(), src.fileno(), offset, size - offset)
                    if sent == 0:
                        break
                    offset += sent
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
            if offset < size:
                src.seek(offset)
                hash_rest(src, xxhash.xxh3_128(), lambda chunk: write_all(dst, chunk))
            os.fchmod(dst.fileno(), mode)
            return os.fstat(dst.fileno())


def _verify_blob(blob: Path, digest: str) -> None:
    try:
        actual = digest_file(blob)
    except FileNotFoundError:
        raise CorruptBlob(digest) from None
    if actual != digest:
        raise CorruptBlob(digest)
