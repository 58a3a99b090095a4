"""Fixtures for end-to-end tests: a temporary workspace and the real `nxrun` CLI in a subprocess."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_workspace import Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    return Workspace(root)


DIAMOND = """
[workspace]
parallel = 4

[projects.a.targets.gen]
command = "mkdir -p out && cat src/a.txt > out/a.txt && echo gen ran >> ../runs.log"
inputs  = ["src/a.txt"]
outputs = ["out/a.txt"]

[projects.b.targets.left]
command    = "tr a-z A-Z < out/a.txt > out/left.txt && echo left ran >> ../runs.log"
depends-on = ["a:gen"]
inputs     = []
outputs    = ["out/left.txt"]

[projects.b.targets.right]
command    = "wc -c < out/a.txt > out/right.txt && echo right ran >> ../runs.log"
depends-on = ["a:gen"]
inputs     = []
outputs    = ["out/right.txt"]

[projects.c.targets.join]
command    = "cat out/left.txt out/right.txt > out/join.txt && echo join ran >> ../runs.log"
depends-on = ["b:left", "b:right"]
inputs     = []
outputs    = ["out/join.txt"]
"""


@pytest.fixture
def diamond(ws: Workspace) -> Workspace:
    ws.write("nxrun.toml", DIAMOND)
    ws.write("src/a.txt", "hello\n")
    return ws
