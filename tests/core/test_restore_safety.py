"""Restore safety through the real CLI: a tampered local entry never writes outside the task's
declared outputs, a restore killed midway leaves no temp file among the outputs (so none is
recorded as one later), `restore = "hardlink"` keeps modes and is a no-op when nothing changed,
and an output a hit could not restore is never cached."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cli_workspace import Workspace
from tree_snapshot import snapshot

TOML = """
[workspace]
restore = "{restore}"

[projects.gen.targets.data]
command = "mkdir -p out/data && cp src/a.txt out/data/a.txt && printf '#!/bin/sh\\necho hi\\n' > out/data/run.sh && chmod 755 out/data/run.sh && echo ran >> ../runs.log"
inputs  = ["src/a.txt"]
outputs = ["out/data"]
"""


def make(ws: Workspace, restore: str = "auto") -> Workspace:
    ws.write("nxrun.toml", TOML.format(restore=restore))
    ws.write("src/a.txt", "hello\n")
    ws.write(".git/hooks/pre-commit.sample", "#!/bin/sh\n")
    return ws


def runs(ws: Workspace) -> int:
    path = ws.root.parent / "runs.log"
    return len(path.read_text().split()) if path.exists() else 0


def tamper_local_entry(ws: Workspace, task_id: str, extra: list[list]) -> None:
    """Add records to the task's entry in the local index, in both forms a hit may read."""
    with sqlite3.connect(ws.root / ".nxrun" / "index.db") as db:
        (etag, manifest, hit), = db.execute("SELECT etag, manifest, hit FROM entries WHERE task_id = ?", (task_id,))
        manifest = json.loads(manifest)
        manifest["outputs"] += [dict(zip(("path", "kind", "digest", "size", "mode", "target"), r)) for r in extra]
        hit = json.loads(hit)
        hit[4] += extra
        db.execute("UPDATE entries SET manifest = ?, hit = ? WHERE etag = ?", (json.dumps(manifest), json.dumps(hit), etag))


def chain(*links: str) -> list[list]:
    """out/data/l0 -> .., l1 -> l0/.., ...: each climbs one folder more, through the one before."""
    return [["out/data/l0", "symlink", None, 0, 0o777, ".."]] + [
        [f"out/data/l{i}", "symlink", None, 0, 0o777, f"l{i - 1}/.."] for i in range(1, len(links) + 1)]


ATTACKS = {
    # l2 is the folder above the workspace: a file two folders up
    "above the workspace": chain("l1", "l2") + [["out/data/l2/planted.txt", "file", "{digest}", "{size}", 0o644, None]],
    # l1 is the workspace root: a git hook and the config
    "git hook": chain("l1") + [["out/data/l1/.git/hooks/pre-commit", "file", "{digest}", "{size}", 0o755, None]],
    "nxrun.toml": chain("l1") + [["out/data/l1/nxrun.toml", "file", "{digest}", "{size}", 0o644, None]],
    # a link aimed straight at the hook, and a chain whose file record comes first
    "link to the hook": [["out/data/hook", "symlink", None, 0, 0o777, "../../.git/hooks/pre-commit"]],
    "file before its links": [["out/data/l1/nxrun.toml", "file", "{digest}", "{size}", 0o644, None]] + chain("l1"),
    # names the file system cannot take: refused up front, not a failure half-way through
    "name too long": [["out/data/" + "n" * 300, "file", "{digest}", "{size}", 0o644, None]],
    "target too long": [["out/data/l", "symlink", None, 0, 0o777, "x/" * 2100]],
    "name not UTF-8": [["out/data/\udcff", "file", "{digest}", "{size}", 0o644, None]],
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_tampered_local_entry_with_a_chain_of_links_is_refused_and_the_task_runs(ws: Workspace, attack):
    make(ws)
    ws.nxrun("run", "gen:data", check=True)
    blob = ws.root / "out/data/a.txt"
    with sqlite3.connect(ws.root / ".nxrun" / "index.db") as db:
        (hit,), = db.execute("SELECT hit FROM entries WHERE task_id = 'gen:data'")
    _, _, digest, size, _, _ = next(f for f in json.loads(hit)[4] if f[0] == "out/data/a.txt")
    # planted files reuse a blob the cache holds: only the paths are forged
    tamper_local_entry(ws, "gen:data", [[digest if f == "{digest}" else size if f == "{size}" else f for f in r]
                                        for r in ATTACKS[attack]])
    (ws.root / "out").rename(ws.root.parent / "out-before")    # the hit has something to restore
    skip = [ws.root / "out" / "data", ws.root / ".nxrun", ws.root.parent / "out-before", ws.root.parent / "runs.log"]
    before = snapshot(ws.root.parent, skip)
    result = ws.nxrun("run", "gen:data")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "gen:data: rejected unsafe cache entry from local cache" in output
    assert "treating it as a miss and running the task" in output
    assert runs(ws) == 2
    after = snapshot(ws.root.parent, skip)
    assert after == before | {"ws/out": after["ws/out"]}        # only the outputs' own folder is new
    assert blob.read_text() == "hello\n"
    assert sorted(os.listdir(ws.root / "out/data")) == ["a.txt", "run.sh"]


def _killing_driver(tmp_path: Path) -> Path:
    """`python driver.py ARGS` is `nxrun ARGS`, SIGKILLed the moment a restored file is about to be
    renamed into a declared output: the state a kill during a restore leaves."""
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent("""
        import os, signal, sys
        outputs = os.path.realpath(os.environ["KILL_RENAMES_INTO"])
        real_replace = os.replace

        def replace(src, dst, *, src_dir_fd=None, dst_dir_fd=None):
            folder = os.readlink(f"/proc/self/fd/{dst_dir_fd}") if dst_dir_fd is not None else os.getcwd()
            target = os.path.realpath(os.path.join(folder, dst))
            if target.startswith(outputs + os.sep):
                os.kill(os.getpid(), signal.SIGKILL)
            return real_replace(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

        os.replace = replace
        sys.argv = ["nxrun", *sys.argv[1:]]
        from nxrun.launch import main
        main()
    """))
    return driver


def _recorded_paths(ws: Workspace, task_id: str) -> list[str]:
    with sqlite3.connect(ws.root / ".nxrun" / "index.db") as db:
        rows = db.execute("SELECT hit FROM entries WHERE task_id = ?", (task_id,)).fetchall()
    return sorted(f[0] for (hit,) in rows for f in json.loads(hit)[4])


def test_a_restore_killed_midway_leaves_no_temp_file_among_the_outputs(ws: Workspace, tmp_path):
    make(ws)
    ws.nxrun("run", "gen:data", check=True)
    ws.write("out/data/a.txt", "changed by hand\n")          # the hit has a file to rewrite
    env = dict(os.environ, KILL_RENAMES_INTO=str(ws.root / "out/data"), NO_COLOR="1")
    env.pop("NXRUN_REMOTE", None)
    killed = subprocess.run([sys.executable, str(_killing_driver(tmp_path)), "run", "gen:data"], cwd=ws.root,
                            env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr                    # it really died mid-restore
    assert sorted(os.listdir(ws.root / "out/data")) == ["a.txt", "run.sh"]
    # a later run of the task records only what its command wrote
    summary = ws.run_json("--skip-cache", "gen:data")
    assert ws.statuses(summary) == {"gen:data": "miss"}
    assert _recorded_paths(ws, "gen:data") == ["out/data/a.txt", "out/data/run.sh"]
    assert ws.read("out/data/a.txt") == "hello\n"


def test_hardlink_restore_keeps_executables_and_an_unchanged_rerun_writes_nothing(ws: Workspace):
    make(ws, restore="hardlink")
    ws.nxrun("run", "gen:data", check=True)
    for _ in range(2):                               # restore into nothing, then over the restored files
        (ws.root / "out").rename(ws.root / f"gone-{os.urandom(4).hex()}")
        assert ws.statuses(ws.run_json("gen:data")) == {"gen:data": "local-hit"}
    data = ws.root / "out/data"
    inodes = {name: os.lstat(data / name).st_ino for name in os.listdir(data)}
    assert os.access(data / "run.sh", os.X_OK) and (data / "run.sh").read_text() == "#!/bin/sh\necho hi\n"
    assert not os.access(data / "a.txt", os.W_OK) or os.geteuid() == 0
    assert (data / "a.txt").stat().st_mode & 0o777 == 0o444
    for _ in range(2):
        assert ws.statuses(ws.run_json("gen:data")) == {"gen:data": "local-hit"}
        assert {name: os.lstat(data / name).st_ino for name in os.listdir(data)} == inodes
    assert runs(ws) == 1


def test_a_task_whose_output_links_out_of_its_outputs_is_not_cached(ws: Workspace):
    ws.write("nxrun.toml", """
        [projects.gen.targets.data]
        command = "mkdir -p out/data && cp src/a.txt out/data/a.txt && ln -sf ../../src/a.txt out/data/src-link && echo ran >> ../runs.log"
        inputs  = ["src/a.txt"]
        outputs = ["out/data"]
    """)
    ws.write("src/a.txt", "hello\n")
    first = ws.nxrun("run", "gen:data", check=True)
    assert "link 'out/data/src-link' -> '../../src/a.txt' leads out of the task's declared outputs" in first.stdout
    assert "not cached" in first.stdout
    second = ws.nxrun("run", "gen:data", check=True)
    assert "rejected" not in second.stdout + second.stderr
    assert runs(ws) == 2


def test_a_hit_restores_folder_modes_and_never_keeps_special_bits_found_on_disk(ws: Workspace):
    ws.write("nxrun.toml", """
        [projects.gen.targets.data]
        command = "mkdir -p out/data/private && chmod 700 out/data/private && printf 'x' > out/data/run.sh && chmod 755 out/data/run.sh && echo ran >> ../runs.log"
        outputs = ["out/data"]
    """)
    ws.nxrun("run", "gen:data", check=True)
    os.chmod(ws.root / "out/data/private", 0o755)
    os.chmod(ws.root / "out/data/run.sh", 0o4755)
    assert ws.statuses(ws.run_json("gen:data")) == {"gen:data": "local-hit"}
    assert runs(ws) == 1
    assert (ws.root / "out/data/private").stat().st_mode & 0o7777 == 0o700
    assert (ws.root / "out/data/run.sh").stat().st_mode & 0o7777 == 0o755
