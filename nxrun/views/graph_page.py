"""`nxrun graph --html`: one self-contained, offline HTML page of the task graph.

The page holds everything it shows as one JSON document: tasks laid out left to right by dependency
depth in one lane per project, each with its last status from the history, its ETag components and
what changed since the previous run (the data of `nxrun why`), the current ETag as the workspace is
now, outputs, durations and, for bench tasks, the headline figures. The drawing code is plain SVG and
JavaScript in nxrun/views/graph_page_assets.py; the page makes no network request (a Content-Security-Policy
forbids it).
"""

from __future__ import annotations

import html
import json
import sys
import time
from pathlib import Path

from ..graph import TaskGraph
from ..run.bench_results import bench_rows, extract_figures, headline, read_documents
from ..run.history import diff_explain
from .graph_view import by_project, depths, in_order

COLUMN_WIDTH = 260
ROW_HEIGHT = 34
NODE_WIDTH = 220
NODE_HEIGHT = 24
LANE_GAP = 26
DIGEST_CHARS = 16


def _short(digest: str) -> str:
    return digest[:DIGEST_CHARS] if len(digest) == 32 else digest


def _recent_rows(store, ids: set[str]) -> dict[str, list[dict]]:
    """The last two history rows of every task, newest first."""
    sql = ("SELECT task_id, run_id, etag, status, origin, duration, saved, started, explain, error, run_started "
           "FROM (SELECT r.task_id, r.run_id, r.etag, r.status, r.origin, r.duration, r.saved, r.started, "
           "e.explain, r.error, runs.started AS run_started, ROW_NUMBER() OVER (PARTITION BY r.task_id "
           "ORDER BY r.run_id DESC, r.rowid DESC) AS position FROM run_tasks r JOIN runs ON runs.id = r.run_id "
           "LEFT JOIN explains e ON e.etag = r.etag) "
           "WHERE position <= 2 ORDER BY task_id, run_id DESC")
    keys = ("task_id", "run_id", "etag", "status", "origin", "duration", "saved", "started", "explain", "error",
            "run_started")
    found: dict[str, list[dict]] = {}
    for row in store.read(sql):
        record = dict(zip(keys, row))
        if record["task_id"] in ids:
            record["explain"] = json.loads(record["explain"] or "{}")
            found.setdefault(record["task_id"], []).append(record)
    return found


def _current_manifests(obj, ids: list[str]) -> dict[str, tuple[dict[str, str], str]]:
    """Each task's explain manifest and ETag as the workspace is now (upstream outputs as on disk)."""
    from ..console import Console
    from ..run.etag import CurrentETags

    current_etags = CurrentETags.for_views(obj.graph, obj.store, warn=Console(stream=sys.stderr, quiet=True).warn)
    memo: dict = {}
    current = {}
    for task_id in ids:
        if obj.graph.tasks[task_id].is_aggregate:
            continue
        try:
            current[task_id] = current_etags.explain(task_id, memo)
        except (OSError, ValueError):  # a file vanished mid-scan: the page still draws, without it
            continue
    return current


def _bench_headlines(obj, ids: list[str]) -> dict[str, dict]:
    """The headline figures of each bench task: its latest recorded result set, else its outputs on disk."""
    by_task: dict[str, list[dict]] = {}
    for row in bench_rows(obj.store):
        by_task.setdefault(row["task_id"], []).append(row)
    headlines = {}
    for task_id in ids:
        task = obj.graph.tasks[task_id]
        rows = by_task.get(task_id)
        if rows:
            latest = rows[-1]["outputs_digest"]
            figures = [r for r in rows if r["outputs_digest"] == latest]
            result = headline(figures)
            if result:
                result["device"] = figures[-1]["device"]
                result["time"] = figures[-1]["time"]
                headlines[task_id] = result
        elif task.is_bench and task.outputs:
            figures = [{"series": f.series, "case": f.case, "metric": f.metric, "value": f.value,
                        "baseline": f.baseline}
                       for _, document in read_documents(obj.workspace.root, task.outputs)
                       for f in extract_figures(document)]
            result = headline(figures)
            if result:
                headlines[task_id] = result
    return headlines


def layout(graph: TaskGraph, selected: list[str]) -> tuple[dict[str, tuple[int, int]], list[dict]]:
    """Node positions (x, y) and project lanes: columns by depth, one lane per project, rows within a
    column ordered by the mean row of each task's dependencies (fewer crossings)."""
    depth = depths(graph, selected)
    positions: dict[str, tuple[int, int]] = {}
    lanes = []
    row_of: dict[str, float] = {}
    top = 0
    for project, project_tasks in by_project(graph, selected).items():
        columns: dict[int, list[str]] = {}
        for task_id in project_tasks:
            columns.setdefault(depth[task_id], []).append(task_id)
        rows = max(len(c) for c in columns.values())
        for column_depth in sorted(columns):
            members = columns[column_depth]

            def key(task_id: str) -> tuple[float, str]:
                placed = [row_of[d] for d in graph.tasks[task_id].deps if d in row_of]
                return (sum(placed) / len(placed) if placed else 0.0, task_id)
            members.sort(key=key)
            for row, task_id in enumerate(members):
                y = top + row * ROW_HEIGHT
                row_of[task_id] = y
                positions[task_id] = (column_depth * COLUMN_WIDTH, y)
        height = rows * ROW_HEIGHT
        lanes.append({"project": project, "y": top - LANE_GAP // 2, "height": height + LANE_GAP - 6})
        top += height + LANE_GAP
    return positions, lanes


def page_data(obj, ids: list[str] | None, affected_base: str | None) -> dict:
    """Everything the page shows, as one JSON-ready dict."""
    graph = obj.graph
    selected = in_order(graph, ids)
    index = {task_id: i for i, task_id in enumerate(selected)}
    depth = depths(graph, selected)
    positions, lanes = layout(graph, selected)
    recent = _recent_rows(obj.store, set(selected))
    current = _current_manifests(obj, selected)
    benches = _bench_headlines(obj, selected)
    affected: list[str] = []
    changed: list[str] = []
    if affected_base:
        from ..graph import affected_tasks, changed_files

        changed = changed_files(obj.workspace.root, affected_base, None)
        try:  # the cache folder is never an input; do not list it when it is not ignored by git
            cache_rel = obj.workspace.cache_dir.resolve().relative_to(obj.workspace.root.resolve()).as_posix() + "/"
            changed = [f for f in changed if not f.startswith(cache_rel)]
        except ValueError:
            pass
        hit = affected_tasks(graph, changed)
        affected = [t for t in selected if t in hit]

    tasks = []
    for task_id in selected:
        task = graph.tasks[task_id]
        rows = recent.get(task_id, [])
        last = rows[0] if rows else None
        previous = rows[1] if len(rows) > 1 else None
        with_etag = next((r for r in rows if r["etag"]), None)
        components = with_etag["explain"] if with_etag else {}
        entry = {
            "id": task_id, "project": task.project, "target": task.target, "matrix": task.matrix,
            "depth": depth[task_id], "x": positions[task_id][0], "y": positions[task_id][1],
            "deps": [index[d] for d in task.deps if d in index], "command": task.command,
            "outputs": task.outputs, "cache": task.cache, "source": task.source,
            "description": task.description, "aggregate": task.is_aggregate,
            "status": "aggregate" if task.is_aggregate else (last["status"] if last else "never"),
        }
        if last:
            entry["last"] = {"run": last["run_id"], "etag": last["etag"], "origin": last["origin"],
                             "duration": round(last["duration"] or 0.0, 3), "saved": round(last["saved"] or 0.0, 3),
                             "time": last["started"] or last["run_started"], "error": last["error"]}
            entry["components"] = {name: _short(digest) for name, digest in sorted(components.items())}
            if previous is not None and last["etag"] and previous["etag"]:
                entry["previous"] = {"run": previous["run_id"], "etag": previous["etag"],
                                     "status": previous["status"]}
                entry["changes"] = diff_explain(previous["explain"], last["explain"])
        if task_id in current:
            manifest, etag = current[task_id]
            entry["current"] = {"etag": etag, "cached": obj.store.get_entry(etag) is not None,
                                "changes": diff_explain(components, manifest) if with_etag else []}
            if not with_etag:
                entry["components"] = {name: _short(digest) for name, digest in sorted(manifest.items())}
        if task_id in benches:
            entry["bench"] = benches[task_id]
        tasks.append(entry)
    return {
        "workspace": obj.workspace.root.name,
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "tasks": tasks,
        "lanes": lanes,
        "layout": {"column": COLUMN_WIDTH, "row": ROW_HEIGHT, "node_width": NODE_WIDTH, "node_height": NODE_HEIGHT},
        "affected": {"base": affected_base, "tasks": [index[t] for t in affected], "changed_files": changed[:500],
                     "changed_count": len(changed)} if affected_base else None,
    }


def render_page(data: dict) -> str:
    from .graph_page_assets import PAGE

    # "</" inside the JSON must not end the script element early
    payload = json.dumps(data, separators=(",", ":"), sort_keys=False).replace("</", "<\\/")
    title = html.escape(f"nxrun graph · {data['workspace']}")
    return PAGE.replace("{{title}}", title, 1).replace("/*NXRUN_DATA*/null", payload, 1)


def write_page(obj, path: Path, ids: list[str] | None, affected_base: str | None) -> Path:
    """Write the page for the workspace of `obj` (a cli.Context) to `path`."""
    path = Path(path)
    page = render_page(page_data(obj, ids, affected_base))
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(page, encoding="utf-8")
    temp.replace(path)
    return path
