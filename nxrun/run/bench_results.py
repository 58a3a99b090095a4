"""Benchmark figures out of bench tasks' JSON outputs, recorded in the history for trends.

After a run, every bench task that ran or was restored and has a new outputs digest gets its JSON
outputs read once; each (series, case, metric) figure found becomes a `bench_results` row. The
extraction is tolerant: a result file is any JSON document, and a figure is any numeric value under
a known metric key (`tflops`, `tb_per_s`, `ratio_to_cublas`, ...) in any dict of it. The dict's
`kernel` / `name` / `variant` (or its key in the parent) names the series, its `shape` / `size` /
`M,N,K` / `batch,...` names the case. Keys such as `cublas_tflops` are baselines of the same case.
A `<metric>_ci` key holding [low, high] (e.g. `tflops_ci`, `ratio_to_baseline_ci`) is the figure's
confidence interval: it is recorded as two more figures, metric `<metric>:lo` and `<metric>:hi`, which the
report uses to judge a regression from the measured noise instead of a fixed threshold.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

# metric key -> canonical metric name
METRICS = {
    "tflops": "tflops", "tflop_s": "tflops", "tflop_per_s": "tflops", "tflops_per_s": "tflops",
    "tb_per_s": "tb_per_s", "tb_s": "tb_per_s", "tbps": "tb_per_s", "effective_tb_per_s": "tb_per_s",
    "bandwidth_tb_per_s": "tb_per_s", "gb_per_s": "gb_per_s", "gbps": "gb_per_s",
    "ratio_to_cublas": "ratio_to_cublas", "ratio_to_baseline": "ratio_to_baseline",
    "ratio_to_contiguous": "ratio_to_contiguous", "ratio_to_sdpa": "ratio_to_contiguous",
    "fraction_of_peak": "fraction_of_peak", "median_ms": "median_ms", "time_ms": "median_ms",
    "ratio_to_read": "ratio_to_read",
}
INTERVAL_SUFFIXES = (":lo", ":hi")   # interval bounds of a figure, stored as metrics "<metric>:lo" / ":hi"
# the figure a bench task is judged by, in order of preference
HEADLINE_METRICS = ("tflops", "tb_per_s", "gb_per_s", "ratio_to_cublas", "ratio_to_contiguous", "median_ms")
_SUFFIX_METRICS = ("tflops", "tb_per_s", "gb_per_s")       # cublas_tflops, contiguous_tb_per_s, ...
_SERIES_KEYS = ("kernel", "name", "variant", "impl", "implementation", "version", "method", "label")
_CASE_KEYS = ("shape", "case", "problem", "size", "config")
_DIM_GROUPS = (("m", "n", "k"), ("batch", "heads", "kv_heads", "context", "head_dim"),
               ("batch", "num_heads", "num_kv_heads", "context_len", "head_dim"))
_BASELINE = re.compile(r"cublas|contiguous|sdpa|baseline|reference|read_bandwidth|gather|copy", re.I)
_MAX_FILE_BYTES = 8 << 20
_MAX_FILES = 200


@dataclass
class Figure:
    series: str
    case: str
    metric: str
    value: float
    baseline: bool


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if value == value and value not in (float("inf"), float("-inf")) else None


def _case_of(record: dict, inherited: str) -> str:
    for key in _CASE_KEYS:
        value = record.get(key)
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float, str)) for v in value):
            return "x".join(str(v) for v in value)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, dict):
            text = ",".join(f"{k}={v}" for k, v in value.items() if isinstance(v, (int, float, str)))
            if text:
                return text
    lowered = {str(k).lower(): v for k, v in record.items()}
    for group in _DIM_GROUPS:
        values = [lowered.get(k) for k in group]
        present = [v for v in values if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
        if len(present) >= 2:
            return "x".join(str(v) for v in present)
    return inherited


def _with_dtype(case: str, record: dict) -> str:
    dtype = record.get("dtype")
    if isinstance(dtype, str) and dtype and dtype not in case:
        return f"{case} {dtype}".strip()
    return case


def extract_figures(document) -> list[Figure]:
    """Every figure of a result document (see the module docstring), deduplicated, in document order."""
    figures: dict[tuple[str, str, str], Figure] = {}

    def add(series: str, case: str, metric: str, value: float) -> None:
        key = (series, case, metric)
        if key not in figures:
            figures[key] = Figure(series, case, metric, value, bool(_BASELINE.search(series)))

    def walk(node, series: str, case: str, depth: int) -> None:
        if depth > 8:
            return
        if isinstance(node, list):
            for item in node:
                walk(item, series, case, depth + 1)
            return
        if not isinstance(node, dict):
            return
        own_series = next((str(node[k]) for k in _SERIES_KEYS if isinstance(node.get(k), (str, int))), series)
        own_case = _with_dtype(_case_of(node, case), node)
        for key, value in node.items():
            number = _number(value)
            lowered = str(key).lower()
            interval = _interval(lowered, value)
            if interval is not None:
                series_name, metric, low, high = interval
                add(series_name or own_series or "result", own_case, metric + ":lo", low)
                add(series_name or own_series or "result", own_case, metric + ":hi", high)
                continue
            if number is not None:
                if lowered in METRICS:
                    add(own_series or "result", own_case, METRICS[lowered], number)
                    continue
                for suffix in _SUFFIX_METRICS:
                    if lowered.endswith("_" + suffix) and lowered[: -len(suffix) - 1] not in ("", "effective"):
                        add(lowered[: -len(suffix) - 1], own_case, suffix, number)
                        break
            elif isinstance(value, dict):
                # {"kernels": {"05_2d": {...}}}: a dict keyed by series name, or a named baseline block
                child_series = own_series
                if not any(k in value for k in _SERIES_KEYS) and lowered not in ("device", "results", "headline"):
                    child_series = str(key) if _looks_like_series(value) else own_series
                walk(value, child_series, own_case, depth + 1)
            elif isinstance(value, list) and lowered != "device":
                walk(value, own_series, own_case, depth + 1)

    if isinstance(document, dict):
        walk({k: v for k, v in document.items() if k != "device"}, "", "", 0)
    else:
        walk(document, "", "", 0)
    return list(figures.values())


def _interval(key: str, value) -> tuple[str | None, str, float, float] | None:
    """(series or None for the dict's own, metric, low, high) when `key` is `<metric>_ci` with [low, high]."""
    if not key.endswith("_ci") or not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    low, high = (_number(v) for v in value)
    if low is None or high is None:
        return None
    base = key[:-3]
    if base in METRICS:
        return None, METRICS[base], low, high
    for suffix in _SUFFIX_METRICS:
        if base.endswith("_" + suffix) and base[: -len(suffix) - 1] not in ("", "effective"):
            return base[: -len(suffix) - 1], suffix, low, high
    return None


def interval_of(figures: list[dict], series: str, metric: str, case: str) -> tuple[float, float] | None:
    """The recorded [low, high] of one figure, if its result file gave one."""
    bounds = {f["metric"]: f["value"] for f in figures
              if f["series"] == series and f["case"] == case and f["metric"] in (metric + ":lo", metric + ":hi")}
    if len(bounds) != 2:
        return None
    return bounds[metric + ":lo"], bounds[metric + ":hi"]


def _looks_like_series(value: dict) -> bool:
    return any(str(k).lower() in METRICS for k in value) or any(isinstance(v, (dict, list)) for v in value.values())


def device_of(document) -> tuple[str, str]:
    """(device name, backend) of a result document; ('unknown', '') when it does not say."""
    if not isinstance(document, dict):
        return "unknown", ""
    device = document.get("device")
    backend = document.get("backend") if isinstance(document.get("backend"), str) else ""
    if isinstance(device, dict):
        name = device.get("name") or "unknown"
        backend = backend or device.get("backend") or ""
        if backend == "cpu" and not str(name).lower().startswith("cpu"):
            name = f"cpu ({name})" if name != "unknown" else "cpu"
        return str(name), str(backend)
    if isinstance(device, str):
        return device, backend
    return "unknown", backend


def created_of(document, default: float) -> float:
    created = document.get("created") if isinstance(document, dict) else None
    if isinstance(created, str):
        try:
            return dt.datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return default
    number = _number(created)
    return number if number is not None else default


def json_outputs(root: Path, outputs: list[str]) -> list[Path]:
    """JSON files under a task's declared outputs (files or folders), at most _MAX_FILES of them."""
    found: list[Path] = []
    for output in outputs:
        path = root / output
        if path.is_file() and path.suffix == ".json":
            found.append(path)
        elif path.is_dir():
            for folder, _dirs, files in os.walk(path):
                found.extend(Path(folder) / f for f in sorted(files) if f.endswith(".json"))
        if len(found) >= _MAX_FILES:
            break
    return sorted(found)[:_MAX_FILES]


def read_documents(root: Path, outputs: list[str]) -> list[tuple[str, object]]:
    """(workspace-relative path, parsed JSON) of every readable JSON output; unreadable ones are skipped."""
    documents = []
    for path in json_outputs(root, outputs):
        try:
            if path.stat().st_size > _MAX_FILE_BYTES:
                continue
            documents.append((path.relative_to(root).as_posix(), json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
    return documents


def record_bench_results(store, run_id: int, graph, task_records, run_time: float) -> int:
    """Record the figures of bench tasks in this run whose outputs are new to the history; rows written."""
    candidates = [r for r in task_records
                  if r.status in ("miss", "local-hit", "remote-hit") and r.outputs_digest
                  and r.task_id in graph.tasks and graph.tasks[r.task_id].is_bench]
    if not candidates:
        return 0
    rows = []
    for record in candidates:
        known = store.read("SELECT 1 FROM bench_results WHERE task_id = ? AND outputs_digest = ? LIMIT 1",
                           (record.task_id, record.outputs_digest))
        if known:
            continue
        for rel, document in read_documents(graph.workspace.root, graph.tasks[record.task_id].outputs):
            device, backend = device_of(document)
            when = created_of(document, run_time)
            for figure in extract_figures(document):
                rows.append((run_id, record.task_id, record.etag, record.outputs_digest, when, device, backend, rel,
                             figure.series, figure.case, figure.metric, figure.value, int(figure.baseline)))
    if rows:
        store.write(lambda conn: conn.executemany(
            "INSERT INTO bench_results (run_id, task_id, etag, outputs_digest, time, device, backend, file, series, "
            "\"case\", metric, value, baseline) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows))
    return len(rows)


BENCH_KEYS = ("run_id", "task_id", "etag", "outputs_digest", "time", "device", "backend", "file", "series",
              "case", "metric", "value", "baseline")


def bench_rows(store, task_id: str | None = None) -> list[dict]:
    """Every recorded figure (of one task, or all), oldest first."""
    sql = f"SELECT {', '.join(chr(34) + k + chr(34) for k in BENCH_KEYS)} FROM bench_results"
    params: tuple = ()
    if task_id:
        sql += " WHERE task_id = ?"
        params = (task_id,)
    return [dict(zip(BENCH_KEYS, row)) for row in store.read(sql + " ORDER BY time, rowid", params)]


def headline(figures: list[dict]) -> dict | None:
    """The headline of one result set (rows of one task and outputs digest): its main metric, the case most
    series report (the largest such case), and each series' value there, baselines marked."""
    if not figures:
        return None
    metrics = {f["metric"] for f in figures if not f["metric"].endswith(INTERVAL_SUFFIXES)}
    if not metrics:
        return None
    metric = next((m for m in HEADLINE_METRICS if m in metrics), sorted(metrics)[0])
    rows = [f for f in figures if f["metric"] == metric]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["case"]] = counts.get(row["case"], 0) + 1
    case = max(counts, key=lambda c: (counts[c], _case_size(c), c))
    values = {row["series"]: row["value"] for row in rows if row["case"] == case}
    baselines = sorted({row["series"] for row in rows if row["baseline"]})
    best = max((v for s, v in values.items() if s not in baselines), default=None)
    return {"metric": metric, "case": case, "values": values, "baselines": baselines, "best": best}


def _case_size(case: str) -> float:
    size = 1.0
    for number in re.findall(r"\d+", case):
        size *= float(number)
    return size
