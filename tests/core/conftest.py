"""Fixtures for end-to-end tests: a temporary workspace and the real `nxrun` CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


class Workspace:
    def __init__(self, root: Path):
        self.root = root

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()

    def nxrun(self, *args: str, env: dict | None = None, check: bool | None = None,
              timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
        full_env = dict(os.environ)
        full_env.pop("NXRUN_REMOTE", None)
        full_env["NO_COLOR"] = "1"
        full_env.update(env or {})
        result = subprocess.run([sys.executable, "-m", "nxrun", *args], cwd=self.root, env=full_env,
                                capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            raise AssertionError(f"nxrun {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n"
                                 f"{result.stderr}")
        return result

    def run_json(self, *args: str, env: dict | None = None, expect_rc: int = 0) -> dict:
        result = self.nxrun("run", "--json", *args, env=env)
        assert result.returncode == expect_rc, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
        return json.loads(result.stdout)

    @staticmethod
    def statuses(summary: dict) -> dict[str, str]:
        return {t["id"]: t["status"] for t in summary["tasks"] if t["status"] != "aggregate"}


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
