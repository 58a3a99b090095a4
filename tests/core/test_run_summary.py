"""The run's last words (run_command.print_summary, RunResult.to_json): the counts line and the
--json summary, counted in one pass over the tasks."""

from __future__ import annotations

import json

from nxrun.run.results import RunResult, TaskResult
from nxrun.run_command import print_summary

STATUSES = ["local-hit", "local-hit", "remote-hit", "miss", "failed", "skipped", "aggregate", "predicted-hit",
            "predicted-miss", "unknown", "miss"]


def _result(statuses: list[str]) -> RunResult:
    return RunResult({f"t{i}": TaskResult(f"t{i}", s, etag=f"e{i}") for i, s in enumerate(statuses)}, 1.5, [])


def test_counts_are_those_of_count():
    result = _result(STATUSES)
    assert result.counts() == {s: result.count(s) for s in set(STATUSES)}
    assert _result([]).counts() == {}


def test_the_counts_line_and_the_json_summary(capsys):
    print_summary(_result(STATUSES), as_json=False, dry_run=False)
    assert capsys.readouterr().out == ("nxrun: 10 tasks: 2 local hits, 1 remote hits, 2 ran, 1 failed, 1 skipped, "
                                       "1 would hit, 1 would run, 1 unknown in 1.50s\n")
    print_summary(_result(["local-hit", "aggregate"]), as_json=False, dry_run=False)
    assert capsys.readouterr().out == "nxrun: 1 task: 1 local hits, 0 ran in 1.50s\n"
    print_summary(_result(STATUSES), as_json=True, dry_run=False)
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] is False
    assert summary["counts"] == {"local-hit": 2, "remote-hit": 1, "miss": 2, "failed": 1, "skipped": 1,
                                 "predicted-hit": 1, "predicted-miss": 1, "unknown": 1}
    assert list(summary["counts"]) == ["local-hit", "remote-hit", "miss", "failed", "skipped", "predicted-hit",
                                       "predicted-miss", "unknown"]
    assert json.loads(_json(["local-hit"]))["ok"] is True


def _json(statuses: list[str]) -> str:
    return json.dumps(_result(statuses).to_json())


def test_the_counts_line_from_counts_alone(capsys):
    from nxrun.run_command import print_counts

    result = _result(STATUSES)
    result.remote_summary = {"skipped": 3}
    print_summary(result, as_json=False, dry_run=False)
    whole = capsys.readouterr().out
    print_counts(result.counts(), 1.5, {"skipped": 3})
    assert capsys.readouterr().out == whole
    assert whole.endswith("; remote cache unavailable, 3 remote reads/writes skipped\n")
    print_counts({"local-hit": 2000, "aggregate": 1}, 0.0)
    assert capsys.readouterr().out == "nxrun: 2000 tasks: 2000 local hits, 0 ran in 0.00s\n"
