"""Helpers of the remote cache tests: workspaces, fresh clones, running the real `nxrun` CLI in a
subprocess as a separate machine would, and a view of the bucket."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from weed_server import client_env, make_client

REPO = Path(__file__).resolve().parents[2]

PIPELINE_TOML = """\
[workspace]
cache-dir = ".nxrun"
parallel = 4

[remote]
url = "{url}"
connect-timeout = 1
read-timeout = 5

[projects.gen.targets.data]
command = "echo gen:data >> \\"$NXRUN_TEST_RUNLOG\\"; python3 tools/gen.py"
inputs  = ["src/gen/**/*", "tools/gen.py"]
outputs = ["out/data"]

[projects.gen.targets.build]
command    = "echo gen:build >> \\"$NXRUN_TEST_RUNLOG\\"; cat out/data/a.txt src/gen/extra.txt > out/build.txt"
depends-on = ["data"]
inputs     = ["src/gen/extra.txt"]
outputs    = ["out/build.txt"]

[projects.gen.targets.report]
command    = "echo gen:report >> \\"$NXRUN_TEST_RUNLOG\\"; wc -c out/build.txt > out/report.txt; cat src/report.txt >> out/report.txt"
depends-on = ["build"]
inputs     = ["src/report.txt"]
outputs    = ["out/report.txt"]
"""

GEN_PY = """\
import os
os.makedirs("out/data/sub", exist_ok=True)
open("out/data/a.txt", "w").write(open("src/gen/input.txt").read().upper())
open("out/data/sub/blob.bin", "wb").write(bytes(range(256)) * 64)
with open("out/data/run.sh", "w") as handle:
    handle.write("#!/bin/sh\\necho hi\\n")
os.chmod("out/data/run.sh", 0o755)
if not os.path.lexists("out/data/link.txt"):
    os.symlink("a.txt", "out/data/link.txt")
print("generated", len(os.listdir("out/data")), "entries")
"""


@dataclass
class Remote:
    endpoint: str
    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def client(self, **config):
        return make_client(self.endpoint, **config)

    def keys(self, under: str = "") -> list[str]:
        client = self.client()
        try:
            names = []
            for page in client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=f"{self.prefix}/{under}".rstrip("/")):
                names.extend(o["Key"][len(self.prefix) + 1:] for o in page.get("Contents", []))
            return sorted(names)
        finally:
            client.close()

    def get(self, key: str) -> bytes:
        client = self.client()
        try:
            return client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}")["Body"].read()
        finally:
            client.close()

    def put(self, key: str, data: bytes) -> None:
        client = self.client()
        try:
            client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}", Body=data)
        finally:
            client.close()


def write_pipeline(root: Path, url: str, extra_remote: str = "") -> Path:
    """A three-task pipeline (a folder with a binary file, an executable and a symlink; then two
    files downstream) whose commands log that they ran."""
    (root / "src" / "gen").mkdir(parents=True, exist_ok=True)
    (root / "tools").mkdir(exist_ok=True)
    (root / "src" / "gen" / "input.txt").write_text("some input\n")
    (root / "src" / "gen" / "extra.txt").write_text("extra\n")
    (root / "src" / "report.txt").write_text("report footer\n")
    (root / "tools" / "gen.py").write_text(GEN_PY)
    text = PIPELINE_TOML.format(url=url)
    if extra_remote:
        text = text.replace('read-timeout = 5\n', 'read-timeout = 5\n' + extra_remote.rstrip("\n") + "\n")
    (root / "nxrun.toml").write_text(text)
    return root


def fresh_clone(source: Path, destination: Path) -> Path:
    """Another machine: the workspace's sources in another folder, no cache, no outputs."""
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns(".nxrun", "out", "runlog"),
                    symlinks=True)
    return destination


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    summary: dict | None
    ran: list[str]

    @property
    def counts(self) -> dict:
        return (self.summary or {}).get("counts", {})

    def statuses(self) -> dict[str, str]:
        return {t["id"]: t["status"] for t in (self.summary or {}).get("tasks", [])}


def nxrun(root: Path, *args: str, env: dict | None = None, endpoint: str | None = None,
          timeout: float = 120) -> Result:
    """Run the real CLI in a subprocess, as a separate machine would (its own process, own env)."""
    runlog = root / "runlog"
    if runlog.exists():
        runlog.unlink()
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("AWS_", "NXRUN_"))}
    full_env.update({"NXRUN_TEST_RUNLOG": str(runlog), "NO_COLOR": "1",
                     "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    if endpoint:
        full_env.update(client_env(endpoint))
    full_env.update(env or {})
    process = subprocess.run([sys.executable, "-m", "nxrun", "-C", str(root), *args], env=full_env,
                             capture_output=True, text=True, timeout=timeout)
    summary = None
    if "--json" in args:
        try:
            summary = json.loads(process.stdout)
        except json.JSONDecodeError:
            summary = None
    ran = runlog.read_text().split() if runlog.exists() else []
    return Result(process.returncode, process.stdout, process.stderr, summary, ran)


def tree(root: Path, under: str = "out") -> dict[str, tuple]:
    """Everything under a folder: path -> (kind, bytes or link target, mode bits)."""
    found = {}
    base = root / under
    for folder, dirs, files in os.walk(base):
        for name in sorted(dirs + files):
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = ("symlink", os.readlink(path), 0)
            elif path.is_file():
                found[rel] = ("file", path.read_bytes(), path.stat().st_mode & 0o777)
            elif path.is_dir():
                found[rel] = ("dir", b"", 0)
    return found


def process_runs(pid: int) -> bool:
    """Whether process `pid` exists and has not ended (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def expect_gone(pid: int, timeout: float, what: str) -> None:
    """Wait until process `pid` has ended (failing, naming `what`, after `timeout` s); it is killed
    at the end either way, so a failed test leaves nothing running."""
    import signal

    from waiting import wait_until

    try:
        wait_until(lambda: not process_runs(pid), timeout=timeout, what=what, interval=0.05)
    finally:
        if process_runs(pid):
            os.kill(pid, signal.SIGKILL)
