"""The GPUs of this host as a pool of slots that tasks take whole: `gpus = N` GPUs at once (a
`gpu` resource is one), granted by the scheduler before a task takes a worker and exported to its
command as CUDA_VISIBLE_DEVICES and NXRUN_GPU_IDS.

Which GPUs the pool holds, from the first of these that is set:

    --gpus 0,2              on the command line
    NXRUN_GPUS=0,2          in the environment
    [workspace] gpus = ...  in the root nxrun.toml: "auto", a count N (the first N), or ids ["0", "2"]
    auto                    every GPU nvidia-smi lists (those of CUDA_VISIBLE_DEVICES when it is set)

An id is an nvidia-smi index or a UUID (GPU-..., MIG-...). A pool given by ids is taken as given
even where nvidia-smi is absent, so scheduling can be tested on a machine without a GPU. An
automatic pool that finds no GPU is one slot without a device: tasks that ask for GPUs still run
(a CPU fallback), one at a time, and see no CUDA_VISIBLE_DEVICES from nxrun.

Each GPU has a hardware fingerprint (model, compute capability, driver, CUDA version, MIG mode,
memory; never its index or UUID). GPUs with equal fingerprints form a class; a task that asks for
several GPUs gets them from one class, and a `cache = "hardware"` task is granted GPUs of the class
its ETag was computed for (runtime.py, hashing.py).
"""

from __future__ import annotations

import os
import threading

from ..errors import ConfigError, NxrunError
from ..records import record

ENV = "NXRUN_GPUS"
# the fields of one GPU's hardware fingerprint, as nvidia-smi names them (the index and UUID are
# queried beside them, never part of it)
FINGERPRINT_FIELDS = "name,compute_cap,driver_version,mig.mode.current,memory.total"


@record
class Gpu:
    id: str                   # the pool's name for it: its UUID (auto), else the index or UUID as given
    index: str | None         # nvidia-smi's index, when nvidia-smi knows the GPU
    uuid: str | None          # nvidia-smi's UUID, when it gives one
    fingerprint: str          # "" for a GPU declared without nvidia-smi


@record
class Inventory:
    """What nvidia-smi says about this host's GPUs (empty without nvidia-smi or a driver)."""

    gpus: list[Gpu]
    problem: str = ""         # why nvidia-smi gave nothing, when it is installed and failed


def query_inventory(timeout: float = 30) -> Inventory:
    """Every GPU nvidia-smi lists: index, UUID and fingerprint (two nvidia-smi calls: one for the
    fields, one for the CUDA version the driver supports, which only its header shows)."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return Inventory([])
    try:
        # the fingerprint's fields first, as nxrun always asked them (a stand-in that answers only
        # those still works), then the index and UUID
        result = subprocess.run([smi, f"--query-gpu={FINGERPRINT_FIELDS},index,uuid", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=timeout)
        header = subprocess.run([smi], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Inventory([], f"nvidia-smi could not be run ({exc})")
    if result.returncode != 0:
        return Inventory([], f"nvidia-smi failed: {(result.stderr or result.stdout).strip()[:200]}")
    cuda = ""
    for token in header.stdout.split("CUDA Version:")[1:2]:
        cuda = token.split()[0] if token.split() else ""
    gpus = []
    width = len(FINGERPRINT_FIELDS.split(","))
    for line in result.stdout.splitlines():
        if not line.strip():
            continue
        parts = [part.strip() for part in line.split(",")]
        index = parts[width] if len(parts) > width and parts[width].isdigit() else str(len(gpus))
        uuid = parts[width + 1] if len(parts) > width + 1 and parts[width + 1].startswith(("GPU-", "MIG-")) else None
        fingerprint = ", ".join(parts[:width]) + f"|cuda {cuda}"
        gpus.append(Gpu(id=uuid or index, index=index, uuid=uuid, fingerprint=fingerprint))
    return Inventory(gpus)


def visible(inventory: Inventory, cuda_visible: str | None) -> list[Gpu]:
    """The GPUs a process started with CUDA_VISIBLE_DEVICES=`cuda_visible` may use (indices or
    UUIDs, as CUDA reads them; unset: all, empty or -1: none)."""
    if cuda_visible is None:
        return list(inventory.gpus)
    chosen = []
    for part in cuda_visible.split(","):
        part = part.strip()
        if not part or part.startswith("-"):
            break   # CUDA stops at the first entry it cannot use
        match = [g for g in inventory.gpus if part in (g.index, g.uuid) or (g.uuid or "").startswith(part)]
        if not match:
            break
        chosen.append(match[0])
    return chosen


class GpuPool:
    """The GPUs tasks may take, and which of them are taken. Thread-safe; never blocks."""

    def __init__(self, gpus: list[Gpu], *, by_index: bool = False, source: str = "auto",
                 deviceless: bool = False):
        self.gpus = list(gpus)
        self.by_index = by_index        # ids given as indices: CUDA_VISIBLE_DEVICES gets indices
        self.source = source            # where the pool was set: --gpus, NXRUN_GPUS, nxrun.toml:LINE, auto
        # an automatic pool without a GPU: one slot with no device (tasks run one at a time, on the CPU)
        self.deviceless = deviceless and not gpus
        self._by_id = {gpu.id: gpu for gpu in self.gpus}
        self._free = [gpu.id for gpu in self.gpus]
        self._deviceless_taken = False
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        """How many GPUs a task may ask for at most (any number on a deviceless pool)."""
        return len(self.gpus)

    @property
    def ids(self) -> list[str]:
        return [gpu.id for gpu in self.gpus]

    def too_many(self, count: int) -> bool:
        """Whether `count` GPUs can never be granted at once from this pool."""
        return not self.deviceless and count > self.size

    def classes(self, count: int = 1) -> list[str]:
        """Fingerprints of the GPU classes that hold at least `count` GPUs, in pool order."""
        seen: dict[str, int] = {}
        for gpu in self.gpus:
            seen[gpu.fingerprint] = seen.get(gpu.fingerprint, 0) + 1
        return [fingerprint for fingerprint, n in seen.items() if n >= count]

    def free_count(self, fingerprint: str | None = None) -> int:
        with self._lock:
            return sum(1 for gpu_id in self._free
                       if fingerprint is None or self._by_id[gpu_id].fingerprint == fingerprint)

    def try_take(self, count: int, fingerprint: str | None = None) -> list[str] | None:
        """`count` free GPUs, all of one class (of `fingerprint` when given), now taken; None when
        that many are not free now. A deviceless pool grants [] to one task at a time."""
        if count < 1:
            return []
        with self._lock:
            if self.deviceless:
                if self._deviceless_taken:
                    return None
                self._deviceless_taken = True
                return []
            by_class: dict[str, list[str]] = {}
            for gpu_id in self._free:
                gpu_class = self._by_id[gpu_id].fingerprint
                if fingerprint is None or gpu_class == fingerprint:
                    by_class.setdefault(gpu_class, []).append(gpu_id)
                    if len(by_class[gpu_class]) == count:
                        taken = by_class[gpu_class]
                        self._free = [g for g in self._free if g not in taken]
                        return taken
            return None

    def give_back(self, ids: list[str]) -> None:
        with self._lock:
            if self.deviceless:
                self._deviceless_taken = False
                return
            for gpu_id in ids:
                if gpu_id not in self._by_id:
                    raise ValueError(f"GPU {gpu_id!r} is not in the pool")
                if gpu_id in self._free:
                    raise ValueError(f"GPU {gpu_id!r} was given back twice")
                self._free.append(gpu_id)
            order = {gpu.id: n for n, gpu in enumerate(self.gpus)}
            self._free.sort(key=order.__getitem__)

    def fingerprint_of(self, ids: list[str]) -> str:
        return "; ".join(self._by_id[gpu_id].fingerprint for gpu_id in ids)

    def env_for(self, ids: list[str]) -> dict[str, str]:
        """What a command granted `ids` sees: CUDA_VISIBLE_DEVICES (UUIDs where nvidia-smi gives
        them; indices, in nvidia-smi's PCI order, when the pool was given as indices) and
        NXRUN_GPU_IDS (the pool's ids). Nothing for a deviceless grant."""
        if not ids:
            return {}
        gpus = [self._by_id[gpu_id] for gpu_id in ids]
        env = {"NXRUN_GPU_IDS": ",".join(ids)}
        if self.by_index:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu.index or gpu.id for gpu in gpus)
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"   # CUDA's own order may differ from nvidia-smi's
        else:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu.uuid or gpu.id for gpu in gpus)
        uuids = [gpu.uuid for gpu in gpus]
        if all(uuids):
            env["NXRUN_GPU_UUIDS"] = ",".join(uuids)   # type: ignore[arg-type]
        return env


# ---------------------------------------------------------------------------- choosing the pool

@record
class GpuSetting:
    """A pool setting as written: "auto", a count, or ids; and where it was written."""

    value: object             # "auto" | int | list[str]
    source: str               # "--gpus", "NXRUN_GPUS", "nxrun.toml:LINE"


def parse_setting(value: object, source: str) -> GpuSetting:
    """Check a setting from the command line, the environment (text) or nxrun.toml (text, integer
    or list); a ConfigError naming `source` and the fix when it is none of the three forms."""
    fix = ('Use "auto", a number of GPUs (e.g. 2), or GPU ids: nvidia-smi indices or UUIDs '
           '(e.g. "0,2" on the command line or in NXRUN_GPUS, ["0", "2"] in nxrun.toml).')
    if isinstance(value, bool):
        raise ConfigError(f"{source}: gpus = {value!r} is not a GPU setting. {fix}")
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"{source}: gpus = {value} must be at least 1 (leave it out, or \"auto\", for every "
                              f"GPU). {fix}")
        return GpuSetting(value, source)
    if isinstance(value, str):
        text = value.strip()
        if text in ("", "auto"):
            return GpuSetting("auto", source)
        ids = [part.strip() for part in text.split(",")]
    elif isinstance(value, list):
        if not all(isinstance(part, str) for part in value):
            raise ConfigError(f"{source}: gpus = {value!r} must list GPU ids as strings (e.g. [\"0\", \"2\"]). {fix}")
        ids = [part.strip() for part in value]
    else:
        raise ConfigError(f"{source}: gpus = {value!r} is not a GPU setting. {fix}")
    if not ids or any(not part for part in ids):
        raise ConfigError(f"{source}: gpus = {value!r} has an empty GPU id. {fix}")
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{source}: gpus = {value!r} names a GPU twice; name each once.")
    for part in ids:
        if not (part.isdigit() or part.startswith(("GPU-", "MIG-"))):
            raise ConfigError(f"{source}: GPU id {part!r} is neither an nvidia-smi index nor a UUID "
                              f"(GPU-... or MIG-...). {fix}")
    return GpuSetting(ids, source)


def choose_setting(cli: str | None, environ: dict[str, str], workspace: GpuSetting | None) -> GpuSetting:
    """The setting in force: --gpus, else NXRUN_GPUS, else [workspace] gpus, else auto."""
    if cli is not None:
        return parse_setting(cli, "--gpus")
    if environ.get(ENV, "").strip():
        return parse_setting(environ[ENV], ENV)
    if workspace is not None:
        return workspace
    return GpuSetting("auto", "auto")


def build_pool(setting: GpuSetting, inventory: Inventory, cuda_visible: str | None) -> GpuPool:
    """The pool a setting makes on a host whose nvidia-smi says `inventory`; nxrun's own
    CUDA_VISIBLE_DEVICES (`cuda_visible`) limits the automatic pool and a count."""
    usable = visible(inventory, cuda_visible)
    where = setting.source
    if setting.value == "auto":
        return GpuPool(usable, source=where, deviceless=True)
    if isinstance(setting.value, int):
        count = setting.value
        if not inventory.gpus:
            # no nvidia-smi: a pool declared by its size, for scheduling without hardware
            return GpuPool([Gpu(str(n), str(n), None, "") for n in range(count)], by_index=True, source=where)
        if count > len(usable):
            raise NxrunError(f"{where}: gpus = {count}, but this machine shows {len(usable)} usable GPU"
                             f"{'s' if len(usable) != 1 else ''}"
                             + (f" (CUDA_VISIBLE_DEVICES={cuda_visible})" if cuda_visible is not None else "")
                             + f". Ask for at most {len(usable)}, or \"auto\" for all of them.")
        return GpuPool(usable[:count], source=where)
    ids: list[str] = setting.value   # type: ignore[assignment]
    by_index = all(part.isdigit() for part in ids)
    if not inventory.gpus:
        # declared without hardware (a CPU machine, CI): the ids are taken as given
        return GpuPool([Gpu(part, part if part.isdigit() else None, part if not part.isdigit() else None, "")
                        for part in ids], by_index=by_index, source=where)
    gpus = []
    for part in ids:
        match = [g for g in inventory.gpus if part in (g.index, g.uuid)]
        if not match:
            known = ", ".join(f"{g.index} ({g.uuid})" for g in inventory.gpus)
            raise NxrunError(f"{where}: GPU {part!r} is not on this machine; nvidia-smi lists {known}. "
                             "Name GPUs by nvidia-smi index or UUID.")
        gpu = match[0]
        gpus.append(Gpu(part, gpu.index, gpu.uuid, gpu.fingerprint))
    return GpuPool(gpus, by_index=by_index, source=where)


def pool_from(cli: str | None, workspace: GpuSetting | None, environ: dict[str, str] | None = None,
              inventory: Inventory | None = None) -> GpuPool:
    """The run's GPU pool from --gpus, NXRUN_GPUS and [workspace] gpus (see the module's first lines)."""
    environ = os.environ if environ is None else environ   # type: ignore[assignment]
    setting = choose_setting(cli, environ, workspace)   # type: ignore[arg-type]
    if inventory is None:
        inventory = query_inventory()
    return build_pool(setting, inventory, environ.get("CUDA_VISIBLE_DEVICES"))


def describe(pool: GpuPool) -> str:
    """Where the pool came from and what it holds, for messages."""
    held = ", ".join(pool.ids) if pool.ids else "no GPU"
    if pool.source == "auto":
        return f"every GPU nvidia-smi lists ({held})"
    if pool.source in ("--gpus", ENV):
        return f"set by {pool.source} ({held})"
    return f"set by [workspace] gpus at {pool.source} ({held})"


def check_requests(pool: GpuPool, tasks) -> None:
    """Before a run starts: an NxrunError naming every task that asks for more GPUs than the pool has."""
    too_many = [task for task in tasks if task.gpus and pool.too_many(task.gpus)]
    if not too_many:
        return
    lines = [f"{task.id} asks for {task.gpus} GPUs ({task.source})" for task in too_many]
    raise NxrunError("; ".join(lines) + f", but the GPU pool has {pool.size}: {describe(pool)}. Lower the task's "
                     "`gpus`, or give the run more GPUs (--gpus, NXRUN_GPUS or [workspace] gpus).")


def choose_class(pool: GpuPool, count: int, cached) -> str | None:
    """The GPU class a `cache = "hardware"` task that takes `count` GPUs is hashed for and granted:
    None when the pool has no choice to make (one class, or no fingerprints); else the first class
    whose ETag `cached(fingerprint)` says is in the cache, else the one with the most GPUs free now
    (pool order breaks ties)."""
    classes = [c for c in pool.classes(count) if c]
    if len(classes) <= 1:
        return classes[0] if classes else None
    for gpu_class in classes:
        if cached(gpu_class):
            return gpu_class
    return max(classes, key=lambda c: (pool.free_count(c), -classes.index(c)))
