"""Runner semantics: failures, --keep-going, matrix, --only, resources, dedup, args, why/show."""

from __future__ import annotations

import json

from cli_workspace import Workspace


def test_failure_skips_dependents_and_exits_non_zero(ws: Workspace):
    ws.write("nxrun.toml", """
        [workspace]
        parallel = 1
        [projects.p.targets.bad]
        command = "echo about to fail; exit 3"
        inputs  = []
        [projects.p.targets.after]
        command    = "echo should not run > after.txt"
        depends-on = ["bad"]
        inputs     = []
        outputs    = ["after.txt"]
        [projects.q.targets.independent]
        command = "echo fine > independent.txt"
        inputs  = []
        outputs = ["independent.txt"]
        [projects.all.targets.everything]
        depends-on = ["p:after", "q:independent"]
    """)
    summary = ws.run_json("all:everything", expect_rc=1)
    statuses = ws.statuses(summary)
    assert statuses["p:bad"] == "failed"
    assert statuses["p:after"] == "skipped"
    assert not (ws.root / "after.txt").exists()
    failed = next(t for t in summary["tasks"] if t["id"] == "p:bad")
    assert "exit code 3" in failed["note"]
    # a failed task is never cached: it fails again
    assert ws.statuses(ws.run_json("p:bad", expect_rc=1)) == {"p:bad": "failed"}
    kept = ws.statuses(ws.run_json("all:everything", "--keep-going", expect_rc=1))
    assert kept["q:independent"] in ("miss", "local-hit")
    assert kept["p:after"] == "skipped"
    assert (ws.root / "independent.txt").exists()


def test_command_not_found_names_the_task(ws: Workspace):
    ws.write("nxrun.toml", """
        [projects.p.targets.t]
        command = "definitely-not-a-program-xyz --flag"
        inputs  = []
    """)
    result = ws.nxrun("run", "p:t")
    assert result.returncode == 1
    assert "p:t" in result.stdout and "command was not found" in result.stdout


def test_task_killed_mid_run_is_not_cached(ws: Workspace):
    ws.write("nxrun.toml", """
        [projects.p.targets.t]
        command = "mkdir -p out && echo partial > out/o.txt && kill -9 $$"
        inputs  = []
        outputs = ["out/o.txt"]
    """)
    summary = ws.run_json("p:t", expect_rc=1)
    assert "signal 9" in summary["tasks"][0]["note"]
    again = ws.run_json("p:t", expect_rc=1)
    assert ws.statuses(again) == {"p:t": "failed"}


def test_matrix_expands_one_task_per_value_and_reruns_only_the_changed_one(ws: Workspace):
    ws.write("nxrun.toml", """
        [projects.k.targets.build]
        matrix  = { kernel = "glob:kernels/*.cu", opt = ["O2", "O3"] }
        command = "mkdir -p build && cat kernels/${matrix.kernel}.cu > build/${matrix.kernel}-${matrix.opt}.o"
        inputs  = ["kernels/${matrix.kernel}.cu"]
        outputs = ["build/${matrix.kernel}-${matrix.opt}.o"]
        [projects.k.targets.link]
        command    = "cat build/*.o > build/all.bin"
        depends-on = ["build"]
        inputs     = []
        outputs    = ["build/all.bin"]
    """)
    ws.write("kernels/01_naive.cu", "naive")
    ws.write("kernels/02_tiled.cu", "tiled")
    statuses = ws.statuses(ws.run_json("k:link"))
    assert set(statuses) == {"k:build[kernel=01_naive,opt=O2]", "k:build[kernel=01_naive,opt=O3]",
                             "k:build[kernel=02_tiled,opt=O2]", "k:build[kernel=02_tiled,opt=O3]", "k:link"}
    ws.write("kernels/02_tiled.cu", "tiled v2")
    statuses = ws.statuses(ws.run_json("k:link"))
    assert statuses["k:build[kernel=01_naive,opt=O2]"] == "local-hit"
    assert statuses["k:build[kernel=02_tiled,opt=O3]"] == "miss"
    assert statuses["k:link"] == "miss"
    one = ws.statuses(ws.run_json("k:build[kernel=01_naive,opt=O3]"))
    assert one == {"k:build[kernel=01_naive,opt=O3]": "local-hit"}
    graph = json.loads(ws.nxrun("graph", "--format", "json", check=True).stdout)
    assert len(graph["tasks"]) == 5 and len(graph["edges"]) == 4


def test_only_runs_the_task_alone_with_dependency_outputs_from_disk(ws: Workspace):
    ws.write("nxrun.toml", """
        [projects.p.targets.up]
        command = "echo up >> ../runs.log && cp in.txt up.txt"
        inputs  = ["in.txt"]
        outputs = ["up.txt"]
        [projects.p.targets.down]
        command    = "echo down >> ../runs.log && cat up.txt up.txt > down.txt"
        depends-on = ["up"]
        inputs     = []
        outputs    = ["down.txt"]
    """)
    ws.write("in.txt", "1\n")
    ws.run_json("p:down")
    (ws.root / "up.txt").unlink()          # cached upstream output gone: --only restores it
    summary = ws.run_json("p:down", "--only")
    assert ws.statuses(summary) == {"p:down": "local-hit"}
    assert ws.read("up.txt") == "1\n"
    ws.write("in.txt", "2\n")              # upstream now uncached: --only does not run it
    summary = ws.run_json("p:down", "--only")
    assert ws.statuses(summary) == {"p:down": "local-hit"}
    assert ws.read("up.txt") == "1\n"
    ws.write("up.txt", "edited by hand\n")  # outputs of no cached run: used as they are on disk
    summary = ws.run_json("p:down", "--only")
    assert ws.statuses(summary) == {"p:down": "miss"}
    assert ws.read("down.txt") == "edited by hand\nedited by hand\n"
    log = (ws.root.parent / "runs.log").read_text().split()
    assert log == ["up", "down", "down"]


def test_resources_serialise_tasks(ws: Workspace):
    # each task holds the resource for 0.3 s on purpose (not a wait): long enough that overlapping
    # tasks would show in their start/end times
    body = "\n".join(f"""
        [projects.g.targets.t{i}]
        command   = "date +%s.%N > t{i}.start && sleep 0.3 && date +%s.%N > t{i}.end"
        inputs    = []
        outputs   = ["t{i}.start", "t{i}.end"]
        resources = ["licence"]""" for i in range(3))
    ws.write("nxrun.toml", "[workspace]\nparallel = 3\n" + body + """
        [projects.g.targets.all]
        depends-on = ["t0", "t1", "t2"]
    """)
    ws.run_json("g:all")
    spans = sorted((float(ws.read(f"t{i}.start")), float(ws.read(f"t{i}.end"))) for i in range(3))
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end, f"tasks holding one resource overlapped: {spans}"


def test_identical_tasks_in_one_run_execute_once(ws: Workspace):
    ws.write("nxrun.toml", """
        [workspace]
        parallel = 2
        [projects.a.targets.gen]
        command = "echo ran >> ../runs.log"
        inputs  = []
        [projects.b.targets.gen]
        command = "echo ran >> ../runs.log"
        inputs  = []
    """)
    # (tasks without outputs: two tasks may not declare one output, see test_output_overlap.py)
    summary = ws.run_json("a:gen", "b:gen")
    assert sorted(ws.statuses(summary).values()) == ["local-hit", "miss"]
    assert (ws.root.parent / "runs.log").read_text() == "ran\n"


def test_why_names_the_changed_component_and_show_lists_components(diamond: Workspace):
    diamond.run_json("c:join")
    assert "nothing changed" in diamond.nxrun("why", "a:gen", check=True).stdout
    diamond.write("src/a.txt", "changed\n")
    why = diamond.nxrun("why", "a:gen", check=True).stdout
    assert "changed  file:src/a.txt" in why
    why_down = diamond.nxrun("why", "b:left", check=True).stdout
    assert "nothing changed" in why_down  # upstream outputs on disk are unchanged until a:gen runs
    show = json.loads(diamond.nxrun("show", "a:gen", "--json", check=True).stdout)
    assert "file:src/a.txt" in show["components"] and show["cached"] is False
    diamond.run_json("c:join")
    why_down = diamond.nxrun("why", "b:left").stdout
    assert "nothing changed" in why_down


def test_secrets_never_stored_in_clear(ws: Workspace):
    ws.write("nxrun.toml", """
        [projects.p.targets.t]
        command = "echo using token > out.txt"
        inputs  = ["env:API_TOKEN"]
        outputs = ["out.txt"]
    """)
    secret = "s3cr3t-value-8d1f0a"
    ws.run_json("p:t", env={"API_TOKEN": secret})
    for path in (ws.root / ".nxrun").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), f"secret found in {path}"
    show = ws.nxrun("show", "p:t", env={"API_TOKEN": secret}, check=True).stdout
    assert secret not in show


def test_cache_stats_prune_clear(diamond: Workspace):
    diamond.run_json("c:join")
    stats = json.loads(diamond.nxrun("cache", "stats", "--json", check=True).stdout)
    assert stats["entries"] == 4 and stats["blobs"] >= 4
    out = diamond.nxrun("cache", "prune", "--max-size", "0", check=True).stdout
    assert "evicted 4 entries" in out
    assert json.loads(diamond.nxrun("cache", "stats", "--json").stdout)["blobs"] == 0
    diamond.run_json("c:join")
    diamond.nxrun("cache", "clear", "--yes", check=True)
    assert json.loads(diamond.nxrun("cache", "stats", "--json").stdout)["entries"] == 0
    history = json.loads(diamond.nxrun("history", "--json", check=True).stdout)
    assert len(history) == 2 and history[0]["misses"] == 4


def test_prune_trims_task_history_but_why_still_knows_the_last_run(diamond: Workspace):
    for _ in range(3):
        diamond.run_json("c:join")
    diamond.write("src/a.txt", "changed\n")
    out = diamond.nxrun("cache", "prune", "--max-size", "0", "--keep-runs", "1", check=True).stdout
    assert "evicted 4 entries" in out and "8 history rows of older runs removed" in out
    history = json.loads(diamond.nxrun("history", "--json", check=True).stdout)
    assert len(history) == 3                    # run totals stay (the report's hit-rate chart)
    rows = json.loads(diamond.nxrun("history", "a:gen", "--json", check=True).stdout)
    assert [r["run_id"] for r in rows] == [history[0]["id"]]
    # the entry is gone and older rows too, yet the last run's explain manifest is still known
    why = diamond.nxrun("why", "a:gen", check=True).stdout
    assert "changed  file:src/a.txt" in why
    assert "nothing changed" in diamond.nxrun("why", "b:left", check=True).stdout


def test_graph_snapshot_follows_config_includes_and_matrix_files(ws: Workspace):
    ws.write("nxrun.toml", """
        [workspace]
        include = ["parts/*.toml"]
        [projects.k.targets.build]
        matrix  = { kernel = "glob:kernels/*.cu" }
        command = "true"
        inputs  = []
    """)
    ws.write("parts/one.toml", '[projects.x.targets.a]\ncommand = "true"\ninputs = []\n')
    ws.write("kernels/a.cu", "a")

    def ids() -> set[str]:
        return {t["id"] for t in json.loads(ws.nxrun("graph", "--format", "json", check=True).stdout)["tasks"]}

    assert ids() == {"k:build[kernel=a]", "x:a"}
    assert ids() == {"k:build[kernel=a]", "x:a"}          # from the snapshot
    ws.write("kernels/b.cu", "b")
    assert ids() == {"k:build[kernel=a]", "k:build[kernel=b]", "x:a"}
    ws.write("parts/two.toml", '[projects.y.targets.b]\ncommand = "true"\ninputs = []\n')
    assert "y:b" in ids()
    ws.write("parts/one.toml", '[projects.x.targets.renamed]\ncommand = "true"\ninputs = []\n')
    assert "x:renamed" in ids() and "x:a" not in ids()
    (ws.root / ".nxrun" / "graph-snapshot.json").write_text("{broken")
    assert "x:renamed" in ids()


def test_commands_see_the_python_nxrun_runs_in(ws: Workspace):
    import sys

    ws.write("nxrun.toml", """
        [runtime]
        py = "python -c 'import sys; print(sys.executable)'"
        [projects.p.targets.t]
        command = "python -c 'import sys; print(sys.executable)' > which.txt"
        inputs  = ["runtime:py"]
        outputs = ["which.txt"]
    """)
    ws.run_json("p:t", env={"PATH": "/usr/bin:/bin"})
    import os

    assert os.path.dirname(ws.read("which.txt").strip()) == os.path.dirname(sys.executable)
