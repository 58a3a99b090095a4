"""Nothing is lost: kills, full disks, corrupt blobs and concurrent processes never leave an entry
that restores wrong or partial outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_workspace import Workspace
from waiting import OutputReader, wait_until

BIG = """
[projects.p.targets.big]
command = "python3 -c \\"import os; open('big.bin','wb').write(os.urandom(96 << 20))\\""
inputs  = ["seed.txt"]
outputs = ["big.bin"]
"""


def test_kill_9_during_store_leaves_no_entry_that_restores_partial_outputs(ws: Workspace):
    ws.write("nxrun.toml", BIG)
    ws.write("seed.txt", "1")
    env = dict(os.environ, NO_COLOR="1")
    process = subprocess.Popen([sys.executable, "-m", "nxrun", "run", "p:big"], cwd=ws.root, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    tmp = ws.root / ".nxrun" / "tmp"

    def storing_or_done() -> bool:
        # the store copies big.bin into a temp file under .nxrun/tmp: kill nxrun mid-copy
        return process.poll() is not None or any(size > (1 << 20) for size in _temp_file_sizes(tmp))

    wait_until(storing_or_done, timeout=60, what="the store to copy big.bin into the cache", interval=0.001)
    killed = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert killed, "the store finished before it could be interrupted"
    expected = (ws.root / "big.bin").read_bytes()
    (ws.root / "big.bin").unlink()
    summary = ws.run_json("p:big")
    # either the entry was never written (the task runs again) or it restores the complete file
    assert ws.statuses(summary)["p:big"] == "miss"
    assert len((ws.root / "big.bin").read_bytes()) == len(expected)
    verify = ws.nxrun("cache", "verify")
    assert verify.returncode == 0, verify.stdout


def _temp_file_sizes(tmp: Path) -> list[int]:
    """Sizes of the cache's temp files (named <pid>-<random>), which come and go while we look."""
    try:
        names = os.listdir(tmp)
    except FileNotFoundError:
        return []
    sizes = []
    for name in names:
        if name[0].isdigit():
            try:
                sizes.append(os.stat(tmp / name).st_size)
            except FileNotFoundError:
                pass
    return sizes


def test_full_disk_during_store_warns_and_caches_nothing(ws: Workspace):
    ws.write("nxrun.toml", """
        [projects.p.targets.t]
        command = "ln -f made.bin big.bin && echo produced"
        inputs  = []
        outputs = ["big.bin"]
    """)
    # made beforehand: the command links it into place, which the file-size limit below allows
    (ws.root / "made.bin").write_bytes(os.urandom(4 << 20))
    # the file-size limit makes the cache's blob write fail with EFBIG, as a full disk would
    limit = "import resource, sys, runpy; resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20)); " \
            "sys.argv = ['nxrun', 'run', '--json', 'p:t']; runpy.run_module('nxrun', run_name='__main__')"
    # warm the index first so sqlite itself has room
    ws.nxrun("cache", "stats", check=True)
    result = subprocess.run([sys.executable, "-c", limit], cwd=ws.root, capture_output=True, text=True,
                            env=dict(os.environ, NO_COLOR="1"))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["tasks"][0]["status"] == "miss"
    assert any("could not store" in w or "could not write" in w for w in summary["warnings"])
    assert json.loads(ws.nxrun("cache", "stats", "--json").stdout)["entries"] == 0
    assert ws.statuses(ws.run_json("p:t")) == {"p:t": "miss"}
    assert ws.statuses(ws.run_json("p:t")) == {"p:t": "local-hit"}


def _blob_files(ws: Workspace) -> list[Path]:
    return [p for p in (ws.root / ".nxrun" / "blobs").rglob("*") if p.is_file()]


def test_corrupt_blob_is_detected_by_verify(diamond: Workspace):
    diamond.run_json("c:join")
    victim = next(p for p in _blob_files(diamond) if p.read_bytes() == b"hello\n")
    os.chmod(victim, 0o644)
    victim.write_bytes(b"jello\n")
    result = diamond.nxrun("cache", "verify")
    assert result.returncode == 1
    assert "corrupt blob" in result.stdout and "a:gen" in result.stdout
    assert diamond.statuses(diamond.run_json("a:gen")) == {"a:gen": "miss"}


def test_corrupt_blob_on_restore_counts_as_a_miss(diamond: Workspace):
    diamond.run_json("c:join")
    victim = next(p for p in _blob_files(diamond) if p.read_bytes() == b"HELLO\n")
    os.chmod(victim, 0o644)
    victim.write_bytes(b"HELL0\n")
    (diamond.root / "out/left.txt").unlink()
    summary = diamond.run_json("c:join")
    statuses = diamond.statuses(summary)
    assert statuses["b:left"] == "miss"
    assert statuses["a:gen"] == "local-hit"
    assert any("corrupt" in w for w in summary["warnings"])
    assert diamond.read("out/left.txt") == "HELLO\n"


@pytest.mark.parametrize("restore", ["copy", "hardlink"])
def test_missing_blob_on_restore_counts_as_a_miss(diamond: Workspace, restore: str):
    config = diamond.read("nxrun.toml")
    assert "[workspace]\n" in config
    diamond.write("nxrun.toml", config.replace("[workspace]\n", f'[workspace]\nrestore = "{restore}"\n', 1))
    diamond.run_json("c:join")
    victim = next(p for p in _blob_files(diamond) if p.read_bytes() == b"HELLO\n")
    victim.unlink()
    (diamond.root / "out/left.txt").unlink()
    summary = diamond.run_json("c:join")
    statuses = diamond.statuses(summary)
    assert statuses["b:left"] == "miss" and statuses["a:gen"] == "local-hit"
    assert any("corrupt or missing blob" in w for w in summary["warnings"])
    assert diamond.read("out/left.txt") == "HELLO\n"
    assert not list((diamond.root / "out").glob(".nxrun-*.tmp"))


def _plant(victim: Path, kind: str) -> None:
    """Put a fifo, a link to a file holding the same bytes, or a folder where a blob was."""
    data = victim.read_bytes()
    victim.unlink()
    if kind == "fifo":
        os.mkfifo(victim, 0o444)
    elif kind == "symlink":
        elsewhere = victim.parent.parent.parent / "elsewhere"
        elsewhere.write_bytes(data)
        os.chmod(elsewhere, 0o444)
        victim.symlink_to(elsewhere)
    else:
        victim.mkdir()
        (victim / "inside").write_bytes(data)


@pytest.mark.parametrize("restore", ["copy", "hardlink"])
@pytest.mark.parametrize("kind", ["fifo", "symlink", "folder"])
def test_a_fifo_link_or_folder_at_a_blob_path_is_a_corrupt_blob_not_a_hang(diamond: Workspace, restore: str,
                                                                           kind: str):
    # opening a fifo for reading waits for a writer: a restore that opened the blob plainly hung forever
    config = diamond.read("nxrun.toml")
    diamond.write("nxrun.toml", config.replace("[workspace]\n", f'[workspace]\nrestore = "{restore}"\n', 1))
    diamond.run_json("c:join")
    victim = next(p for p in _blob_files(diamond) if p.read_bytes() == b"HELLO\n")
    _plant(victim, kind)
    (diamond.root / "out/left.txt").unlink()
    result = diamond.nxrun("run", "--json", "c:join", env={"NXRUN_JOURNAL": "off"}, timeout=60)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    statuses = diamond.statuses(summary)
    assert statuses["b:left"] == "miss" and statuses["a:gen"] == "local-hit"
    assert any("corrupt or missing blob" in w for w in summary["warnings"])
    left = diamond.root / "out/left.txt"
    assert left.is_file() and not left.is_symlink() and left.read_text() == "HELLO\n"
    # the run stored the blob again, as a file of its own; the next restore is a plain hit
    assert victim.is_file() and not victim.is_symlink() and victim.read_bytes() == b"HELLO\n"
    left.unlink()
    assert diamond.statuses(diamond.run_json("c:join"))["b:left"] == "local-hit"
    assert left.read_text() == "HELLO\n"


@pytest.mark.parametrize("kind", ["fifo", "symlink", "folder"])
def test_verify_reports_a_fifo_link_or_folder_at_a_blob_path_without_a_traceback(diamond: Workspace, kind: str):
    diamond.run_json("c:join")
    victim = next(p for p in _blob_files(diamond) if p.read_bytes() == b"HELLO\n")
    _plant(victim, kind)
    result = diamond.nxrun("cache", "verify", timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "corrupt blob" in result.stdout and "b:left" in result.stdout
    assert not os.path.lexists(victim)
    assert diamond.nxrun("cache", "verify", timeout=60).returncode == 0


def test_two_processes_share_one_cache_at_once(tmp_path: Path):
    cache = tmp_path / "shared-cache"
    toml = "[workspace]\nparallel = 4\n" + "\n".join(f"""
[projects.p.targets.t{i}]
command = "echo {i} > out{i}.txt"
inputs  = ["in.txt"]
outputs = ["out{i}.txt"]
depends-on = [{', '.join(f'"t{j}"' for j in range(max(0, i - 2), i))}]
""" for i in range(40)) + "\n[projects.p.targets.all]\ndepends-on = [" + ", ".join(
        f'"t{i}"' for i in range(40)) + "]\n"
    workspaces = []
    for name in ("one", "two"):
        ws = Workspace(tmp_path / name)
        ws.root.mkdir()
        ws.write("nxrun.toml", toml)
        ws.write("in.txt", "same")
        workspaces.append(ws)
    env = dict(os.environ, NXRUN_CACHE_DIR=str(cache), NO_COLOR="1")
    for _round in range(3):
        processes = [subprocess.Popen([sys.executable, "-m", "nxrun", "run", "--json", "p:all"], cwd=ws.root,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for ws in workspaces]
        outputs = [p.communicate(timeout=120) for p in processes]
        for process, (out, err) in zip(processes, outputs):
            assert process.returncode == 0, err
            assert "locked" not in err and "warning" not in err.lower(), err
            assert json.loads(out)["ok"]
        for ws in workspaces:
            assert [ws.read(f"out{i}.txt") for i in range(40)] == [f"{i}\n" for i in range(40)]
    verify = workspaces[0].nxrun("cache", "verify", env={"NXRUN_CACHE_DIR": str(cache)})
    assert verify.returncode == 0, verify.stdout


# `slow` runs until the test creates `release` (at most two minutes): the tests decide when it ends,
# instead of guessing how long the steps before that take on a busy machine
HOLD = """
import os, time
with open("slow.pgid.tmp", "w") as pgid:
    pgid.write(str(os.getpgid(0)))
os.replace("slow.pgid.tmp", "slow.pgid")
deadline = time.monotonic() + 120
while not os.path.exists("release") and time.monotonic() < deadline:
    time.sleep(0.02)
open("slow.txt", "w").write("slow\\n")
"""

FAST_AND_SLOW = """
[projects.p.targets.fast]
command = "echo fast > fast.txt"
inputs  = []
outputs = ["fast.txt"]
[projects.p.targets.slow]
command = "python hold.py"
inputs  = []
outputs = ["slow.txt"]
[projects.p.targets.all]
depends-on = ["fast", "slow"]
"""


@pytest.fixture
def fast_and_slow(ws: Workspace):
    ws.write("nxrun.toml", FAST_AND_SLOW)
    ws.write("hold.py", HOLD)
    yield ws
    (ws.root / "release").touch()       # a `slow` still running (kill -9 of nxrun) ends now
    pgid = ws.root / "slow.pgid"
    if pgid.exists():
        try:
            os.killpg(int(pgid.read_text()), signal.SIGKILL)
        except (ProcessLookupError, PermissionError, ValueError):
            pass


def _start_run(ws: Workspace, *args: str) -> OutputReader:
    process = subprocess.Popen([sys.executable, "-m", "nxrun", *args], cwd=ws.root, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=dict(os.environ, NO_COLOR="1"))
    return OutputReader(process)


def _entries(ws: Workspace) -> int:
    result = ws.nxrun("cache", "stats", "--json", check=True)
    return json.loads(result.stdout)["entries"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_run_keeps_the_entries_of_tasks_that_finished(fast_and_slow: Workspace, sig: int):
    """Entries are written in batches, but a finished task's is recorded while the run goes on
    (within about a second), and SIGTERM (a CI cancel) stops running tasks and writes the rest
    before nxrun exits."""
    ws = fast_and_slow
    run = _start_run(ws, "run", "p:all")
    run.wait_for("p:fast: ran")
    wait_until(lambda: (ws.root / "slow.pgid").exists(), what="the slow task to start")
    if sig == signal.SIGKILL:
        # nothing is written after a kill -9: wait until the batch holding fast's entry is
        # committed (the slow task is held until the test releases it, so the run is still going)
        wait_until(lambda: _entries(ws) == 1, what="fast's entry to be recorded while the run goes on")
    started = time.monotonic()
    run.process.send_signal(sig)
    output = run.finish(timeout=60)
    assert run.process.returncode != 0
    if sig == signal.SIGTERM:
        # the slow task's command was stopped, not waited for (it would hold for two minutes)
        assert "interrupted" in output and time.monotonic() - started < 60, output
    assert ws.statuses(ws.run_json("p:fast")) == {"p:fast": "local-hit"}
    assert not (ws.root / "slow.txt").exists()


def test_prune_waits_for_a_running_run_and_never_breaks_its_entries(fast_and_slow: Workspace):
    ws = fast_and_slow
    run = _start_run(ws, "run", "p:all")
    run.wait_for("p:fast: ran")
    wait_until(lambda: (ws.root / "slow.pgid").exists(), what="the slow task to start")
    prune = _start_run(ws, "cache", "prune", "--max-size", "10G")
    prune.wait_for("waiting for the nxrun runs")
    assert prune.process.poll() is None             # it waits while the run holds the cache
    (ws.root / "release").touch()
    run.finish(timeout=60)
    assert run.process.returncode == 0, run.text
    prune.finish(timeout=60)
    assert prune.process.returncode == 0, prune.text
    verify = ws.nxrun("cache", "verify")
    assert verify.returncode == 0, verify.stdout
    assert ws.statuses(ws.run_json("p:all")) == {"p:fast": "local-hit", "p:slow": "local-hit"}


def test_a_run_waits_for_a_prune_and_says_so(fast_and_slow: Workspace):
    import fcntl

    ws = fast_and_slow
    ws.run_json("p:fast")
    lock = os.open(ws.root / ".nxrun" / "lock", os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)          # as `nxrun cache prune` holds it
    try:
        run = _start_run(ws, "run", "p:fast")
        run.wait_for("waiting for a `nxrun cache prune`")
        assert run.process.poll() is None       # still waiting
    finally:
        os.close(lock)
    output = run.finish(timeout=60)
    assert run.process.returncode == 0
    assert "1 local hits" in output
