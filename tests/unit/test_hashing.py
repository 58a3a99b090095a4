"""nxrun/hashing.py: the canonical encoding and ETag, globs and the file index, the stat cache,
and the components of a task's ETag."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from nxrun import hashing
from waiting import wait_until
from nxrun.graph import Task
from nxrun.hashing import (
    FORMAT_VERSION,
    FileIndex,
    StatCache,
    TaskHasher,
    compile_glob,
    digest_file,
    encode_components,
    etag_of,
    literal_prefix,
    outputs_digest,
)

# ---------------------------------------------------------------------------- canonical encoding


def test_encoding_is_length_prefixed_name_then_value():
    assert encode_components({"k": "v"}) == b"\0\0\0\x01k\0\0\0\x01v"


def test_encoding_counts_utf8_bytes_not_characters():
    assert encode_components({"é": "€"}) == b"\0\0\0\x02" + "é".encode() + b"\0\0\0\x03" + "€".encode()


def test_encoding_does_not_depend_on_insertion_order():
    forward = {"format": FORMAT_VERSION, "command": "c1", "file:a": "d1", "file:b": "d2"}
    backward = dict(reversed(list(forward.items())))
    assert list(forward) != list(backward)
    assert encode_components(forward) == encode_components(backward)
    assert etag_of(forward) == etag_of(backward)


def test_length_prefixes_keep_a_name_value_split_apart():
    # ("ab", "c") and ("a", "bc") concatenate to the same text; the prefixes tell them apart
    assert encode_components({"ab": "c"}) != encode_components({"a": "bc"})
    assert etag_of({"ab": "c"}) != etag_of({"a": "bc"})
    assert etag_of({"x": "ab", "y": "c"}) != etag_of({"x": "a", "y": "bc"})


def test_a_separator_inside_a_value_cannot_forge_another_component():
    assert etag_of({"a": "1\0\0\0\x01b\0\0\0\x012"}) != etag_of({"a": "1", "b": "2"})


def test_etag_of_known_components_is_stable():
    # a change here changes every ETag and so invalidates every cache: bump FORMAT_VERSION with it
    assert etag_of({"format": "nxrun-etag-1", "command": "x"}) == "19580aba1ad74a73318404d3611312ea"


def test_outputs_digest_ignores_listing_order_and_counts_only_the_executable_bit():
    files = [("out/a", "d1", False, None), ("out/b", "d2", True, None), ("out/l", "", False, "a")]
    assert outputs_digest(files) == outputs_digest(list(reversed(files)))
    assert outputs_digest(files) != outputs_digest([("out/a", "d1", True, None), *files[1:]])
    assert outputs_digest(files) != outputs_digest([*files[:2], ("out/l", "", False, "b")])


# ---------------------------------------------------------------------------- globs


@pytest.mark.parametrize("pattern, path, matches", [
    ("*.c", "a.c", True),
    ("*.c", "src/a.c", False),                  # `*` stays inside one folder
    ("src/*.c", "src/a.c", True),
    ("src/*.c", "src/sub/a.c", False),
    ("src/**/*.c", "src/a.c", True),            # `**/` is zero or more folders
    ("src/**/*.c", "src/x/y/a.c", True),
    ("src/**", "src/x/y/a.c", True),
    ("**/*.cu", "workloads/gemm/k.cu", True),
    ("a?.txt", "ab.txt", True),
    ("a?.txt", "a/.txt", False),                # `?` is one character, never '/'
    ("k[0-9].cu", "k7.cu", True),
    ("k[!0-9].cu", "k7.cu", False),             # `[!...]` negates
    ("k[!0-9].cu", "kx.cu", True),
    ("src", "src/deep/file.txt", True),         # a folder matches every file below it
    ("src", "srcfile.txt", False),
    ("a+b(1).txt", "a+b(1).txt", True),         # regex characters are literal
    ("a+b(1).txt", "aab1.txt", False),
    ("[oops", "[oops", True),                   # an unclosed `[` is literal
    ("*.c", "a.c\nb", False),
])
def test_compile_glob(pattern: str, path: str, matches: bool):
    assert bool(compile_glob(pattern).match(path)) is matches


@pytest.mark.parametrize("pattern, prefix", [
    ("src/**/*.c", "src"),
    ("*.c", ""),
    ("a/b/c.txt", "a/b"),
    ("a/*/c.txt", "a"),
    ("**/x", ""),
])
def test_literal_prefix_is_the_folder_before_the_first_wildcard(pattern: str, prefix: str):
    assert literal_prefix(pattern) == prefix


def _tree(root: Path, files: list[str]) -> Path:
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
    return root


def test_file_index_expand_applies_exclusions_and_reports_unmatched(tmp_path: Path):
    _tree(tmp_path, ["src/a.py", "src/sub/b.py", "src/__pycache__/a.pyc", "src/sub/__pycache__/b.py",
                     "README.md", ".git/config"])
    index = FileIndex(tmp_path)
    files, unmatched = index.expand(["src/**/*.py", "!**/__pycache__/**", "*.md", "docs/*.md", "missing.txt"])
    assert files == ["README.md", "src/a.py", "src/sub/b.py"]
    assert unmatched == ["docs/*.md", "missing.txt"]


def test_file_index_expands_a_folder_to_its_files_and_never_walks_vcs_or_excluded_folders(tmp_path: Path):
    _tree(tmp_path, ["data/x.bin", "data/y/z.bin", ".git/HEAD", ".nxrun/blobs/ab/cd", "keep.txt"])
    index = FileIndex(tmp_path, excluded=[".nxrun"])
    assert index.expand(["data"]) == (["data/x.bin", "data/y/z.bin"], [])
    assert index.expand(["**/*"])[0] == ["data/x.bin", "data/y/z.bin", "keep.txt"]


def test_file_index_leaves_out_declared_outputs(tmp_path: Path):
    _tree(tmp_path, ["src/a.c", "build/a.o", "build/sub/b.o", "buildinfo.txt"])
    index = FileIndex(tmp_path)
    index.set_excluded_outputs(["build"])
    assert index.expand(["**/*"])[0] == ["buildinfo.txt", "src/a.c"]


def test_file_index_reports_an_empty_folder_as_unmatched(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    assert FileIndex(tmp_path).expand(["empty"]) == ([], ["empty"])


# ---------------------------------------------------------------------------- stat cache


def _settled_file(path: Path, text: str) -> os.stat_result:
    """A file whose mtime lies well in the past, outside the racy window of a fresh write."""
    path.write_text(text)
    past = time.time_ns() - 10 * 10**9
    os.utime(path, ns=(past, past))
    st = os.stat(path)
    # the ctime cannot be set back: wait (on the clock, bounded) until it leaves the racy window
    wait_until(lambda: not hashing._unsure(st, time.time_ns()), timeout=5, what="the file's ctime to settle")
    return st


def test_stat_cache_remembers_a_digest_and_finds_it_by_stat(tmp_path: Path):
    path = tmp_path / "f.txt"
    st = _settled_file(path, "one")
    cache = StatCache()
    assert cache.lookup(str(path), st) is None
    digest = cache.digest(str(path), st)
    assert digest == digest_file(path)
    assert cache.lookup(str(path), os.stat(path)) == digest
    assert str(path) in cache.dirty


@pytest.mark.parametrize("change", ["size", "mtime", "inode"])
def test_stat_cache_misses_when_the_stat_changes(tmp_path: Path, change: str):
    path = tmp_path / "f.txt"
    cache = StatCache()
    old_digest = cache.digest(str(path), _settled_file(path, "one"))
    if change == "size":
        st = _settled_file(path, "three")
    elif change == "mtime":
        before = os.stat(path)
        path.write_text("two")                          # same size, new content, new mtime
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
        st = os.stat(path)
    else:
        replacement = tmp_path / "new.txt"
        old_mtime = os.stat(path).st_mtime_ns
        replacement.write_text("two")                   # same size and mtime, another inode
        os.utime(replacement, ns=(old_mtime, old_mtime))
        os.replace(replacement, path)
        st = os.stat(path)
    assert cache.lookup(str(path), st) is None
    assert cache.digest(str(path), st) == digest_file(path) != old_digest


def test_stat_cache_does_not_remember_a_file_written_just_now(tmp_path: Path):
    # its mtime could still change within the file system's timestamp granularity
    path = tmp_path / "fresh.txt"
    path.write_text("fresh")
    cache = StatCache()
    assert cache.digest(str(path)) == digest_file(path)
    assert cache.lookup(str(path), os.stat(path)) is None
    assert not cache.dirty


def test_stat_cache_rewrites_only_rows_that_changed(tmp_path: Path):
    path = tmp_path / "f.txt"
    st = _settled_file(path, "one")
    first = StatCache()
    digest = first.digest(str(path), st)
    loaded = StatCache(dict(first.rows))                # as the next run loads them from the index
    assert loaded.digest(str(path), os.stat(path)) == digest
    loaded.remember(str(path), os.stat(path), digest)
    assert not loaded.dirty


# ---------------------------------------------------------------------------- task components


class _NoRuntime:
    """The tasks below name no runtime:, pkg: or hardware inputs."""

    def probe(self, name, task_id):
        raise AssertionError("no probe expected")

    def package_version(self, name):
        raise AssertionError("no package expected")

    def hardware_fingerprint(self):
        raise AssertionError("no hardware expected")


def _task(**overrides) -> Task:
    fields = dict(id="p:t", project="p", target="t", matrix={}, command="cc -o out/a src/a.c",
                  inputs=["src/**/*.c", "config.json"], outputs=["out/a"], deps=[], env={}, resources=[],
                  cache="always", cwd=".", source="nxrun.toml:1")
    fields.update(overrides)
    return Task(**fields)


def _components(root: Path, task: Task, deps: dict[str, str] | None = None) -> dict[str, str]:
    hasher = TaskHasher(root, FileIndex(root), StatCache(), _NoRuntime())
    components, warnings = hasher.components(task, deps or {}, environ={})
    assert warnings == []
    return components


def _workspace(root: Path) -> Path:
    return _tree(root, ["src/a.c", "src/lib/b.c", "config.json"])


def test_components_carry_the_format_version(tmp_path: Path):
    assert _components(_workspace(tmp_path), _task())["format"] == FORMAT_VERSION


def test_components_name_files_relative_to_the_workspace_and_hold_no_absolute_path(tmp_path: Path):
    one, two = _workspace(tmp_path / "one"), _workspace(tmp_path / "elsewhere" / "two")
    first, second = _components(one, _task()), _components(two, _task())
    assert first == second                              # a moved or re-cloned workspace hits
    assert {"file:src/a.c", "file:src/lib/b.c", "file:config.json"} <= set(first)
    for name, value in first.items():
        assert str(tmp_path) not in name and str(tmp_path) not in value, (name, value)


def test_one_changed_byte_changes_the_etag_and_a_touch_does_not(tmp_path: Path):
    root = _workspace(tmp_path)
    before = etag_of(_components(root, _task()))
    os.utime(root / "src/a.c", ns=(1, 1))
    assert etag_of(_components(root, _task())) == before
    (root / "src/a.c").write_text("src/a.C")
    assert etag_of(_components(root, _task())) != before


@pytest.mark.parametrize("change", [
    {"command": "cc -O2 -o out/a src/a.c"}, {"outputs": ["out/b"]}, {"cwd": "src"}, {"cache": "never"},
    {"env": {"CFLAGS": "-O2"}},
])
def test_each_task_field_enters_the_etag(tmp_path: Path, change: dict):
    root = _workspace(tmp_path)
    assert etag_of(_components(root, _task(**change))) != etag_of(_components(root, _task()))


def test_upstream_outputs_enter_the_etag_by_their_digest(tmp_path: Path):
    root = _workspace(tmp_path)
    task = _task(deps=["p:gen"])
    same = _components(root, task, {"p:gen": "d" * 32})
    assert same["dep:p:gen"] == "d" * 32
    assert etag_of(same) != etag_of(_components(root, task, {"p:gen": "e" * 32}))


def test_task_name_does_not_enter_the_etag(tmp_path: Path):
    # renaming a task keeps its cache: the outputs, not the id, say what it computes
    root = _workspace(tmp_path)
    assert etag_of(_components(root, _task(id="q:renamed", project="q", target="renamed"))) == \
        etag_of(_components(root, _task()))
