"""Remote execution without a shared file system, without Ray: the driver uploads input blobs and an
action record to the real S3 server, the worker half (nxrun/executors/sandbox.py) materialises
them in a fresh sandbox, runs the command there, uploads outputs and log write-once and returns a
manifest the driver can check like any remote entry."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import xxhash
from remote_helpers import expect_gone
from weed_server import client_env

from nxrun.executors.action import Action, ActionArea, RemoteSpec, describe_inputs, upload_inputs
from nxrun.executors.sandbox import run_action
from nxrun.store import CacheEntry, OutputRecord
from nxrun.store.safety import check_entry

ETAG = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def s3_env(remote, monkeypatch):
    for name, value in client_env(remote.endpoint).items():
        monkeypatch.setenv(name, value)
    return remote


def _spec(remote) -> RemoteSpec:
    return RemoteSpec(url=remote.url, namespace="trusted", endpoint_url=remote.endpoint, connect_timeout=2,
                      read_timeout=10)


def _workspace(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "data.txt").write_text("hello from the workspace\n")
    (root / "tools").mkdir()
    (root / "tools" / "make.sh").write_text("#!/bin/sh\nmkdir -p out/res\ncat src/data.txt up/a.txt "
                                            "up/link.txt > out/res/joined.txt\npwd > out/res/pwd.txt\n"
                                            "ln -s joined.txt out/res/alias.txt\necho made it\n")
    os.chmod(root / "tools" / "make.sh", 0o755)
    (root / "up").mkdir()                               # an upstream task's declared output
    (root / "up" / "a.txt").write_text("upstream bytes\n")
    os.symlink("a.txt", root / "up" / "link.txt")
    return root


def _send(remote, root: Path, command: str, outputs: list[str], hardware: str = "") -> tuple[RemoteSpec, str]:
    spec = _spec(remote)
    area = ActionArea.open(spec)
    try:
        data = (root / "src" / "data.txt").read_bytes()
        inputs = describe_inputs(root, [("src/data.txt", xxhash.xxh3_128_hexdigest(data)),
                                        ("tools/make.sh", None)], ["up"])
        upload_inputs(area, root, inputs, set())
        action = Action(task_id="p:t", etag=ETAG, command=command, cwd="", env_names=["GREETING"],
                        inputs=inputs, outputs=outputs, hardware=hardware)
        return spec, area.put_action(action)
    finally:
        area.close()


def test_action_runs_in_a_sandbox_outside_the_workspace_and_returns_a_checkable_manifest(s3_env, tmp_path):
    root = _workspace(tmp_path / "ws")
    spec, digest = _send(s3_env, root, "./tools/make.sh; echo \"greeting=$GREETING\"", ["out/res"])
    result = run_action(spec.as_plain(), digest, {"GREETING": "hi", "NOT_LISTED": "x"})
    assert result["problem"] is None and result["exit_code"] == 0, result
    entry = CacheEntry.from_json(json.dumps(result["entry"]))
    check_entry(entry, ["out/res"])
    by_path = {r.path: r for r in entry.outputs}
    assert by_path["out/res/alias.txt"].kind == "symlink" and by_path["out/res/alias.txt"].target == "joined.txt"
    area = ActionArea.open(spec)
    try:
        joined = area.read_blob(by_path["out/res/joined.txt"].digest)
        pwd = area.read_blob(by_path["out/res/pwd.txt"].digest).decode().strip()
        log = area.read_blob(entry.log_digest)
    finally:
        area.close()
    assert joined == b"hello from the workspace\nupstream bytes\nupstream bytes\n"
    assert pwd == result["sandbox"] and not pwd.startswith(str(root)) and "nxrun-sandbox-" in pwd
    assert b"made it" in log and b"greeting=hi" in log
    assert not Path(result["sandbox"]).exists()          # removed afterwards
    assert entry.runtime_facts["hardware"] and entry.runtime_facts["node"]
    assert not (root / "out").exists()                    # nothing written into the workspace
    assert not s3_env.keys("trusted/entries")             # the worker writes no entry


def test_failing_command_returns_its_exit_code_and_log_and_no_entry(s3_env, tmp_path):
    root = _workspace(tmp_path / "ws")
    spec, digest = _send(s3_env, root, "echo about to fail; exit 3", ["out/res"])
    result = run_action(spec.as_plain(), digest, {})
    assert result["exit_code"] == 3 and result["entry"] is None
    area = ActionArea.open(spec)
    try:
        assert b"about to fail" in area.read_blob(result["log_digest"])
    finally:
        area.close()


def test_hardware_other_than_the_etags_is_refused(s3_env, tmp_path):
    root = _workspace(tmp_path / "ws")
    spec, digest = _send(s3_env, root, "mkdir -p out/res; echo x > out/res/f", ["out/res"],
                         hardware="NVIDIA B300|cuda 99")
    result = run_action(spec.as_plain(), digest, {})
    assert result["entry"] is None and "hardware" in result["problem"] and "not stored" in result["problem"]


def _hostile(remote, tmp_path, inputs: list[OutputRecord], cwd: str = "") -> dict:
    spec = _spec(remote)
    area = ActionArea.open(spec)
    try:
        area.put_blob_bytes(xxhash.xxh3_128_hexdigest(b"evil"), b"evil")
        digest = area.put_action(Action(task_id="p:t", etag=ETAG, command="true", cwd=cwd, env_names=[],
                                        inputs=inputs, outputs=["out"]))
    finally:
        area.close()
    return run_action(spec.as_plain(), digest, {})


EVIL = xxhash.xxh3_128_hexdigest(b"evil")


@pytest.mark.parametrize("inputs, why", [
    ([OutputRecord("../escape.txt", "file", digest=EVIL, size=4)], "'..'"),
    ([OutputRecord("/tmp/escape.txt", "file", digest=EVIL, size=4)], "absolute"),
    ([OutputRecord("a/./b", "file", digest=EVIL, size=4)], "'.'"),
    ([OutputRecord("lnk", "symlink", target="../../outside", mode=0o777)], "leads out"),
    ([OutputRecord("lnk", "symlink", target="/etc", mode=0o777)], "leads out"),
    # a link, then a file written "through" it: refused before anything is written
    ([OutputRecord("d", "symlink", target="x", mode=0o777),
      OutputRecord("d/f.txt", "file", digest=EVIL, size=4)], "beneath"),
])
def test_unsafe_action_records_are_refused_before_anything_is_written(s3_env, tmp_path, inputs, why):
    sandbox_parent = tmp_path / "sandboxes"
    sandbox_parent.mkdir()
    os.environ["NXRUN_SANDBOX_DIR"] = str(sandbox_parent)
    try:
        result = _hostile(s3_env, tmp_path, inputs)
    finally:
        del os.environ["NXRUN_SANDBOX_DIR"]
    assert result["entry"] is None and result["problem"] and why in result["problem"], result
    assert list(sandbox_parent.iterdir()) == []
    assert not (tmp_path / "escape.txt").exists() and not Path("/tmp/escape.txt").exists()


def test_a_blob_that_does_not_hash_to_its_name_is_refused(s3_env, tmp_path):
    wrong = "f" * 32
    s3_env.put(f"trusted/blobs/{wrong}", b"not what the name says")
    result = _hostile(s3_env, tmp_path, [OutputRecord("in.txt", "file", digest=wrong, size=22)])
    assert result["entry"] is None and "does not hash to its name" in result["problem"]


def test_an_action_record_that_does_not_hash_to_its_name_is_refused(s3_env, tmp_path):
    spec = _spec(s3_env)
    digest = "e" * 32
    s3_env.put(f"trusted/actions/{digest}.json", Action(task_id="p:t", etag=ETAG, command="touch /tmp/pwned",
                                                          cwd="", env_names=[], inputs=[], outputs=[]).to_json())
    result = run_action(spec.as_plain(), digest, {})
    assert result["entry"] is None and "does not hash to its name" in result["problem"]


def test_input_blobs_are_uploaded_once(s3_env, tmp_path):
    root = _workspace(tmp_path / "ws")
    spec = _spec(s3_env)
    area = ActionArea.open(spec)
    try:
        inputs = describe_inputs(root, [("src/data.txt", None)], ["up"])
        known: set[str] = set()
        assert upload_inputs(area, root, inputs, known) == 2          # data.txt, up/a.txt; the link is a record
        assert upload_inputs(area, root, inputs, set()) == 0          # already there: HEAD only
        assert upload_inputs(area, root, inputs, known) == 0          # known this run: not even a HEAD
        # a file that changes between its hashing and its upload is never stored under the old name
        (root / "src" / "new.txt").write_text("as hashed\n")
        fresh = describe_inputs(root, [("src/new.txt", None)], [])
        (root / "src" / "new.txt").write_text("changed after hashing\n")
        from nxrun.executors.action import InputError

        with pytest.raises(InputError, match="changed"):
            upload_inputs(area, root, fresh, set())
    finally:
        area.close()


def test_a_node_whose_runtime_probe_answers_otherwise_does_not_run_the_task(s3_env, tmp_path):
    root = _workspace(tmp_path / "ws")
    marker = tmp_path / "ran"
    spec = _spec(s3_env)
    area = ActionArea.open(spec)
    try:
        digest = area.put_action(Action(task_id="p:t", etag=ETAG, command=f"touch {marker}", cwd="", env_names=[],
                                        inputs=describe_inputs(root, [], []), outputs=["out"],
                                        probes={"tool": ["echo tool 2.0", "tool 1.0"]}))
    finally:
        area.close()
    result = run_action(spec.as_plain(), digest, {})
    assert result["entry"] is None and "runtime probe 'tool' gives 'tool 2.0'" in result["problem"], result
    assert not marker.exists()


WORKER = """
import json, sys
from nxrun.executors.sandbox import run_action
run_action(json.loads(sys.argv[1]), sys.argv[2], {})
"""


def test_a_worker_killed_mid_command_takes_the_commands_processes_with_it(s3_env, tmp_path):
    # a forced Ray cancel, or any death of the worker, SIGKILLs the process running run_action:
    # PR_SET_PDEATHSIG ended the shell only, and what the command started ran on
    import signal
    import subprocess
    import sys
    import time

    root = _workspace(tmp_path / "ws")
    child = tmp_path / "child.pid"
    spec, digest = _send(s3_env, root, f"sleep 300 & echo $! > {child}; wait", ["out"])
    env = dict(os.environ, **client_env(s3_env.endpoint))
    worker = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(spec.as_plain()), digest], env=env)
    deadline = time.monotonic() + 60
    while not (child.exists() and child.read_text().strip()):
        assert worker.poll() is None and time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    pid = int(child.read_text())
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    expect_gone(pid, 20, "the end of the command's sleep, which outlived the worker")
