"""The GPU timing lock is per GPU: timed blocks on different GPUs run at once, a compile waits only
for timed work on its own GPUs, and a process bound to no GPU (a build task) waits for every GPU.
Holders are child processes that keep the lock until the test tells them to let go."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from waiting import wait_until

from workloads.common import gpu_lock

REPO = Path(__file__).parents[2]

_HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from workloads.common import gpu_lock
    mode, marker = sys.argv[1], Path(sys.argv[2])
    hold = gpu_lock.exclusive if mode == "exclusive" else gpu_lock.shared
    with hold("test"):
        marker.write_text("held")
        while not Path(str(marker) + ".release").exists():
            time.sleep(0.01)
""")

_GPU_ENV = ("NXRUN_GPU_IDS", "NXRUN_GPU_UUIDS", "CUDA_VISIBLE_DEVICES")


class Holder:
    def __init__(self, tmp_path: Path, name: str, mode: str, gpus: str | None):
        self.marker = tmp_path / name
        env = {k: v for k, v in os.environ.items() if k not in _GPU_ENV}
        env.update(PYTHONPATH=str(REPO), NXRUN_TIMING_LOCK=str(tmp_path / "timing.lock"))
        if gpus is not None:
            env["NXRUN_GPU_IDS"] = gpus
        self.log = tmp_path / f"{name}.err"
        with open(self.log, "w") as err:
            self.process = subprocess.Popen([sys.executable, "-c", _HOLDER, mode, str(self.marker)], env=env,
                                            stderr=err)

    @property
    def err(self) -> str:
        return self.log.read_text()

    def holds(self) -> bool:
        return self.marker.exists()

    def waiting(self) -> bool:
        return "waiting for" in self.err

    def release(self) -> None:
        Path(str(self.marker) + ".release").write_text("")
        assert self.process.wait(timeout=30) == 0


@pytest.fixture
def holders(tmp_path):
    started: list[Holder] = []

    def start(name: str, mode: str, gpus: str | None) -> Holder:
        holder = Holder(tmp_path, name, mode, gpus)
        started.append(holder)
        return holder

    yield start
    for holder in started:
        if holder.process.poll() is None:
            Path(str(holder.marker) + ".release").write_text("")
            holder.process.wait(timeout=30)


def test_timed_blocks_on_different_gpus_run_at_once(holders):
    first = holders("timed-0", "exclusive", "GPU-a")
    wait_until(first.holds, what="the first timed block")
    second = holders("timed-1", "exclusive", "GPU-b")
    wait_until(lambda: second.holds() or second.waiting(), what="the second timed block to start or wait")
    assert second.holds() and not second.waiting(), second.err
    first.release()
    second.release()


def test_timed_blocks_on_one_gpu_take_turns(holders):
    first = holders("timed-0", "exclusive", "GPU-a")
    wait_until(first.holds, what="the first timed block")
    second = holders("timed-1", "exclusive", "GPU-b,GPU-a")   # a two-GPU task that shares one
    wait_until(second.waiting, what="the second to wait")
    assert not second.holds()
    first.release()
    wait_until(second.holds, what="the second timed block after the first")
    second.release()


def test_a_compile_waits_only_for_timed_work_on_its_own_gpu(holders):
    timed = holders("timed", "exclusive", "GPU-a")
    wait_until(timed.holds, what="the timed block")
    other = holders("compile-b", "shared", "GPU-b")
    wait_until(lambda: other.holds() or other.waiting(), what="the compile on another GPU")
    assert other.holds(), other.err
    same = holders("compile-a", "shared", "GPU-a")
    wait_until(same.waiting, what="the compile on the timed GPU to wait")
    timed.release()
    wait_until(same.holds, what="the compile after the timed block")
    other.release()
    same.release()


def test_a_compile_bound_to_no_gpu_waits_for_timed_work_on_any_gpu(holders):
    timed = holders("timed", "exclusive", "GPU-b")
    wait_until(timed.holds, what="the timed block")
    build = holders("build", "shared", None)
    wait_until(build.waiting, what="the unbound compile to wait")
    timed.release()
    wait_until(build.holds, what="the unbound compile after the timed block")
    # while it compiles, timed work on a GPU never used before waits too (its lock file is new)
    fresh = holders("timed-new", "exclusive", "GPU-c")
    wait_until(fresh.waiting, what="timed work on a new GPU to wait for the unbound compile")
    build.release()
    wait_until(fresh.holds, what="timed work on the new GPU after the compile")
    fresh.release()


def test_unbound_timed_work_shuts_out_every_compile_and_the_keys_come_from_the_grant(holders, monkeypatch, tmp_path):
    timed = holders("timed", "exclusive", None)
    wait_until(timed.holds, what="the unbound timed block")
    compile_a = holders("compile-a", "shared", "GPU-a")
    wait_until(compile_a.waiting, what="a bound compile to wait for unbound timed work")
    timed.release()
    wait_until(compile_a.holds, what="the bound compile")
    compile_a.release()
    for name in _GPU_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(gpu_lock.ENV, str(tmp_path / "own.lock"))
    assert gpu_lock.gpu_keys() is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert gpu_lock.gpu_keys() is None                    # an index means different GPUs to different processes
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-x")
    assert gpu_lock.gpu_keys() == ["GPU-x"]
    monkeypatch.setenv("NXRUN_GPU_IDS", "1,0")
    assert gpu_lock.gpu_keys() == ["0", "1"]
    monkeypatch.setenv("NXRUN_GPU_UUIDS", "GPU-z,GPU-y")
    assert gpu_lock.gpu_keys() == ["GPU-y", "GPU-z"]
    with gpu_lock.exclusive("bench") as info:
        assert info["gpus"] == ["GPU-y", "GPU-z"]
        assert gpu_lock.gpu_lock_path("GPU-y").exists()


def test_a_compile_waiting_for_one_gpu_does_not_hold_up_the_others(holders):
    first = holders("timed-a-first", "exclusive", "GPU-a")     # GPU-a's lock file exists from now on
    wait_until(first.holds, what="a first timed block on GPU-a")
    first.release()
    timed_b = holders("timed-b", "exclusive", "GPU-b")
    wait_until(timed_b.holds, what="the timed block on GPU-b")
    build = holders("build", "shared", None)
    wait_until(build.waiting, what="the unbound compile to wait for GPU-b")
    timed_a = holders("timed-a", "exclusive", "GPU-a")
    wait_until(lambda: timed_a.holds() or timed_a.waiting(), what="timed work on GPU-a to start or wait")
    assert timed_a.holds() and not timed_a.waiting(), timed_a.err
    timed_b.release()
    assert not build.holds()                       # GPU-a is timing now: the compile still waits
    timed_a.release()
    wait_until(build.holds, what="the compile once both GPUs are free")
    build.release()
