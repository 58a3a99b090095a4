"""`cache = "hardware"` on a host with two GPU models: a task's hardware fingerprint is that of the
class of GPUs it is granted, never of every GPU on the host, and never an index or UUID. The GPUs
come from a stand-in nvidia-smi (tests/fake_nvidia_smi.py)."""

from __future__ import annotations

import pytest
from fake_nvidia_smi import A100, H100, install, uuid_of

from nxrun.graph import Task
from nxrun.hashing import FileIndex, StatCache, TaskHasher
from nxrun.runtime import Runtime


@pytest.fixture
def mixed_host(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", install(tmp_path / "bin", [H100, H100, A100])["PATH"])
    monkeypatch.delenv("NXRUN_GPUS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return tmp_path


def _task(gpus: int, cache: str = "hardware") -> Task:
    return Task(id="p:t", project="p", target="t", matrix={}, command="bench", inputs=[], outputs=["out"],
                deps=[], env={}, resources=["gpu"] if gpus else [], cache=cache, cwd=".", source="nxrun.toml:1",
                gpus=gpus)


def test_each_gpu_class_has_its_own_fingerprint(mixed_host):
    runtime = Runtime({}, str(mixed_host))
    h100, a100 = runtime.gpu_pool().classes(1)
    on_h100 = runtime.hardware_fingerprint(_task(1), h100)
    on_a100 = runtime.hardware_fingerprint(_task(1), a100)
    assert on_h100 != on_a100 and "H100" in on_h100 and "A100" not in on_h100 and "A100" in on_a100
    for text in (on_h100, on_a100):
        assert not any(uuid_of(n) in text for n in range(3))


def test_default_class_is_the_pools_first_with_enough_gpus(mixed_host, monkeypatch):
    assert "H100" in Runtime({}, str(mixed_host)).hardware_fingerprint(_task(1))
    monkeypatch.setenv("NXRUN_GPUS", "2")
    assert "A100" in Runtime({}, str(mixed_host)).hardware_fingerprint(_task(1))
    monkeypatch.delenv("NXRUN_GPUS")
    assert "A100" in Runtime({}, str(mixed_host), gpu_cli="2").hardware_fingerprint(_task(1))
    assert "A100" in Runtime({}, str(mixed_host), gpu_setting=(["2"], "nxrun.toml:2")).hardware_fingerprint(_task(1))
    monkeypatch.setenv("NXRUN_GPUS", "2,0")
    # two GPUs of one class: none here, as the pool holds one A100 and one H100
    runtime = Runtime({}, str(mixed_host))
    assert runtime.hardware_fingerprint(_task(1)).count("A100") == 1
    assert runtime.gpu_pool().classes(2) == []


def test_a_task_on_one_gpu_does_not_take_the_fingerprint_of_all(mixed_host):
    runtime = Runtime({}, str(mixed_host))
    one = runtime.hardware_fingerprint(_task(1))
    host = runtime.hardware_fingerprint()
    assert host.count("H100") == 2 and "A100" in host      # a task without GPUs: the host as before
    assert runtime.hardware_fingerprint(_task(0)) == host
    assert one.count("H100") == 1 and "A100" not in one
    assert runtime.hardware_fingerprint(_task(2)).count("H100") == 2


def test_the_etag_follows_the_class_and_the_count_but_not_the_ids(mixed_host):
    runtime = Runtime({}, str(mixed_host))
    h100, a100 = runtime.gpu_pool().classes(1)
    hasher = TaskHasher(mixed_host, FileIndex(mixed_host), StatCache(), runtime)

    def component(task, gpu_class=None, name="hardware"):
        return hasher.components(task, {}, environ={}, gpu_class=gpu_class)[0].get(name)

    assert component(_task(1), h100) != component(_task(1), a100)
    assert component(_task(1)) == component(_task(1), h100)
    assert component(_task(2), h100) != component(_task(1), h100)
    # the count enters as its own component for every cache mode, from two GPUs on
    assert component(_task(2, "always"), name="gpus") == "2"
    assert component(_task(1, "always"), name="gpus") is None


def test_a_pool_without_hardware_fingerprints_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))          # no nvidia-smi
    monkeypatch.setenv("NXRUN_GPUS", "0,1")
    fingerprint = Runtime({}, str(tmp_path)).hardware_fingerprint(_task(1))
    assert fingerprint.startswith("cpu ")


def test_the_graph_snapshot_keeps_the_workspace_gpu_setting_and_task_counts(tmp_path):
    from nxrun import snapshot

    (tmp_path / "nxrun.toml").write_text('[workspace]\ngpus = ["1"]\nexecutor = "local"\n'
                                         '[projects.p.targets.t]\ncommand = "x"\ngpus = 2\n'
                                         '[projects.p.targets.u]\ncommand = "x"\nresources = ["gpu"]\n')
    for _ in range(2):   # built, then read back from the snapshot
        graph = snapshot.load_graph(tmp_path)
        assert graph.workspace.gpus == (["1"], "nxrun.toml:2")
        assert graph.workspace.executor == "local"
        assert graph.tasks["p:t"].gpus == 2 and graph.tasks["p:u"].gpus == 1
    (tmp_path / "nxrun.toml").write_text('[workspace]\nexecutor = "ray"\n[projects.p.targets.t]\ncommand = "x"\n')
    assert [snapshot.load_graph(tmp_path).workspace.executor for _ in range(2)] == ["ray", "ray"]
