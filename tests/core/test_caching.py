"""Hit, miss, early cutoff, moved workspaces and restore: the promises the cache makes."""

from __future__ import annotations

import os
import shutil

from cli_workspace import Workspace


def runs_log(ws: Workspace) -> list[str]:
    path = ws.root.parent / "runs.log"
    return path.read_text().split("\n")[:-1] if path.exists() else []


def test_second_run_restores_everything_and_runs_nothing(diamond: Workspace):
    first = diamond.run_json("c:join")
    assert set(diamond.statuses(first).values()) == {"miss"}
    assert len(runs_log(diamond)) == 4
    second = diamond.run_json("c:join")
    assert set(diamond.statuses(second).values()) == {"local-hit"}
    assert len(runs_log(diamond)) == 4
    assert diamond.read("out/join.txt") == "HELLO\n6\n"


def test_one_changed_byte_misses_and_runs_only_downstream(diamond: Workspace):
    diamond.run_json("c:join")
    diamond.write("src/a.txt", "hellp\n")
    summary = diamond.run_json("c:join")
    statuses = diamond.statuses(summary)
    # left sees new contents; right's output (a byte count) is identical: early cutoff keeps join's ETag
    # dependent on left only
    assert statuses["a:gen"] == "miss"
    assert statuses["b:left"] == "miss"
    assert statuses["b:right"] == "miss"
    assert statuses["c:join"] == "miss"
    assert diamond.read("out/join.txt") == "HELLP\n6\n"


def test_early_cutoff_upstream_rerun_with_identical_output_keeps_downstream_cached(ws: Workspace):
    ws.write("nxrun.toml", """
        [projects.p.targets.norm]
        command = "mkdir -p out && tr -s ' ' < in.txt > out/norm.txt"
        inputs  = ["in.txt"]
        outputs = ["out/norm.txt"]
        [projects.p.targets.count]
        command    = "wc -w < out/norm.txt > out/count.txt && echo counted >> ../runs.log"
        depends-on = ["norm"]
        inputs     = []
        outputs    = ["out/count.txt"]
    """)
    ws.write("in.txt", "a b c\n")
    ws.run_json("p:count")
    ws.write("in.txt", "a   b    c\n")  # different input, same normalised output
    summary = ws.run_json("p:count")
    assert ws.statuses(summary) == {"p:norm": "miss", "p:count": "local-hit"}
    assert runs_log(ws) == ["counted"]


def test_touched_file_hits_and_moved_workspace_hits(diamond: Workspace, tmp_path):
    diamond.run_json("c:join")
    os.utime(diamond.root / "src/a.txt", (1, 1))
    assert set(diamond.statuses(diamond.run_json("c:join")).values()) == {"local-hit"}
    moved = tmp_path / "elsewhere" / "clone"
    shutil.copytree(diamond.root, moved, symlinks=True)
    clone = Workspace(moved)
    shutil.rmtree(moved / "out")
    summary = clone.run_json("c:join")
    assert set(clone.statuses(summary).values()) == {"local-hit"}
    assert clone.read("out/join.txt") == "HELLO\n6\n"


def test_deleted_outputs_are_restored_byte_identical(diamond: Workspace):
    diamond.run_json("c:join")
    before = {p: (diamond.root / p).read_bytes() for p in ("out/a.txt", "out/left.txt", "out/join.txt")}
    shutil.rmtree(diamond.root / "out")
    summary = diamond.run_json("c:join")
    assert set(diamond.statuses(summary).values()) == {"local-hit"}
    assert {p: (diamond.root / p).read_bytes() for p in before} == before


def test_restored_output_folder_loses_stale_files(ws: Workspace):
    ws.write("nxrun.toml", """
        [projects.p.targets.gen]
        command = "mkdir -p out/dir && cp in.txt out/dir/copy.txt && ln -sf copy.txt out/dir/link && chmod +x out/dir/copy.txt"
        inputs  = ["in.txt"]
        outputs = ["out/dir"]
    """)
    ws.write("in.txt", "x\n")
    ws.run_json("p:gen")
    (ws.root / "out/dir/stale.txt").write_text("not mine")
    (ws.root / "out/dir/copy.txt").unlink()
    summary = ws.run_json("p:gen")
    assert ws.statuses(summary) == {"p:gen": "local-hit"}
    assert sorted(os.listdir(ws.root / "out/dir")) == ["copy.txt", "link"]
    assert os.readlink(ws.root / "out/dir/link") == "copy.txt"
    assert os.access(ws.root / "out/dir/copy.txt", os.X_OK)


def test_hit_replays_the_log(ws: Workspace):
    ws.write("nxrun.toml", """
        [projects.p.targets.say]
        command = "echo the answer is 42"
        inputs  = []
    """)
    first = ws.nxrun("run", "p:say", check=True)
    assert "the answer is 42" in first.stdout
    second = ws.nxrun("run", "p:say", check=True)
    assert "cache hit" in second.stdout and "the answer is 42" in second.stdout


def test_env_runtime_and_args_enter_the_etag(ws: Workspace):
    ws.write("nxrun.toml", """
        [runtime]
        flavour = "cat flavour.txt"
        [projects.p.targets.t]
        command = "echo $MODE > out.txt"
        inputs  = ["env:MODE", "runtime:flavour", "pkg:click"]
        outputs = ["out.txt"]
    """)
    ws.write("flavour.txt", "vanilla")
    assert ws.statuses(ws.run_json("p:t", env={"MODE": "a"})) == {"p:t": "miss"}
    assert ws.statuses(ws.run_json("p:t", env={"MODE": "a"})) == {"p:t": "local-hit"}
    assert ws.statuses(ws.run_json("p:t", env={"MODE": "b"})) == {"p:t": "miss"}
    ws.write("flavour.txt", "chocolate")
    assert ws.statuses(ws.run_json("p:t", env={"MODE": "b"})) == {"p:t": "miss"}
    assert ws.statuses(ws.run_json("p:t", "--", "--extra", env={"MODE": "b"})) == {"p:t": "miss"}
    assert ws.statuses(ws.run_json("p:t", "--", "--extra", env={"MODE": "b"})) == {"p:t": "local-hit"}


def test_cache_never_always_runs_and_skip_cache_ignores_hits(ws: Workspace):
    ws.write("nxrun.toml", """
        [projects.p.targets.live]
        command = "date +%s%N > now.txt"
        inputs  = []
        outputs = ["now.txt"]
        cache   = "never"
        [projects.p.targets.cached]
        command = "echo hi > hi.txt"
        inputs  = []
        outputs = ["hi.txt"]
    """)
    ws.run_json("p:live")
    assert ws.statuses(ws.run_json("p:live")) == {"p:live": "miss"}
    ws.run_json("p:cached")
    assert ws.statuses(ws.run_json("p:cached", "--skip-cache")) == {"p:cached": "miss"}
    assert ws.statuses(ws.run_json("p:cached")) == {"p:cached": "local-hit"}


def test_dry_run_predicts_without_running(diamond: Workspace):
    summary = diamond.run_json("c:join", "--dry-run")
    statuses = diamond.statuses(summary)
    assert statuses["a:gen"] == "predicted-miss"
    assert statuses["c:join"] == "unknown"
    assert runs_log(diamond) == []
    diamond.run_json("c:join")
    summary = diamond.run_json("c:join", "--dry-run")
    assert set(diamond.statuses(summary).values()) == {"predicted-hit"}
