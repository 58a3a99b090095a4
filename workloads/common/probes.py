"""Runtime probes for bench tasks: the GPU settings and library versions that change a timing.

nxrun's hardware fingerprint keys a `cache = "hardware"` task on the GPU model, driver and CUDA version.
A timing also depends on the power limit and application clocks (an administrator can change both on the
same card) and on the cuBLAS / cuDNN builds the baselines run. The bench tasks name these probes as
`runtime:` inputs, so their output enters the ETag:

    python -m workloads.common.probes gpu-state   # power limits and application clocks, per GPU
    python -m workloads.common.probes gpu-libs    # cuBLAS and cuDNN versions (packages and library files)

gpu-state fails (exit 1, the reason on stderr) on a machine that has an NVIDIA driver but no working
nvidia-smi: nxrun then stops the task with that message instead of caching a GPU timing under a key
that cannot tell this GPU's settings apart. Without any NVIDIA driver it prints "none" (the bench runs
its CPU backend, and the CPU model in the hardware fingerprint is the right key). Both probes are cheap:
no CUDA context, no torch import.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

STATE_FIELDS = ("name", "power.limit", "enforced.power.limit", "power.default_limit",
                "clocks.applications.graphics", "clocks.applications.memory",
                "clocks.default_applications.graphics", "clocks.default_applications.memory")
LIB_PACKAGES = ("nvidia-cublas", "nvidia-cublas-cu12", "nvidia-cublas-cu13", "nvidia-cudnn-cu12",
                "nvidia-cudnn-cu13", "cupy-cuda12x", "cupy-cuda13x", "torch")
LIB_NAMES = ("libcublas.so", "libcublasLt.so", "libcudnn.so")


class ProbeFailure(RuntimeError):
    """The probe cannot give a trustworthy answer; the message says why and what to do."""


def driver_evidence(root: str = "/") -> str | None:
    """Why this machine has an NVIDIA driver (a device node or the driver's /proc entry), or None."""
    proc = os.path.join(root, "proc/driver/nvidia/version")
    if os.path.exists(proc):
        return proc
    nodes = sorted(glob.glob(os.path.join(root, "dev/nvidia[0-9]*")))
    if nodes:
        return nodes[0]
    return None


def _smi(smi: str, fields: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([smi, f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                          capture_output=True, text=True, timeout=60)


def gpu_state(root: str = "/") -> str:
    """One line per GPU: name, power limits, application clocks. Raises ProbeFailure (see module doc)."""
    evidence = driver_evidence(root)
    smi = shutil.which("nvidia-smi")
    if smi is None:
        if evidence:
            raise ProbeFailure(
                f"nvidia-smi is not on the PATH, but this machine has an NVIDIA driver ({evidence}). "
                "A GPU timing needs the card's power limit and clocks in its cache key; install the "
                "driver's utilities (nvidia-smi) or put them on the PATH.")
        return "none"
    try:
        completed = _smi(smi, list(STATE_FIELDS))
    except (OSError, subprocess.SubprocessError) as error:
        completed = subprocess.CompletedProcess([smi], 1, "", str(error))
    if completed.returncode == 0 and completed.stdout.strip():
        return "\n".join(f"{', '.join(STATE_FIELDS)}: {line.strip()}"
                         for line in completed.stdout.strip().splitlines())
    # Some field this nvidia-smi does not know? Ask one field at a time; the name must answer.
    columns: list[list[str]] = []
    for field in STATE_FIELDS:
        try:
            single = _smi(smi, [field])
        except (OSError, subprocess.SubprocessError):
            single = None
        if single is not None and single.returncode == 0 and single.stdout.strip():
            columns.append([f"{field}={value.strip()}" for value in single.stdout.strip().splitlines()])
        elif field == "name":
            detail = (completed.stderr or completed.stdout).strip().splitlines()
            message = detail[0] if detail else f"exit code {completed.returncode}"
            if not evidence:
                return "none"
            raise ProbeFailure(
                f"nvidia-smi failed ({message}) on a machine with an NVIDIA driver ({evidence}). A GPU "
                "timing needs the card's power limit and clocks in its cache key; fix nvidia-smi "
                "(`nvidia-smi -q` shows the error) before running bench tasks.")
        else:
            columns.append([f"{field}=unsupported"])
    gpus = max(len(column) for column in columns)
    return "\n".join(", ".join(column[min(i, len(column) - 1)] for column in columns) for i in range(gpus))


def _package_versions() -> list[str]:
    from importlib import metadata

    found = []
    for name in LIB_PACKAGES:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return found


def _library_dirs() -> list[str]:
    dirs = []
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(variable):
            dirs.append(os.path.join(os.environ[variable], "lib64"))
    dirs += ["/usr/local/cuda/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib64"]
    for entry in sys.path:
        nvidia = Path(entry) / "nvidia"
        if nvidia.is_dir():
            dirs += sorted(str(p) for p in nvidia.glob("*/lib"))
    return list(dict.fromkeys(dirs))


def gpu_libs() -> str:
    """cuBLAS / cuDNN: installed package versions and the versioned library files on disk."""
    files = set()
    for directory in _library_dirs():
        for name in LIB_NAMES:
            for path in glob.glob(os.path.join(directory, name + ".*")):
                files.add(os.path.basename(os.path.realpath(path)))
    packages = _package_versions()
    return "\n".join([f"packages: {' '.join(packages) or 'none'}",
                      f"libraries: {' '.join(sorted(files)) or 'none'}"])


ROOT_ENV = "NXRUN_PROBE_ROOT"  # where /dev and /proc are looked up (tests point it at a fake tree)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = os.environ.get(ROOT_ENV, "/")
    probes = {"gpu-state": lambda: gpu_state(root), "gpu-libs": gpu_libs}
    if len(args) != 1 or args[0] not in probes:
        print(f"usage: python -m workloads.common.probes {{{'|'.join(probes)}}}", file=sys.stderr)
        return 2
    try:
        print(probes[args[0]]())
    except ProbeFailure as failure:
        print(f"{args[0]} probe: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
