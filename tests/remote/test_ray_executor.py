"""The Ray executor on a real local Ray cluster (127.0.0.1, two fake GPUs) and the real S3 server,
driven through its interface (the scheduler's side of the contract): placement and GPU ids, the
sandbox, a failing command, a worker killed mid-task, and the errors at start."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from types import SimpleNamespace

import pytest
from weed_server import client_env

from nxrun.errors import NxrunError
from nxrun.executors.base import Job
from nxrun.graph import Task
from nxrun.store.tiered import open_remote


def _task(task_id: str, command: str, outputs: list[str], deps: list[str] | None = None,
          resources: list[str] | None = None, inputs: list[str] | None = None, cache: str = "always") -> Task:
    project, _, target = task_id.partition(":")
    return Task(id=task_id, project=project, target=target, matrix={}, command=command, inputs=inputs or [],
                outputs=outputs, deps=deps or [], env={}, resources=resources or [], cache=cache, cwd="",
                source="nxrun.toml:1")


@pytest.fixture
def executor(ray_cluster, remote, tmp_path, monkeypatch):
    from nxrun.executors.ray import RayExecutor

    for name, value in client_env(remote.endpoint).items():
        monkeypatch.setenv(name, value)
    root = tmp_path / "ws"
    root.mkdir()
    workspace = SimpleNamespace(root=root, remote={"endpoint-url": remote.endpoint, "connect-timeout": 2,
                                                   "read-timeout": 10})
    cache = open_remote(remote.url, workspace, False, None, None)
    made = RayExecutor(workspace, cache, address=ray_cluster.address)
    made.check()
    yield made
    made.close(clean=True)
    cache.close()


def _job(task: Task, env: dict | None = None, gpus: int = 0, inputs=None) -> Job:
    job = Job(task=task, etag=os.urandom(16).hex(), command=task.command, env={"NXRUN_TASK": task.id, **(env or {})},
              cwd="", inputs=inputs or [], gpus=[], cpus=1)
    job.task.resources = ["gpu"] if gpus == 1 else []
    if gpus > 1:
        job.task.gpus = gpus
    return job


def _run_all(executor, jobs: list[Job]) -> list:
    results: list = [None] * len(jobs)
    logs: list[list[bytes]] = [[] for _ in jobs]

    def one(i: int) -> None:
        results[i] = executor.run(jobs[i], logs[i].append)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    return list(zip(results, logs))


def test_gpu_tasks_get_distinct_fake_gpus_and_a_two_gpu_task_gets_both(executor, tmp_path):
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    # each waits until both have started, so they hold their GPUs at the same time
    wait_both = (f"touch {barrier}/$NXRUN_TASK; n=0; while [ $(ls {barrier} | wc -l) -lt 2 ] && [ $n -lt 600 ]; "
                 "do sleep 0.1; n=$((n+1)); done; ")
    jobs = [_job(_task(f"g:{i}", wait_both + f"mkdir -p out; echo $CUDA_VISIBLE_DEVICES > out/gpu{i}.txt",
                       [f"out/gpu{i}.txt"]), gpus=1) for i in range(2)]
    outcomes = _run_all(executor, jobs)
    ids = []
    for finished, _log in outcomes:
        assert finished.problem is None and finished.exit_code == 0, finished.problem
        ids.append(finished.entry.runtime_facts["gpu_ids"])
    assert sorted(ids) == ["0", "1"], ids
    assert sorted(executor.gpu_ids[j.task.id][0] for j in jobs) == ["0", "1"]
    pair = _job(_task("g:pair", "mkdir -p out; echo $CUDA_VISIBLE_DEVICES > out/pair.txt", ["out/pair.txt"]), gpus=2)
    finished, _ = _run_all(executor, [pair])[0]
    assert finished.entry is not None and finished.entry.runtime_facts["gpu_ids"] == "0,1"
    assert executor.gpu_ids["g:pair"] == ["0", "1"]


def test_a_failing_command_fails_with_its_log_and_stores_nothing(executor, remote):
    job = _job(_task("f:bad", "echo first line; echo second line >&2; exit 7", ["out/x"]))
    finished, log = _run_all(executor, [job])[0]
    assert finished.exit_code == 7 and finished.entry is None and finished.problem is None
    assert b"first line\n" in log and b"second line\n" in log
    assert not [k for k in remote.keys("trusted/entries") if job.etag in k]


def test_a_worker_killed_mid_task_is_retried_once_then_fails_without_an_entry(executor, remote, tmp_path):
    marker = tmp_path / "killed-once"
    # the Ray worker process is the parent of the shell that runs the command
    kill_first = (f"if [ ! -e {marker} ]; then touch {marker}; kill -9 $PPID; sleep 30; fi; "
                  "mkdir -p out; echo survived > out/k.txt")
    finished, _ = _run_all(executor, [_job(_task("k:once", kill_first, ["out/k.txt"]))])[0]
    assert finished.problem is None and finished.entry is not None, finished.problem
    always = _job(_task("k:always", "kill -9 $PPID; sleep 30", ["out/k.txt"]))
    started = time.monotonic()
    finished, _ = _run_all(executor, [always])[0]
    assert finished.entry is None and "died" in (finished.problem or ""), finished.problem
    assert time.monotonic() - started < 120
    assert not [k for k in remote.keys("trusted/entries") if always.etag in k]


def test_cancel_all_stops_the_running_tasks(executor, tmp_path):
    started_file = tmp_path / "started"
    job = _job(_task("c:slow", f"echo $$ > {started_file}.pid; touch {started_file}; exec sleep 120", ["out/c"]))
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(executor.run(job, lambda line: None)))
    thread.start()
    deadline = time.monotonic() + 60
    while not started_file.exists():
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.1)
    executor.cancel_all()
    thread.join(timeout=60)
    assert not thread.is_alive() and outcome[0].entry is None and outcome[0].problem == "cancelled"
    pid = int((tmp_path / "started.pid").read_text())
    deadline = time.monotonic() + 30
    while _running_sleep(pid):
        assert time.monotonic() < deadline, "the cancelled command still runs on the worker"
        time.sleep(0.1)


def _running_sleep(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"sleep" in handle.read()
    except OSError:
        return False


def test_check_says_why_a_remote_is_needed(tmp_path):
    from nxrun.executors.ray import RayExecutor

    with pytest.raises(NxrunError, match="remote cache") as caught:
        RayExecutor(SimpleNamespace(root=tmp_path), None).check()
    assert "[remote]" in str(caught.value)


def test_check_refuses_a_read_only_remote(tmp_path, remote):
    from nxrun.executors.ray import RayExecutor

    workspace = SimpleNamespace(root=tmp_path, remote={"endpoint-url": remote.endpoint, "read-only": True})
    cache = open_remote(remote.url, workspace, False, None, None)
    try:
        with pytest.raises(NxrunError, match="read-only"):
            RayExecutor(workspace, cache).check()
    finally:
        cache.close()


def test_check_without_ray_says_how_to_install_it(tmp_path, remote, monkeypatch):
    from nxrun.executors.ray import RayExecutor

    monkeypatch.setitem(sys.modules, "ray", None)
    workspace = SimpleNamespace(root=tmp_path, remote={"endpoint-url": remote.endpoint})
    cache = open_remote(remote.url, workspace, False, None, None)
    try:
        with pytest.raises(NxrunError, match=r"pip install 'nxrun\[ray\]'"):
            RayExecutor(workspace, cache).check()
    finally:
        cache.close()


def test_an_unreachable_cluster_is_a_clear_error_at_start(tmp_path, remote, ray_installed):
    from nxrun.executors.ray import RayExecutor

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]           # closed again: nothing listens there
    workspace = SimpleNamespace(root=tmp_path, remote={"endpoint-url": remote.endpoint})
    cache = open_remote(remote.url, workspace, False, None, None)
    started = time.monotonic()
    try:
        with pytest.raises(NxrunError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
            RayExecutor(workspace, cache, address=f"127.0.0.1:{port}").check()
    finally:
        cache.close()
    assert time.monotonic() - started < 15


def test_the_test_cluster_binds_loopback_only(ray_cluster):
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_cluster.address, log_to_driver=False, configure_logging=False)
    try:
        nodes = ray_cluster.nodes()
        assert len(nodes) == 2
        for node in nodes:
            assert node["NodeManagerAddress"] == "127.0.0.1", node
        assert ray_cluster.address.startswith("127.0.0.1:")
        gcs = ray.get_runtime_context().gcs_address
        assert gcs.startswith("127.0.0.1:"), gcs
    finally:
        ray.shutdown()
    # every listening TCP socket of the cluster's processes (GCS, raylets, ...) is on loopback
    pids = [process.pid for node in [ray_cluster.cluster.head_node, ray_cluster.gpu_node]
            for _kind, process in node.live_processes()]
    bound = _listening_addresses(pids)
    assert bound, "found no listening socket of the cluster's processes"
    assert {host for host, _port in bound} == {"127.0.0.1"}, bound


def _listening_addresses(pids: list[int]) -> set[tuple[str, int]]:
    """(host, port) of the TCP sockets the processes listen on, from /proc."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found: set[tuple[str, int]] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:      # 0A: LISTEN
                continue
            address, port = fields[1].split(":")
            if width == 8:
                host = ".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0))
            else:
                host = "::1" if address == "0" * 24 + "01000000" else (
                    "::" if address == "0" * 32 else f"ipv6:{address}")
                if address == "0000000000000000FFFF00000100007F":
                    host = "127.0.0.1"
            found.add((host, int(port, 16)))
    return found


def test_hardware_tasks_take_the_fingerprint_of_the_node_they_run_on_not_the_drivers(executor, ray_cluster):
    from ray_cluster import FAKE_GPU_MODEL

    from nxrun.runtime import _hardware_fingerprint

    gpu_task = _task("h:gpu", "mkdir -p out; echo $CUDA_VISIBLE_DEVICES > out/h.txt", ["out/h.txt"],
                     resources=["gpu"], cache="hardware")
    fingerprint = executor.hardware_fingerprint(gpu_task)
    assert FAKE_GPU_MODEL in fingerprint and fingerprint != _hardware_fingerprint()
    job = _job(gpu_task, gpus=1)
    job.task.cache = "hardware"
    finished, _ = _run_all(executor, [job])[0]
    assert finished.problem is None and finished.entry is not None, finished.problem
    facts = finished.entry.runtime_facts
    assert facts["hardware"] == fingerprint and facts["ray_node"] == ray_cluster.gpu_node.node_id
    # a CPU task with cache = "hardware" goes to the nodes of the fingerprint its ETag holds
    cpu_task = _task("h:cpu", "mkdir -p out; echo cpu > out/c.txt", ["out/c.txt"], cache="hardware")
    fingerprint, nodes = executor.hardware_class(0)
    assert executor.hardware_fingerprint(cpu_task) == fingerprint
    for _ in range(3):
        finished, _ = _run_all(executor, [_job(_task("h:cpu", cpu_task.command, cpu_task.outputs, cache="hardware"))])[0]
        assert finished.entry is not None and finished.entry.runtime_facts["hardware"] == fingerprint
        assert finished.entry.runtime_facts["ray_node"] in nodes


def test_a_cancel_while_a_task_is_being_sent_stops_it_too(executor, tmp_path, monkeypatch):
    """Ctrl-C can come while a job uploads its inputs, before its Ray task is known to cancel_all:
    that task must not be submitted and waited for to its end."""
    import nxrun.executors.ray as ray_module

    real_upload = ray_module.upload_inputs

    def upload_then_cancel(*args, **kwargs):
        written = real_upload(*args, **kwargs)
        executor.cancel_all()          # the Ctrl-C arrives now, mid-send
        return written

    monkeypatch.setattr(ray_module, "upload_inputs", upload_then_cancel)
    started_file = tmp_path / "started"
    job = _job(_task("c:sent", f"touch {started_file}; exec sleep 120", ["out/c"]))
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(executor.run(job, lambda line: None)))
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the job was waited for to its end after a cancel"
    assert outcome[0].entry is None and outcome[0].problem == "cancelled"
