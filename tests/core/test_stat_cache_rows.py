"""The stat cache's rows in the index: a run loads only those of its own workspace (a cache shared
by many clones holds theirs too), and `cache prune` forgets the rows of files that are gone or
changed, which can never match again."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cli_workspace import Workspace

from nxrun.store.local import LocalStore


def test_a_run_loads_only_its_own_workspace_rows(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "cache")
    row = (1, 2, 3, 4, "d")
    paths = ["/ws/a.txt", "/ws/src/b.txt", "/ws0/c.txt", "/ws-2/d.txt", "/wsx/e.txt", "/w/f.txt", "/ws"]
    store.save_stat_cache({p: row for p in paths})
    assert sorted(store.load_stat_cache(under="/ws")) == ["/ws/a.txt", "/ws/src/b.txt"]
    assert sorted(store.load_stat_cache(under="/ws/")) == ["/ws/a.txt", "/ws/src/b.txt"]
    assert sorted(store.load_stat_cache(under="/")) == sorted(paths)
    assert sorted(store.load_stat_cache()) == sorted(paths)


def test_prune_forgets_digests_of_gone_and_changed_files(ws: Workspace) -> None:
    ws.write("nxrun.toml", """
    [projects.p.targets.t]
    command = "cat src/*.txt > out.txt"
    inputs  = ["src/**/*"]
    outputs = ["out.txt"]
    """)
    for name in ("kept", "gone", "changed"):
        ws.write(f"src/{name}.txt", f"{name}\n")
    ws.run_json("p:t")
    ws.run_json("p:t")          # the first run's files were too fresh to remember (racy): now they are
    index = ws.root / ".nxrun" / "index.db"

    def rows() -> set[str]:
        with sqlite3.connect(index) as conn:
            return {Path(p).name for (p,) in conn.execute("SELECT path FROM stat_cache")}

    assert {"kept.txt", "gone.txt", "changed.txt", "out.txt"} <= rows()
    (ws.root / "src" / "gone.txt").unlink()
    ws.write("src/changed.txt", "changed again, longer\n")
    out = ws.nxrun("cache", "prune", "--max-size", "1G", check=True).stdout
    assert "2 file digests of gone or changed files forgotten" in out, out
    left = rows()
    assert "kept.txt" in left and "out.txt" in left
    assert "gone.txt" not in left and "changed.txt" not in left
    assert ws.statuses(ws.run_json("p:t")) == {"p:t": "miss"}
