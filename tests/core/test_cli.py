"""The CLI surface: --version, init, run-many, affected, graph formats, history."""

from __future__ import annotations

import json
import subprocess

from cli_workspace import Workspace


def test_version_and_init_starter_runs(ws: Workspace):
    result = ws.nxrun("--version", check=True)
    assert result.stdout.startswith("nxrun, version ")
    ws.nxrun("init", check=True)
    assert ws.nxrun("init").returncode != 0        # never overwrites without --force
    summary = ws.run_json("demo:report")
    assert ws.statuses(summary) == {"demo:hello": "miss", "demo:report": "miss"}
    assert ws.read("out/hello.txt") == "hello from nxrun\n"


def test_run_many_runs_the_target_in_every_project(ws: Workspace):
    ws.write("nxrun.toml", """
        [projects.a.targets.test]
        command = "echo a > a.txt"
        inputs  = []
        outputs = ["a.txt"]
        [projects.b.targets.test]
        command = "echo b > b.txt"
        inputs  = []
        outputs = ["b.txt"]
        [projects.b.targets.other]
        command = "echo nope > other.txt"
        inputs  = []
    """)
    result = ws.nxrun("run-many", "-t", "test", "--json", check=True)
    assert sorted(t["id"] for t in json.loads(result.stdout)["tasks"]) == ["a:test", "b:test"]


def test_affected_lists_tasks_touched_by_a_git_change_and_their_dependents(ws: Workspace):
    ws.write("nxrun.toml", """
        [projects.lib.targets.build]
        command = "cat lib/src.txt > lib.out"
        inputs  = ["lib/**/*"]
        outputs = ["lib.out"]
        [projects.app.targets.build]
        command    = "cat lib.out app/main.txt > app.out"
        depends-on = ["lib:build"]
        inputs     = ["app/**/*"]
        outputs    = ["app.out"]
        [projects.docs.targets.build]
        command = "cat docs/index.txt > docs.out"
        inputs  = ["docs/**/*"]
        outputs = ["docs.out"]
    """)
    for rel in ("lib/src.txt", "app/main.txt", "docs/index.txt"):
        ws.write(rel, rel)
    ws.write(".gitignore", "*.out\n.nxrun/\n")
    git = ["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=ws.root, check=True)
    subprocess.run([*git, "add", "-A"], cwd=ws.root, check=True)
    subprocess.run([*git, "commit", "-qm", "base"], cwd=ws.root, check=True)
    ws.write("lib/src.txt", "changed")
    result = json.loads(ws.nxrun("affected", "--base", "main", "--list", "--json", check=True).stdout)
    assert result["changed_files"] == ["lib/src.txt"]
    assert result["affected"] == ["lib:build", "app:build"]
    ws.nxrun("run", "docs:build", check=True)       # the cache folder is ignored even if git sees it
    (ws.root / ".gitignore").write_text("*.out\n")
    result = json.loads(ws.nxrun("affected", "--base", "main", "--list", "--json", check=True).stdout)
    assert result["affected"] == ["lib:build", "app:build"]


def test_graph_formats(diamond: Workspace):
    dot = diamond.nxrun("graph", "--format", "dot", check=True).stdout
    assert dot.startswith("digraph") and '"a:gen" -> "b:left"' in dot
    text = diamond.nxrun("graph", "c:join", check=True).stdout
    assert "4 tasks in 3 projects" in text and "<- b:right" in text


def test_history_records_every_run_and_task(diamond: Workspace):
    diamond.run_json("c:join")
    diamond.run_json("c:join")
    rows = json.loads(diamond.nxrun("history", "a:gen", "--json", check=True).stdout)
    assert [r["status"] for r in rows] == ["local-hit", "miss"]
    assert rows[0]["etag"] == rows[1]["etag"]
    assert rows[0]["saved"] > 0
