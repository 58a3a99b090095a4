"""nxrun/run/task_locks.py: one run's task locks against another process's, per workspace, a wait
that a stopping run cuts short, and locks that degrade to a warning where locking is impossible."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from waiting import wait_until

from nxrun.run.task_locks import TaskLocks, user_lock_folder


def test_task_locks_exclude_other_processes_and_are_per_workspace(tmp_path: Path):
    cache = tmp_path / "cache"
    mine = TaskLocks(cache, tmp_path / "ws-a")
    assert mine.try_acquire("p:t")
    probe = ("import sys; from pathlib import Path; from nxrun.run.task_locks import TaskLocks; "
             "print(TaskLocks(Path(sys.argv[1]), Path(sys.argv[2])).try_acquire(sys.argv[3]))")

    def other_process_gets(workspace: str, task: str) -> bool:
        out = subprocess.run([sys.executable, "-c", probe, str(cache), str(tmp_path / workspace), task],
                             capture_output=True, text=True, check=True).stdout
        return out.strip() == "True"

    assert not other_process_gets("ws-a", "p:t")       # held here
    assert other_process_gets("ws-a", "p:other")       # another task of the same workspace
    assert other_process_gets("ws-b", "p:t")           # the same task of another workspace, same cache
    mine.release("p:t")
    assert other_process_gets("ws-a", "p:t")
    mine.close()


def test_waiting_for_a_task_lock_stops_when_the_run_stops(tmp_path: Path):
    cache = tmp_path / "cache"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from nxrun.run.task_locks import TaskLocks; "
         "locks = TaskLocks(Path(sys.argv[1]), Path(sys.argv[2])); print(locks.try_acquire('p:t'), flush=True); "
         "sys.stdin.read()", str(cache), str(tmp_path / "ws")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "True"
        locks = TaskLocks(cache, tmp_path / "ws")
        stop = threading.Event()
        told = []
        result = []
        waiter = threading.Thread(target=lambda: result.append(locks.acquire("p:t", stop, lambda: told.append(1))))
        waiter.start()
        wait_until(lambda: told, what="the waiter to say it waits")
        stop.set()
        waiter.join(timeout=10)
        assert not waiter.is_alive() and result == [False]
        holder.stdin.close()
        holder.wait(timeout=10)
        assert locks.acquire("p:t", threading.Event())   # the holder is gone: free at once
        locks.close()
    finally:
        if holder.poll() is None:
            holder.kill()


def test_task_locks_grant_everything_and_say_so_once_where_locking_is_impossible(tmp_path: Path):
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("a file where the cache folder should be")
    errors = []
    locks = TaskLocks(not_a_folder, tmp_path / "ws", on_broken=errors.append, user_folder=lambda: None)
    assert locks.try_acquire("p:a") and locks.try_acquire("p:b")
    assert locks.acquire("p:c", threading.Event())
    locks.release("p:a")
    locks.close()
    assert len(errors) == 1 and isinstance(errors[0], OSError)


def test_task_locks_of_a_workspace_whose_path_is_not_utf8(tmp_path: Path):
    # a folder name of raw bytes (Latin-1 é): Python holds it with a surrogate escape
    root = tmp_path / os.fsdecode(b"ws \xe9")
    root.mkdir()
    locks = TaskLocks(tmp_path / "cache", root)
    assert locks.try_acquire("p:t")
    locks.close()


def test_task_locks_hold_across_cache_folders_of_one_workspace(tmp_path: Path):
    mine = TaskLocks(tmp_path / "cache-a", tmp_path / "ws")
    assert mine.try_acquire("p:t")
    probe = ("import sys; from pathlib import Path; from nxrun.run.task_locks import TaskLocks; "
             "print(TaskLocks(Path(sys.argv[1]), Path(sys.argv[2])).try_acquire('p:t'))")
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "cache-b"), str(tmp_path / "ws")],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    mine.close()


def test_the_user_lock_folder_is_private(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    folder = user_lock_folder()
    assert folder == tmp_path / f"nxrun-{os.geteuid()}" and folder.stat().st_mode & 0o777 == 0o700
    os.chmod(folder, 0o777)   # as another user's folder of that name, or one anybody may write to
    assert user_lock_folder() is None
    os.rmdir(folder)
    os.symlink(tmp_path, folder)
    assert user_lock_folder() is None


def test_task_locks_still_hold_where_the_cache_folder_cannot_take_a_lock_file(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    not_a_folder = tmp_path / "cache"   # as a read-only cache folder would be
    not_a_folder.write_text("a file where the cache folder should be")
    errors = []
    mine = TaskLocks(not_a_folder, tmp_path / "ws", on_broken=errors.append)
    assert mine.try_acquire("p:t")
    probe = ("import sys; from pathlib import Path; from nxrun.run.task_locks import TaskLocks; "
             "print(TaskLocks(Path(sys.argv[1]), Path(sys.argv[2])).try_acquire('p:t'))")
    out = subprocess.run([sys.executable, "-c", probe, str(not_a_folder), str(tmp_path / "ws")],
                         capture_output=True, text=True, check=True, env=dict(os.environ, TMPDIR=str(tmp_path))).stdout
    assert out.strip() == "False" and errors == []
    mine.close()
