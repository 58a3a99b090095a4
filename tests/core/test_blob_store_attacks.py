"""What a planted object in the cache's blobs folder, or a closed stdout, still does: each test here fails
on the code it was written against (found in review), and states what should happen instead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_workspace import Workspace


def _blobs(ws: Workspace) -> Path:
    return ws.root / ".nxrun" / "blobs"


def _blob_holding(ws: Workspace, data: bytes) -> Path:
    return next(p for p in _blobs(ws).rglob("*") if p.is_file() and p.read_bytes() == data)


@pytest.mark.parametrize("kind", ["file", "fifo"])
def test_a_file_or_fifo_where_a_blob_prefix_folder_belongs_is_a_miss_not_a_failed_task(diamond: Workspace,
                                                                                       kind: str):
    # blobs/ab/ replaced by a file: open_blob gets ENOTDIR, which it does not count as a corrupt blob, so
    # the hit fails the task ("could not restore its outputs ... not a directory") and the run ends with 1
    diamond.run_json("c:join")
    folder = _blob_holding(diamond, b"HELLO\n").parent
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()
    if kind == "fifo":
        os.mkfifo(folder)
    else:
        folder.write_text("planted")
    (diamond.root / "out/left.txt").unlink()
    result = diamond.nxrun("run", "--json", "c:join", env={"NXRUN_JOURNAL": "off"}, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    statuses = diamond.statuses(json.loads(result.stdout))
    assert statuses["b:left"] == "miss"
    assert diamond.read("out/left.txt") == "HELLO\n"


@pytest.mark.parametrize("command", [["cache", "stats"], ["cache", "prune", "--max-size", "1000000"]])
@pytest.mark.parametrize("kind", ["dangling-link", "link-loop", "folder"])
def test_cache_stats_and_prune_survive_a_link_or_folder_among_the_blobs(diamond: Workspace, command: list[str],
                                                                        kind: str):
    # iter_blobs yields every name; stats and prune call path.stat() (follows links: FileNotFoundError,
    # ELOOP) and collect_garbage calls path.unlink() (IsADirectoryError on a folder): tracebacks
    diamond.run_json("c:join")
    planted = _blob_holding(diamond, b"HELLO\n").parent / ("0" * 30)
    if kind == "dangling-link":
        planted.symlink_to(diamond.root / "nowhere")
    elif kind == "link-loop":
        planted.symlink_to(planted.name)
    else:
        planted.mkdir()
        (planted / "inside").write_text("x")
    result = diamond.nxrun(*command, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr


def test_cache_clear_changes_nothing_outside_the_cache_through_a_link_in_blobs(diamond: Workspace,
                                                                                tmp_path: Path):
    # clear() walks the blobs folder and chmods every folder it lists to 0o755 before rmtree; os.walk lists
    # a link to a folder among the folders, and os.chmod follows it: a private folder elsewhere became
    # world-readable
    diamond.run_json("c:join")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    (_blobs(diamond) / "zz").symlink_to(private)
    assert diamond.nxrun("cache", "clear", timeout=60).returncode == 0
    assert private.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("journal", ["on", "off"])
@pytest.mark.parametrize("args", [[], ["--json"], ["-q"], ["--dry-run"]])
def test_a_run_started_with_stdout_closed_ends_without_a_traceback(diamond: Workspace, journal: str,
                                                                   args: list[str]):
    # `nxrun run ... >&-`: Python sets sys.stdout to None; print_summary and the journal's replay call
    # sys.stdout.flush() -> AttributeError, which finish_output does not catch
    diamond.run_json("c:join")
    env = dict(os.environ, NO_COLOR="1", NXRUN_JOURNAL=journal)
    env.pop("NXRUN_REMOTE", None)
    for _ in range(2):          # the second answers from the journal when it is on
        result = subprocess.run([sys.executable, "-m", "nxrun", "run", *args, "c:join"], cwd=diamond.root, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120,
                                preexec_fn=lambda: os.close(1))
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode in (0, 1), result.stderr


@pytest.mark.parametrize("command", [["cache", "verify"], ["cache", "prune", "--max-size", "100000000"]])
def test_verify_and_prune_delete_nothing_through_a_link_in_blobs(diamond: Workspace, tmp_path: Path,
                                                                  command: list[str]):
    # iter_blobs follows a link where a prefix folder belongs (Path.is_dir); verify then removed every file
    # of the folder it points to as a "corrupt blob", and every subfolder with rmtree; prune removed the
    # files as unreferenced blobs, then crashed on the first subfolder
    diamond.run_json("c:join")
    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "notes.txt").write_text("keep\n")
    (precious / "sub" / "deep.txt").write_text("keep\n")
    (_blobs(diamond) / "zz").symlink_to(precious)
    result = diamond.nxrun(*command, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    assert (precious / "notes.txt").read_text() == "keep\n"
    assert (precious / "sub" / "deep.txt").read_text() == "keep\n"
