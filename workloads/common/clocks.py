"""GPU clock, power and throttle state while timing: an NVML sampler thread and per-variant summaries.

NVML comes from `nvidia-ml-py` (`import pynvml`). Without it, without a driver or on the CPU backend the
sampler is absent (`available` False with the reason) and everything downstream says "no clock data"
instead of failing. The sampler never changes a setting: it only reads.

Each sample is (host time, SM MHz, memory MHz, power W, temperature C, clock-event reasons bitmask). The
timing code knows, on the same host clock, when each timed block ran on the GPU; `attribute` assigns
every sample to the variant whose block was running, so each side of a paired figure gets the clock
states it was measured in, and `compare_sides` flags a figure whose two sides saw different states.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np

# NVML clock-event ("throttle") reason bits. GPU_IDLE and the application-clock setting are not slowdowns.
REASONS = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting",
}
SLOWDOWN_MASK = 0x4 | 0x8 | 0x20 | 0x40 | 0x80
FIELDS = ("t", "sm_mhz", "mem_mhz", "power_w", "temp_c", "reasons")
# Two sides are "in different clock states" when their median SM clocks differ by more than this
# (MHz, or relative), or the share of samples under a slowdown reason differs by more than SHARE_GAP.
CLOCK_GAP_MHZ = 30.0
CLOCK_GAP_REL = 0.02
SHARE_GAP = 0.25
MIN_SAMPLES = 3


def reason_names(mask: int | None) -> list[str]:
    if not mask:
        return []
    return [name for bit, name in REASONS.items() if mask & bit]


def _nvml():
    import pynvml

    return pynvml


def _call(function, *args):
    try:
        return function(*args)
    except Exception:  # noqa: BLE001 -- a query this GPU or driver does not support reads as None
        return None


def _text(value) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlSampler:
    """Samples one GPU's clocks, power, temperature and clock-event reasons every `period_s`."""

    def __init__(self, pci_bus_id: str | None = None, period_s: float = 0.005) -> None:
        self.period_s = period_s
        self.available = False
        self.reason: str | None = None
        self._handle = None
        self._samples: list[tuple] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            nvml = _nvml()
            nvml.nvmlInit()
        except Exception as error:  # noqa: BLE001 -- no pynvml, no driver: sampler absent, reason kept
            self.reason = f"NVML unavailable ({type(error).__name__}: {error})"
            return
        self._nvml = nvml
        handle = None
        if pci_bus_id:
            handle = _call(nvml.nvmlDeviceGetHandleByPciBusId, pci_bus_id)
            if handle is None:
                handle = _call(nvml.nvmlDeviceGetHandleByPciBusId, pci_bus_id.encode())
        if handle is None and _call(nvml.nvmlDeviceGetCount) == 1:
            handle = _call(nvml.nvmlDeviceGetHandleByIndex, 0)
        if handle is None:
            self.reason = f"NVML has no device with PCI bus id {pci_bus_id!r}"
            return
        self._handle = handle
        self.available = True
        self._reasons = (getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
                         or nvml.nvmlDeviceGetCurrentClocksThrottleReasons)

    def facts(self) -> dict:
        """What does not change while timing: UUID, name, power limits, application and max clocks."""
        if not self.available:
            return {"nvml": False, "reason": self.reason}
        nvml, handle = self._nvml, self._handle

        def watts(value):
            return None if value is None else value / 1000.0

        return {
            "nvml": True,
            "uuid": _text(_call(nvml.nvmlDeviceGetUUID, handle)),
            "name": _text(_call(nvml.nvmlDeviceGetName, handle)),
            "power_limit_w": watts(_call(nvml.nvmlDeviceGetPowerManagementLimit, handle)),
            "enforced_power_limit_w": watts(_call(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)),
            "default_power_limit_w": watts(_call(nvml.nvmlDeviceGetPowerManagementDefaultLimit, handle)),
            "application_clocks_mhz": {"sm": _call(nvml.nvmlDeviceGetApplicationsClock, handle, nvml.NVML_CLOCK_SM),
                                       "mem": _call(nvml.nvmlDeviceGetApplicationsClock, handle,
                                                    nvml.NVML_CLOCK_MEM)},
            "max_clocks_mhz": {"sm": _call(nvml.nvmlDeviceGetMaxClockInfo, handle, nvml.NVML_CLOCK_SM),
                               "mem": _call(nvml.nvmlDeviceGetMaxClockInfo, handle, nvml.NVML_CLOCK_MEM)},
            "persistence_mode": _call(nvml.nvmlDeviceGetPersistenceMode, handle),
        }

    def read(self) -> tuple:
        nvml, handle = self._nvml, self._handle
        power = _call(nvml.nvmlDeviceGetPowerUsage, handle)
        return (time.perf_counter(), _call(nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_SM),
                _call(nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_MEM),
                None if power is None else power / 1000.0,
                _call(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU),
                _call(self._reasons, handle))

    def _loop(self) -> None:
        while not self._stop.is_set():
            sample = self.read()
            with self._lock:
                self._samples.append(sample)
            self._stop.wait(self.period_s)

    def start(self) -> NvmlSampler:
        if self.available and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="nvml-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None

    def take(self) -> list[tuple]:
        """The samples gathered since the last take (and forget them)."""
        with self._lock:
            samples, self._samples = self._samples, []
        return samples

    def __enter__(self) -> NvmlSampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def attribute(samples: Sequence[tuple], blocks: Sequence[tuple[str, float, float]]) -> dict[str, list[tuple]]:
    """{variant: [samples taken while one of its blocks ran]}; blocks are (variant, host start, host end).

    Samples outside every block (between chunks, during the start gate) belong to no variant.
    """
    out: dict[str, list[tuple]] = {name: [] for name, _s, _e in blocks}
    if not samples or not blocks:
        return out
    ordered = sorted(blocks, key=lambda block: block[1])
    starts = np.array([block[1] for block in ordered])
    for sample in samples:
        index = int(np.searchsorted(starts, sample[0], side="right")) - 1
        if index >= 0 and sample[0] <= ordered[index][2]:
            out[ordered[index][0]].append(sample)
    return out


def _spread(values: list) -> dict | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return {"median": float(np.median(present)), "min": float(min(present)), "max": float(max(present))}


def side_state(samples: Sequence[tuple]) -> dict:
    """Summary of the samples one variant saw: clocks, power, temperature and slowdown shares."""
    columns = {name: [sample[i] for sample in samples] for i, name in enumerate(FIELDS)}
    reasons = [r for r in columns["reasons"] if r is not None]
    shares = {}
    for bit, name in REASONS.items():
        if bit & SLOWDOWN_MASK and reasons:
            share = sum(1 for r in reasons if r & bit) / len(reasons)
            if share:
                shares[name] = round(share, 3)
    return {"n": len(samples), "sm_mhz": _spread(columns["sm_mhz"]), "mem_mhz": _spread(columns["mem_mhz"]),
            "power_w": _spread(columns["power_w"]), "temp_c": _spread(columns["temp_c"]),
            "slowdown_share": shares,
            "throttled": any(r & SLOWDOWN_MASK for r in reasons)}


def compare_sides(a: dict, b: dict) -> dict:
    """Whether two sides of a paired figure ran in different clock states, and why.

    {"differ": bool | None, "why": str}; None when either side has fewer than MIN_SAMPLES samples.
    """
    if a["n"] < MIN_SAMPLES or b["n"] < MIN_SAMPLES or not a["sm_mhz"] or not b["sm_mhz"]:
        return {"differ": None, "why": f"too few clock samples ({a['n']} and {b['n']}; need {MIN_SAMPLES} each)"}
    sm_a, sm_b = a["sm_mhz"]["median"], b["sm_mhz"]["median"]
    gap = abs(sm_a - sm_b)
    if gap > max(CLOCK_GAP_MHZ, CLOCK_GAP_REL * max(sm_a, sm_b)):
        return {"differ": True, "why": f"median SM clock {sm_a:.0f} vs {sm_b:.0f} MHz"}
    if a["mem_mhz"] and b["mem_mhz"] and a["mem_mhz"]["median"] != b["mem_mhz"]["median"]:
        return {"differ": True, "why": f"memory clock {a['mem_mhz']['median']:.0f} vs {b['mem_mhz']['median']:.0f} MHz"}
    for name in set(a["slowdown_share"]) | set(b["slowdown_share"]):
        share_a, share_b = a["slowdown_share"].get(name, 0.0), b["slowdown_share"].get(name, 0.0)
        if abs(share_a - share_b) > SHARE_GAP:
            return {"differ": True, "why": f"{name} in {share_a:.0%} vs {share_b:.0%} of samples"}
    return {"differ": False, "why": f"median SM clock {sm_a:.0f} vs {sm_b:.0f} MHz"}


def compact(samples: Sequence[tuple], origin: float) -> dict:
    """Samples as columns (times relative to `origin`, in ms) for the results JSON."""
    columns: dict[str, list] = {name: [] for name in FIELDS}
    for sample in samples:
        for i, name in enumerate(FIELDS):
            value = sample[i]
            if name == "t":
                value = round((value - origin) * 1e3, 3)
            elif name == "power_w" and value is not None:
                value = round(value, 1)
            columns[name].append(value)
    return columns
