"""Text for paired figures in the generated reports: ratio with interval, clock-state marks, provenance.

One vocabulary for every workload's report, so a reader learns it once:
  98% [97–99]   median of paired ratios and its 95% bootstrap interval
  ≈100% [98–103] the interval contains parity: the samples do not show a difference
  ‡  taken under a clock slowdown (power cap, thermal or power brake) on either side
  §  the two sides saw different clock states (the pairing did not hold)
  †  restored from the cache: measured by an earlier run (the provenance table names the GPU)
"""

from __future__ import annotations

from collections.abc import Iterable

from workloads.common import provenance

LEGEND = ("Ratios are medians of per-round paired ratios (candidate and baseline alternate in the same "
          "rounds) with 95% bootstrap intervals; ≈100% means the interval contains parity. "
          "‡: measured under a clock slowdown (power cap or thermal) on either side; "
          "§: the two sides saw different clock states; †: restored from the cache (measured by an earlier run).")


def ratio_text(median: float | None, ci: Iterable | None, percent: bool = True) -> str:
    if median is None:
        return "–"
    low, high = list(ci or (None, None))
    scale, unit = (100.0, "%") if percent else (1.0, "")
    # one decimal where whole percent would hide the interval (a tight one reads "101.2% [101.1–101.3]")
    digits = 1 if low is not None and high is not None and (high - low) * 100 < 2 else 0

    def fmt(value: float) -> str:
        return f"{value * scale:.{digits}f}" if percent else f"{value:.3g}"

    if low is None or high is None:
        return f"{fmt(median)}{unit}"
    if low <= 1.0 <= high:
        return f"≈{fmt(1.0)}{unit} [{fmt(low)}–{fmt(high)}]"
    return f"{fmt(median)}{unit} [{fmt(low)}–{fmt(high)}]"


def clock_marks(clock_states: dict | None, throttled: Iterable | None) -> str:
    marks = ""
    if throttled:
        marks += "‡"
    if clock_states and clock_states.get("differ"):
        marks += "§"
    return marks


def side_clock_text(side: dict | None) -> str:
    """'1755–1980 MHz, sw_power_cap 40%' for one side's clock samples."""
    if not side or not side.get("sm_mhz"):
        return "no clock samples"
    sm = side["sm_mhz"]
    text = f"SM {sm['min']:.0f}–{sm['max']:.0f} MHz (median {sm['median']:.0f})"
    shares = ", ".join(f"{name} {share:.0%}" for name, share in sorted(side.get("slowdown_share", {}).items()))
    if side.get("power_w"):
        text += f", {side['power_w']['median']:.0f} W"
    return text + (f", {shares}" if shares else "")


def reference_invocation(documents: list[dict]) -> str | None:
    """The nxrun run a report compares against: the one running it, else the newest measurement's."""
    current = provenance.invocation()
    if current is not None:
        return current
    measured = [(d.get("provenance") or {}) for d in documents]
    measured = [m for m in measured if m.get("invocation") and m.get("measured_at")]
    return max(measured, key=lambda m: m["measured_at"])["invocation"] if measured else None


def provenance_rows(documents: list[dict], label) -> tuple[list[dict], dict[str, bool | None]]:
    """One row per result document (measured when, on which GPU, restored?), and {label: restored}.

    Restored means measured by another nxrun run than the one running the report (or, for a report
    made by hand, than the newest measurement among the documents)."""
    current = reference_invocation(documents)
    rows, restored = [], {}
    for document in documents:
        record = document.get("provenance") or {}
        flag = provenance.restored(document, current)
        name = label(document)
        restored[name] = flag
        gpu = document.get("gpu") or {}
        clocks = record.get("application_clocks_mhz") or {}
        rows.append({"result": name, "measured (UTC)": record.get("measured_at") or document.get("created"),
                     "GPU": record.get("gpu_name") or document.get("device", {}).get("name"),
                     "UUID": record.get("gpu_uuid") or "–",
                     "power limit W": record.get("power_limit_w"),
                     "app clocks MHz": f"{clocks.get('sm')}/{clocks.get('mem')}" if clocks else "–",
                     "from cache": {True: "† yes", False: "no", None: "unknown"}[flag],
                     "nvml": "yes" if gpu.get("nvml") else "no"})
    return rows, restored
