"""Trust namespaces against cache poisoning: a pull request's scratch writes are invisible to
trusted readers and to other refs; read-only jobs write nothing."""

from __future__ import annotations

import pytest

from remote_helpers import fresh_clone, nxrun, write_pipeline


def test_scratch_writes_are_invisible_to_trusted_readers_and_other_refs(remote, tmp_path):
    pr = write_pipeline(tmp_path / "pr-1", remote.url)
    result = nxrun(pr, "run", "gen:report", "--namespace", "scratch/pr-1", "--json", endpoint=remote.endpoint)
    assert result.returncode == 0, result.stderr
    assert {k.split("/entries/")[0] for k in remote.keys() if "/entries/" in k} == {"scratch/pr-1"}

    trusted = fresh_clone(pr, tmp_path / "main")
    seen_by_trusted = nxrun(trusted, "run", "gen:report", "--json", "--remote=auto", endpoint=remote.endpoint)
    assert seen_by_trusted.counts == {"miss": 3}

    other_ref = fresh_clone(pr, tmp_path / "pr-2")
    seen_by_other = nxrun(other_ref, "run", "gen:report", "--json", endpoint=remote.endpoint,
                          env={"NXRUN_NAMESPACE": "scratch/pr-2", "NXRUN_REMOTE_READ_ONLY": "1"})
    assert seen_by_other.counts == {"remote-hit": 3}      # ... from trusted/, which main has now written
    assert not [k for k in remote.keys() if k.startswith("scratch/pr-2")]

    same_ref = fresh_clone(pr, tmp_path / "pr-1-again")
    assert nxrun(same_ref, "run", "gen:report", "--json", "--namespace", "scratch/pr-1",
                 endpoint=remote.endpoint).counts == {"remote-hit": 3}


def test_scratch_reader_sees_trusted_but_not_another_scratch(remote, tmp_path):
    pr = write_pipeline(tmp_path / "pr-1", remote.url)
    assert nxrun(pr, "run", "gen:report", "--namespace", "scratch/pr-1", endpoint=remote.endpoint).returncode == 0
    other = fresh_clone(pr, tmp_path / "pr-2")
    result = nxrun(other, "run", "gen:report", "--json", "--namespace", "scratch/pr-2", endpoint=remote.endpoint)
    assert result.counts == {"miss": 3}


@pytest.mark.parametrize("how", ["config", "env"])
def test_read_only_jobs_write_nothing(remote, tmp_path, how):
    extra = "read-only = true" if how == "config" else ""
    env = {"NXRUN_REMOTE_READ_ONLY": "true"} if how == "env" else {}
    root = write_pipeline(tmp_path / "fork", remote.url, extra_remote=extra)
    result = nxrun(root, "run", "gen:report", "--json", env=env, endpoint=remote.endpoint)
    assert result.returncode == 0, result.stderr
    assert result.counts == {"miss": 3}
    assert remote.keys() == []
    assert result.summary["remote"]["read_only"] is True


def test_ref_names_become_namespace_paths(remote, tmp_path):
    root = write_pipeline(tmp_path / "ws", remote.url)
    result = nxrun(root, "run", "gen:data", "--namespace", "scratch/refs/pull/7/merge", endpoint=remote.endpoint)
    assert result.returncode == 0, result.stderr
    assert all(k.startswith("scratch/refs/pull/7/merge/") for k in remote.keys())
    bad = nxrun(root, "run", "gen:data", "--namespace", "scratch/../trusted", endpoint=remote.endpoint)
    assert bad.returncode != 0 and "namespace" in bad.stderr
