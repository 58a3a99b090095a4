"""A run whose own output cannot be written (a full disk, a pipe whose reader left, a closed stream):
its tasks run and are cached as usual, hits stay hits, and it ends with a clear status and no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_workspace import Workspace
from nxrun.console import Console, GuardedStream

CHATTY = """
[projects.p.targets.talk]
command = "python3 -c \\"import sys; [print('line', i) for i in range(20000)]; open('out.txt', 'w').write('made')\\""
outputs = ["out.txt"]
"""

needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")


def _env() -> dict:
    env = dict(os.environ, NO_COLOR="1")
    env.pop("NXRUN_REMOTE", None)
    return env


def _run_into_full_disk(ws: Workspace, *args: str, journal: str = "on") -> subprocess.CompletedProcess:
    with open("/dev/full", "w") as full:
        return subprocess.run([sys.executable, "-m", "nxrun", "run", *args], cwd=ws.root, stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120, env=dict(_env(), NXRUN_JOURNAL=journal))


@needs_dev_full
def test_a_miss_whose_output_hits_a_full_disk_still_runs_and_is_cached(ws: Workspace):
    ws.write("nxrun.toml", CHATTY)
    result = _run_into_full_disk(ws, "p:talk")
    assert result.returncode == 1
    assert "could not write the run's output" in result.stderr and "No space left" in result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert ws.read("out.txt") == "made"
    again = ws.nxrun("run", "p:talk")
    assert again.returncode == 0 and "cache hit (local)" in again.stdout
    assert "\nline 19999\n" in again.stdout      # the log was kept whole although none of it was shown


@needs_dev_full
@pytest.mark.parametrize("journal", ["on", "off"])
def test_a_hit_whose_output_hits_a_full_disk_is_still_a_hit(ws: Workspace, journal: str):
    # before, the failed write of the replayed log counted as a failed restore: the hit became a failure
    ws.write("nxrun.toml", CHATTY)
    ws.run_json("p:talk")
    if journal == "off":
        (ws.root / "out.txt").unlink()      # a restore, through the normal path
    else:
        assert ws.nxrun("run", "p:talk").returncode == 0  # the same request twice: its journal answers next
    result = _run_into_full_disk(ws, "p:talk", journal=journal)
    assert result.returncode == 1, result.stderr
    assert "could not write the run's output" in result.stderr and "Traceback" not in result.stderr
    assert ws.read("out.txt") == "made"
    rows = json.loads(ws.nxrun("history", "--json", "p:talk", check=True).stdout)
    runs_before = 1 if journal == "off" else 2
    assert [row["status"] for row in rows] == ["local-hit"] * runs_before + ["miss"]   # newest first
    assert ws.statuses(ws.run_json("p:talk")) == {"p:talk": "local-hit"}


def test_a_pipe_whose_reader_left_ends_the_run_quietly_and_caches_its_tasks(ws: Workspace):
    ws.write("nxrun.toml", CHATTY)
    process = subprocess.Popen([sys.executable, "-m", "nxrun", "run", "p:talk"], cwd=ws.root, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.read(1)
    process.stdout.close()                  # `| head -c 1`: the reader is gone
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1
    assert b"Traceback" not in stderr and b"Exception ignored" not in stderr, stderr.decode()
    assert ws.read("out.txt") == "made"
    assert ws.statuses(ws.run_json("p:talk")) == {"p:talk": "local-hit"}


@pytest.mark.parametrize("journal", ["on", "off"])
def test_json_with_stderr_closed_keeps_stdout_to_the_summary(ws: Workspace, journal: str):
    # Python sets sys.stderr to None when descriptor 2 is closed: the console fell back onto stdout
    ws.write("nxrun.toml", CHATTY)
    for _ in range(3):          # a miss, then hits (the third one answered by the journal when it is on)
        result = subprocess.run(f"{sys.executable} -m nxrun run --json p:talk 2>&-", shell=True, cwd=ws.root,
                                capture_output=True, text=True, timeout=120,
                                env=dict(_env(), NXRUN_JOURNAL=journal))
        assert result.returncode == 0
        summary = json.loads(result.stdout)     # the summary and nothing else
        assert summary["ok"] is True


@needs_dev_full
def test_json_whose_stderr_is_full_still_succeeds_on_its_summary(ws: Workspace):
    ws.write("nxrun.toml", CHATTY)
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "nxrun", "run", "--json", "p:talk"], cwd=ws.root,
                                stdout=subprocess.PIPE, stderr=full, text=True, timeout=120, env=_env())
    assert result.returncode == 0
    assert ws.statuses(json.loads(result.stdout)) == {"p:talk": "miss"}


class _Failing:
    def __init__(self, after: int):
        self.left, self.written = after, []

    def write(self, text: str) -> None:
        if self.left == 0:
            raise OSError(28, "No space left on device")
        self.left -= 1
        self.written.append(text)

    def flush(self) -> None:
        pass


def test_the_guarded_stream_keeps_the_first_error_and_writes_nothing_after():
    target = _Failing(after=1)
    stream = GuardedStream(target)
    stream.write("a")
    stream.write("b")
    target.left = 5                 # even if writes would work again: the output already has a hole
    stream.write("c")
    assert target.written == ["a"] and isinstance(stream.error, OSError) and stream.error.errno == 28


def test_a_console_on_a_closed_stream_writes_nowhere(capsys):
    console = Console(stream=None)
    console.warn("unseen")
    console.task_finished("p:t", "miss", 0.1)
    assert capsys.readouterr() == ("", "") and console.write_error is None


def test_a_console_on_a_closed_file_reports_it(tmp_path: Path):
    handle = open(tmp_path / "x.txt", "w")
    handle.close()
    console = Console(stream=handle)
    console.warn("lost")
    assert isinstance(console.write_error, ValueError)
