"""Which device the workloads run on: a yes/no probe and the facts a result file records."""

from __future__ import annotations

import functools
import platform
import shutil
import subprocess


@functools.cache
def cuda_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device.

    Any failure counts as "no device": CuPy missing (ImportError), no driver, or the
    cudaErrorInsufficientDriver that cupy-cuda13x raises on a machine without a GPU.
    """
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 -- any failure here means "no usable CUDA device"
        return False


def _cuda_version_string(encoded: int) -> str:
    """CUDA encodes versions as 1000*major + 10*minor (13000 -> "13.0")."""
    return f"{encoded // 1000}.{(encoded % 1000) // 10}"


def _nvidia_driver_version() -> str | None:
    """The kernel driver's version (e.g. "580.159.04") as nvidia-smi reports it, or None."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        completed = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = completed.stdout.strip().splitlines()
    return lines[0].strip() if lines else None


@functools.cache
def _device_facts_cached(device_index: int) -> dict:
    if not cuda_available():
        return {
            "backend": "cpu",
            "name": platform.processor() or platform.machine(),
            "compute_capability": None,
            "sm_count": None,
            "memory_bytes": None,
            "l2_bytes": None,
            "driver_version": None,
            "cuda_runtime_version": None,
            "cupy_version": None,
        }
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(device_index)
    name = props["name"]
    if isinstance(name, bytes):
        name = name.decode()
    driver = _nvidia_driver_version()
    if driver is None:
        driver = "cuda " + _cuda_version_string(cupy.cuda.runtime.driverGetVersion())
    return {
        "backend": "cuda",
        "name": name,
        "compute_capability": f"{props['major']}.{props['minor']}",
        "sm_count": int(props["multiProcessorCount"]),
        "memory_bytes": int(props["totalGlobalMem"]),
        "l2_bytes": int(props["l2CacheSize"]),
        "driver_version": driver,
        "cuda_runtime_version": _cuda_version_string(cupy.cuda.runtime.runtimeGetVersion()),
        "cupy_version": cupy.__version__,
    }


def device_facts(device_index: int = 0) -> dict:
    """Facts about the device results were measured on; backend "cpu" when no CUDA device answers."""
    return dict(_device_facts_cached(device_index))


def gpu_identity() -> dict:
    """NVML's facts about the CUDA device in use (UUID, model, power limits, clocks; see
    clocks.NvmlSampler.facts), or {} without a CUDA device."""
    if not cuda_available():
        return {}
    import cupy

    from workloads.common.clocks import NvmlSampler

    return NvmlSampler(cupy.cuda.Device().pci_bus_id).facts()
