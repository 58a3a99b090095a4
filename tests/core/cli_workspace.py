"""A temporary nxrun workspace and the real `nxrun` CLI run in a subprocess, for end-to-end tests.

Kept apart from conftest.py so test modules can import it by a name no other test folder uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path


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
