"""`show`, `why`, `cache sync` and the graph page answer "what would this task's ETag be now"
through run/etag.py, without building the scheduler, and agree with what a run computes."""

from __future__ import annotations

import json
import subprocess
import sys

from cli_workspace import Workspace

PROBE = """
import sys
from nxrun.launch import main
sys.argv = ["nxrun", "-C", sys.argv[1], *sys.argv[2:]]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
assert "nxrun.run.scheduler" not in sys.modules, "the view built a scheduler"
"""


def test_show_why_and_the_graph_page_need_no_scheduler(ws: Workspace, tmp_path):
    ws.write("nxrun.toml", """
        [projects.p.targets.up]
        command = "cat src.txt > up.txt"
        inputs  = ["src.txt"]
        outputs = ["up.txt"]
        [projects.p.targets.down]
        command    = "cat up.txt > down.txt"
        depends-on = ["up"]
        inputs     = []
        outputs    = ["down.txt"]
    """)
    ws.write("src.txt", "one\n")
    summary = ws.run_json("p:down")
    etags = {t["id"]: t["etag"] for t in summary["tasks"]}
    for args in (["show", "p:down", "--json"], ["why", "p:down", "--json"],
                 ["graph", "--html", str(tmp_path / "page.html")]):
        done = subprocess.run([sys.executable, "-c", PROBE, str(ws.root), *args], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
        if args[0] == "show":
            shown = json.loads(done.stdout)
            assert shown["etag"] == etags["p:down"] and shown["cached"] is True
    assert "p:down" in (tmp_path / "page.html").read_text()
