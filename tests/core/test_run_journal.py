"""The run journal (nxrun/run_journal.py) through the real CLI: a repeated no-op request is answered
from the journal, prints and records exactly what the normal path would, and every change that
could make the normal path do anything else sends the run down the normal path.

Each invalidation test would pass the shortcut wrongly without the check it names: it asserts
both that the journal was not used (the trace) and what the normal path did (a run, a restore).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_workspace import Workspace

ROOT = """
[workspace]
projects = ["packages/*"]

[projects.top.targets.all]
depends-on = ["a:build", "b:build"]
"""

PROJECT_A = """
[targets.build]
command = "mkdir -p dist && cat src/in.txt > dist/out.txt && echo built a $GREETING"
outputs = ["dist"]
env = { GREETING = "hi" }
"""

PROJECT_B = """
[targets.build]
command = "mkdir -p dist/sub && cat src/in.txt > dist/sub/out.txt && echo built b $MODE"
inputs = ["src/**/*", "env:MODE"]
outputs = ["dist"]
"""

PROJECT_C = """
[targets.build]
command = "mkdir -p dist && cat src/in.txt > dist/out.txt && echo built c"
outputs = ["dist"]
"""


def _trace(ws: Workspace) -> Path:
    return ws.root.parent / "journal.trace"


def _run(ws: Workspace, *args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, str]:
    """Run nxrun; (the process, the journal's trace line of this run: replayed or fallback: why)."""
    trace = _trace(ws)
    trace.write_text("")
    full_env = {"MODE": "one", "NXRUN_JOURNAL_TRACE": str(trace), **(env or {})}
    result = ws.nxrun(*args, env=full_env)
    lines = trace.read_text().splitlines()
    return result, (lines[0] if lines else "")


def _settle(ws: Workspace, *args: str, env: dict | None = None) -> None:
    """Run until a run has written the request's journal (files a run sees within the file
    system's timestamp granularity of its start are not trusted, so the first runs may not)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result, _ = _run(ws, *args, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        if "written" in _trace(ws).read_text().splitlines():
            return
    raise AssertionError("no run wrote a journal:\n" + _trace(ws).read_text())


def _statuses(result: subprocess.CompletedProcess) -> dict[str, str]:
    return {t["id"]: t["status"] for t in json.loads(result.stdout)["tasks"] if t["status"] != "aggregate"}


@pytest.fixture
def mono(ws: Workspace) -> Workspace:
    ws.write("nxrun.toml", ROOT)
    ws.write("packages/a/nxrun.toml", PROJECT_A)
    ws.write("packages/a/src/in.txt", "alpha\n")
    ws.write("packages/b/nxrun.toml", PROJECT_B)
    ws.write("packages/b/src/in.txt", "beta\n")
    ws.write("packages/b/src/deep/more.txt", "more\n")
    (ws.root / "packages/b/src/empty").mkdir()     # walked, but above no input file
    (ws.root / "packages/a/docs").mkdir()
    ws.write("packages/c/src/in.txt", "gamma\n")  # a project once it has an nxrun.toml
    _settle(ws, "run", "--json", "top:all")
    return ws


def _replayed(ws: Workspace, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    result, trace = _run(ws, *args, env=env)
    assert trace == "replayed", trace
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _normal(ws: Workspace, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    result, trace = _run(ws, *args, env=env)
    assert trace.startswith("fallback"), trace
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _same_size_edit(path: Path, text: str) -> None:
    """Rewrite a file with other bytes of the same size, and put its mtime back."""
    st = path.stat()
    assert len(text.encode()) == st.st_size
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


# ---------------------------------------------------------------------------- taken, and identical

def _without_times(text: str) -> str:
    return re.sub(r"in \d+\.\d\ds", "in Xs", text)


def test_a_repeated_noop_is_answered_from_the_journal_with_the_normal_output(mono: Workspace):
    replayed = _replayed(mono, "run", "--json", "top:all")
    normal = mono.nxrun("run", "--json", "top:all", env={"MODE": "one", "NXRUN_JOURNAL": "off"})
    strip = lambda summary: [{k: v for k, v in t.items() if k != "duration"} for t in summary["tasks"]]  # noqa: E731
    ours, theirs = json.loads(replayed.stdout), json.loads(normal.stdout)
    assert strip(ours) == strip(theirs)
    assert {k: v for k, v in ours.items() if k not in ("tasks", "duration")} == \
        {k: v for k, v in theirs.items() if k not in ("tasks", "duration")}
    assert replayed.stderr == normal.stderr      # the replayed logs: "built a", "built b one"
    assert "built b one" in replayed.stderr

    _settle(mono, "run", "top:all")
    text = _replayed(mono, "run", "top:all")
    plain = mono.nxrun("run", "top:all", env={"MODE": "one", "NXRUN_JOURNAL": "off"})
    assert _without_times(text.stdout) == _without_times(plain.stdout)
    assert text.stderr == plain.stderr == ""


def test_a_replayed_run_is_in_the_history_and_why_still_works(mono: Workspace):
    runs_before = json.loads(mono.nxrun("history", "--json", "-n", "100", check=True).stdout)
    _replayed(mono, "run", "--json", "top:all")
    runs_after = json.loads(mono.nxrun("history", "--json", "-n", "100", check=True).stdout)
    assert len(runs_after) == len(runs_before) + 1
    assert runs_after[0]["argv"] == ["run", "--json", "top:all"]
    assert (runs_after[0]["tasks"], runs_after[0]["local_hits"], runs_after[0]["misses"]) == (2, 2, 0)
    rows = json.loads(mono.nxrun("history", "a:build", "--json", "-n", "1", check=True).stdout)
    assert (rows[0]["run_id"], rows[0]["status"], rows[0]["origin"]) == (runs_after[0]["id"], "local-hit", "local")
    assert rows[0]["saved"] > 0
    why = json.loads(mono.nxrun("why", "a:build", "--json", check=True).stdout)
    assert why["changes"] == [] and why["cached"] and why["etag"] == why["previous"]


def test_the_quiet_flag_and_json_are_separate_requests(mono: Workspace):
    """A request with other flags has its own journal: the --json journal never answers a plain run."""
    result, trace = _run(mono, "run", "-q", "top:all")
    assert trace == "fallback: no journal"
    assert "2 local hits" in result.stdout
    result, trace = _run(mono, "run", "--json", "a:build")
    assert trace == "fallback: no journal"
    assert _statuses(result) == {"a:build": "local-hit"}


# ---------------------------------------------------------------------------- inputs

def test_an_input_edited_in_place_with_its_mtime_put_back_runs_the_task(mono: Workspace):
    _same_size_edit(mono.root / "packages/a/src/in.txt", "ALPHA\n")
    result = _normal(mono, "run", "--json", "top:all")
    assert _statuses(result)["a:build"] == "miss"
    assert mono.read("packages/a/dist/out.txt") == "ALPHA\n"


def test_a_new_file_in_a_globbed_folder_runs_the_task(mono: Workspace):
    mono.write("packages/b/src/empty/new.txt", "new\n")
    result = _normal(mono, "run", "--json", "top:all")
    assert _statuses(result) == {"a:build": "local-hit", "b:build": "miss"}


def test_a_new_file_in_a_default_inputs_folder_runs_the_task(mono: Workspace):
    mono.write("packages/a/docs/extra.txt", "extra\n")
    result = _normal(mono, "run", "--json", "top:all")
    assert _statuses(result) == {"a:build": "miss", "b:build": "local-hit"}


# ---------------------------------------------------------------------------- outputs

def test_a_deleted_output_is_restored(mono: Workspace):
    (mono.root / "packages/b/dist/sub/out.txt").unlink()
    result = _normal(mono, "run", "--json", "top:all")
    assert _statuses(result)["b:build"] == "local-hit"
    assert mono.read("packages/b/dist/sub/out.txt") == "beta\n"


def test_an_edited_output_is_restored(mono: Workspace):
    _same_size_edit(mono.root / "packages/a/dist/out.txt", "ALPHA\n")
    _normal(mono, "run", "--json", "top:all")
    assert mono.read("packages/a/dist/out.txt") == "alpha\n"


def test_a_stale_file_in_an_output_folder_is_removed(mono: Workspace):
    mono.write("packages/b/dist/sub/stale.txt", "stale\n")
    _normal(mono, "run", "--json", "top:all")
    assert not (mono.root / "packages/b/dist/sub/stale.txt").exists()


# ---------------------------------------------------------------------------- config

def test_a_config_edit_runs_the_changed_task(mono: Workspace):
    path = mono.root / "packages/a/nxrun.toml"
    path.write_text(path.read_text().replace("echo built a", "echo built A"))
    result = _normal(mono, "run", "--json", "top:all")
    assert _statuses(result)["a:build"] == "miss"


def test_an_edit_of_the_root_config_is_seen(mono: Workspace):
    path = mono.root / "nxrun.toml"
    path.write_text(path.read_text().replace('"a:build", "b:build"', '"a:build"'))
    result = _normal(mono, "run", "--json", "top:all")
    assert _statuses(result) == {"a:build": "local-hit"}


def test_a_new_project_folder_is_found(mono: Workspace):
    _settle(mono, "run-many", "--json", "-t", "build")
    mono.write("packages/c/nxrun.toml", PROJECT_C)
    result = _normal(mono, "run-many", "--json", "-t", "build")
    assert _statuses(result) == {"a:build": "local-hit", "b:build": "local-hit", "c:build": "miss"}


# ---------------------------------------------------------------------------- env and keys

def test_a_changed_env_value_runs_the_task(mono: Workspace):
    result = _normal(mono, "run", "--json", "top:all", env={"MODE": "two"})
    assert _statuses(result) == {"a:build": "local-hit", "b:build": "miss"}


def test_a_changed_env_key_runs_the_task(mono: Workspace):
    """The cache's own key hashes the env values a target sets: another key gives other ETags (a
    miss), so the journal, made under the old key, must not answer."""
    _settle(mono, "run", "--json", "a:build")
    key = mono.root / ".nxrun" / "keys" / "cache"
    key.write_text(os.urandom(32).hex() + "\n")
    result = _normal(mono, "run", "--json", "a:build")
    assert _statuses(result) == {"a:build": "miss"}


def test_a_changed_team_key_runs_the_task(mono: Workspace):
    result = _normal(mono, "run", "--json", "top:all", env={"NXRUN_ENV_KEY": "team secret"})
    assert _statuses(result)["b:build"] == "miss"


# ---------------------------------------------------------------------------- the cache

def test_after_cache_clear_the_tasks_run(mono: Workspace):
    mono.nxrun("cache", "clear", "-y", check=True)
    result = _normal(mono, "run", "--json", "top:all")
    assert set(_statuses(result).values()) == {"miss"}


def test_after_cache_prune_the_tasks_run(mono: Workspace):
    mono.nxrun("cache", "prune", "--max-size", "0", check=True)
    result = _normal(mono, "run", "--json", "top:all")
    assert set(_statuses(result).values()) == {"miss"}


def test_an_entry_replaced_under_its_etag_is_not_trusted(mono: Workspace):
    """Another workspace sharing the cache may store the same ETag anew (--skip-cache): the normal
    path would restore the new entry, so the journal must not answer."""
    import sqlite3

    with sqlite3.connect(mono.root / ".nxrun" / "index.db") as conn:
        conn.execute("UPDATE entries SET hit = replace(hit, 'alpha', 'alpha') || ' ' WHERE task_id = 'a:build'")
    _normal(mono, "run", "--json", "top:all")


def test_a_run_holding_a_task_lock_sends_the_run_down_the_normal_path(mono: Workspace):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from nxrun.run.task_locks import TaskLocks

    locks = TaskLocks(mono.root / ".nxrun", mono.root)
    assert locks.try_acquire("a:build")
    trace = _trace(mono)
    trace.write_text("")
    env = {**os.environ, "MODE": "one", "NXRUN_JOURNAL_TRACE": str(trace), "NO_COLOR": "1"}
    process = subprocess.Popen([sys.executable, "-m", "nxrun", "run", "--json", "top:all"], cwd=mono.root, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not trace.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert trace.read_text().startswith("fallback: another run holds"), trace.read_text()
    finally:
        locks.close()
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, out + err
    assert _statuses(subprocess.CompletedProcess([], 0, out)) == {"a:build": "local-hit", "b:build": "local-hit"}


# ---------------------------------------------------------------------------- nxrun itself

def _journal(ws: Workspace) -> Path:
    (journal,) = (ws.root / ".nxrun" / "journals").glob("*.json")
    return journal


def test_a_journal_of_another_nxrun_version_is_not_used(mono: Workspace):
    from nxrun.run_journal import _parse, _sealed

    journal = _journal(mono)
    data = _parse(journal.read_bytes())
    data["version"] = "0.0.1"
    journal.write_bytes(_sealed(data))
    result, trace = _run(mono, "run", "--json", "top:all")
    assert trace == "fallback: another nxrun version wrote the journal"
    assert result.returncode == 0


@pytest.mark.parametrize("damage", ["duration", "task id"])
def test_a_journal_damaged_on_disk_is_not_used(mono: Workspace, damage: str):
    """A journal still valid JSON after bytes changed on disk: a changed duration would record a
    wrong time saved in the history, a changed task id fail with a traceback halfway through
    printing."""
    journal = _journal(mono)
    raw = journal.read_bytes()
    if damage == "duration":
        changed = re.sub(rb'(\["a:build","local-hit","[0-9a-f]+","[0-9a-f]+",)([0-9.e-]+)', rb"\g<1>12345.0", raw)
    else:
        changed = re.sub(rb'("events":\[")([^"]+)"', lambda m: m[1] + m[2][:-1] + b'X"', raw, count=1)
    assert changed != raw
    journal.write_bytes(changed)
    result, trace = _run(mono, "run", "--json", "top:all")
    assert trace == "fallback: the journal is damaged", trace
    assert result.returncode == 0, result.stdout + result.stderr
    assert _statuses(result) == {"a:build": "local-hit", "b:build": "local-hit"}
    rows = json.loads(mono.nxrun("history", "a:build", "--json", "-n", "1", check=True).stdout)
    assert rows[0]["saved"] < 1000


# ---------------------------------------------------------------------------- runtime probes

def test_a_changed_probe_output_runs_the_task(ws: Workspace):
    """A `runtime:` probe is run again by the journal's check: another output, another ETag."""
    ws.write("nxrun.toml", """
        [workspace]

        [runtime]
        tool = "cat tool-version.txt"

        [projects.p.targets.build]
        command = "mkdir -p out && echo built > out/x.txt"
        inputs = ["runtime:tool"]
        outputs = ["out/x.txt"]
    """)
    ws.write("tool-version.txt", "1.0\n")
    _settle(ws, "run", "--json", "p:build")
    _replayed(ws, "run", "--json", "p:build")
    ws.write("tool-version.txt", "2.0\n")
    result = _normal(ws, "run", "--json", "p:build")
    assert _statuses(result) == {"p:build": "miss"}


def test_another_gpu_pool_is_another_request(ws: Workspace):
    # a task of two GPUs, replayed from the journal under --gpus 0,1, still fails at once under
    # --gpus 0 (a pool of one): the journal never answers for a pool it was not written for
    ws.write("nxrun.toml", '[projects.p.targets.tp]\ncommand = "echo tp > tp.txt"\noutputs = ["tp.txt"]\n'
                           'gpus = 2\n')
    from fake_nvidia_smi import H100, install

    two_gpus = install(ws.root.parent / "bin", [H100, H100])
    _settle(ws, "run", "p:tp", "--gpus", "0,1", env=two_gpus)
    result, trace = _run(ws, "run", "p:tp", "--gpus", "0,1", env=two_gpus)
    assert result.returncode == 0 and trace == "replayed", trace
    result, trace = _run(ws, "run", "p:tp", "--gpus", "0", env=two_gpus)
    assert result.returncode != 0 and "p:tp asks for 2 GPUs" in result.stderr, result.stdout + result.stderr


# ---------------------------------------------------------------------------- runs at once

def _wait_for(path: Path, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the run ended first:\n" + process.stdout.read() + process.stderr.read())
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.02)


def test_an_entry_stored_anew_by_a_clone_sharing_the_cache_during_the_run_is_not_journalled(ws: Workspace, tmp_path):
    """Clone B, sharing the cache folder, stores a new entry (other outputs) under the ETag of a task
    that this run has just taken as a hit: the journal must not record the new entry as the hit
    this run found in place, or the next run would answer 'cached' while the normal path restores
    the new entry's outputs (and runs what depends on them)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    ws.write("nxrun.toml", f"""
        [workspace]

        [runtime]
        slow = "touch {marks}/probing; while [ ! -e {marks}/go ]; do sleep 0.02; done; echo v1"

        [projects.p.targets.gen]
        command = "mkdir -p out && od -An -N8 -tx1 /dev/urandom > out/r.txt"
        inputs = ["src/*"]
        outputs = ["out"]

        [projects.p.targets.use]
        depends-on = ["gen"]
        command = "cat out/r.txt > used.txt"
        inputs = ["runtime:slow"]
        outputs = ["used.txt"]
    """)
    ws.write("src/in.txt", "x\n")
    clone = Workspace(tmp_path / "clone")
    clone.root.mkdir()
    clone.write("nxrun.toml", ws.read("nxrun.toml"))
    clone.write("src/in.txt", "x\n")
    env = {"NXRUN_CACHE_DIR": str(tmp_path / "shared-cache")}
    (marks / "go").touch()
    _settle(ws, "run", "--json", "p:use", env=env)
    first = ws.read("out/r.txt")

    # this run takes p:gen as a hit, then waits in p:use's probe while the clone stores p:gen anew
    for journal in (tmp_path / "shared-cache" / "journals").glob("*.json"):
        journal.unlink()
    (marks / "go").unlink()
    (marks / "probing").unlink()
    trace = _trace(ws)
    trace.write_text("")
    full_env = dict(os.environ, NO_COLOR="1", NXRUN_JOURNAL_TRACE=str(trace), **env)
    full_env.pop("NXRUN_REMOTE", None)
    run = subprocess.Popen([sys.executable, "-m", "nxrun", "run", "--json", "p:use"], cwd=ws.root, env=full_env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(marks / "probing", "the run's probe", run)
        stored = clone.nxrun("run", "--skip-cache", "--json", "p:gen", env=env)
        assert stored.returncode == 0, stored.stdout + stored.stderr
        assert clone.read("out/r.txt") != first
    finally:
        (marks / "go").touch()
        out, err = run.communicate(timeout=120)
    assert run.returncode == 0, out + err
    assert _statuses(subprocess.CompletedProcess([], 0, out, err)) == {"p:gen": "local-hit", "p:use": "local-hit"}

    # what the normal path does now: restore the clone's p:gen, and run p:use on it
    result, trace_line = _run(ws, "run", "--json", "p:use", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert trace_line.startswith("fallback"), trace_line
    assert _statuses(result) == {"p:gen": "local-hit", "p:use": "miss"}
    assert ws.read("out/r.txt") == clone.read("out/r.txt")


def test_nxrun_sources_changed_during_the_run_keep_no_journal(ws: Workspace, tmp_path):
    """nxrun's sources edited while a run goes on (a `git pull` in an editable install): the run
    hashed with the old code, so a journal stamped with the new sources would answer for code that
    computes other ETags."""
    import shutil

    import nxrun

    pkg = tmp_path / "pkg"
    shutil.copytree(Path(nxrun.__file__).parent, pkg / "nxrun", ignore=shutil.ignore_patterns("__pycache__"))
    marks = tmp_path / "marks"
    marks.mkdir()
    hashing = pkg / "nxrun" / "hashing.py"
    assert 'FORMAT_VERSION = "nxrun-etag-1"' in hashing.read_text()
    ws.write("nxrun.toml", f"""
        [workspace]

        [runtime]
        edit = "if [ -e {marks}/edit ]; then rm {marks}/edit; sed -i 's/nxrun-etag-1/nxrun-etag-2/' {hashing}; fi; echo v"

        [projects.p.targets.build]
        command = "mkdir -p out && echo built > out/x.txt"
        inputs = ["runtime:edit"]
        outputs = ["out"]
    """)
    env = {"PYTHONPATH": str(pkg)}
    _settle(ws, "run", "--json", "p:build", env=env)
    _journal(ws).unlink()      # the next run takes the normal path, and edits the sources meanwhile
    (marks / "edit").touch()
    result, _ = _run(ws, "run", "--json", "p:build", env=env)
    assert result.returncode == 0 and not (marks / "edit").exists(), result.stdout + result.stderr
    assert 'FORMAT_VERSION = "nxrun-etag-2"' in hashing.read_text()
    result, trace = _run(ws, "run", "--json", "p:build", env=env)
    assert trace.startswith("fallback"), trace
    assert _statuses(result) == {"p:build": "miss"}      # other code, other ETag


# ---------------------------------------------------------------------------- during the run

def test_an_input_deleted_during_the_run_keeps_no_journal(ws: Workspace, tmp_path):
    """An input file deleted after the run hashed it: the journal, written after the run, found it
    absent, and an absent path has no times for the racy rule to judge. The folder holding it
    changed during the run: no journal then, since the next normal run misses (and warns)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    ws.write("nxrun.toml", f"""
        [workspace]

        [runtime]
        delete = "if [ -e {marks}/delete ]; then rm {marks}/delete conf/a.txt; fi; echo v"

        [projects.p.targets.build]
        command = "mkdir -p out && echo built > out/x.txt"
        inputs = ["conf/a.txt", "runtime:delete"]
        outputs = ["out"]
    """)
    ws.write("conf/a.txt", "a\n")
    _settle(ws, "run", "--json", "p:build")
    _journal(ws).unlink()      # the next run takes the normal path, and the input goes meanwhile
    (marks / "delete").touch()
    result, _ = _run(ws, "run", "--json", "p:build")
    assert result.returncode == 0 and not (ws.root / "conf/a.txt").exists(), result.stdout + result.stderr
    assert _statuses(result) == {"p:build": "local-hit"}
    result, trace = _run(ws, "run", "--json", "p:build")
    assert trace.startswith("fallback"), trace
    assert _statuses(result) == {"p:build": "miss"}
    assert "matches no file" in result.stderr


def test_the_target_of_a_linked_input_deleted_during_the_run_keeps_no_journal(ws: Workspace, tmp_path):
    """The same for a symlinked input whose target (outside the workspace) goes after the run hashed
    it: the link is then dangling, hashed as its target string alone, another ETag."""
    marks = tmp_path / "marks"
    marks.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "cfg.txt").write_text("cfg\n")
    ws.write("nxrun.toml", f"""
        [workspace]

        [runtime]
        delete = "if [ -e {marks}/delete ]; then rm {marks}/delete {outside}/cfg.txt; fi; echo v"

        [projects.p.targets.build]
        command = "mkdir -p out && echo built > out/x.txt"
        inputs = ["conf/cfg.txt", "runtime:delete"]
        outputs = ["out"]
    """)
    (ws.root / "conf").mkdir()
    (ws.root / "conf/cfg.txt").symlink_to(outside / "cfg.txt")
    _settle(ws, "run", "--json", "p:build")
    _journal(ws).unlink()
    (marks / "delete").touch()
    result, _ = _run(ws, "run", "--json", "p:build")
    assert result.returncode == 0 and not (outside / "cfg.txt").exists(), result.stdout + result.stderr
    result, trace = _run(ws, "run", "--json", "p:build")
    assert trace.startswith("fallback"), trace
    assert _statuses(result) == {"p:build": "miss"}


def test_projects_listed_at_the_workspace_root_keep_a_journal(ws: Workspace):
    """`projects = ["app", "lib"]`: the root folder is listed for the globs, and the cache folder
    `.nxrun` in it changes in every run; it can never be a match, so it must not keep every run
    from being journalled. A folder that gains an nxrun.toml is still seen."""
    ws.write("nxrun.toml", '[workspace]\nprojects = ["app", "l*"]\n')
    ws.write("app/nxrun.toml", '[targets.build]\ncommand = "mkdir -p out && echo a > out/a.txt"\noutputs = ["out"]\n')
    ws.write("lib/nxrun.toml", '[targets.build]\ncommand = "mkdir -p out && echo l > out/l.txt"\noutputs = ["out"]\n')
    (ws.root / "lab").mkdir()
    _settle(ws, "run-many", "--json", "-t", "build")
    _replayed(ws, "run-many", "--json", "-t", "build")
    ws.write("lab/nxrun.toml", '[targets.build]\ncommand = "mkdir -p out && echo b > out/b.txt"\noutputs = ["out"]\n')
    result = _normal(ws, "run-many", "--json", "-t", "build")
    assert _statuses(result) == {"app:build": "local-hit", "lib:build": "local-hit", "lab:build": "miss"}


# ---------------------------------------------------------------------------- how paths are checked

def test_a_run_from_a_subfolder_checks_the_same_paths(mono: Workspace):
    """From the workspace root the journal's paths are looked up relative to the current folder;
    from anywhere else by their full path: both see an edit."""
    folder = mono.root / "packages" / "b" / "src"
    trace = _trace(mono)

    def run() -> tuple[subprocess.CompletedProcess, str]:
        trace.write_text("")
        env = {**os.environ, "MODE": "one", "NXRUN_JOURNAL_TRACE": str(trace), "NO_COLOR": "1"}
        env.pop("NXRUN_REMOTE", None)
        result = subprocess.run([sys.executable, "-m", "nxrun", "run", "--json", "top:all"], cwd=folder, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        lines = trace.read_text().splitlines()
        return result, (lines[0] if lines else "")

    deadline = time.monotonic() + 30
    while run()[1] != "replayed":       # until a run has written the journal of this request
        assert time.monotonic() < deadline, trace.read_text()
    _same_size_edit(mono.root / "packages/a/src/in.txt", "ALPHA\n")
    result, line = run()
    assert line.startswith("fallback"), line
    assert _statuses(result)["a:build"] == "miss"


def test_stamps_tell_every_changed_stat_key_apart():
    from nxrun.run_journal import _stamp

    keys = [(0o100644, 10, 1_700_000_000_123_456_789, 42, 1_700_000_000_123_456_790), (0o40755, 4096, -5, 43, 6)]
    stamp = _stamp(keys)
    assert _stamp(list(keys)) == stamp
    for i, key in enumerate(keys):
        for j in range(5):
            for delta in (1, -1, 1 << 32):
                changed = list(keys)
                changed[i] = key[:j] + (key[j] + delta,) + key[j + 1:]
                assert _stamp(changed) != stamp, (i, j, delta)
    assert _stamp(keys[::-1]) != stamp                   # keys moved between paths
    assert _stamp(keys[:1]) != stamp
    # an absent path and an inode past 2**63 stamp too, and are told apart
    absent = [keys[0], None]
    assert _stamp(absent) == _stamp(list(absent)) != _stamp([None, keys[0]])
    assert _stamp(absent) != stamp
    big = [(0o100644, 1, 2, 2 ** 64 - 1, 3)]
    assert _stamp(big) == _stamp(list(big)) != _stamp([(0o100644, 1, 2, 2 ** 64 - 2, 3)])


def test_a_replayed_run_ends_with_its_output_written_and_the_index_closed(mono: Workspace):
    """A replay ends the process without the interpreter's teardown: what it printed must all be
    out, and the index closed as a normal run's exit closes it (its WAL checkpointed away)."""
    _settle(mono, "run", "top:all")
    result = _replayed(mono, "run", "top:all")
    assert result.stdout.startswith("> a:build  [local cache hit, replaying output]\n")
    assert re.search(r"nxrun: 2 tasks: 2 local hits, 0 ran in \d+\.\d\ds\n\Z", result.stdout), result.stdout
    assert "built a" in result.stdout and "built b one" in result.stdout
    assert not (mono.root / ".nxrun" / "index.db-wal").exists()
    runs = json.loads(mono.nxrun("history", "--json", "-n", "1", check=True).stdout)
    assert runs[0]["argv"] == ["run", "top:all"] and runs[0]["local_hits"] == 2


# ---------------------------------------------------------------------------- review: the current folder

def _mount_namespace(tmp: Path) -> list[str] | None:
    """The command prefix that runs a command in a mount namespace of its own, where it may bind
    mount one folder over another; None where this machine allows neither kind."""
    a, b = tmp / "probe-a", tmp / "probe-b"
    a.mkdir()
    b.mkdir()
    for prefix in (["unshare", "--mount"], ["unshare", "--mount", "--map-root-user"]):
        try:
            done = subprocess.run([*prefix, "mount", "--bind", str(a), str(b)], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode == 0:
            return prefix
    return None


def test_a_folder_mounted_over_the_current_folder_is_the_one_checked(mono: Workspace, tmp_path: Path):
    """The current folder can have the workspace root's name and yet not be the folder that name
    now leads to: a file system mounted over the root while a shell sits in it (another checkout
    bind mounted there, a share mounted again). A normal run sees the mounted files, through the
    root's path; the journal must check those, not the hidden ones the current folder still is."""
    import shutil

    prefix = _mount_namespace(tmp_path)
    if prefix is None:
        pytest.skip("no mount namespace can be made here (unshare --mount)")
    other = tmp_path / "other"
    shutil.copytree(mono.root, other, symlinks=True)      # the same journal and cache; another input
    (other / "packages/a/src/in.txt").write_text("ALPHA, mounted\n")
    trace = _trace(mono)
    trace.write_text("")
    env = {**os.environ, "MODE": "one", "NXRUN_JOURNAL_TRACE": str(trace), "NO_COLOR": "1"}
    env.pop("NXRUN_REMOTE", None)
    # the shell enters the root first, then the mount hides that folder behind the other one
    script = 'cd "$1" && mount --bind "$2" "$1" && exec "$3" -m nxrun run --json top:all'
    result = subprocess.run([*prefix, "sh", "-c", script, "sh", str(mono.root), str(other), sys.executable],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    line = (trace.read_text().splitlines() or [""])[0]
    assert line.startswith("fallback"), line
    assert _statuses(result)["a:build"] == "miss"


# ---------------------------------------------------------------------------- review: how a replay ends

@pytest.mark.parametrize("as_json", [False, True])
def test_a_replay_with_stderr_closed_ends_as_the_normal_path_does(mono: Workspace, as_json: bool):
    """A run started with its stderr closed (`2>&-`: Python's sys.stderr is None then) and all
    cached: the normal path prints everything and exits 0, so the replay must too."""
    args = ["run", *(["--json"] if as_json else []), "top:all"]
    trace = _trace(mono)

    def run(journal: bool) -> tuple[subprocess.CompletedProcess, str]:
        trace.write_text("")
        env = {**os.environ, "MODE": "one", "NXRUN_JOURNAL_TRACE": str(trace), "NO_COLOR": "1"}
        env.pop("NXRUN_REMOTE", None)
        if not journal:
            env["NXRUN_JOURNAL"] = "off"
        done = subprocess.run(["sh", "-c", 'exec "$@" 2>&-', "sh", sys.executable, "-m", "nxrun", *args],
                              cwd=mono.root, env=env, stdout=subprocess.PIPE, text=True, timeout=120)
        return done, (trace.read_text().splitlines() or [""])[0]

    deadline = time.monotonic() + 30
    while _run(mono, *args)[1] != "replayed":     # until the request's journal answers
        assert time.monotonic() < deadline, trace.read_text()
    normal, _ = run(journal=False)
    replayed, line = run(journal=True)
    assert line == "replayed", line
    assert normal.returncode == 0, normal.stdout
    assert replayed.returncode == normal.returncode, replayed.stdout
    # (with no stderr, the console's lines go to stdout in both, before the --json summary)
    timing = r'in \d+\.\d\ds|"duration": [0-9.e-]+'
    assert re.sub(timing, "", replayed.stdout) == re.sub(timing, "", normal.stdout)


def test_paths_are_checked_in_the_folder_the_root_names_whatever_the_current_folder_is_called(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The same as a folder mounted over the current one, where no mount can be made: the current
    folder has the root's name (os.getcwd) but is another folder, whose files match the journal;
    the root's own files do not, and the check must say so."""
    from nxrun import run_journal

    root, other = tmp_path / "root", tmp_path / "other"
    for folder in (root, other):
        (folder / "src").mkdir(parents=True)
    (other / "src" / "in.txt").write_text("old\n")
    paths = ["", "src", "src/in.txt"]
    stamps = [run_journal._stamp(run_journal._keys(str(other), paths, os.lstat))]
    run_journal._check_stamps(str(other), [os.fsencode(p) for p in paths], [], stamps)   # matches there
    (root / "src" / "in.txt").write_text("new, and the root's\n")
    monkeypatch.chdir(other)
    monkeypatch.setattr(run_journal.os, "getcwd", lambda: str(root))
    with pytest.raises(run_journal._Doubt):
        run_journal._check_stamps(str(root), [os.fsencode(p) for p in paths], [], stamps)


def test_a_fallback_closes_the_index_the_replay_opened(mono: Workspace, monkeypatch):
    # MODE changed: the replay opens the index, finds the env value differs and falls back; the index it
    # opened must not stay open (its connection and shared lock) through the normal run that follows
    from nxrun import run_journal
    from nxrun.store.local import LocalStore

    opened, closed = [], []
    real_init, real_close = LocalStore.__init__, LocalStore.close
    monkeypatch.setattr(LocalStore, "__init__", lambda self, *a, **k: (opened.append(self), real_init(self, *a, **k))[1])
    monkeypatch.setattr(LocalStore, "close", lambda self: (closed.append(self), real_close(self))[1])
    monkeypatch.setenv("MODE", "two")
    monkeypatch.setenv("NXRUN_JOURNAL_TRACE", str(_trace(mono)))
    _trace(mono).write_text("")
    journals = list((mono.root / ".nxrun" / "journals").glob("*.json"))
    assert len(journals) == 1
    request = run_journal._parse(journals[0].read_bytes())["request"]   # the settled run's own request
    monkeypatch.chdir(mono.root)
    assert run_journal.replay(mono.root, request, ["run", "--json", "top:all"], time.time()) is False
    assert _trace(mono).read_text().startswith("fallback"), _trace(mono).read_text()
    assert opened and all(store in closed for store in opened)
