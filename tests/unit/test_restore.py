"""nxrun.store.restore.restore_entry on real folders: what it writes, what it removes, and that it
never writes through a link, never leaves a temp file among the outputs and never writes into an
existing file."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from nxrun.hashing import FileIndex, StatCache
from nxrun.store import CacheEntry, OutputRecord, UnsafeEntry
from nxrun.store import restore as restore_module
from nxrun.store.local import LocalStore
from nxrun.store.restore import restore_entry


@pytest.fixture
def place(tmp_path):
    """A workspace `ws` (sources, an `out` folder) beside an `outside` folder, and a cache."""
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "main.c").write_text("int main;\n")
    (ws / "nxrun.toml").write_text("[workspace]\n")
    (ws / "out").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep\n")
    return ws, outside, LocalStore(tmp_path / "cache")


def blob(store: LocalStore, data: bytes) -> tuple[str, int]:
    return store.put_bytes(data)


def file(store, path: str, data: bytes = b"data\n", mode: int = 0o644) -> OutputRecord:
    digest, size = blob(store, data)
    return OutputRecord(path, "file", digest=digest, size=size, mode=mode)


def link(path: str, target: str) -> OutputRecord:
    return OutputRecord(path, "symlink", target=target, mode=0o777)


def entry(*records: OutputRecord, declared=("out/data",)) -> CacheEntry:
    return CacheEntry("e" * 32, "p:t", list(records), list(declared), "d" * 32, None)


def restore(ws: Path, store, *records, declared=("out/data",), mode="auto", origin="local",
            stat_cache: StatCache | None = None) -> int:
    return restore_entry(entry(*records, declared=declared), store, ws, list(declared), stat_cache or StatCache(),
                         mode=mode, origin=origin)


def listing(folder: Path) -> dict[str, tuple]:
    found = {}
    for current, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(current) / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                found[rel] = ("dir",)
            else:
                found[rel] = ("file", path.read_bytes(), path.stat().st_mode & 0o777)
    return found


def test_restore_writes_files_links_and_empty_folders(place):
    ws, _, store = place
    written = restore(ws, store, file(store, "out/data/a.txt", b"a\n"), file(store, "out/data/bin/run", b"#!\n", 0o755),
                      link("out/data/latest", "bin/run"), OutputRecord("out/data/empty", "dir", mode=0o755))
    assert written == 3
    assert listing(ws / "out") == {
        "data": ("dir",), "data/a.txt": ("file", b"a\n", 0o644), "data/bin": ("dir",),
        "data/bin/run": ("file", b"#!\n", 0o755), "data/latest": ("link", "bin/run"), "data/empty": ("dir",)}


def test_second_restore_of_identical_outputs_writes_nothing(place):
    ws, _, store = place
    records = [file(store, "out/data/a.txt"), link("out/data/l", "a.txt")]
    stat_cache = StatCache()
    restore(ws, store, *records, stat_cache=stat_cache)
    inode = (ws / "out/data/a.txt").stat().st_ino
    assert restore(ws, store, *records, stat_cache=stat_cache) == 0
    assert (ws / "out/data/a.txt").stat().st_ino == inode


def test_stale_things_in_an_output_folder_are_removed_without_following_links(place):
    ws, outside, store = place
    data = ws / "out/data"
    (data / "old").mkdir(parents=True)
    (data / "old" / "x").write_text("stale\n")
    (data / "stale.txt").write_text("stale\n")
    (data / "to-outside").symlink_to(outside)            # a stale link to a folder outside
    (data / "to-outside-file").symlink_to(outside / "keep.txt")
    restore(ws, store, file(store, "out/data/a.txt"))
    assert listing(data) == {"a.txt": ("file", b"data\n", 0o644)}
    assert listing(outside) == {"keep.txt": ("file", b"keep\n", 0o644)}


def test_a_link_where_the_entry_has_a_folder_is_replaced_never_written_through(place):
    ws, outside, store = place
    (ws / "out/data").mkdir()
    (ws / "out/data/sub").symlink_to(outside)
    restore(ws, store, file(store, "out/data/sub/keep.txt", b"evil\n"))
    assert (ws / "out/data/sub").is_dir() and not (ws / "out/data/sub").is_symlink()
    assert (ws / "out/data/sub/keep.txt").read_bytes() == b"evil\n"
    assert listing(outside) == {"keep.txt": ("file", b"keep\n", 0o644)}


@pytest.mark.parametrize("target", ["outside", "src"])
def test_a_declared_output_that_is_a_link_becomes_a_real_folder(place, target):
    ws, outside, store = place
    (ws / "out/data").symlink_to(outside if target == "outside" else ws / "src")
    before = listing(outside), listing(ws / "src")
    restore(ws, store, file(store, "out/data/main.c", b"evil\n"), file(store, "out/data/keep.txt", b"evil\n"))
    assert not (ws / "out/data").is_symlink()
    assert listing(ws / "out/data") == {"main.c": ("file", b"evil\n", 0o644), "keep.txt": ("file", b"evil\n", 0o644)}
    assert (listing(outside), listing(ws / "src")) == before


def test_a_declared_output_the_entry_does_not_have_is_removed_as_a_link_only(place):
    ws, outside, store = place
    (ws / "out/data").symlink_to(outside)
    restore(ws, store, file(store, "out/other/x"), declared=("out/data", "out/other"))
    assert not os.path.lexists(ws / "out/data")
    assert listing(outside) == {"keep.txt": ("file", b"keep\n", 0o644)}


def test_a_folder_above_the_outputs_may_be_a_link_for_local_entries_only(place):
    ws, outside, store = place
    (ws / "out").rmdir()
    (ws / "out").symlink_to(outside)                    # the user put `out` on another disk
    records = [file(store, "out/data/a.txt")]
    with pytest.raises(UnsafeEntry, match="'out', a folder above a declared output, is a link"):
        restore(ws, store, *records, origin="remote")
    assert listing(outside) == {"keep.txt": ("file", b"keep\n", 0o644)}
    restore(ws, store, *records, origin="local")
    assert (outside / "data" / "a.txt").read_bytes() == b"data\n"


def test_a_climbing_link_is_refused_when_a_folder_above_the_outputs_is_a_link(place):
    ws, outside, store = place
    (ws / "out").rmdir()
    (ws / "out").mkdir()
    (ws / "elsewhere").mkdir()
    (ws / "out" / "b").symlink_to(ws / "elsewhere")
    records = [link("out/a/l", "../b/c/x")]
    declared = ("out/a", "out/b/c")
    with pytest.raises(UnsafeEntry, match="climbs above its declared output"):
        restore(ws, store, *records, declared=declared)
    assert not os.path.lexists(ws / "out/a")
    restore(ws, store, link("out/a/l", "../b/c/x"), declared=("out/a", "out/b"))   # no link above: fine
    assert os.readlink(ws / "out/a/l") == "../b/c/x" and not os.path.lexists(ws / "out/b")


def test_refused_entry_writes_nothing(place):
    ws, outside, store = place
    (ws / "out/data").mkdir()
    (ws / "out/data/old.txt").write_text("old\n")
    records = [file(store, "out/data/a.txt"), link("out/data/l0", ".."), link("out/data/l1", "l0/.."),
               link("out/data/l2", "l1/.."), file(store, "out/data/l2/x")]
    before = listing(ws.parent)
    with pytest.raises(UnsafeEntry):
        restore(ws, store, *records)
    assert listing(ws.parent) == before


@pytest.mark.parametrize("tmpfile", [True, False], ids=["unnamed new files", "no O_TMPFILE"])
def test_temp_files_are_never_inside_the_declared_outputs(place, monkeypatch, tmpfile):
    ws, _, store = place
    folders = []
    fill = restore_module._Restore._fill_temp

    def watch(self, temp_fd, temp_name, *args):
        folders.append(os.readlink(f"/proc/self/fd/{temp_fd}"))
        return fill(self, temp_fd, temp_name, *args)

    monkeypatch.setattr(restore_module._Restore, "_fill_temp", watch)
    monkeypatch.setattr(restore_module, "_tmpfile_works", tmpfile and restore_module._tmpfile_works)
    for mode in ("auto", "copy", "hardlink"):      # new files, then each time over changed ones
        restore(ws, store, file(store, "out/data/a.txt", mode.encode()), file(store, "out/data/sub/b", mode.encode() * 2, 0o755),
                mode=mode)
    # with O_TMPFILE a new file never has a temp name; a file written over an old one always does
    assert len(folders) == (4 if restore_module._tmpfile_works else 6)
    data = str((ws / "out/data").resolve())
    assert not [f for f in folders if f == data or f.startswith(data + "/")]
    assert (ws / "out/data/a.txt").read_bytes() == b"hardlink"
    assert os.listdir(store.tmp_dir) == [] and sorted(os.listdir(ws / "out/data")) == ["a.txt", "sub"]


def test_an_existing_file_is_replaced_never_written_in_place(place):
    ws, outside, store = place
    (ws / "out/data").mkdir()
    (ws / "out/data/a.txt").write_text("old\n")
    os.link(ws / "out/data/a.txt", outside / "same-inode")   # as a hardlinked blob would be
    restore(ws, store, file(store, "out/data/a.txt", b"new\n"))
    assert (ws / "out/data/a.txt").read_bytes() == b"new\n"
    assert (outside / "same-inode").read_bytes() == b"old\n"


def test_hardlink_mode_links_plain_files_copies_executables_read_only_and_a_rerun_is_a_no_op(place):
    ws, _, store = place
    records = [file(store, "out/data/a.txt", b"a\n"), file(store, "out/data/run.sh", b"#!/bin/sh\n", 0o755),
               file(store, "out/data/secret", b"s\n", 0o600)]
    stat_cache = StatCache()
    assert restore(ws, store, *records, mode="hardlink", stat_cache=stat_cache) == 3
    data = ws / "out/data"
    assert (data / "a.txt").stat().st_ino == store.blob_path(records[0].digest).stat().st_ino
    assert (data / "run.sh").stat().st_mode & 0o777 == 0o555          # still executable, read-only
    assert (data / "secret").stat().st_mode & 0o777 == 0o400          # not readable by others
    assert (data / "run.sh").stat().st_ino != store.blob_path(records[1].digest).stat().st_ino
    assert restore(ws, store, *records, mode="hardlink", stat_cache=stat_cache) == 0
    assert sorted(os.listdir(data)) == ["a.txt", "run.sh", "secret"]
    assert os.listdir(store.tmp_dir) == []


def test_a_file_where_a_folder_above_the_outputs_should_be_is_refused(place):
    ws, _, store = place
    (ws / "out").rmdir()
    (ws / "out").write_text("a file\n")
    with pytest.raises(UnsafeEntry, match="'out' is a file"):
        restore(ws, store, file(store, "out/data/a.txt"))
    assert (ws / "out").read_text() == "a file\n"


def test_missing_folders_above_the_outputs_are_made(place):
    ws, _, store = place
    restore(ws, store, file(store, "build/gemm/k1/a.cubin"), declared=("build/gemm/k1",))
    assert (ws / "build/gemm/k1/a.cubin").read_bytes() == b"data\n"


@pytest.fixture
def other_file_system(tmp_path):
    """A workspace on another file system than the cache (tmpfs /dev/shm), or a skip."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK) or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a writable /dev/shm on another file system than the temp folder")
    ws = Path(tempfile.mkdtemp(dir=shm, prefix="nxrun-ws-"))
    yield ws
    shutil.rmtree(ws)


def test_with_the_cache_on_another_file_system_temp_files_stay_out_of_outputs_and_globs(tmp_path, other_file_system,
                                                                                          monkeypatch):
    ws, store = other_file_system, LocalStore(tmp_path / "cache")
    folders = []
    fill = restore_module._Restore._fill_temp

    def watch(self, temp_fd, temp_name, *args):
        folders.append(os.readlink(f"/proc/self/fd/{temp_fd}"))
        return fill(self, temp_fd, temp_name, *args)

    monkeypatch.setattr(restore_module._Restore, "_fill_temp", watch)
    for data, mode in ((b"one\n", "auto"), (b"two\n", "auto"), (b"three\n", "hardlink")):
        restore(ws, store, file(store, "out/data/a.txt", data), mode=mode)
    assert folders == [str(ws / ".nxrun-tmp")] * 2
    assert (ws / "out/data/a.txt").read_bytes() == b"three\n"
    assert (ws / "out/data/a.txt").stat().st_mode & 0o777 == 0o444      # a read-only copy: no link across
    assert os.listdir(ws / ".nxrun-tmp") == []
    (ws / ".nxrun-tmp" / "4242-restore-left-by-a-kill").write_text("x")
    (ws / "src.txt").write_text("source\n")
    index = FileIndex(ws)
    index.set_excluded_outputs(["out/data"])
    assert index.files_under("") == ["src.txt"]


@pytest.mark.parametrize("declared", [("out/data",), ("out/data/a",)], ids=["in a folder", "a file output"])
def test_a_file_with_setuid_setgid_or_sticky_bits_on_disk_is_not_taken_as_already_restored(place, declared):
    ws, _, store = place
    path = ws / declared[0] / "a" if declared == ("out/data",) else ws / declared[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"#!\n")
    os.chmod(path, 0o6755)
    stat_cache = StatCache()
    assert restore(ws, store, file(store, "out/data/a", b"#!\n", 0o755), declared=declared,
                   stat_cache=stat_cache) == 1
    assert path.stat().st_mode & 0o7777 == 0o755
    assert restore(ws, store, file(store, "out/data/a", b"#!\n", 0o755), declared=declared,
                   stat_cache=stat_cache) == 0


def test_a_folder_is_restored_with_the_mode_its_record_has_new_or_already_there(place):
    ws, _, store = place
    records = [OutputRecord("out/data", "dir", mode=0o750), OutputRecord("out/data/private", "dir", mode=0o700),
               OutputRecord("out/data/shared", "dir", mode=0o777)]
    stat_cache = StatCache()
    restore(ws, store, *records, stat_cache=stat_cache)
    modes = {p: (ws / p).stat().st_mode & 0o7777 for p in ("out/data", "out/data/private", "out/data/shared")}
    assert modes == {"out/data": 0o750, "out/data/private": 0o700, "out/data/shared": 0o777}
    os.chmod(ws / "out/data/private", 0o755)        # a folder already there with another mode
    os.chmod(ws / "out/data", 0o2755)
    restore(ws, store, *records, stat_cache=stat_cache)
    assert (ws / "out/data/private").stat().st_mode & 0o7777 == 0o700
    assert (ws / "out/data").stat().st_mode & 0o7777 == 0o750
    assert restore(ws, store, *records, stat_cache=stat_cache) == 0


@pytest.mark.parametrize("damage", ["flipped", "shorter", "longer"])
def test_a_damaged_small_blob_is_refused_before_a_byte_is_written(tmp_path, damage):
    import xxhash

    content = b"the restored bytes\n" * 10
    digest = xxhash.xxh3_128_hexdigest(content)
    blob = tmp_path / "blob"
    blob.write_bytes({"flipped": content[:-1] + b"?", "shorter": content[:-1],
                      "longer": content + b"!"}[damage])
    target = tmp_path / "target"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(restore_module.CorruptBlob):
            restore_module._copy_verified(blob, fd, digest, 0o644)
    finally:
        os.close(fd)
    assert target.read_bytes() == b""
    blob.write_bytes(content)   # the right blob copies whole, with its mode
    fd = os.open(target, os.O_WRONLY | os.O_TRUNC)
    try:
        restore_module._copy_verified(blob, fd, digest, 0o644)
    finally:
        os.close(fd)
    assert target.read_bytes() == content and target.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("swap", ["read-only file", "writable file", "link"])
def test_a_blob_swapped_after_its_check_is_never_restored_in_hardlink_mode(place, monkeypatch, swap):
    # hardlink mode hashes the blob by path, then links (or, when the blob is not read-only, copies without
    # a second hash) by path again: a blob swapped between the two hands out bytes nobody checked
    ws, outside, store = place
    record = file(store, "out/data", b"right\n")
    real_link = restore_module._link_read_only

    def swap_then_link(path, dir_fd, name):
        other = store.temp_path()
        if swap == "link":              # os.link follows it (AT_SYMLINK_FOLLOW): the output shares its inode
            (outside / "ro.txt").write_bytes(b"WRONG\n")
            os.chmod(outside / "ro.txt", 0o444)
            other.symlink_to(outside / "ro.txt")
        else:
            other.write_bytes(b"WRONG\n")
            os.chmod(other, 0o444 if swap == "read-only file" else 0o644)
        os.replace(other, path)         # another process puts other bytes there after the check
        return real_link(path, dir_fd, name)

    monkeypatch.setattr(restore_module, "_link_read_only", swap_then_link)
    try:
        restore(ws, store, record, mode="hardlink")
    except Exception:  # noqa: BLE001 - refusing (a corrupt blob) is right; wrong bytes are not
        pass
    target = ws / "out/data"
    assert not target.exists() or target.read_bytes() == b"right\n"
