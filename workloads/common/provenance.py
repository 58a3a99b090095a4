"""Where and when a result was measured, so a report can say which cells came from the cache.

A bench task records the GPU it ran on (UUID, model, power limit, clocks: from NVML) and the nxrun
invocation that ran it (the pid and start time of the `nxrun` process above it). A report task run by the
same invocation compares that token with its own: a result whose token differs was measured by an
earlier run and restored from the cache (or copied in), and the report marks it with the GPU it was
measured on. Outside nxrun (or on an executor on another machine) the token is None: "unknown".
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path


def _stat_fields(pid: int, proc: Path) -> list[str] | None:
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses; split after the last ')'.
    return text[text.rfind(")") + 2:].split()


def _cmdline(pid: int, proc: Path) -> str:
    try:
        return (proc / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def invocation(proc: Path | str = "/proc", pid: int | None = None) -> str | None:
    """"<pid>-<start ticks>" of the nearest ancestor process that is nxrun, or None if there is none."""
    proc = Path(proc)
    current = os.getppid() if pid is None else pid
    for _ in range(64):
        if current <= 1:
            return None
        fields = _stat_fields(current, proc)
        if fields is None:
            return None
        words = _cmdline(current, proc).split()
        if any(Path(word).name == "nxrun" or word in ("nxrun", "nxrun.launch", "nxrun.cli") for word in words[:4]):
            return f"{current}-{fields[19]}"  # field 22 of stat: start time in clock ticks since boot
        current = int(fields[1])
    return None


def record(gpu: dict | None = None) -> dict:
    """The provenance block of a results JSON: invocation token, task, time, the GPU's identity (NVML
    facts, clocks.NvmlSampler.facts()) and the GPU ids nxrun granted the task (NXRUN_GPU_IDS)."""
    gpu = gpu or {}
    granted = os.environ.get("NXRUN_GPU_IDS")
    return {"invocation": invocation(), "task": os.environ.get("NXRUN_TASK"),
            "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "gpu_uuid": gpu.get("uuid"), "gpu_name": gpu.get("name"),
            "power_limit_w": gpu.get("enforced_power_limit_w") or gpu.get("power_limit_w"),
            "application_clocks_mhz": gpu.get("application_clocks_mhz"),
            "max_clocks_mhz": gpu.get("max_clocks_mhz"),
            "nxrun_gpu_ids": granted.split(",") if granted else None}


def restored(document: dict, current: str | None) -> bool | None:
    """True when `document` was measured by another nxrun invocation than `current`; None if unknown."""
    token = (document.get("provenance") or {}).get("invocation")
    if token is None or current is None:
        return None
    return token != current
