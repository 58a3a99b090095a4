"""What a cache entry must be before any of its files is written: the manifest-only half of the
restore-safety rules (DESIGN.md §4); restore.py enforces the file-system half while it writes.

`check_entry` reads the manifest alone, never the disk, so it costs the same for a local hit, a
remote manifest before its blobs are fetched, and a new entry before it is stored. It refuses:
- a path that is not relative, has a '.', '..' or empty part, or is not under a declared output;
- two records at one path (a file and a folder, say), or a record beneath a file or a link of the
  same entry (restore would have to write through that link);
- a link whose target, followed through the links of the same entry (earlier or later ones, and
  chains of them) and through the folders above the declared outputs, does not end under a
  declared output, is absolute, passes through a file or loops;
- setuid, setgid and sticky bits, unknown kinds and malformed fields;
- a path or target that is not valid UTF-8, or longer than the file system takes (a name over
  255 bytes, a path or target over 4095), and a link that takes more than 1024 steps to follow:
  restore could only fail half-way on them, and an entry must not make its check slow.

After a restore every declared output holds exactly the entry's records, so the entry itself says
what each path under a declared output will be; only the folders above the declared outputs come
from the disk, and restore checks those (`EntryLayout.climbing_links`).
"""

from __future__ import annotations

import re
import stat

from .. import records as _records
from . import CacheEntry, OutputRecord, UnsafeEntry

_DIGEST = re.compile("[0-9a-f]{32}")
_KINDS = ("file", "symlink", "dir")
_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX
_MAX_LINK_HOPS = 40          # as the kernel's limit on links followed in one path lookup
_NAME_MAX = 255              # bytes in one name, and in a whole path or link target (PATH_MAX - 1)
_PATH_MAX = 4095
_MAX_LINK_STEPS = 1024       # parts walked to follow one link, its chain included: bounds check_entry's work


@_records.record
class EntryLayout:
    """What restore needs from a checked entry."""
    roots: list[str]                   # declared outputs not inside another one
    records: dict[str, OutputRecord]   # by path
    # paths that must be folders: dir records and every folder above a record, up to its root
    folders: set[str] = _records.default_factory(set)
    # links whose target passes above a declared output on its way back into one
    climbing_links: list[str] = _records.default_factory(list)


def is_plain_relative(path: object) -> bool:
    """A workspace-relative posix path without '.', '..' or empty parts (no '\\' or NUL either)."""
    if type(path) is not str or not path or "\\" in path or "\0" in path:
        return False
    wrapped = f"/{path}/"
    return path[0] != "/" and "//" not in wrapped and "/./" not in wrapped and "/../" not in wrapped


def output_roots(declared_outputs: list[str]) -> list[str]:
    """The declared outputs that are not inside another declared output."""
    ordered = sorted(set(declared_outputs), key=len)
    roots: list[str] = []
    for path in ordered:
        if not any(path.startswith(root + "/") for root in roots):
            roots.append(path)
    return sorted(roots)


def root_of(path: str, roots: list[str]) -> str | None:
    """The root (see output_roots) that `path` is at or under, or None."""
    for root in roots:
        if path == root or path.startswith(root + "/"):
            return root
    return None


def _above_a_root(path: str, roots: list[str]) -> bool:
    """The workspace root or a folder that holds a declared output."""
    return path == "" or any(root.startswith(path + "/") for root in roots)


def check_entry(entry: CacheEntry, declared_outputs: list[str]) -> EntryLayout:
    """Raise UnsafeEntry naming the task and the first offending record; else the entry's layout."""
    task = entry.task_id if isinstance(entry.task_id, str) else "?"
    if not isinstance(declared_outputs, list) or not all(is_plain_relative(p) for p in declared_outputs):
        raise UnsafeEntry(f"{task}: declared outputs {declared_outputs!r} must be relative paths inside the "
                          "workspace, without '.', '..' or empty parts")
    if not isinstance(entry.outputs, list):
        raise UnsafeEntry(f"{task}: the entry's outputs are not a list")
    roots = output_roots(declared_outputs)
    records: dict[str, OutputRecord] = {}
    root_by_path: dict[str, str] = {}
    for record in entry.outputs:
        path = _check_record(task, record)
        root = root_of(path, roots)
        if root is None:
            raise UnsafeEntry(f"{task}: entry path {path!r} is not under the task's declared outputs "
                              f"{declared_outputs}")
        if path in records:
            raise UnsafeEntry(f"{task}: entry path {path!r} appears twice (as {records[path].kind} and "
                              f"{record.kind})")
        records[path] = record
        root_by_path[path] = root
    layout = EntryLayout(roots=roots, records=records)
    folders = layout.folders
    for path, record in records.items():
        if record.kind == "dir":
            folders.add(path)
        root_length = len(root_by_path[path])
        cut = path.rfind("/")
        while cut >= root_length:
            parent = path[:cut]
            above = records.get(parent)
            if above is not None and above.kind != "dir":
                raise UnsafeEntry(f"{task}: entry path {path!r} lies beneath {parent!r}, which the same entry "
                                  f"makes a {'link' if above.kind == 'symlink' else 'file'}")
            if parent in folders and above is None:
                break   # reached from another record: the folders above it are checked already
            folders.add(parent)
            cut = path.rfind("/", 0, cut)
    for path, record in records.items():
        if record.kind == "symlink" and _resolve_link(task, path, record.target, records, roots):
            layout.climbing_links.append(path)
    return layout


def _check_record(task: str, record: object) -> str:
    if type(record) is not OutputRecord:
        raise UnsafeEntry(f"{task}: an output record is malformed")
    path = record.path
    if type(path) is not str or not path or path[0] == "/" or "\\" in path or "\0" in path:
        raise UnsafeEntry(f"{task}: entry path {path!r} is absolute or malformed")
    wrapped = f"/{path}/"
    if "//" in wrapped or "/./" in wrapped or "/../" in wrapped:
        raise UnsafeEntry(f"{task}: entry path {path!r} contains '..', '.' or an empty part")
    _check_length(task, "entry path", path)
    kind = record.kind
    if type(kind) is not str or kind not in _KINDS:
        raise UnsafeEntry(f"{task}: entry path {path!r} has unknown kind {kind!r}")
    mode = record.mode
    if type(mode) is not int or not 0 <= mode <= 0o7777:
        raise UnsafeEntry(f"{task}: entry path {path!r} has a malformed mode {mode!r}")
    if mode & _SPECIAL_BITS:
        raise UnsafeEntry(f"{task}: entry path {path!r} has mode {oct(mode)} "
                          "(setuid/setgid/sticky bits are never restored)")
    if kind == "file":
        digest = record.digest
        if type(digest) is not str or len(digest) != 32 or not _DIGEST.fullmatch(digest):
            raise UnsafeEntry(f"{task}: entry path {path!r} has a malformed blob digest")
        size = record.size
        if type(size) is not int or size < 0:
            raise UnsafeEntry(f"{task}: entry path {path!r} has a malformed size {size!r}")
    elif kind == "symlink":
        target = record.target
        if type(target) is not str or not target or target[0] == "/" or "\0" in target:
            raise UnsafeEntry(f"{task}: link {path!r} -> {target!r} is absolute, empty or malformed")
        _check_length(task, f"link {path!r} -> target", target)
    return path


def _check_length(task: str, what: str, text: str) -> None:
    """Refuse what the file system could not take: text that is not UTF-8, too long a name or path."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeEntry(f"{task}: {what} {text!r} is not valid UTF-8") from None
    if len(data) > _PATH_MAX or any(len(name) > _NAME_MAX for name in data.split(b"/")):
        raise UnsafeEntry(f"{task}: {what} {text[:80]!r}... is too long for the file system "
                          f"(over {_NAME_MAX} bytes in a name or {_PATH_MAX} in all)")


def _resolve_link(task: str, path: str, target: str, records: dict[str, OutputRecord],
                  roots: list[str]) -> bool:
    """Follow a link as the kernel will once the entry is restored: under a declared output the
    entry says what each path is (links are followed, chains too); above them the walk may only
    pass through folders that hold a declared output. Raise UnsafeEntry unless it ends under a
    declared output; True when it passed above one on the way."""
    def refuse(why: str) -> UnsafeEntry:
        return UnsafeEntry(f"{task}: link {path!r} -> {target!r} {why}")

    position = path.split("/")[:-1]
    pending = target.split("/")[::-1]
    climbed = False
    hops = 0
    steps = 0
    while pending:
        part = pending.pop()
        steps += 1
        if steps > _MAX_LINK_STEPS:
            raise refuse(f"is too long to follow (more than {_MAX_LINK_STEPS} parts, with the links it passes "
                         "through)")
        if part in ("", "."):
            continue
        if part == "..":
            if not position:
                raise refuse("leads out of the workspace")
            position.pop()
            here = "/".join(position)
            if root_of(here, roots) is None:
                climbed = True
            continue
        position.append(part)
        here = "/".join(position)
        if root_of(here, roots) is None:
            if not _above_a_root(here, roots):
                raise refuse(f"leads out of the task's declared outputs (through {here!r})")
            climbed = True
            continue
        record = records.get(here)
        if record is None or record.kind == "dir":
            continue
        if record.kind == "symlink":
            hops += 1
            if hops > _MAX_LINK_HOPS:
                raise refuse("is a loop of links")
            position.pop()
            pending.extend(record.target.split("/")[::-1])
        elif pending:
            raise refuse(f"passes through the file {here!r}")
    final = "/".join(position)
    if root_of(final, roots) is None:
        raise refuse(f"leads out of the task's declared outputs (to {repr(final) if final else 'the workspace root'})")
    return climbed
