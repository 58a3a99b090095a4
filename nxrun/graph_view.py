"""The task graph as text (a tree by dependency depth), Graphviz DOT or JSON."""

from __future__ import annotations

import json

from .graph import TaskGraph


def _ids(graph: TaskGraph, ids: list[str] | None) -> list[str]:
    return list(graph.order) if ids is None else [t for t in graph.order if t in set(ids)]


def depths(graph: TaskGraph, ids: list[str]) -> dict[str, int]:
    depth: dict[str, int] = {}
    for task_id in ids:  # topological order: every dependency already has its depth
        deps = [d for d in graph.tasks[task_id].deps if d in depth]
        depth[task_id] = 1 + max((depth[d] for d in deps), default=-1)
    return depth


def render_text(graph: TaskGraph, ids: list[str] | None = None) -> str:
    """Each task under its project, with what it depends on; roots first."""
    selected = _ids(graph, ids)
    depth = depths(graph, selected)
    lines = [f"{len(selected)} tasks in {len({graph.tasks[t].project for t in selected})} projects"]
    for project in sorted({graph.tasks[t].project for t in selected}):
        lines.append(f"{project}")
        for task_id in sorted((t for t in selected if graph.tasks[t].project == project),
                              key=lambda t: (depth[t], t)):
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
    selected = _ids(graph, ids)
    chosen = set(selected)
    lines = ["digraph nxrun {", "  rankdir=LR;", "  node [shape=box, fontname=\"Helvetica\"];"]
    projects = sorted({graph.tasks[t].project for t in selected})
    for index, project in enumerate(projects):
        lines.append(f"  subgraph cluster_{index} {{")
        lines.append(f"    label={json.dumps(project)};")
        for task_id in selected:
            task = graph.tasks[task_id]
            if task.project == project:
                style = ", style=dashed" if task.is_aggregate else ""
                lines.append(f"    {json.dumps(task_id)} [label={json.dumps(task_id)}{style}];")
        lines.append("  }")
    for task_id in selected:
        for dep in graph.tasks[task_id].deps:
            if dep in chosen:
                lines.append(f"  {json.dumps(dep)} -> {json.dumps(task_id)};")
    lines.append("}")
    return "\n".join(lines)


def graph_data(graph: TaskGraph, ids: list[str] | None = None) -> dict:
    selected = _ids(graph, ids)
    depth = depths(graph, selected)
    return {
        "tasks": [{
            "id": t, "project": graph.tasks[t].project, "target": graph.tasks[t].target,
            "matrix": graph.tasks[t].matrix, "command": graph.tasks[t].command, "deps": graph.tasks[t].deps,
            "inputs": graph.tasks[t].inputs, "outputs": graph.tasks[t].outputs, "cache": graph.tasks[t].cache,
            "resources": graph.tasks[t].resources, "depth": depth[t], "source": graph.tasks[t].source,
        } for t in selected],
        "edges": [[d, t] for t in selected for d in graph.tasks[t].deps if d in set(selected)],
    }


def render_json(graph: TaskGraph, ids: list[str] | None = None) -> str:
    return json.dumps(graph_data(graph, ids), indent=2)
