"""`show`, `why`, `history` and `cache stats`: read-only views of tasks, ETags and the history."""

from __future__ import annotations

import json
import sys
import time

from ..console import Console
from ..errors import GraphError
from ..run.history import diff_explain, last_task_record, runs, task_history


def _one_task(obj, name: str) -> str:
    ids = obj.graph.resolve(name)
    if len(ids) != 1:
        shown = "\n  ".join(ids[:20])
        raise GraphError(f"'{name}' names {len(ids)} tasks; pick one:\n  {shown}")
    return ids[0]


def _current(obj):
    """What tasks' ETags would be now (run/etag.py), without building a run."""
    from ..run.etag import CurrentETags

    return CurrentETags.for_views(obj.graph, obj.store, warn=Console(stream=sys.stderr, quiet=True).warn)


def show_task(obj, name: str, as_json: bool) -> str:
    task_id = _one_task(obj, name)
    task = obj.graph.tasks[task_id]
    current = _current(obj)
    components, etag = current.explain(task_id)
    entry = obj.store.get_entry(etag)
    last = last_task_record(obj.store, task_id)
    data = {
        "id": task_id, "project": task.project, "target": task.target, "matrix": task.matrix,
        "command": task.command, "cwd": task.cwd, "source": task.source, "deps": task.deps,
        "inputs": task.inputs, "outputs": task.outputs, "env": sorted(task.env), "resources": task.resources,
        "cache": task.cache, "etag": etag, "cached": entry is not None,
        "cached_origin": (obj.store.read("SELECT origin FROM entries WHERE etag = ?", (etag,)) or [[None]])[0][0],
        "components": components,
        "last_run": last and {k: last[k] for k in ("etag", "status", "origin", "duration", "started")},
        "warnings": current.warnings,
    }
    if as_json:
        return json.dumps(data, indent=2)
    lines = [f"task     {task_id}", f"source   {task.source}", f"command  {task.command or '(aggregate)'}",
             f"cwd      {task.cwd}", f"cache    {task.cache}"]
    if task.resources:
        lines.append(f"resources {', '.join(task.resources)}")
    if task.env:
        lines.append(f"env      {', '.join(sorted(task.env))} (values hashed)")
    lines.append(f"deps     {', '.join(task.deps) or '-'}")
    lines.append(f"outputs  {', '.join(task.outputs) or '-'}")
    lines.append("inputs   " + (", ".join(task.inputs) or "-"))
    status = "cached" + (f" ({data['cached_origin']})" if data["cached_origin"] else "") if entry else "not cached"
    lines.append(f"etag     {etag}  [{status}]")
    if last:
        lines.append(f"last run {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(last['started']))} "
                     f"{last['status']} etag {last['etag'][:16]}")
    lines.append(f"components ({len(components)}):")
    for name_, digest in sorted(components.items()):
        lines.append(f"  {digest[:16] if len(digest) == 32 else digest:32}  {name_}")
    for warning in current.warnings:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


def why_task(obj, name: str, as_json: bool) -> str:
    task_id = _one_task(obj, name)
    current = _current(obj)
    components, etag = current.explain(task_id)
    last = last_task_record(obj.store, task_id)
    if last is None:
        message = f"{task_id} has never run in this workspace's history; it will run (etag {etag[:16]})."
        return json.dumps({"task": task_id, "etag": etag, "previous": None, "changes": []}) if as_json else message
    previous = last["explain"]
    changes = diff_explain(previous, components)
    cached = obj.store.get_entry(etag) is not None
    origin = (obj.store.read("SELECT origin FROM entries WHERE etag = ?", (etag,)) or [[None]])[0][0]
    if as_json:
        return json.dumps({"task": task_id, "etag": etag, "previous": last["etag"], "cached": cached,
                           "cached_origin": origin, "last_origin": last["origin"] or None,
                           "changes": [{"component": c, "change": k} for c, k in changes]}, indent=2)
    came_from = f" (from the {origin} cache)" if cached and origin else ""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["started"]))
    if not changes:
        state = f"cached{came_from}: the next run restores it" if cached else \
            "not cached (the last run did not store it)"
        return (f"{task_id}: nothing changed since its last run ({when}, {last['status']}); "
                f"etag {etag[:16]}, {state}.")
    lines = [f"{task_id}: {len(changes)} component(s) changed since its last run ({when}, {last['status']}, "
             f"etag {last['etag'][:16]} -> {etag[:16]}):"]
    for component, change in changes:
        detail = ""
        if change == "changed" and component.startswith("dep:"):
            detail = "  (upstream outputs differ)"
        lines.append(f"  {change:8} {component}{detail}")
    lines.append(f"cached{came_from}: the next run restores it" if cached else
                 "not cached: the next run executes it")
    return "\n".join(lines)


def history_text(obj, task: str | None, limit: int, as_json: bool) -> str:
    if task:
        task = _one_task(obj, task)
        rows = task_history(obj.store, task, limit)
        if as_json:
            return json.dumps(rows, indent=2)
        lines = [f"{'time':19}  {'run':>5}  {'etag':16}  {'status':10}  {'origin':6}  {'duration':>9}"]
        for row in rows:
            lines.append(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(row['time']))}  {row['run_id']:>5}  "
                         f"{(row['etag'] or '-')[:16]:16}  {row['status']:10}  {row['origin'] or '-':6}  "
                         f"{row['duration']:8.2f}s")
        return "\n".join(lines)
    rows = runs(obj.store, limit)
    if as_json:
        return json.dumps(rows, indent=2)
    lines = [f"{'time':19}  {'run':>5}  {'tasks':>5}  {'hits':>5}  {'ran':>4}  {'failed':>6}  {'saved':>8}  command"]
    for row in rows:
        lines.append(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(row['started']))}  {row['id']:>5}  "
                     f"{row['tasks']:>5}  {row['local_hits'] + row['remote_hits']:>5}  {row['misses']:>4}  "
                     f"{row['failed']:>6}  {row['time_saved']:7.1f}s  nxrun {' '.join(row['argv'])}")
    return "\n".join(lines)


def cache_stats(obj, as_json: bool) -> str:
    stats = obj.store.stats()
    totals = obj.store.read("SELECT coalesce(sum(local_hits),0), coalesce(sum(remote_hits),0), "
                            "coalesce(sum(misses),0), coalesce(sum(time_saved),0) FROM runs")[0]
    stats.update({"local_hits": totals[0], "remote_hits": totals[1], "misses": totals[2],
                  "time_saved_s": round(totals[3], 3)})
    remote_rows = obj.store.read("SELECT coalesce(sum(size),0) FROM entries WHERE origin = 'remote'")
    stats["remote_bytes_restored_entries"] = remote_rows[0][0]
    from ..store.tiered import transfer_totals

    stats["remote"] = transfer_totals(obj.store)
    if as_json:
        return json.dumps(stats, indent=2)
    lookups = totals[0] + totals[1] + totals[2]
    rate = f"{100 * (totals[0] + totals[1]) / lookups:.1f}%" if lookups else "-"
    return "\n".join([
        f"cache      {stats['cache_dir']}",
        f"entries    {stats['entries']} ({', '.join(f'{k}: {v}' for k, v in stats['entries_by_origin'].items())})",
        f"blobs      {stats['blobs']} ({stats['blob_bytes'] / 1e6:.1f} MB)",
        f"history    {totals[0]} local hits, {totals[1]} remote hits, {totals[2]} misses (hit rate {rate}), "
        f"{totals[3]:.1f}s saved",
        f"remote     {stats['remote']['hits']} hits, {stats['remote']['misses']} misses, "
        f"{stats['remote']['uploads']} uploads, {stats['remote']['skipped']} skipped, "
        f"{stats['remote']['rejected']} rejected; {stats['remote']['bytes_down'] / 1e6:.1f} MB down, "
        f"{stats['remote']['bytes_up'] / 1e6:.1f} MB up",
    ])


def sync_tasks(obj, names, direction: str, namespace: str | None) -> str:
    remote = obj.remote("required", namespace)
    current = _current(obj)
    lines = []
    try:
        for name in names:
            for task_id in obj.graph.resolve(name):
                task = obj.graph.tasks[task_id]
                if task.is_aggregate:
                    continue
                _, etag = current.explain(task_id)
                if direction == "push":
                    entry = obj.store.get_entry(etag, explain=True)
                    if entry is None:
                        lines.append(f"{task_id}: not in the local cache (etag {etag[:16]}); run it first")
                        continue
                    remote.upload(entry, obj.store)
                    lines.append(f"{task_id}: pushed {etag[:16]}")
                else:
                    entry = remote.fetch(etag, obj.store)
                    lines.append(f"{task_id}: " + (f"pulled {etag[:16]}" if entry else f"not on the remote "
                                                   f"(etag {etag[:16]})"))
    finally:
        remote.close()
    return "\n".join(lines)
