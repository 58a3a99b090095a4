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
- A file that does not exist yet appears whole under its name and nowhere else: a hardlink to
  its blob, or an unnamed file (O_TMPFILE) linked in once complete. A file written over an
  existing one goes to a temp file outside every declared output first (the cache's tmp folder
  when it is on the destination's file system, else a `.nxrun-tmp` folder at the workspace root
  or beside the declared output, which globs never see; beside the file only where none of those
  shares its file system) and is renamed into place. So a reader never sees a half-written file,
  a kill leaves no temp file among the outputs, and an existing file is never written in place:
  with `restore = "hardlink"` a blob is never written through its link.
- A file already identical is left alone (size, mode and the stat cache: no read on a no-op run).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
from pathlib import Path

import xxhash

from ..hashing import StatCache, digest_handle, hash_rest
from . import CacheEntry, CorruptBlob, OutputRecord, UnsafeEntry
from .local import LocalStore, open_blob, write_all
from .safety import EntryLayout, root_of, check_entry

_FICLONE = 0x40049409
_DIR = os.O_RDONLY | os.O_DIRECTORY
_DIR_NOFOLLOW = _DIR | os.O_NOFOLLOW
WORKSPACE_TEMP = ".nxrun-tmp"     # restore's temp folder when the cache is on another file system

_reflink_works: bool | None = None   # learnt from the first attempt, so copies stop paying for it
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
_tmpfile_works = bool(_O_TMPFILE)     # unnamed new files (Linux); off after the first refusal
_SMALL = 8 << 20


def restore_entry(entry: CacheEntry, store: LocalStore, root: Path, declared_outputs: list[str],
                  stat_cache: StatCache, mode: str = "auto", origin: str = "local") -> int:
    """Write the entry's outputs under `root`; returns how many files and links were written.

    `origin` "remote" refuses links in the folders above the declared outputs (see the module
    docstring). Raises UnsafeEntry before touching anything, or CorruptBlob (the blob is discarded
    and the caller treats the entry as a miss)."""
    layout = check_entry(entry, declared_outputs)
    root_text = str(root)
    if _files_in_place(layout, root_text, stat_cache, mode):
        return 0
    restore = _Restore(layout, store, root_text, stat_cache, mode, follow_links_above=origin != "remote")
    try:
        return restore.run()
    finally:
        restore.close()


def _files_in_place(layout: EntryLayout, root_text: str, stat_cache: StatCache, mode: str) -> bool:
    """The no-op hit of the commonest entry, every declared output one file: each is already
    there as the entry has it. Only reads (an lstat each), so it needs no descriptors: when
    anything differs the full restore below does the work."""
    records = layout.records
    if len(records) != len(layout.roots):
        return False
    for root in layout.roots:
        record = records.get(root)
        if record is None or record.kind != "file":
            return False
        try:
            st = os.lstat(f"{root_text}/{root}")
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or not _unchanged(root_text, root, record, st, stat_cache, mode):
            return False
    return True


def _wanted_mode(record: OutputRecord, mode: str) -> int:
    """Read-only with `restore = "hardlink"`: a link shares its mode with the blob (0o444), and a
    file that cannot share it (executable, or not readable by all) is a read-only copy."""
    return record.mode & (0o555 if mode == "hardlink" else 0o777)


def _unchanged(root_text: str, path: str, record: OutputRecord, st: os.stat_result | None,
               stat_cache: StatCache, mode: str) -> bool:
    """Whether the file on disk (`st`, its lstat) is already what the record says: unchanged since
    we last saw it (the stat cache, no read), or freshly written and identical when hashed:
    reading is cheaper than rewriting, and keeps the file's inode."""
    # all twelve bits: a setuid, setgid or sticky bit on disk that the entry lacks is not "as restored"
    if st is None or (st.st_mode & 0o7777) != _wanted_mode(record, mode) or st.st_size != record.size:
        return False
    destination = f"{root_text}/{path}"
    known = stat_cache.lookup(destination, st)
    return (known or stat_cache.digest(destination, st)) == record.digest


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
        self.temps: _TempPlaces | None = None          # made on the first write: a no-op never needs it
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
        if self.temps is not None:
            self.temps.close()

    def _temp_places(self) -> _TempPlaces:
        if self.temps is None:
            self.temps = _TempPlaces(self.store, self.root_fd, self.root_text, self.layout.roots)
        return self.temps

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
            if record is None or _folder_mode_as_recorded(os.fstat(root_fd), record):
                self.in_place.add(root)
            self._sweep(root_fd, root)
        # 3. folders and files, then links: only those not already as the entry has them
        to_write = [(path, record) for path, record in layout.records.items()
                    if path not in self.in_place and not (
                        record.kind == "file" and _unchanged(self.root_text, path, record, self.found_files.get(path),
                                                             self.stat_cache, self.mode))]
        if not to_write:
            return 0
        written = 0
        links = sorted((p, r) for p, r in to_write if r.kind == "symlink")
        others = sorted(((p, r) for p, r in to_write if r.kind != "symlink"), key=lambda item: item[0].split("/"))
        folders = _Folders(bases)
        dir_modes: list[tuple[str, str, int]] = []     # applied last: a read-only folder gets its files first
        try:
            for path, record in others:
                root = root_of(path, layout.roots)
                if record.kind == "dir":
                    folders.open(path, root)
                    dir_modes.append((path, root, record.mode & 0o777))
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
            for path, root, wanted in reversed(dir_modes):
                fd = folders.open(path, root)
                if os.fstat(fd).st_mode & 0o7777 != wanted:
                    os.fchmod(fd, wanted)       # through the descriptor opened with O_NOFOLLOW
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
                    record = records.get(rel)   # a folder with a record (an empty one) costs a stat
                    if record is None or _folder_mode_as_recorded(item.stat(follow_symlinks=False), record):
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
    def _write_file(self, parent_fd: int, holder: tuple[int, str], path: str, record: OutputRecord) -> int:
        name = path.rsplit("/", 1)[-1]
        wanted_mode = _wanted_mode(record, self.mode)
        link = self.mode == "hardlink" and wanted_mode == 0o444
        st = None
        if path not in self.found_files:       # nothing there: the file appears under its name, whole
            st = self._create(parent_fd, name, record, link, wanted_mode)
        if st is None:
            st = self._replace(parent_fd, holder, name, record, link, wanted_mode)
        self.stat_cache.remember(f"{self.root_text}/{path}", st, record.digest)
        return 1

    def _create(self, parent_fd: int, name: str, record: OutputRecord, link: bool,
                wanted_mode: int) -> os.stat_result | None:
        """Make a file that does not exist yet without any temp name: a hardlink to the blob, or
        an unnamed file (O_TMPFILE) linked in once it is complete. None when that cannot be done
        here (the name appeared meanwhile, or the file system has no O_TMPFILE)."""
        global _tmpfile_works
        if link:
            try:
                st = self._link_hashed(record, parent_fd, name)
            except FileExistsError:
                return None
            if st is not None:
                return st
        if not _tmpfile_works:
            return None
        try:
            fd = os.open(".", _O_TMPFILE | os.O_WRONLY, 0o600, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno not in (errno.EISDIR, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
                raise                            # a full or read-only disk, say: the caller names it
            _tmpfile_works = False
            return None
        try:
            self._copy_into(fd, record, wanted_mode)
            try:
                os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=parent_fd, follow_symlinks=True)
            except FileExistsError:
                return None
            except OSError:                      # no /proc: name temp files from now on
                _tmpfile_works = False
                return None
            return os.fstat(fd)
        finally:
            os.close(fd)

    def _replace(self, parent_fd: int, holder: tuple[int, str], name: str, record: OutputRecord, link: bool,
                 wanted_mode: int) -> os.stat_result:
        """Write the file to a temp file outside the declared outputs and rename it over `name`."""
        temps = self._temp_places()
        for _attempt in range(4):
            temp_fd, temp_name = temps.place_for(parent_fd, holder)
            renamed = False
            try:
                try:
                    self._fill_temp(temp_fd, temp_name, record, link, wanted_mode)
                except FileNotFoundError:
                    if temp_fd == parent_fd:
                        raise
                    temps.forget(temp_fd)            # the temp folder went away: make or pick another
                    continue
                try:
                    os.replace(temp_name, name, src_dir_fd=temp_fd, dst_dir_fd=parent_fd)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    temps.not_for(parent_fd, temp_fd)   # one file system, two mounts: next place
                    continue
                renamed = True
            finally:
                # a link's temp name stays when the destination was already that inode (a rename
                # between two links of one file does nothing)
                if not renamed or link:
                    _unlink_quietly(temp_name, temp_fd)
            # the stat after the rename: a rename may change the inode's ctime
            return os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        raise OSError(errno.EXDEV, f"no temp folder can be renamed into the folder of {self.root_text}/{name}")

    def _fill_temp(self, temp_fd: int, temp_name: str, record: OutputRecord, link: bool, wanted_mode: int) -> None:
        if link and self._link_hashed(record, temp_fd, temp_name) is not None:
            return
        fd = _create_temp(temp_fd, temp_name)
        try:
            self._copy_into(fd, record, wanted_mode)
        finally:
            os.close(fd)

    def _link_hashed(self, record: OutputRecord, dir_fd: int, name: str) -> os.stat_result | None:
        """Hardlink the record's blob as `name` after hashing it (a link shares its inode, so it must
        be right now): its stat, or None when it cannot be linked or is not read-only. The inode
        linked must be the one hashed: a blob swapped in between is a corrupt blob, never handed out."""
        digest = record.digest
        blob = self.store.blob_path(digest)
        src = open_blob(blob, digest)
        try:
            hashed = os.fstat(src)
            with open(src, "rb", buffering=0, closefd=False) as handle:
                right = digest_handle(handle) == digest
            if not right:
                self.store.discard_blob(digest)
                raise CorruptBlob(digest)
            st = _link_read_only(blob, dir_fd, name)
        finally:
            os.close(src)
        if st is not None and (st.st_dev, st.st_ino) != (hashed.st_dev, hashed.st_ino):
            os.unlink(name, dir_fd=dir_fd)
            raise CorruptBlob(digest)
        return st

    def _copy_into(self, fd: int, record: OutputRecord, mode: int) -> None:
        """Copy the record's blob into the new file `fd`, hashing what it copies unless this process
        stored the blob itself (a copy after a failed hardlink hashes too: the link's check was of
        another open of the path)."""
        store = self.store
        blob = store.blob_path(record.digest)
        if record.digest in store.verified and record.size > _SMALL:
            # hashed moments ago by this process: a kernel-side copy, no second hash
            _copy_plain(blob, record.digest, fd, mode)
            return
        try:
            _copy_verified(blob, fd, record.digest, mode)
        except CorruptBlob:
            store.discard_blob(record.digest)
            raise


def _link_read_only(blob: Path, dir_fd: int, name: str) -> os.stat_result | None:
    """Hardlink a blob as `name`: its stat, or None when it cannot be linked (another file
    system, a link limit) or its mode is no longer read-only (then nothing is left behind)."""
    try:
        os.link(blob, name, dst_dir_fd=dir_fd, follow_symlinks=False)   # a link put there is not followed
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            return None
        raise
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISREG(st.st_mode) and st.st_mode & 0o7777 == 0o444:
        return st
    os.unlink(name, dir_fd=dir_fd)      # someone made the blob writable: hand out a copy instead
    return None


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
            inside = os.path.relpath(self.store.tmp_dir, self.root_text).replace(os.sep, "/")
            if inside != ".." and not inside.startswith("../") and _near_outputs(inside, self.roots):
                self._common["cache"] = None      # a cache kept inside a declared output
            else:
                self._common["cache"] = _cache_temp_folder(self.store)
        return self._common["cache"]

    def forget(self, temp_fd: int) -> None:
        """The temp folder `temp_fd` is gone (a cache cleared under us): stop using it."""
        if self._common.get("cache") == temp_fd:
            _forget_cache_temp_folder(self.store)
        self._common = {k: v for k, v in self._common.items() if v != temp_fd}
        self._beside = {k: v for k, v in self._beside.items() if v != temp_fd}
        self.chosen = {k: v for k, v in self.chosen.items() if v != temp_fd}

    def _workspace_candidate(self, device: int) -> int | None:
        if "workspace" not in self._common:
            if os.fstat(self.root_fd).st_dev != device:
                return None
            fd = None if _near_outputs(WORKSPACE_TEMP, self.roots) else _make_temp_folder(self.root_fd)
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


_cache_temp_lock = threading.Lock()
_cache_temp_folders: dict[str, int] = {}   # a cache's tmp folder -> a descriptor kept for the process


def _cache_temp_folder(store: LocalStore) -> int | None:
    """A descriptor of the cache's tmp folder, opened once per process (made when missing)."""
    key = str(store.tmp_dir)
    with _cache_temp_lock:
        fd = _cache_temp_folders.get(key)
        if fd is None:
            try:
                store.tmp_dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(key, _DIR)
            except OSError:
                return None
            _cache_temp_folders[key] = fd
        return fd


def _forget_cache_temp_folder(store: LocalStore) -> None:
    # not closed: another thread may be using it; a later call opens the folder anew
    with _cache_temp_lock:
        _cache_temp_folders.pop(str(store.tmp_dir), None)


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
def _folder_mode_as_recorded(st: os.stat_result, record: OutputRecord) -> bool:
    return st.st_mode & 0o7777 == record.mode & 0o777


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
    return open(open_blob(blob, digest), "rb", buffering=0)


def _create_temp(temp_fd: int, temp_name: str) -> int:
    return os.open(temp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=temp_fd)


def _copy_verified(blob: Path, fd: int, digest: str, mode: int) -> None:
    """Copy a blob into the new file `fd` (then given `mode`), hashing what is read; raise
    CorruptBlob on a mismatch. Small blobs (nearly all outputs) take one read and one write on plain
    descriptors, hashed before anything is written: the file objects' stat and seek calls were a
    tenth of a small file's restore."""
    global _reflink_works
    src = open_blob(blob, digest)
    try:
        size = os.fstat(src).st_size
        data = _read_upto(src, size) if size <= _SMALL else None
    finally:
        os.close(src)
    if data is not None:
        if xxhash.xxh3_128_hexdigest(data) != digest:
            raise CorruptBlob(digest)
        write_all(fd, memoryview(data))
        os.fchmod(fd, mode)
        return
    hasher = xxhash.xxh3_128()
    with _open_blob(blob, digest) as src, open(fd, "wb", buffering=0, closefd=False) as dst:
        cloned = False
        if _reflink_works is not False:
            try:
                fcntl.ioctl(fd, _FICLONE, src.fileno())
                cloned = _reflink_works = True
            except OSError:
                _reflink_works = False
        hash_rest(src, hasher, None if cloned else lambda chunk: write_all(dst, chunk))
    if hasher.hexdigest() != digest:
        raise CorruptBlob(digest)
    os.fchmod(fd, mode)


def _read_upto(fd: int, size: int) -> bytes:
    """Up to `size` bytes from `fd` (fewer only at its end: the hash then fails)."""
    data = os.read(fd, size) if size else b""
    while len(data) < size:
        more = os.read(fd, size - len(data))
        if not more:
            break
        data += more
    return data


def _copy_plain(blob: Path, digest: str, fd: int, mode: int) -> None:
    """Copy a blob already verified by this process into the new file `fd`, in the kernel."""
    with _open_blob(blob, digest) as src:
        size = os.fstat(src.fileno()).st_size
        offset = 0
        try:
            while offset < size:
                sent = os.sendfile(fd, src.fileno(), offset, size - offset)
                if sent == 0:
                    break
                offset += sent
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
        if offset < size:
            src.seek(offset)
            with open(fd, "wb", buffering=0, closefd=False) as dst:
                hash_rest(src, xxhash.xxh3_128(), lambda chunk: write_all(dst, chunk))
    os.fchmod(fd, mode)


