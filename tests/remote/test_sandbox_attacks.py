"""Hostile action records against the worker half of remote execution (nxrun/executors/sandbox.py),
on the real S3 server: nothing they name may make the worker write outside its sandbox."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import xxhash
from remote_helpers import Remote, expect_gone
from weed_server import client_env

from nxrun.executors.action import Action, ActionArea, RemoteSpec
from nxrun.executors.sandbox import run_action
from nxrun.store import OutputRecord

ETAG = "0123456789abcdef0123456789abcdef"
EVIL = xxhash.xxh3_128_hexdigest(b"evil")



@pytest.fixture
def remote(s3_server, module_bucket) -> Remote:
    """A prefix of its own in the module's bucket (see conftest.module_bucket)."""
    return Remote(s3_server.endpoint, module_bucket, f"cache-{uuid.uuid4().hex[:10]}")

@pytest.fixture
def s3_env(remote, monkeypatch):
    for name, value in client_env(remote.endpoint).items():
        monkeypatch.setenv(name, value)
    return remote


@pytest.fixture
def sandboxes(tmp_path, monkeypatch) -> Path:
    """Sandboxes are made two levels below tmp_path, so an escape lands in tmp_path where it is seen."""
    parent = tmp_path / "node" / "sandboxes"
    parent.mkdir(parents=True)
    monkeypatch.setenv("NXRUN_SANDBOX_DIR", str(parent))
    return parent


def _run(remote, inputs: list[OutputRecord], cwd: str = "", outputs: list[str] | None = None,
         command: str = "true") -> dict:
    spec = RemoteSpec(url=remote.url, namespace="trusted", endpoint_url=remote.endpoint, connect_timeout=2,
                      read_timeout=10)
    area = ActionArea.open(spec)
    try:
        area.put_blob_bytes(EVIL, b"evil")
        digest = area.put_action(Action(task_id="p:t", etag=ETAG, command=command, cwd=cwd, env_names=[],
                                        inputs=inputs, outputs=outputs or ["out"]))
    finally:
        area.close()
    return run_action(spec.as_plain(), digest, {})


def _everything_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("digest", ["../../escaped", "../../../escaped", "/tmp/../" + "x" * 20])
def test_an_input_digest_that_is_a_path_never_makes_a_file_outside_the_sandbox(s3_env, sandboxes, tmp_path, digest):
    result = _run(s3_env, [OutputRecord("in.txt", "file", digest=digest, size=4)])
    assert result["entry"] is None and "digest" in (result["problem"] or ""), result
    assert _everything_under(tmp_path) == ["node", "node/sandboxes"]


@pytest.mark.parametrize("inputs", [
    # each link's target text stays inside, but followed through the other link it leaves the sandbox
    [OutputRecord("b", "symlink", target=".", mode=0o777), OutputRecord("a", "symlink", target="b/..", mode=0o777)],
    [OutputRecord("b", "symlink", target=".", mode=0o777),
     OutputRecord("a", "symlink", target="b/b/b/../../..", mode=0o777)],
    [OutputRecord("d/b", "symlink", target="..", mode=0o777),
     OutputRecord("a", "symlink", target="d/b/d/b/..", mode=0o777)],
])
@pytest.mark.parametrize("where", ["cwd", "output"])
def test_a_link_chain_out_of_the_sandbox_is_refused_before_anything_is_made_through_it(s3_env, sandboxes, tmp_path,
                                                                                        inputs, where):
    kwargs = {"cwd": "a/escaped"} if where == "cwd" else {"outputs": ["a/escaped/out.txt"]}
    result = _run(s3_env, inputs, **kwargs)
    assert result["entry"] is None and "leads out" in (result["problem"] or ""), result
    assert _everything_under(tmp_path) == ["node", "node/sandboxes"]


@pytest.mark.parametrize("inputs, cwd, outputs", [
    ([OutputRecord("n" * 300, "file", digest=EVIL, size=4)], "", ["out"]),        # a name no file system takes
    ([OutputRecord("in.txt", "file", digest=EVIL, size=4, mode="rwx")], "", ["out"]),  # a mode that is no number
    ([OutputRecord("f", "file", digest=EVIL, size=4)], "f/sub", ["out"]),          # cwd beneath a file
    ([OutputRecord("f", "file", digest=EVIL, size=4)], "", ["f/out.txt"]),         # an output beneath a file
])
def test_an_action_the_file_system_cannot_take_is_a_problem_not_a_crash(s3_env, sandboxes, tmp_path, inputs, cwd,
                                                                         outputs):
    result = _run(s3_env, inputs, cwd=cwd, outputs=outputs)
    assert result["entry"] is None and result["problem"], result
    assert list(sandboxes.iterdir()) == []


def test_the_log_beside_the_sandbox_is_private_to_the_worker(s3_env, sandboxes):
    """The log may hold secrets the command printed, and lies in a shared temp folder."""
    result = _run(s3_env, [], command='mkdir -p out; stat -c %a "$NXRUN_SANDBOX.log" > out/mode', outputs=["out"])
    assert result["exit_code"] == 0 and result["entry"], result
    spec = RemoteSpec(url=s3_env.url, namespace="trusted", endpoint_url=s3_env.endpoint)
    area = ActionArea.open(spec)
    try:
        record = [r for r in result["entry"]["outputs"] if r["path"] == "out/mode"][0]
        assert area.read_blob(record["digest"]).decode().strip() == "600"
    finally:
        area.close()


def _raw_action(remote, **changes) -> dict:
    import json

    fields = {"task_id": "p:t", "etag": ETAG, "command": "true", "cwd": "", "env_names": [], "inputs": [],
              "outputs": ["out"], "hardware": "", "probes": {}, "format": 1}
    fields.update(changes)
    raw = json.dumps(fields).encode()
    digest = xxhash.xxh3_128_hexdigest(raw)
    remote.put(f"trusted/actions/{digest}.json", raw)
    spec = RemoteSpec(url=remote.url, namespace="trusted", endpoint_url=remote.endpoint, connect_timeout=2,
                      read_timeout=10)
    return run_action(spec.as_plain(), digest, {})


@pytest.mark.parametrize("changes", [
    {"inputs": [{"bogus": 1}]},
    {"inputs": ["in.txt"]},
    {"inputs": {"path": "in.txt"}},
    {"outputs": "out"},
    {"outputs": [["out"]]},
    {"command": ["rm", "-rf", "/"]},
    {"cwd": None},
    {"env_names": "HOME"},
    {"probes": {"tool": 5}},
    {"probes": []},
    {"task_id": 5},
])
def test_a_malformed_action_record_is_refused_as_a_problem_before_anything_runs(s3_env, sandboxes, changes):
    result = _raw_action(s3_env, **changes)
    assert result["entry"] is None and result["exit_code"] == -1, result
    assert "could not prepare the sandbox" in (result["problem"] or ""), result
    assert list(sandboxes.iterdir()) == []


def test_processes_the_command_left_behind_do_not_outlive_it_on_the_worker(s3_env, sandboxes, tmp_path):
    """A background process of the command would go on writing to outputs being hashed and
    uploaded, and run on in a removed sandbox forever (PR_SET_PDEATHSIG covers the shell only)."""

    pid_file = tmp_path / "bg.pid"
    command = f"mkdir -p out; echo made > out/x.txt; sleep 300 > /dev/null 2>&1 & echo $! > {pid_file}"
    result = _run(s3_env, [], command=command, outputs=["out"])
    pid = int(pid_file.read_text())
    try:
        assert result["exit_code"] == 0 and result["entry"], result
    finally:
        expect_gone(pid, 10, "the end of the command's background process, which outlived it")
