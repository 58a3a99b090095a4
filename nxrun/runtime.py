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
    def __init__(self, probes: dict[str, str], cwd: str, gpu_setting: tuple | None = None,
                 gpu_cli: str | None = None):
        self.probes = probes
        self.cwd = cwd
        self.gpu_setting = gpu_setting   # [workspace] gpus as (value, "file:line"), or None
        self.gpu_cli = gpu_cli           # --gpus, or None
        self._inventory = None
        self._pool = None
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
                pass
            # Not a distribution name: maybe the name it is imported by (pkg:pynvml is installed by the
            # distribution nvidia-ml-py, pkg:yaml by PyYAML). Reading every installed distribution's top-level
            # names costs tens of ms, so only a name that is no distribution pays it.
            providers = sorted(set(metadata.packages_distributions().get(name, [])))
            if providers:
                return ", ".join(f"{dist}=={metadata.version(dist)}" for dist in providers)
            return "not-installed"
        return self._once("pkg:" + name, lookup)

    def hardware_fingerprint(self, task=None, gpu_class: str | None = None) -> str:
        """What a `cache = "hardware"` result depends on, never a device index or UUID: for a task
        that takes GPUs, the fingerprint of their class (model, compute capability, driver, CUDA
        version, MIG mode, memory) once per GPU; `gpu_class` is the class it will be granted, by
        default the pool's first with enough GPUs. For a task that takes none, that of every GPU
        visible to nxrun; the CPU model where there is no GPU (or the pool has no hardware). With a
        `hardware_source` (an executor that runs tasks elsewhere, executors/ray.py), that of where
        `task` will run."""
        source = self.hardware_source
        if source is not None and task is not None:
            return self._once(f"hardware:{source.__qualname__}:{_gpu_demand(task)}", lambda: source(task))
        gpus = _gpu_demand(task) if task is not None else 0
        if gpus > 0:
            if gpu_class is None:
                classes = [c for c in self.gpu_pool().classes(gpus) if c]
                gpu_class = classes[0] if classes else None
            if gpu_class:
                return "; ".join([gpu_class] * gpus)
        return self._once("hardware", self._host_fingerprint)

    def gpu_inventory(self):
        """What nvidia-smi says about this host's GPUs (run/gpus.py), asked once per invocation."""
        with self._guard:
            if self._inventory is None:
                from .run.gpus import query_inventory

                self._inventory = query_inventory()
            return self._inventory

    def gpu_pool(self):
        """The run's GPU pool (run/gpus.py): from --gpus, NXRUN_GPUS, [workspace] gpus, else every GPU."""
        with self._guard:
            pool = self._pool
        if pool is None:
            from .run.gpus import GpuSetting, pool_from

            workspace = GpuSetting(*self.gpu_setting) if self.gpu_setting else None
            pool = pool_from(self.gpu_cli, workspace, inventory=self.gpu_inventory())
            with self._guard:
                if self._pool is None:
                    self._pool = pool
                pool = self._pool
        return pool

    def _host_fingerprint(self) -> str:
        return _visible_fingerprint(self.gpu_inventory())

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
    """The fingerprint of the GPUs this process may use (CUDA_VISIBLE_DEVICES), else of the CPU: what a
    worker of a remote executor reports about itself."""
    from .run.gpus import query_inventory

    return _visible_fingerprint(query_inventory())


def _visible_fingerprint(inventory) -> str:
    import platform

    from .run.gpus import visible

    # an empty CUDA_VISIBLE_DEVICES counts as unset, as it always has here: Ray sets it so for tasks
    # that take no GPU, whose fingerprint is the node's
    cuda_visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip() or None
    rows = [gpu.fingerprint for gpu in visible(inventory, cuda_visible)]
    return "; ".join(rows) or f"cpu {platform.machine()} {_cpu_model()}"
