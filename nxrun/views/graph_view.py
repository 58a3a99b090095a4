"""The task graph as text (a tree by dependency depth), Graphviz DOT or JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable

from ..graph import TaskGraph


def in_order(graph: TaskGraph, ids: Iterable[str] | None) -> list[str]:
    """`ids` (all tasks when None) once each, in the graph's topological order. Linear: the set
    is built once, not once per task (which made a 20,000-task selection take minutes)."""
    if ids is None:
        return list(graph.order)
    chosen = set(ids)
    return [t for t in graph.order if t in chosen]


def by_project(graph: TaskGraph, ids: list[str]) -> dict[str, list[str]]:
    """Project name -> its tasks among `ids` (in their order), projects sorted by name; one pass
    over the tasks, not one per project (a workspace may hold a project per task)."""
    groups: dict[str, list[str]] = {}
    for task_id in ids:
        groups.setdefault(graph.tasks[task_id].project, []).append(task_id)
    return {project: groups[project] for project in sorted(groups)}


def depths(graph: TaskGraph, ids: list[str]) -> dict[str, int]:
    depth: dict[str, int] = {}
    for task_id in ids:  # topological order: every dependency already has its depth
        deps = [d for d in graph.tasks[task_id].deps if d in depth]
        depth[task_id] = 1 + max((depth[d] for d in deps), default=-1)
    return depth


def render_text(graph: TaskGraph, ids: list[str] | None = None) -> str:
    """Each task under its project, with what it depends on; roots first."""
    selected = in_order(graph, ids)
    depth = depths(graph, selected)
    groups = by_project(graph, selected)
    lines = [f"{len(selected)} tasks in {len(groups)} projects"]
    for project, members in groups.items():
        lines.append(f"{project}")
        for task_id in sorted(members, key=lambda t: (depth[t], t)):
            task = graph.tasks[task_id]
            flags = []
            if task.is_aggregate:
                flags.append("aggregate")
            if task.cache != "always":
                flags.append(f"cache={task.cache}")
            if task.resources:
                flags.append("resources=" + ",".join(task.resources))
            suffix = f"  [{'; '.join(flags)}]" if flags else ""
            lines.append(f"  {'  ' * depth[task_id]}{task_id}{suffix}")
            for dep in task.deps:
                lines.append(f"  {'  ' * depth[task_id]}  <- {dep}")
    return "\n".join(lines)


def render_dot(graph: TaskGraph, ids: list[str] | None = None) -> str:
    selected = in_order(graph, ids)
    chosen = set(selected)
    lines = ["digraph nxrun {", "  rankdir=LR;", "  node [shape=box, fontname=\"Helvetica\"];"]
    for index, (project, members) in enumerate(by_project(graph, selected).items()):
        lines.append(f"  subgraph cluster_{index} {{")
        lines.append(f"    label={json.dumps(project)};")
        for task_id in members:
            style = ", style=dashed" if graph.tasks[task_id].is_aggregate else ""
            lines.append(f"    {json.dumps(task_id)} [label={json.dumps(task_id)}{style}];")
        lines.append("  }")
    for task_id in selected:
        for dep in graph.tasks[task_id].deps:
            if dep in chosen:
                lines.append(f"  {json.dumps(dep)} -> {json.dumps(task_id)};")
    lines.append("}")
    return "\n".join(lines)


def graph_data(graph: TaskGraph, ids: list[str] | None = None) -> dict:
    selected = in_order(graph, ids)
    chosen = set(selected)
    depth = depths(graph, selected)
    return {
        "tasks": [{
            "id": t, "project": graph.tasks[t].project, "target": graph.tasks[t].target,
            "matrix": graph.tasks[t].matrix, "command": graph.tasks[t].command, "deps": graph.tasks[t].deps,
            "inputs": graph.tasks[t].inputs, "outputs": graph.tasks[t].outputs, "cache": graph.tasks[t].cache,
            "resources": graph.tasks[t].resources, "depth": depth[t], "source": graph.tasks[t].source,
        } for t in selected],
        "edges": [[d, t] for t in selected for d in graph.tasks[t].deps if d in chosen],
    }


def render_json(graph: TaskGraph, ids: list[str] | None = None) -> str:
    return json.dumps(graph_data(graph, ids), indent=2)
