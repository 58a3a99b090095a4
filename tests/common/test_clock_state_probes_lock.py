"""Clock-state attribution, the hardware probes, the compile/timing lock and provenance, without a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from workloads.common import clocks, gpu_lock, probes, provenance

REPO = Path(__file__).parents[2]


def _sample(t, sm, reasons=0, power=300.0):
    return (t, sm, 3201, power, 50, reasons)


def test_samples_are_attributed_to_the_block_that_was_running():
    blocks = [("kernel", 0.0, 1.0), ("baseline", 1.0, 2.0), ("kernel", 2.5, 3.0)]
    samples = [_sample(0.5, 1980), _sample(1.5, 1900), _sample(2.2, 1700), _sample(2.7, 1950), _sample(9.0, 1)]
    attributed = clocks.attribute(samples, blocks)
    assert [s[1] for s in attributed["kernel"]] == [1980, 1950]
    assert [s[1] for s in attributed["baseline"]] == [1900]   # 2.2 fell in a gap, 9.0 after every block


def test_sides_in_different_clock_states_are_flagged_and_throttling_reported():
    hot = clocks.side_state([_sample(i, 1455, reasons=0x4) for i in range(5)])
    cool = clocks.side_state([_sample(i, 1980) for i in range(5)])
    same = clocks.side_state([_sample(i, 1965) for i in range(5)])
    assert hot["throttled"] and hot["slowdown_share"] == {"sw_power_cap": 1.0} and not cool["throttled"]
    assert clocks.compare_sides(hot, cool)["differ"] is True
    assert clocks.compare_sides(cool, same)["differ"] is False          # 15 MHz: one clock step apart
    few = clocks.side_state([_sample(0, 1980)])
    assert clocks.compare_sides(few, cool)["differ"] is None
    assert clocks.reason_names(0x4 | 0x40) == ["sw_power_cap", "hw_thermal_slowdown"]


def test_sampler_without_nvml_is_absent_not_fatal(monkeypatch):
    def no_nvml():
        raise ImportError("No module named 'pynvml'")

    monkeypatch.setattr(clocks, "_nvml", no_nvml)
    sampler = clocks.NvmlSampler("0000:00:1e.0").start()
    sampler.stop()
    assert not sampler.available and "pynvml" in sampler.reason
    assert sampler.facts() == {"nvml": False, "reason": sampler.reason} and sampler.take() == []


def _fake_smi(directory: Path, script: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    smi = directory / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + script)
    smi.chmod(0o755)
    return directory


def _probe(args, path: str, root: Path) -> subprocess.CompletedProcess:
    code = textwrap.dedent(f"""
        import sys
        from workloads.common import probes
        try:
            print(probes.gpu_state(root={str(root)!r}))
        except probes.ProbeFailure as failure:
            print(failure, file=sys.stderr)
            sys.exit(1)
    """)
    env = dict(os.environ, PATH=path, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_gpu_state_probe_reports_power_limit_and_application_clocks(tmp_path):
    fake = _fake_smi(tmp_path / "bin", 'echo "NVIDIA H200, 700.00 W, 700.00 W, 700.00 W, 1980 MHz, 3201 MHz, 1980 MHz, 3201 MHz"\n')
    result = _probe([], f"{fake}:/usr/bin:/bin", tmp_path / "root")
    assert result.returncode == 0, result.stderr
    assert "power.limit" in result.stdout and "700.00 W" in result.stdout and "1980 MHz" in result.stdout


def test_gpu_state_probe_fails_where_a_driver_exists_but_nvidia_smi_is_missing_or_broken(tmp_path):
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    (root / "dev" / "nvidia0").write_text("")
    missing = _probe([], "/usr/bin:/bin", root)
    assert missing.returncode == 1 and "nvidia-smi is not on the PATH" in missing.stderr
    assert "dev/nvidia0" in missing.stderr
    broken = _fake_smi(tmp_path / "broken", 'echo "NVIDIA-SMI has failed because it couldn\'t communicate" >&2; exit 9\n')
    failed = _probe([], f"{broken}:/usr/bin:/bin", root)
    assert failed.returncode == 1 and "nvidia-smi failed" in failed.stderr and "communicate" in failed.stderr


def test_gpu_state_probe_says_none_on_a_machine_without_any_nvidia_driver(tmp_path):
    result = _probe([], "/usr/bin:/bin", tmp_path / "empty-root")
    assert result.returncode == 0 and result.stdout.strip() == "none"


def test_gpu_state_probe_asks_field_by_field_when_a_field_is_unknown(tmp_path):
    script = textwrap.dedent("""\
        case "$1" in
          *,*) echo "Field \\"power.default_limit\\" is not a valid field to query." >&2; exit 2;;
          *power.default_limit*) exit 2;;
          *name*) echo "NVIDIA H100 80GB HBM3";;
          *) echo "700.00 W";;
        esac
    """)
    fake = _fake_smi(tmp_path / "bin", script)
    result = _probe([], f"{fake}:/usr/bin:/bin", tmp_path / "root")
    assert result.returncode == 0, result.stderr
    assert "name=NVIDIA H100 80GB HBM3" in result.stdout and "power.default_limit=unsupported" in result.stdout


def test_probe_cli_and_gpu_libs_run_without_a_gpu():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    libs = subprocess.run([sys.executable, "-m", "workloads.common.probes", "gpu-libs"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert libs.returncode == 0 and libs.stdout.startswith("packages: ")
    usage = subprocess.run([sys.executable, "-m", "workloads.common.probes"], capture_output=True, text=True,
                           env=env, timeout=60)
    assert usage.returncode == 2 and "gpu-state" in usage.stderr
    assert probes.driver_evidence("/nonexistent-root") is None


_HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from workloads.common import gpu_lock
    mode, marker, seconds = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
    hold = gpu_lock.exclusive if mode == "exclusive" else gpu_lock.shared
    with hold("test"):
        marker.write_text("held")
        time.sleep(seconds)
        Path(str(marker) + ".until").write_text(repr(time.time()))  # the last moment it surely held the lock
""")


def _hold(mode: str, marker: Path, seconds: float, lock: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), NXRUN_TIMING_LOCK=str(lock))
    return subprocess.Popen([sys.executable, "-c", _HOLDER, mode, str(marker), str(seconds)], env=env,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_a_compile_waits_while_a_timed_task_holds_the_lock_and_compiles_share_it(tmp_path, monkeypatch, capfd):
    lock = tmp_path / "timing.lock"
    monkeypatch.setenv(gpu_lock.ENV, str(lock))
    timed = _hold("exclusive", tmp_path / "timed", 1.5, lock)
    _wait_for(tmp_path / "timed")
    began = time.monotonic()
    with gpu_lock.shared("compile"):            # blocks until the timed holder lets go
        waited = time.monotonic() - began
        now = time.time()
    assert now >= float((tmp_path / "timed.until").read_text())
    assert waited > 0.5
    timed.wait(timeout=30)
    assert "waiting for a timed task to release the GPU timing lock" in capfd.readouterr().err
    # two compiles at once: the second does not wait for the first
    first = _hold("shared", tmp_path / "c1", 1.5, lock)
    _wait_for(tmp_path / "c1")
    began = time.monotonic()
    with gpu_lock.shared("compile"):
        assert time.monotonic() - began < 1.0 and first.poll() is None
    first.wait(timeout=30)


def test_the_lock_is_reentrant_within_a_process(tmp_path, monkeypatch):
    monkeypatch.setenv(gpu_lock.ENV, str(tmp_path / "timing.lock"))
    with gpu_lock.exclusive("bench") as info:
        assert info["mode"] == "exclusive" and gpu_lock.held_mode() == "exclusive"
        with gpu_lock.shared("compile inside the autotuner"):   # must not deadlock on itself
            assert gpu_lock.held_mode() == "exclusive"
    assert gpu_lock.held_mode() is None


def test_compile_cubin_takes_the_shared_lock(tmp_path, monkeypatch):
    from workloads.common import build

    monkeypatch.setenv(gpu_lock.ENV, str(tmp_path / "timing.lock"))
    seen = []
    monkeypatch.setattr(build, "compiler_name", lambda: "nvcc")
    monkeypatch.setattr(build, "_nvcc_compile", lambda *a: seen.append(gpu_lock.held_mode()) or "")
    build.compile_cubin(tmp_path / "k.cu", tmp_path / "out" / "k.cubin")
    assert seen == ["shared"]


def test_invocation_token_finds_the_nxrun_ancestor(tmp_path):
    proc = tmp_path / "proc"
    # 300 (nxrun) -> 400 (sh -c) -> 500 (python -m workloads...)
    for pid, ppid, cmd in ((300, 1, b"/venv/bin/python\0/venv/bin/nxrun\0run\0bench:gemm\0"),
                           (400, 300, b"/bin/sh\0-c\0python -m workloads.gemm.bench\0"),
                           (500, 400, b"python\0-m\0workloads.gemm.bench\0")):
        (proc / str(pid)).mkdir(parents=True)
        fields = ["S", str(ppid)] + ["0"] * 17 + [str(pid * 10)]
        (proc / str(pid) / "stat").write_text(f"{pid} (weird ) name) " + " ".join(fields) + " 0 0\n")
        (proc / str(pid) / "cmdline").write_bytes(cmd)
    assert provenance.invocation(proc, pid=500) == provenance.invocation(proc, pid=400) == "300-3000"
    (proc / "300" / "cmdline").write_bytes(b"bash\0")      # run by hand: no nxrun above
    assert provenance.invocation(proc, pid=500) is None
    assert provenance.restored({"provenance": {"invocation": "300-3000"}}, "300-3000") is False
    assert provenance.restored({"provenance": {"invocation": "1-1"}}, "300-3000") is True
    assert provenance.restored({"provenance": {"invocation": None}}, "300-3000") is None


@pytest.mark.gpu
def test_sampler_reads_this_gpu():
    import cupy

    with clocks.NvmlSampler(cupy.cuda.Device().pci_bus_id) as sampler:
        deadline = time.monotonic() + 10
        while not sampler._samples and time.monotonic() < deadline:
            time.sleep(0.01)
    facts = sampler.facts()
    assert sampler.available, sampler.reason
    assert facts["uuid"].startswith("GPU-") and facts["power_limit_w"] > 0
    assert sampler.take()[0][1] > 0


def test_a_bench_task_fails_clearly_where_the_driver_is_there_but_nvidia_smi_is_not(tmp_path):
    """Through the real CLI: the task is not run, and not cached under the CPU model's key."""
    root = tmp_path / "ws"
    root.mkdir()
    fake = tmp_path / "fake-root"
    (fake / "proc" / "driver" / "nvidia").mkdir(parents=True)
    (fake / "proc" / "driver" / "nvidia" / "version").write_text("NVRM version: 580.159.04\n")
    (root / "nxrun.toml").write_text(textwrap.dedent(f'''
        [workspace]
        cache-dir = ".nxrun"

        [runtime]
        gpu-state = "{sys.executable} -m workloads.common.probes gpu-state"

        [projects.gemm.targets.bench]
        command = "echo timed > results/out.txt"
        inputs  = ["runtime:gpu-state"]
        outputs = ["results/out.txt"]
        cache   = "hardware"
    '''))
    (root / "results").mkdir()
    env = dict(os.environ, NO_COLOR="1", PYTHONPATH=str(REPO), PATH="/usr/bin:/bin",
               **{probes.ROOT_ENV: str(fake)})
    env.pop("NXRUN_REMOTE", None)
    result = subprocess.run([sys.executable, "-m", "nxrun", "run", "gemm:bench"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "gpu-state" in output and "nvidia-smi is not on the PATH" in output and "Traceback" not in output
    assert not (root / "results" / "out.txt").exists()


def test_bench_tasks_key_on_the_gpu_settings_and_libraries():
    import tomllib

    root = tomllib.loads((REPO / "nxrun.toml").read_text())
    assert {"gpu-state", "gpu-libs"} <= set(root["runtime"])
    for fragment, names in (("workloads/gemm/tasks.toml", ("bench", "bench-tuned", "autotune")),
                            ("workloads/paged_attention/tasks.toml", ("bench",))):
        projects = tomllib.loads((REPO / fragment).read_text())["projects"]
        for project in projects.values():
            for name in names:
                if name in project.get("targets", {}):
                    target = project["targets"][name]
                    assert {"runtime:gpu-state", "runtime:gpu-libs"} <= set(target["inputs"]), (fragment, name)
                    assert target["cache"] == "hardware" and target["resources"] == ["gpu"]
