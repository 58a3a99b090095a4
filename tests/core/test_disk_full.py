"""A full disk is never a traceback: a cache disk that cannot take more turns the run's caching off
with one warning (tasks still run), a restore into a full workspace fails that task naming the
folder and the file system, and maintenance commands fail with a clear error.

Real full disks come from a small tmpfs (root, and a kernel that lets us mount: skipped otherwise);
the file-size limit (RLIMIT_FSIZE, EFBIG like a full disk) and errors injected at the store's
write boundary cover the same paths without root.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from cli_workspace import Workspace

TASKS = 5


def _tasks(size: int, cache_dir: Path | None = None) -> str:
    head = f'[workspace]\nparallel = 1\n{f"cache-dir = {json.dumps(str(cache_dir))}" if cache_dir else ""}\n'
    return head + "\n".join(
        f'[projects.p.targets.t{i}]\ncommand = "mkdir -p out && head -c {size} /dev/urandom > out/t{i}.bin && '
        f'echo {i} >> out/t{i}.bin"\ninputs = []\noutputs = ["out/t{i}.bin"]\n' for i in range(TASKS))


ALL = [f"p:t{i}" for i in range(TASKS)]


@pytest.fixture
def tiny_fs(tmp_path: Path):
    """A 2 MiB tmpfs; skipped where mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'not permitted'})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> Path:
    """Write into `folder` until its file system is full."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def _outputs_present(ws: Workspace) -> bool:
    return all((ws.root / f"out/t{i}.bin").read_bytes().endswith(f"{i}\n".encode()) for i in range(TASKS))


def _one_warning(summary: dict, *parts: str) -> str:
    assert len(summary["warnings"]) == 1, summary["warnings"]
    warning = summary["warnings"][0]
    assert all(part in warning for part in parts), warning
    return warning


@pytest.mark.parametrize("index_exists", [False, True])
def test_a_full_cache_disk_runs_uncached_with_one_warning(ws: Workspace, tiny_fs: Path, index_exists: bool):
    cache = tiny_fs / "cache"
    ws.write("nxrun.toml", _tasks(1000, cache))
    if index_exists:
        ws.nxrun("cache", "stats", check=True)
    filler = _fill(tiny_fs)
    summary = ws.run_json(*ALL)
    assert set(ws.statuses(summary).values()) == {"miss"}
    assert _outputs_present(ws)
    _one_warning(summary, str(cache), str(tiny_fs), "this run goes on without it")
    # a maintenance command says what is wrong and where, without a traceback
    stats = ws.nxrun("cache", "stats")
    assert stats.returncode == 2 and "Traceback" not in stats.stderr
    assert str(cache) in stats.stderr and str(tiny_fs) in stats.stderr
    filler.unlink()
    assert set(ws.statuses(ws.run_json(*ALL)).values()) == {"miss"}        # nothing was stored
    assert set(ws.statuses(ws.run_json(*ALL)).values()) == {"local-hit"}


def test_a_cache_disk_that_fills_up_mid_run_keeps_what_it_stored(ws: Workspace, tiny_fs: Path):
    cache = tiny_fs / "cache"
    ws.write("nxrun.toml", _tasks(600_000, cache))          # three outputs fill the 2 MiB disk
    summary = ws.run_json(*ALL)
    assert set(ws.statuses(summary).values()) == {"miss"}
    assert _outputs_present(ws)
    _one_warning(summary, "could not write to the cache", str(cache), "no space left", str(tiny_fs))
    assert not list((cache / "tmp").iterdir())               # no half-written blob left behind
    verify = ws.nxrun("cache", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    statuses = ws.statuses(ws.run_json(*ALL))
    assert "local-hit" in statuses.values() and "miss" in statuses.values(), statuses
    assert _outputs_present(ws)


def test_a_full_workspace_fails_the_restore_naming_the_disk(tmp_path: Path, tiny_fs: Path):
    ws = Workspace(tiny_fs / "ws")
    ws.root.mkdir()
    ws.write("nxrun.toml", _tasks(300_000, tmp_path / "cache"))
    ws.run_json(*ALL)
    for i in range(TASKS):
        (ws.root / f"out/t{i}.bin").unlink()
    filler = _fill(tiny_fs)
    result = ws.nxrun("run", "--json", *ALL)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    failed = [t for t in json.loads(result.stdout)["tasks"] if t["status"] == "failed"]
    assert failed and all("could not restore" in t["note"] and "no space left" in t["note"].lower()
                          and str(tiny_fs) in t["note"] for t in failed), failed
    assert not [p for p in (ws.root / "out").iterdir() if p.name.startswith(".nxrun-")]   # no half-written file
    filler.unlink()
    assert set(ws.statuses(ws.run_json(*ALL)).values()) == {"local-hit"}
    assert _outputs_present(ws)


def _run_limited(ws: Workspace, limit: int, *args: str) -> subprocess.CompletedProcess:
    """nxrun with a file-size limit: writes past it fail with EFBIG, as on a full disk. Only the soft
    limit is lowered, so a task can raise it again (ulimit -f unlimited)."""
    code = ("import resource, sys, runpy; resource.setrlimit(resource.RLIMIT_FSIZE, "
            f"({limit}, resource.RLIM_INFINITY)); sys.argv = ['nxrun', *sys.argv[1:]]; "
            "runpy.run_module('nxrun', run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ws.root, capture_output=True, text=True,
                          env=dict(os.environ, NO_COLOR="1"), timeout=120)


def test_a_cache_that_cannot_be_created_runs_uncached_with_one_warning(ws: Workspace):
    """Without root: a file-size limit below one index page makes the new index unwritable
    (SQLite says "disk I/O error"), the same error a full disk gives."""
    ws.write("nxrun.toml", _tasks(100))
    result = _run_limited(ws, 2048, "run", "--json", *ALL)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(ws.statuses(summary).values()) == {"miss"} and _outputs_present(ws)
    _one_warning(summary, "cannot use the cache", "ulimit -f")
    assert set(ws.statuses(ws.run_json(*ALL)).values()) == {"miss"}
    assert set(ws.statuses(ws.run_json(*ALL)).values()) == {"local-hit"}


def test_maintenance_commands_on_an_unwritable_cache_fail_clearly(ws: Workspace):
    ws.write("nxrun.toml", _tasks(100))
    result = _run_limited(ws, 2048, "cache", "clear", "-y")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "cannot open the cache" in result.stderr and "ulimit -f" in result.stderr


# ---------------------------------------------------------------- the store on its own
def _no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_store_that_runs_out_of_space_turns_caching_off_once(tmp_path: Path, monkeypatch):
    from nxrun.store.local import CachingOff, LocalStore

    store = LocalStore(tmp_path / "cache")
    warnings: list[str] = []
    store.uncached_on_disk_problems(warnings.append)
    assert store.read("SELECT count(*) FROM entries") == [(0,)]
    monkeypatch.setattr("nxrun.store.local.write_all", _no_space)
    with pytest.raises(OSError) as first:
        store.put_bytes(b"an output")
    assert first.value.errno == errno.ENOSPC
    assert len(warnings) == 1 and "no space left on device" in warnings[0] and str(store.cache_dir) in warnings[0]
    with pytest.raises(CachingOff):
        store.put_bytes(b"another output")
    assert len(warnings) == 1
    assert not list(store.tmp_dir.iterdir())               # the temp file of the failed write is gone
    assert store.read("SELECT count(*) FROM entries") == [(0,)]   # reads still work
    store.close()


def test_a_store_outside_a_run_raises_a_clear_error_when_out_of_space(tmp_path: Path, monkeypatch):
    from nxrun.store.local import CacheUnavailable, LocalStore

    store = LocalStore(tmp_path / "cache")
    monkeypatch.setattr("nxrun.store.local.write_all", _no_space)
    with pytest.raises(CacheUnavailable) as error:
        store.put_bytes(b"an output")
    assert "no space left on device" in str(error.value) and str(store.cache_dir) in str(error.value)
    store.close()


def test_a_full_index_turns_caching_off_once(tmp_path: Path):
    """SQLITE_FULL, without a full disk: the index may not grow past its current pages."""
    from nxrun.store.local import CacheUnavailable, CachingOff, LocalStore

    store = LocalStore(tmp_path / "cache")
    warnings: list[str] = []
    store.uncached_on_disk_problems(warnings.append)
    pages = store.read("PRAGMA page_count")[0][0]
    store.read(f"PRAGMA max_page_count = {pages}")
    rows = {f"src/file{i}.txt": (i, i, i, i, f"{i:032x}") for i in range(2000)}
    assert store.write(lambda conn: conn.executemany(
        "INSERT INTO runs (started) VALUES (?)", [(float(i),) for i in range(5000)])) is None
    assert len(warnings) == 1 and "full" in warnings[0]
    store.save_stat_cache(rows)                            # skipped quietly: said once already
    assert len(warnings) == 1
    with pytest.raises(CachingOff):
        store.put_bytes(b"an output")
    store.close()
    strict = LocalStore(tmp_path / "cache")
    strict.read(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(CacheUnavailable):
        strict.write(lambda conn: conn.executemany("INSERT INTO runs (started) VALUES (?)",
                                                   [(float(i),) for i in range(5000)]))
    strict.close()
    assert sqlite3.connect(tmp_path / "cache" / "index.db").execute("SELECT count(*) FROM runs").fetchone() == (0,)


def test_the_file_size_limit_is_named(tmp_path: Path):
    from nxrun.store.disk import describe

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
        text = describe(OSError(errno.EFBIG, os.strerror(errno.EFBIG)), tmp_path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert "ulimit -f" in text and "file system at" in text
