"""Runtime facts that can change a task's result: probe outputs, package versions, the hardware.

Each fact is computed at most once per invocation and only when some task asks for it, so a run
whose tasks name no probe pays nothing here.
"""

from __future__ import annotations

import os
import sys
import threading

from .errors import ProbeError


def command_environment() -> dict[str, str]:
    """The environment task commands and probes run in: ours, with the folder of the Python running
    nxrun first on PATH, so `python` in a command is the interpreter (and virtual environment) that
    nxrun was installed into, activated or not. NXRUN_ENV_KEY is left out: a command that prints
    its environment would otherwise put the secret that keys env digests in a stored log."""
    env = dict(os.environ)
    env.pop("NXRUN_ENV_KEY", None)
    bin_dir = os.path.dirname(sys.executable)
    path = env.get("PATH", "")
    if bin_dir and path.split(os.pathsep)[0] != bin_dir:
        env["PATH"] = bin_dir + (os.pathsep + path if path else "")
    return env


class Runtime:
    def __init__(self, probes: dict[str, str], cwd: str):
        self.probes = probes
        self.cwd = cwd
        self._values: dict[str, str] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _once(self, key: str, compute) -> str:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._values:
                self._values[key] = compute()
            return self._values[key]

    def probe(self, name: str, task_id: str = "", task=None) -> str:
        """stdout of the `runtime:NAME` probe command, run once per invocation. With a
        `probe_source` (an executor that runs tasks elsewhere, executors/ray.py), run where `task`
        will run."""
        source = self.probe_source
        if source is not None and task is not None:
            command = self.probes[name]
            return self._once(f"probe:{name}:{source.__qualname__}:{_gpu_demand(task)}",
                              lambda: source(name, command, task))

        def run() -> str:
            import subprocess

            command = self.probes[name]
            try:
                result = subprocess.run(command, shell=True, cwd=self.cwd, capture_output=True, text=True,
                                        env=command_environment(),
                                        timeout=120)
            except subprocess.TimeoutExpired:
                raise ProbeError(f"runtime probe '{name}' ({command!r}) did not finish in 120 s"
                                 + (f" (needed by {task_id})" if task_id else "") + ".") from None
            if result.returncode != 0:
                stderr = result.stderr.strip() or "(no stderr)"
                raise ProbeError(
                    f"runtime probe '{name}' failed with exit code {result.returncode}"
                    + (f" (needed by {task_id})" if task_id else "")
                    + f":\n  command: {command}\n  stderr: {stderr}\n"
                    "Fix the command under [runtime] in nxrun.toml, or install what it calls.")
            return result.stdout.strip()
        return self._once("probe:" + name, run)

    def package_version(self, name: str) -> str:
        def lookup() -> str:
            from importlib import metadata  # 25 ms to import: only runs that name a pkg: input pay it

            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                return "not-installed"
        return self._once("pkg:" + name, lookup)

    def hardware_fingerprint(self, task=None) -> str:
        """GPU model, compute capability, driver, CUDA version and MIG mode of the visible GPUs
        (never their index); the CPU model where there is no GPU. With a `hardware_source` (an
        executor that runs tasks elsewhere, executors/ray.py), that of where `task` will run."""
        source = self.hardware_source
        if source is not None and task is not None:
            return self._once(f"hardware:{source.__qualname__}:{_gpu_demand(task)}", lambda: source(task))
        return self._once("hardware", _hardware_fingerprint)

    # callable(task) -> fingerprint of the machines that will run the task; None: this machine
    hardware_source = None
    # callable(name, command, task) -> the probe's output where the task will run; None: here
    probe_source = None

    def facts(self) -> dict[str, str]:
        """What was probed this run, for the cache entry's record (probe outputs are not secret)."""
        return dict(self._values)


def _gpu_demand(task) -> int:
    """How many GPUs a task asks for: `gpus = N`, else one for `resources = ["gpu"]`."""
    wanted = getattr(task, "gpus", 0) or 0
    if isinstance(wanted, int) and wanted > 0:
        return wanted
    return 1 if "gpu" in getattr(task, "resources", ()) else 0


def _cpu_model() -> str:
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown-cpu"


def _hardware_fingerprint() -> str:
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    gpus: list[str] = []
    if smi:
        query = "name,compute_cap,driver_version,mig.mode.current,memory.total"
        try:
            result = subprocess.run([smi, f"--query-gpu={query}", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=30)
            header = subprocess.run([smi], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            result = header = None
        if result is not None and result.returncode == 0:
            rows = [line.strip() for line in result.stdout.splitlines() if line.strip()]
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            if visible is not None and visible.strip() and all(p.strip().isdigit() for p in visible.split(",")):
                indices = [int(p) for p in visible.split(",")]
                rows = [rows[i] for i in indices if i < len(rows)]
            cuda = ""
            if header is not None:
                for token in header.stdout.split("CUDA Version:")[1:2]:
                    cuda = token.split()[0]
            gpus = [f"{row}|cuda {cuda}" for row in rows]
    import platform

    return "; ".join(gpus) or f"cpu {platform.machine()} {_cpu_model()}"
