"""Attacks on `nxrun run --executor ray` end to end, through the real CLI, on the real local Ray
cluster and S3 server: what the remote holds afterwards, and what comes back to the workspace."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from remote_helpers import Remote
from weed_server import client_env

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))

from cli_workspace import Workspace  # noqa: E402


@pytest.fixture
def remote(s3_server, module_bucket) -> Remote:
    """A prefix of its own in the module's bucket (see conftest.module_bucket)."""
    return Remote(s3_server.endpoint, module_bucket, f"cache-{uuid.uuid4().hex[:10]}")

def _env(remote, ray_cluster) -> dict[str, str]:
    env = client_env(remote.endpoint)
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env["RAY_ADDRESS"] = ray_cluster.address
    return env


def test_args_after_dashes_and_env_values_are_never_stored_in_clear_in_the_remote(ray_cluster, remote, tmp_path):
    """Args after `--` are treated as secrets (hashed with a key, never kept by `history`), as the
    values of `env:NAME` inputs are: the action record the worker reads must not carry them; they
    travel with the Ray task."""
    ws = Workspace(tmp_path / "ws")
    ws.write("nxrun.toml", f"""\
        [remote]
        url = "{remote.url}"

        [projects.p.targets.t]
        command = "mkdir -p out; printf '%s' \\"$TOKEN\\" | wc -c > out/len.txt; set --"
        inputs = ["env:TOKEN"]
        outputs = ["out/len.txt"]
        """)
    env = {**_env(remote, ray_cluster), "TOKEN": "env-secret-0a1b2c"}
    result = ws.nxrun("run", "p:t", "--executor", "ray", "--", "arg-secret-9z8y7x", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (ws.root / "out" / "len.txt").read_text().strip() == "17"     # the command saw the value
    keys = remote.keys("")
    assert any("/actions/" in key for key in keys), keys
    for key in keys:
        body = remote.get(key)
        assert b"arg-secret-9z8y7x" not in body and b"env-secret-0a1b2c" not in body, key


def test_the_command_on_the_worker_sees_the_env_inputs_its_etag_holds(ray_cluster, remote, tmp_path):
    """An `env:NAME` input is hashed into the ETag from the driver's environment: the command on the
    worker must see that value, never the worker's own, or an
    entry is filed under an ETag that does not describe what made it."""
    ws = Workspace(tmp_path / "ws")
    ws.write("nxrun.toml", f"""\
        [remote]
        url = "{remote.url}"

        [projects.p.targets.t]
        command = "mkdir -p out; echo \\"size=${{MODEL_SIZE-unset}}\\" > out/m.txt"
        inputs = ["env:MODEL_SIZE"]
        outputs = ["out/m.txt"]
        """)
    env = {**_env(remote, ray_cluster), "MODEL_SIZE": "large"}
    result = ws.nxrun("run", "p:t", "--executor", "ray", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (ws.root / "out" / "m.txt").read_text() == "size=large\n"


def _run_json(ws: Workspace, *args: str, env: dict) -> dict:
    import json

    result = ws.nxrun("run", "--json", *args, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_a_cache_never_task_runs_on_the_cluster_and_leaves_no_entry(ray_cluster, remote, tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.write("nxrun.toml", f"""\
        [remote]
        url = "{remote.url}"

        [projects.p.targets.t]
        command = "mkdir -p out; head -c 16 /dev/urandom | od -An -tx1 > out/r.txt"
        cache = "never"
        outputs = ["out/r.txt"]
        """)
    env = _env(remote, ray_cluster)
    first = _run_json(ws, "p:t", "--executor", "ray", env=env)
    assert Workspace.statuses(first) == {"p:t": "miss"}
    made = (ws.root / "out" / "r.txt").read_text()
    assert made.strip()
    assert not remote.keys("trusted/entries")
    again = _run_json(ws, "p:t", "--executor", "ray", env=env)
    assert Workspace.statuses(again) == {"p:t": "miss"}
    assert (ws.root / "out" / "r.txt").read_text() != made
    assert not remote.keys("trusted/entries")


def test_a_second_run_of_an_etag_already_in_the_remote_restores_what_its_own_command_wrote(ray_cluster, remote,
                                                                                           tmp_path):
    """Two drivers run the same ETag (at once, or --skip-cache): the entry is write-once, so the
    second one's manifest is not the stored one; it must still succeed with its own outputs."""
    ws = Workspace(tmp_path / "ws")
    ws.write("nxrun.toml", f"""\
        [remote]
        url = "{remote.url}"

        [projects.p.targets.t]
        command = "mkdir -p out; head -c 16 /dev/urandom | od -An -tx1 > out/r.txt"
        outputs = ["out/r.txt"]
        """)
    env = _env(remote, ray_cluster)
    assert Workspace.statuses(_run_json(ws, "p:t", "--executor", "ray", env=env)) == {"p:t": "miss"}
    first = (ws.root / "out" / "r.txt").read_text()
    stored = remote.keys("trusted/entries")
    assert len(stored) == 1
    again = _run_json(ws, "p:t", "--executor", "ray", "--skip-cache", env=env)
    assert Workspace.statuses(again) == {"p:t": "miss"}
    assert (ws.root / "out" / "r.txt").read_text() != first
    assert remote.keys("trusted/entries") == stored


def test_a_declared_output_the_worker_did_not_produce_is_warned_about_as_locally(ray_cluster, remote, tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.write("nxrun.toml", f"""\
        [remote]
        url = "{remote.url}"

        [projects.p.targets.t]
        command = "mkdir -p out; echo made > out/made.txt"
        outputs = ["out/made.txt", "out/forgotten.txt"]
        """)
    result = ws.nxrun("run", "p:t", "--executor", "ray", env=_env(remote, ray_cluster))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "declared output 'out/forgotten.txt' was not produced" in result.stdout + result.stderr
    assert "out/made.txt' was not produced" not in result.stdout + result.stderr
