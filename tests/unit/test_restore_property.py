"""Property: whatever a manifest holds (links relative, absolute, chained, aimed at '..' and at each
other, '..' and absolute paths, duplicates, a file and a folder at one path, files through links),
restore_entry changes nothing outside the task's declared outputs, whether it accepts the entry
or refuses it; and what it accepts it restores exactly."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tree_snapshot import snapshot

from nxrun.hashing import StatCache
from nxrun.store import CacheEntry, OutputRecord, UnsafeEntry
from nxrun.store.local import LocalStore
from nxrun.store.restore import restore_entry

DECLARED = ["out/a", "out/b", "gen"]
CONTENTS = [b"good\n", b"#!/bin/sh\necho pwned\n", b""]

# path parts and link targets an attacker would try: climbing, the workspace's own files, each other
_NAMES = st.sampled_from(["x", "l0", "l1", "l2", "sub", "a", "b", "hooks", "pre-commit", "nxrun.toml"])
_HOSTILE = st.sampled_from(["..", ".", "", ".git", "out", "gen", "src", "outside", "ws"])
_ANY_PART = st.one_of(_NAMES, _NAMES, _NAMES, _HOSTILE)
_OUTPUT_PREFIXES = st.sampled_from(["out/a/", "out/a/", "out/b/", "gen/", "gen/", "out/a/sub/"])
_ANY_PREFIX = st.one_of(_OUTPUT_PREFIXES, st.sampled_from(["out/", "", "src/", "../", "/", ".git/hooks/"]))
_REASONS = ("not under", "appears twice", "lies beneath", "leads out", "absolute", "'..'", "mode", "loop",
            "passes through", "climbs", "cannot restore")


@st.composite
def paths(draw, hostile: bool):
    if not hostile:   # a path an honest task could have: parts of a small alphabet, so they collide
        return draw(_OUTPUT_PREFIXES) + "/".join(draw(st.lists(_NAMES, min_size=1, max_size=3)))
    return draw(_ANY_PREFIX) + "/".join(draw(st.lists(_ANY_PART, min_size=1, max_size=4)))


@st.composite
def targets(draw, hostile: bool):
    style = draw(st.sampled_from(["relative", "relative", "up", "up"] + (["absolute"] if hostile else [])))
    parts = "/".join(draw(st.lists(st.one_of(_NAMES, st.just("..")), min_size=1, max_size=5)))
    if style == "absolute":
        return draw(st.sampled_from(["/", "/tmp/", "/etc/", ""])) + parts
    if style == "up":
        return "../" * draw(st.integers(1, 4)) + parts
    return parts


@st.composite
def records(draw, hostile: bool = False):
    kind = draw(st.sampled_from(["file", "file", "symlink", "symlink", "dir"]))
    path = draw(paths(hostile))
    if kind == "file":
        return ("file", path, draw(st.sampled_from(range(len(CONTENTS)))),
                draw(st.sampled_from([0o644, 0o755, 0o600] + ([0o4755] if hostile else []))))
    if kind == "symlink":
        return ("symlink", path, draw(targets(hostile)))
    return ("dir", path)


# entries an honest task could write, wholly hostile ones, and honest ones with one hostile record
# entries built of paths an honest task could have, whose links climb, chain and collide; wholly
# hostile ones; and honest ones with one hostile record among them
LINK_HEAVY = st.lists(records(), min_size=1, max_size=10, unique_by=lambda record: record[1])
HOSTILE = st.one_of(st.lists(records(hostile=True), min_size=1, max_size=8),
                    st.builds(lambda honest, bad, at: honest[:at] + [bad] + honest[at:],
                              LINK_HEAVY, records(hostile=True), st.integers(0, 8)))


def _layout(base: Path) -> Path:
    """A workspace with sources, a .git hook, stale outputs (one a link out, one a link into the
    sources), and a folder beside it."""
    ws = base / "ws"
    for rel, text in {"nxrun.toml": "[workspace]\n", "src/main.c": "int main;\n", ".git/hooks/pre-commit.sample": "#\n",
                      "out/a/old.txt": "old\n", "out/a/sub/deep.txt": "deep\n", "out/keep.txt": "not an output\n",
                      "../outside/data.txt": "outside\n"}.items():
        path = ws / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    os.symlink("../../../outside", ws / "out/a/escape")      # stale, inside a declared output
    os.symlink("../src", ws / "out/b")                        # a declared output that is a link
    return ws


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = LocalStore(tmp_path_factory.mktemp("cache"))
    digests = [store.put_bytes(data) for data in CONTENTS]
    return store, digests


def _entry(drawn, digests) -> CacheEntry:
    outputs = []
    for item in drawn:
        if item[0] == "file":
            digest, size = digests[item[2]]
            outputs.append(OutputRecord(item[1], "file", digest=digest, size=size, mode=item[3]))
        elif item[0] == "symlink":
            outputs.append(OutputRecord(item[1], "symlink", target=item[2], mode=0o777))
        else:
            outputs.append(OutputRecord(item[1], "dir", mode=0o755))
    return CacheEntry("e" * 32, "p:t", outputs, list(DECLARED), "d" * 32, None)


def _assert_restored_exactly(ws: Path, entry: CacheEntry, store: LocalStore) -> None:
    expected = {}
    for record in entry.outputs:
        expected[record.path] = record
        parent = record.path
        while "/" in parent:
            parent = parent.rsplit("/", 1)[0]
            if parent in ("out",):
                break
            expected.setdefault(parent, OutputRecord(parent, "dir"))
    on_disk = {}
    for declared in DECLARED:
        top = ws / declared
        if not os.path.lexists(top):
            continue
        on_disk[declared] = top
        if top.is_dir() and not top.is_symlink():
            for current, dirs, files in os.walk(top):
                for name in dirs + files:
                    on_disk[(Path(current) / name).relative_to(ws).as_posix()] = Path(current) / name
    assert set(on_disk) == set(expected)
    for rel, record in expected.items():
        path = on_disk[rel]
        if record.kind == "symlink":
            assert os.readlink(path) == record.target
        elif record.kind == "dir":
            assert path.is_dir() and not path.is_symlink()
        else:
            assert not path.is_symlink() and path.read_bytes() == store.blob_path(record.digest).read_bytes()


_SETTINGS = settings(max_examples=200, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
_MODES = st.sampled_from(["auto", "copy", "hardlink"])
_ORIGINS = st.sampled_from(["local", "remote"])


@pytest.mark.slow
@_SETTINGS
@given(drawn=LINK_HEAVY, mode=_MODES, origin=_ORIGINS)
def test_links_that_climb_chain_and_collide_change_nothing_outside_the_outputs(store, drawn, mode, origin):
    _check_one_restore(store, drawn, mode, origin)


@pytest.mark.slow
@_SETTINGS
@given(drawn=HOSTILE, mode=_MODES, origin=_ORIGINS)
def test_hostile_paths_targets_and_modes_change_nothing_outside_the_outputs(store, drawn, mode, origin):
    _check_one_restore(store, drawn, mode, origin)


def _check_one_restore(store, drawn, mode, origin):
    local_store, digests = store
    base = Path(tempfile.mkdtemp(prefix="nxrun-prop-"))
    try:
        ws = _layout(base)
        skip = [ws / d for d in DECLARED]
        before = snapshot(base, skip, identity=True)
        blobs_before = snapshot(local_store.cache_dir / "blobs", [], identity=True)
        entry = _entry(drawn, digests)
        try:
            restore_entry(entry, local_store, ws, list(DECLARED), StatCache(), mode=mode, origin=origin)
            accepted = True
        except UnsafeEntry as exc:
            accepted = False
            event("refused: " + next((r for r in _REASONS if r in str(exc)), str(exc)))
        if accepted:
            event(f"accepted: {min(len(entry.outputs), 4)}+ records, "
                  f"{sum(r.kind == 'symlink' for r in entry.outputs) > 0 and 'with' or 'no'} links")
        assert snapshot(base, skip, identity=True) == before
        # the blobs (which hardlinked outputs share) keep their bytes and their read-only mode
        blobs = snapshot(local_store.cache_dir / "blobs", [], identity=True)
        assert blobs.keys() == blobs_before.keys()
        for rel, facts in blobs.items():
            assert facts[0] != "file" or (facts[1] & 0o7777 == 0o444 and facts[4] == blobs_before[rel][4])
        if accepted:
            _assert_restored_exactly(ws, entry, local_store)
    finally:
        for current, dirs, _files in os.walk(base):
            for name in dirs:
                if not os.path.islink(os.path.join(current, name)):
                    os.chmod(os.path.join(current, name), 0o755)
        shutil.rmtree(base)
