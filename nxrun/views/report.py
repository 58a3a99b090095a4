"""`nxrun report`: the run history and benchmark results as a markdown report with PNG plots.

Per run: cache hit rate and time saved. Per bench task: its headline figure (e.g. GEMM TFLOP/s at the
largest size, paged attention TB/s) over time, one line per series and a subplot per device, baselines
(cuBLAS, contiguous KV) dashed, so a regression shows at a glance. `report.json` holds every number
the plots and tables are drawn from. Plots need matplotlib (`pip install 'nxrun[report]'`).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from ..errors import NxrunError
from ..run.bench_results import bench_rows, headline, interval_of
from ..run.history import runs

RUN_LIMIT = 200
# A headline figure regresses when its interval lies wholly below the previous result's (above, for a
# time): the measured noise of both decides. A result file without intervals falls back to this change.
REGRESSION = 0.05
LOWER_IS_BETTER = {"median_ms"}
UNITS = {"tflops": "TFLOP/s", "tb_per_s": "TB/s", "gb_per_s": "GB/s", "median_ms": "ms"}


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise NxrunError("`nxrun report` draws its plots with matplotlib, which is not installed: "
                         "pip install 'nxrun[report]' (or pip install matplotlib).") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def run_stats(store, limit: int = RUN_LIMIT) -> list[dict]:
    """Per run, oldest first: counts, hit rate (hits / tasks looked up) and seconds saved."""
    stats = []
    for run in reversed(runs(store, limit)):
        hits = run["local_hits"] + run["remote_hits"]
        looked_up = hits + run["misses"] + run["failed"]
        stats.append({
            "run": run["id"], "started": run["started"], "duration": round((run["finished"] or run["started"])
                                                                          - run["started"], 3),
            "command": "nxrun " + " ".join(run["argv"]), "tasks": run["tasks"], "local_hits": run["local_hits"],
            "remote_hits": run["remote_hits"], "ran": run["misses"], "failed": run["failed"],
            "skipped": run["skipped"], "hit_rate": round(hits / looked_up, 4) if looked_up else None,
            "time_saved": round(run["time_saved"] or 0.0, 3),
        })
    return stats


def bench_trends(store) -> dict[str, dict]:
    """Per bench task: the headline metric and case (from its latest result set) and, per result set,
    each series' value there, with the device it ran on."""
    by_task: dict[str, list[dict]] = {}
    for row in bench_rows(store):
        by_task.setdefault(row["task_id"], []).append(row)
    trends = {}
    for task_id, rows in sorted(by_task.items()):
        sets: dict[str, list[dict]] = {}
        for row in rows:
            sets.setdefault(row["outputs_digest"], []).append(row)
        ordered = sorted(sets.values(), key=lambda figures: (figures[0]["time"], figures[0]["run_id"]))
        latest = headline(ordered[-1])
        if latest is None:
            continue
        metric, case = latest["metric"], latest["case"]
        points = []
        for figures in ordered:
            values = {f["series"]: f["value"] for f in figures if f["metric"] == metric and f["case"] == case}
            if values:
                intervals = {series: interval_of(figures, series, metric, case) for series in values}
                points.append({"time": figures[0]["time"], "run": figures[0]["run_id"], "device": figures[0]["device"],
                               "backend": figures[0]["backend"], "etag": figures[0]["etag"], "values": values,
                               "intervals": {s: list(i) for s, i in intervals.items() if i is not None}})
        baselines = sorted({f["series"] for f in rows if f["baseline"] and f["metric"] == metric})
        trends[task_id] = {"metric": metric, "unit": UNITS.get(metric, metric), "case": case,
                           "baselines": baselines, "points": points}
    return trends


def _compare(trend: dict) -> list[dict]:
    """The latest point of a trend against the previous one on the same device, series by series."""
    points = trend["points"]
    if not points:
        return []
    latest = points[-1]
    previous = next((p for p in reversed(points[:-1]) if p["device"] == latest["device"]), None)
    baseline = next((latest["values"][b] for b in trend["baselines"] if b in latest["values"]), None)
    lower = trend["metric"] in LOWER_IS_BETTER
    rows = []
    for series, value in sorted(latest["values"].items(), key=lambda item: (item[0] in trend["baselines"],
                                                                            -item[1])):
        before = previous["values"].get(series) if previous else None
        change = (value - before) / before if before else None
        now_ci = latest.get("intervals", {}).get(series)
        before_ci = previous.get("intervals", {}).get(series) if previous else None
        regressed, rule = _regressed(change, now_ci, before_ci, lower)
        rows.append({"series": series, "value": value, "baseline": series in trend["baselines"],
                     "vs_baseline": value / baseline if baseline and series not in trend["baselines"] else None,
                     "previous": before, "change": change, "regressed": regressed, "rule": rule,
                     "interval": now_ci, "previous_interval": before_ci})
    return rows


def _regressed(change, now_ci, before_ci, lower: bool) -> tuple[bool, str | None]:
    """(regressed, how it was judged): disjoint intervals when both results carry one, else the fixed change."""
    if change is None:
        return False, None
    if now_ci and before_ci:
        worse = now_ci[0] > before_ci[1] if lower else now_ci[1] < before_ci[0]
        return worse, "intervals"
    return ((change > REGRESSION) if lower else (change < -REGRESSION)), f"{REGRESSION:.0%} (no interval recorded)"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "task"


def _plot_runs(plt, stats: list[dict], path: Path) -> None:
    figure, rate_axes = plt.subplots(figsize=(8, 4))
    labels = [str(s["run"]) for s in stats]
    positions = range(len(stats))
    rates = [100 * (s["hit_rate"] or 0.0) for s in stats]
    rate_axes.bar(positions, rates, color="#66bb6a", label="cache hit rate (%)")
    rate_axes.set_ylim(0, 105)
    rate_axes.set_ylabel("cache hit rate (%)")
    rate_axes.set_xlabel("run")
    step = max(1, len(labels) // 20)
    rate_axes.set_xticks(list(positions)[::step])
    rate_axes.set_xticklabels(labels[::step])
    saved_axes = rate_axes.twinx()
    saved_axes.plot(list(positions), [s["time_saved"] for s in stats], color="#3949ab", marker="o",
                    label="time saved (s)")
    saved_axes.set_ylabel("time saved (s)")
    saved_axes.set_ylim(bottom=0)
    handles = rate_axes.get_legend_handles_labels()
    more = saved_axes.get_legend_handles_labels()
    rate_axes.legend(handles[0] + more[0], handles[1] + more[1], loc="upper left", fontsize="small")
    rate_axes.set_title("Cache hit rate and time saved per run")
    figure.tight_layout()
    figure.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(figure)


def _plot_trend(plt, task_id: str, trend: dict, path: Path) -> None:
    """One subplot per device; x is the sequence of result sets (labelled by run and date)."""
    devices = list(dict.fromkeys(p["device"] for p in trend["points"]))
    figure, axes_list = plt.subplots(len(devices), 1, figsize=(8, 3.6 * len(devices)), squeeze=False)
    for axes, device in zip((a[0] for a in axes_list), devices):
        points = [p for p in trend["points"] if p["device"] == device]
        series_names = list(dict.fromkeys(s for p in points for s in p["values"]))
        for index, series in enumerate(series_names):
            xs = [i for i, p in enumerate(points) if series in p["values"]]
            ys = [p["values"][series] for p in points if series in p["values"]]
            is_baseline = series in trend["baselines"]
            axes.plot(xs, ys, linestyle="--" if is_baseline else "-", marker="" if is_baseline else "o",
                      color="#424242" if is_baseline else f"C{index % 10}",
                      label=series + (" (baseline)" if is_baseline else ""))
        step = max(1, len(points) // 12)
        axes.set_xticks(range(0, len(points), step))
        axes.set_xticklabels([f"run {p['run']}\n{time.strftime('%m-%d %H:%M', time.localtime(p['time']))}"
                              for p in points[::step]], fontsize="small")
        axes.set_xlim(-0.5, max(0.5, len(points) - 0.5))
        axes.set_title(f"{task_id}: {trend['unit']} at {trend['case'] or 'headline'} on {device}", fontsize="medium")
        axes.set_ylabel(trend["unit"])
        axes.set_ylim(bottom=0)
        axes.legend(fontsize="small", loc="lower left", ncol=2)
        axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(figure)


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.{digits}g}"


def _percent(value) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def _run_table(stats: list[dict], limit: int) -> list[str]:
    lines = ["| run | when | tasks | local hits | remote hits | ran | failed | hit rate | time saved |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in reversed(stats[-limit:]):
        lines.append(f"| {s['run']} | {time.strftime('%Y-%m-%d %H:%M', time.localtime(s['started']))} | {s['tasks']} | "
                     f"{s['local_hits']} | {s['remote_hits']} | {s['ran']} | {s['failed']} | {_percent(s['hit_rate'])} | "
                     f"{s['time_saved']:.1f} s |")
    return lines


def _bench_section(task_id: str, trend: dict, image: str | None) -> list[str]:
    rows = _compare(trend)
    latest = trend["points"][-1]
    lines = [f"### {task_id}", "",
             f"{trend['unit']} at `{trend['case'] or 'headline'}` on **{latest['device']}**"
             f"{' (backend ' + latest['backend'] + ')' if latest['backend'] else ''}, "
             f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(latest['time']))}; "
             f"{len(trend['points'])} result set(s) in the history.", ""]
    by_interval = [r["series"] for r in rows if r["regressed"] and r["rule"] == "intervals"]
    by_threshold = [r["series"] for r in rows if r["regressed"] and r["rule"] != "intervals"]
    if by_interval:
        lines += [f"**Regression:** {', '.join(by_interval)}: the interval of the latest result lies wholly "
                  "beyond the previous one on this device (outside the measured noise).", ""]
    if by_threshold:
        lines += [f"**Regression:** {', '.join(by_threshold)} fell more than {REGRESSION:.0%} against the previous "
                  "result on this device (no interval recorded to judge the noise).", ""]
    lines += [f"| series | {trend['unit']} | vs baseline | previous | change | interval (latest / previous) |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        flag = " ⚠" if r["regressed"] else ""
        change = "–" if r["change"] is None else f"{100 * r['change']:+.1f}%"
        intervals = " / ".join(f"{_fmt(i[0])}–{_fmt(i[1])}" if i else "–"
                               for i in (r.get("interval"), r.get("previous_interval")))
        lines.append(f"| {r['series']}{' (baseline)' if r['baseline'] else ''} | {_fmt(r['value'])} | "
                     f"{_percent(r['vs_baseline']) if r['vs_baseline'] is not None else '–'} | {_fmt(r['previous'])} | "
                     f"{change}{flag} | {intervals} |")
    if image:
        lines += ["", f"![{task_id}]({image})"]
    return lines + [""]


def _totals(stats: list[dict]) -> dict:
    hits = sum(s["local_hits"] + s["remote_hits"] for s in stats)
    looked_up = hits + sum(s["ran"] + s["failed"] for s in stats)
    return {"runs": len(stats), "hits": hits, "looked_up": looked_up,
            "hit_rate": round(hits / looked_up, 4) if looked_up else None,
            "time_saved": round(sum(s["time_saved"] for s in stats), 3)}


def write_report(obj, out_dir: Path, summary_md: Path | None) -> list[Path]:
    """Write report.md, report.json and the plots to out_dir (and a CI job summary); the paths written."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = obj.store
    stats = run_stats(store)
    trends = bench_trends(store)
    totals = _totals(stats)
    written: list[Path] = []
    images: dict[str, str] = {}
    if stats:
        path = out_dir / "cache.png"
        _plot_runs(plt, stats, path)
        written.append(path)
    for task_id, trend in trends.items():
        if not trend["points"]:
            continue
        path = out_dir / f"bench-{_slug(task_id)}.png"
        _plot_trend(plt, task_id, trend, path)
        images[task_id] = path.name
        written.append(path)

    workspace = obj.workspace.root.name
    lines = [f"# nxrun report · {workspace}", "", f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} from the history "
             f"in `{store.cache_dir}`.", ""]
    if not stats:
        lines += ["No runs recorded yet: run a task (`nxrun run PROJECT:TARGET`) and report again.", ""]
    else:
        latest = stats[-1]
        lines += ["## Cache", "",
                  f"Latest run ({latest['command']}): {latest['tasks']} tasks, {latest['local_hits']} local hits, "
                  f"{latest['remote_hits']} remote hits, {latest['ran']} ran, {latest['failed']} failed; hit rate "
                  f"{_percent(latest['hit_rate'])}, {latest['time_saved']:.1f} s saved.", "",
                  f"Over {totals['runs']} runs: hit rate {_percent(totals['hit_rate'])}, {totals['time_saved']:.1f} s "
                  "saved.", "", "![cache hit rate and time saved](cache.png)", ""]
        lines += _run_table(stats, 20) + [""]
    if trends:
        lines += ["## Benchmarks", ""]
        for task_id, trend in trends.items():
            if trend["points"]:
                lines += _bench_section(task_id, trend, images.get(task_id))
    report_path = out_dir / "report.md"
    report_path.write_text("\n".join(lines), encoding="utf-8")
    data_path = out_dir / "report.json"
    data_path.write_text(json.dumps({"runs": stats, "totals": totals, "bench": trends,
                                     "comparisons": {t: _compare(trend) for t, trend in trends.items()},
                                     "images": {"cache": "cache.png" if stats else None, "bench": images}},
                                    indent=2), encoding="utf-8")
    written = [report_path, data_path] + written
    if summary_md is not None:
        written.append(_write_summary(Path(summary_md), workspace, stats, totals, trends))
    return written


def _write_summary(path: Path, workspace: str, stats: list[dict], totals: dict, trends: dict) -> Path:
    """A GitHub Actions job summary: appended, as $GITHUB_STEP_SUMMARY expects."""
    lines = [f"## nxrun · {workspace}", ""]
    if stats:
        latest = stats[-1]
        lines += [f"**{latest['tasks']} tasks**: {latest['local_hits']} local hits, {latest['remote_hits']} remote hits, "
                  f"{latest['ran']} ran, {latest['failed']} failed · hit rate {_percent(latest['hit_rate'])} · "
                  f"{latest['time_saved']:.1f} s saved", ""]
    else:
        lines += ["No runs recorded.", ""]
    for task_id, trend in trends.items():
        if trend["points"]:
            lines += _bench_section(task_id, trend, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path
