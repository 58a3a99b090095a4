"""The scheduler over the executor contract (nxrun/executors/base.py): an executor that produces
entries (as a remote one does) gets its entry indexed and restored like a remote hit; its
failures fail the task with nothing cached. Choosing the executor (--executor, NXRUN_EXECUTOR,
[workspace] executor) through the real CLI."""

from __future__ import annotations

import io
import os
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

from cli_workspace import Workspace

from nxrun.config import load_workspace
from nxrun.console import Console
from nxrun.executors.base import Executor, Finished, Job
from nxrun.graph import build_graph
from nxrun.hashing import StatCache
from nxrun.run.results import RunOptions
from nxrun.run.scheduler import Runner
from nxrun.store import CacheEntry, OutputRecord
from nxrun.store.capture import digest_of_records, scan_outputs
from nxrun.store.local import LocalStore

PIPELINE = """
[projects.p.targets.a]
command = "mkdir -p out && pwd > out/a.txt && echo made-a"
inputs  = ["src.txt"]
outputs = ["out/a.txt"]

[projects.p.targets.b]
command    = "mkdir -p out && cat out/a.txt src.txt > out/b.txt"
depends-on = ["a"]
inputs     = ["src.txt"]
outputs    = ["out/b.txt"]
"""


class SandboxExecutor(Executor):
    """Runs each job in a fresh folder outside the workspace, holding only the job's input files
    and what earlier jobs produced there, and stores its outputs and log in `store` as a remote
    worker stores them in the remote cache; returns the entry."""

    name = "sandbox"
    produces_entries = True

    def __init__(self, store: LocalStore, root: Path, tamper=None):
        self.store = store
        self.root = root
        self.tamper = tamper
        self.jobs: list[Job] = []
        self.sandboxes: list[str] = []

    def check(self) -> None:
        pass

    def run(self, job: Job, on_line) -> Finished:
        self.jobs.append(job)
        box = Path(tempfile.mkdtemp(prefix="nxrun-sandbox-"))
        self.sandboxes.append(str(box))
        for rel, _digest in job.inputs:
            (box / rel).parent.mkdir(parents=True, exist_ok=True)
            (box / rel).write_bytes((self.root / rel).read_bytes())
        for dep_output in ("out/a.txt",):   # what an upstream job left: restored from the cache
            if (self.root / dep_output).exists() and dep_output not in job.task.outputs:
                (box / dep_output).parent.mkdir(parents=True, exist_ok=True)
                (box / dep_output).write_bytes((self.root / dep_output).read_bytes())
        started = time.monotonic()
        done = subprocess.run(job.command, shell=True, cwd=box / job.cwd, env={**os.environ, **job.env},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for line in done.stdout.splitlines(keepends=True):
            on_line(line)
        duration = time.monotonic() - started
        if done.returncode != 0:
            return Finished(done.returncode, duration, None, None)
        records, _missing = scan_outputs(box, job.task.outputs, StatCache(), self.store)
        log_digest, _ = self.store.put_bytes(done.stdout)
        entry = CacheEntry(etag=job.etag, task_id=job.task.id, outputs=records,
                           declared_outputs=list(job.task.outputs), outputs_digest=digest_of_records(records),
                           log_digest=log_digest, duration=duration, created=time.time())
        if self.tamper is not None:
            self.tamper(entry)
        return Finished(0, duration, None, entry)

    def cancel_all(self) -> None:
        pass

    def close(self, clean: bool) -> None:
        pass


def _run(root: Path, executor, tasks: list[str]):
    workspace = load_workspace(root)
    store = LocalStore(workspace.cache_dir)
    runner = Runner(build_graph(workspace), store, RunOptions(parallel=2), Console(stream=io.StringIO(), quiet=True),
                    executor=executor(store, root) if callable(executor) else executor)
    return runner.run(tasks), runner


def _workspace(tmp_path: Path) -> Path:
    (tmp_path / "nxrun.toml").write_text(textwrap.dedent(PIPELINE))
    (tmp_path / "src.txt").write_text("source\n")
    return tmp_path


def test_an_entry_from_an_executor_is_indexed_and_restored_and_later_runs_hit(tmp_path: Path):
    root = _workspace(tmp_path)
    made: list[SandboxExecutor] = []

    def sandbox(store, root):
        made.append(SandboxExecutor(store, root))
        return made[0]

    result, _ = _run(root, sandbox, ["p:b"])
    assert {t: r.status for t, r in result.results.items()} == {"p:a": "miss", "p:b": "miss"}
    executor = made[0]
    # the command ran in the sandbox, and its output came back into the workspace through the cache
    sandbox_a = executor.sandboxes[0]
    assert (root / "out/a.txt").read_text() == sandbox_a + "\n"
    assert sandbox_a != str(root)
    assert (root / "out/b.txt").read_text() == sandbox_a + "\nsource\n"
    job_a = executor.jobs[0]
    assert job_a.inputs and job_a.inputs[0][0] == "src.txt" and job_a.env["NXRUN_TASK"] == "p:a"
    assert job_a.gpus == [] and "PATH" not in job_a.env
    # the local executor afterwards: every task is a hit
    again, _ = _run(root, "local", ["p:b"])
    assert {t: r.status for t, r in again.results.items()} == {"p:a": "local-hit", "p:b": "local-hit"}


def test_a_failing_command_on_an_executor_fails_the_task_and_caches_nothing(tmp_path: Path):
    root = _workspace(tmp_path)
    (root / "nxrun.toml").write_text(textwrap.dedent(PIPELINE).replace("echo made-a", "echo broken; exit 3"))
    result, runner = _run(root, SandboxExecutor, ["p:b"])
    assert result.results["p:a"].status == "failed" and result.results["p:a"].note == "exit code 3"
    assert result.results["p:b"].status == "skipped"
    assert runner.store.get_entry(result.results["p:a"].etag) is None


def test_an_unsafe_entry_from_an_executor_fails_the_task_and_writes_nothing(tmp_path: Path):
    root = _workspace(tmp_path)

    def escaping(entry: CacheEntry) -> None:
        entry.outputs.append(OutputRecord("../escaped.txt", "file", entry.outputs[0].digest, 1))

    result, runner = _run(root, lambda store, root: SandboxExecutor(store, root, tamper=escaping), ["p:a"])
    task = result.results["p:a"]
    assert task.status == "failed" and "unsafe" in task.note and "sandbox executor" in task.note
    assert not (tmp_path.parent / "escaped.txt").exists() and not (root / "out/a.txt").exists()
    assert runner.store.get_entry(task.etag) is None


def test_an_executor_problem_fails_the_task_with_its_words(tmp_path: Path):
    root = _workspace(tmp_path)

    class Lost(SandboxExecutor):
        def run(self, job, on_line):
            return Finished(-1, 0.0, None, None, problem="the worker died")

    result, runner = _run(root, Lost, ["p:a"])
    assert result.results["p:a"].status == "failed" and result.results["p:a"].note == "the worker died"
    assert runner.store.get_entry(result.results["p:a"].etag) is None


def test_the_executor_is_chosen_by_option_then_environment_then_config(tmp_path: Path):
    ws = Workspace(tmp_path)
    ws.write("nxrun.toml", """
        [workspace]
        executor = "local"
        [projects.p.targets.a]
        command = "echo hi"
        inputs = []
    """)
    for args, env in ((["--executor", "ray"], {}), ([], {"NXRUN_EXECUTOR": "ray"})):
        result = ws.nxrun("run", "p:a", *args, env=env)
        assert result.returncode != 0
        # the ray executor was chosen: it says what it needs first (a remote cache for the files)
        assert "--executor ray needs a remote cache" in result.stderr and "Traceback" not in result.stderr
    result = ws.nxrun("run", "p:a", "--executor", "local", env={"NXRUN_EXECUTOR": "ray"})
    assert result.returncode == 0, result.stderr
    result = ws.nxrun("run", "p:a", env={"NXRUN_EXECUTOR": "slurm"})
    assert result.returncode != 0 and "NXRUN_EXECUTOR='slurm' names no executor" in result.stderr
    ws.write("nxrun.toml", ws.read("nxrun.toml").replace('executor = "local"', 'executor = "rya"'))
    result = ws.nxrun("run", "p:a")
    assert result.returncode != 0 and "executor = 'rya'" in result.stderr and "ray" in result.stderr
    assert "nxrun.toml" in result.stderr
