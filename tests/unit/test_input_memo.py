"""The run's input memo: a file that many tasks list is looked at once per run while nothing
writes, every task still gets its digest and the stat the check after its command compares, and
a write (a command, a restore that wrote) makes every file be looked at again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nxrun.graph import Task
from nxrun.hashing import FileIndex, InputMemo, StatCache, TaskHasher
from nxrun.run.input_check import RecordingStatCache

SHARED = 40


def task(i: int, inputs: list[str]) -> Task:
    return Task(id=f"p{i}:build", project=f"p{i}", target="build", matrix={}, command="true", inputs=inputs,
                outputs=[f"p{i}/dist"], deps=[], env={}, resources=[], cache="always", cwd=".",
                source="nxrun.toml:1")


def workspace(root: Path, n: int) -> list[Task]:
    for k in range(SHARED):
        (root / "shared").mkdir(exist_ok=True)
        (root / "shared" / f"s{k}.txt").write_text(f"shared {k}\n")
    (root / "yarn.lock").write_text("lock\n")
    tasks = []
    for i in range(n):
        (root / f"p{i}" / "dist").mkdir(parents=True)
        (root / f"p{i}" / "in.txt").write_text(f"{i}\n")
        (root / f"p{i}" / "dist" / "out.txt").write_text(f"{i}\n")
        tasks.append(task(i, ["yarn.lock", f"p{i}/in.txt"] if i % 2 else [f"p{i}/**/*", "shared/**/*"]))
    return tasks


class CountedStats:
    """Counts os.stat and os.lstat calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.count = 0
        for name in ("stat", "lstat"):
            real = getattr(os, name)

            def counted(*args, _real=real, **kwargs):
                self.count += 1
                return _real(*args, **kwargs)

            monkeypatch.setattr(os, name, counted)


def hash_all(root: Path, tasks: list[Task], memo: InputMemo | None):
    index = FileIndex(root)
    index.set_excluded_outputs(o for t in tasks for o in t.outputs)
    recorder = RecordingStatCache(StatCache())
    hasher = TaskHasher(root, index, recorder, runtime=None, memo=memo)
    results = []
    for t in tasks:
        components, _ = hasher.components(t, {})
        results.append((components, sorted(path for path, _ in recorder.take())))
    return results


def test_shared_inputs_are_looked_at_once_per_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = workspace(tmp_path, 200)
    plain = hash_all(tmp_path, tasks, None)
    stats = CountedStats(monkeypatch)
    memoized = hash_all(tmp_path, tasks, InputMemo())
    # the same components, and the same files noted for the check after each task's command
    assert memoized == plain
    assert all(len(noted) == len([c for c in components if c.startswith("file:")]) for components, noted in memoized)
    # 100 tasks list 40 shared files: 4,000 stats without the memo. With it: each file once (plus the
    # folder checks of the file index)
    files = 1 + SHARED + 200
    assert stats.count <= 2 * files + 200, f"{stats.count} stats for {files} distinct input files"


def test_a_write_makes_every_input_be_looked_at_again(tmp_path: Path) -> None:
    path = str(tmp_path / "f.txt")
    (tmp_path / "f.txt").write_text("x")
    st = os.lstat(path)
    memo = InputMemo()
    memo.put(path, st, "d1", memo.generation)
    assert memo.get(path) == (st, "d1")
    memo.writing_started(forget=False)           # a restore: nothing is trusted while it writes
    assert memo.get(path) is None
    memo.writing_ended(changed=False)            # ... and it wrote nothing
    assert memo.get(path) == (st, "d1")
    memo.writing_started(forget=False)
    memo.writing_ended(changed=True)             # it wrote something
    assert memo.get(path) is None
    memo.put(path, st, "d1", memo.generation)
    memo.writing_started()                       # a command starts
    assert memo.get(path) is None
    memo.writing_ended()
    assert memo.get(path) is None


def test_a_digest_taken_while_something_wrote_is_not_kept(tmp_path: Path) -> None:
    path = str(tmp_path / "f.txt")
    (tmp_path / "f.txt").write_text("x")
    st = os.lstat(path)
    memo = InputMemo()
    before = memo.generation                     # read before the stat, as the hasher does
    memo.writing_started()
    memo.put(path, st, "stale", before)          # a command is running: not kept
    memo.writing_ended()
    memo.put(path, st, "stale", before)          # a command ran since the stat: not kept
    assert memo.get(path) is None
    memo.put(path, st, "fresh", memo.generation)
    assert memo.get(path) == (st, "fresh")


def test_declared_outputs_are_never_memoized(tmp_path: Path) -> None:
    tasks = workspace(tmp_path, 2)
    reader = task(9, ["p0/dist/out.txt", "./yarn.lock"])
    memo = InputMemo()
    hash_all(tmp_path, tasks + [reader], memo)
    assert memo.get(str(tmp_path / "yarn.lock")) is not None
    assert memo.get(str(tmp_path / "p0/dist/out.txt")) is None      # a restore may rewrite it
    assert memo.get(os.path.join(tmp_path, "./yarn.lock")) is None
