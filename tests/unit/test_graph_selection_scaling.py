"""Selecting and drawing tasks is linear in the graph's size: run-many's selection, the text, DOT
and JSON views and the graph page's layout, on a graph of one project per task (a monorepo of
packages) with an aggregate that depends on every task.

Each operation is counted, not timed: task ids hash through a counter and the task table counts
its lookups, so the test is exact on a loaded machine. Doubling the graph must at most about
double the count; a set rebuilt per task, or a pass over every task per project, quadruples it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nxrun.views import graph_view
from nxrun.cli import tasks_of_targets
from nxrun.config import Workspace
from nxrun.graph import Task, TaskGraph
from nxrun.views.graph_page import layout
from nxrun.hashing import FileIndex


class CountedId(str):
    """A task id whose every hash is counted (each set or dict insert or lookup hashes it)."""

    hashes = 0

    def __hash__(self) -> int:
        CountedId.hashes += 1
        return str.__hash__(self)


class CountedTable(dict):
    """The task table, counting lookups by id."""

    lookups = 0

    def __getitem__(self, key):
        CountedTable.lookups += 1
        return dict.__getitem__(self, key)


def monorepo_graph(tmp_path: Path, n: int) -> TaskGraph:
    """n packages p0..p(n-1), each with one `build` task in a binary tree (pi builds after
    p((i-1)//2)), and tree:all depending on every build."""
    tasks = CountedTable()

    def add(task_id: str, project: str, target: str, deps: list[str], command: str | None) -> None:
        tasks[CountedId(task_id)] = Task(id=CountedId(task_id), project=project, target=target, matrix={},
                                         command=command, inputs=[], outputs=[], deps=[CountedId(d) for d in deps],
                                         env={}, resources=[], cache="always", cwd=".", source="nxrun.toml:1")

    for i in range(n):
        add(f"p{i}:build", f"p{i}", "build", [f"p{(i - 1) // 2}:build"] if i else [], "true")
    add("tree:all", "tree", "all", [f"p{i}:build" for i in range(n)], None)
    workspace = Workspace(root=tmp_path, cache_dir=tmp_path / ".nxrun", parallel=1, restore="auto",
                          default_inputs=["**/*"], named_inputs={}, runtime={}, remote={}, projects={},
                          config_files=[])
    order = [CountedId(f"p{i}:build") for i in range(n)] + [CountedId("tree:all")]
    return TaskGraph(workspace, tasks, order, [], FileIndex(tmp_path))


OPERATIONS = {
    "run-many selection": lambda g: tasks_of_targets(g, ["build"]),
    "run-many selection in named projects": lambda g: tasks_of_targets(
        g, ["build"], {f"p{i}" for i in range(0, len(g.order), 2)}),
    "graph text of chosen tasks": lambda g: graph_view.render_text(g, list(reversed(g.order))),
    "graph text of every task": lambda g: graph_view.render_text(g),
    "graph dot": lambda g: graph_view.render_dot(g, list(g.order)),
    "graph json": lambda g: graph_view.render_json(g, list(g.order)),
    "graph page layout": lambda g: layout(g, graph_view.in_order(g, g.order)),
}


def counted(tmp_path: Path, n: int, operation) -> tuple[int, object]:
    graph = monorepo_graph(tmp_path, n)
    CountedId.hashes = CountedTable.lookups = 0
    result = operation(graph)
    return CountedId.hashes + CountedTable.lookups, result


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_selection_and_views_grow_linearly(tmp_path: Path, name: str) -> None:
    operation = OPERATIONS[name]
    small, small_result = counted(tmp_path, 1000, operation)
    large, _ = counted(tmp_path, 2000, operation)
    assert small_result, "the operation produced nothing"
    assert small >= 1000, f"{name}: {small} counted operations for 1000 tasks; the counters are not reached"
    # linear: about 2x; a set per task or a scan of every task per project: about 4x
    assert large <= 2.5 * small, (f"{name}: {small} operations at 1000 tasks, {large} at 2000 "
                                  f"({large / small:.2f}x): quadratic in the number of tasks")


def test_selection_keeps_graph_order_and_each_task_once(tmp_path: Path) -> None:
    graph = monorepo_graph(tmp_path, 7)
    assert graph_view.in_order(graph, ["tree:all", "p3:build", "p0:build", "p3:build"]) == \
        ["p0:build", "p3:build", "tree:all"]
    assert tasks_of_targets(graph, ["build"], {"p1", "p5"}) == ["p1:build", "p5:build"]
    assert tasks_of_targets(graph, ["all", "build"]) == list(graph.order)
    text = graph_view.render_text(graph, ["p2:build", "p0:build"])
    assert text.splitlines()[0] == "2 tasks in 2 projects"
    assert text.index("p0\n") < text.index("p2\n")
