"""nxrun/graph.py: matrix expansion, depends-on forms, cycles, topological order and task selection."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from nxrun.config import load_workspace
from nxrun.errors import ConfigError, GraphError
from nxrun.graph import TaskGraph, build_graph, task_id


def _graph(root: Path, toml: str, files: dict[str, str] | None = None) -> TaskGraph:
    (root / "nxrun.toml").write_text(textwrap.dedent(toml))
    for rel, text in (files or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return build_graph(load_workspace(root))


MATRIX = """
[projects.k.targets.build]
command = "cc -D${matrix.size} -o out/${matrix.kernel}-${matrix.size}"
inputs  = []
outputs = ["out/${matrix.kernel}-${matrix.size}"]
matrix  = { kernel = ["naive", "tiled"], size = ["64", "128"] }

[projects.k.targets.bench]
command    = "bench ${matrix.kernel}"
depends-on = ["build[kernel=${matrix.kernel}]"]
inputs     = []
outputs    = ["results/${matrix.kernel}.json"]
matrix     = { kernel = ["naive", "tiled"] }

[projects.k.targets.all]
depends-on = ["bench"]
"""


def test_task_id_lists_matrix_values_in_order():
    assert task_id("p", "t", {}) == "p:t"
    assert task_id("p", "t", {"kernel": "naive", "size": "64"}) == "p:t[kernel=naive,size=64]"


def test_matrix_expands_to_one_task_per_combination_with_values_interpolated(tmp_path: Path):
    graph = _graph(tmp_path, MATRIX)
    builds = [t for t in graph.tasks.values() if t.target == "build"]
    assert sorted(t.id for t in builds) == [
        "k:build[kernel=naive,size=128]", "k:build[kernel=naive,size=64]",
        "k:build[kernel=tiled,size=128]", "k:build[kernel=tiled,size=64]"]
    one = graph.tasks["k:build[kernel=tiled,size=64]"]
    assert one.command == "cc -D64 -o out/tiled-64" and one.outputs == ["out/tiled-64"]


def test_depends_on_with_a_selector_picks_only_matching_matrix_tasks(tmp_path: Path):
    graph = _graph(tmp_path, MATRIX)
    assert graph.tasks["k:bench[kernel=naive]"].deps == [
        "k:build[kernel=naive,size=64]", "k:build[kernel=naive,size=128]"]
    assert sorted(graph.tasks["k:all"].deps) == ["k:bench[kernel=naive]", "k:bench[kernel=tiled]"]
    assert "k:bench[kernel=naive]" in graph.tasks["k:build[kernel=naive,size=64]"].dependents


def test_topological_order_puts_every_dependency_first(tmp_path: Path):
    graph = _graph(tmp_path, MATRIX)
    position = {task: i for i, task in enumerate(graph.order)}
    assert sorted(graph.order) == sorted(graph.tasks)
    for task in graph.tasks.values():
        for dep in task.deps:
            assert position[dep] < position[task.id], (dep, task.id)


def test_resolve_accepts_an_id_project_target_a_selector_or_a_unique_target(tmp_path: Path):
    graph = _graph(tmp_path, MATRIX)
    assert graph.resolve("k:all") == ["k:all"]
    assert graph.resolve("all") == ["k:all"]
    assert graph.resolve("k:bench") == ["k:bench[kernel=naive]", "k:bench[kernel=tiled]"]
    assert graph.resolve("k:build[size=64]") == ["k:build[kernel=naive,size=64]", "k:build[kernel=tiled,size=64]"]
    assert graph.resolve("k:build[kernel=tiled,size=128]") == ["k:build[kernel=tiled,size=128]"]


@pytest.mark.parametrize("pattern, expected", [
    ("k:bulid", "no task 'k:bulid'. Did you mean 'k:build'?"),
    ("k:build[size=32]", "no task of 'k:build' has matrix values [size=32]"),
    ("k:build[size]", "matrix selector 'size' must be key=value"),
    ("^build", "is not a task; write it as project:target"),
    ("nosuch", "no task 'nosuch'"),
])
def test_resolve_errors_say_what_is_wrong(tmp_path: Path, pattern: str, expected: str):
    graph = _graph(tmp_path, MATRIX)
    with pytest.raises(GraphError) as caught:
        graph.resolve(pattern)
    assert expected in str(caught.value)


def test_a_target_name_in_several_projects_must_be_qualified(tmp_path: Path):
    graph = _graph(tmp_path, """
        [projects.a.targets.test]
        command = "true"
        outputs = []
        [projects.b.targets.test]
        command = "true"
        outputs = []
    """)
    with pytest.raises(GraphError) as caught:
        graph.resolve("test")
    assert "several projects (a, b)" in str(caught.value) and "a:test" in str(caught.value)


def test_with_dependencies_adds_the_transitive_closure_in_order(tmp_path: Path):
    graph = _graph(tmp_path, MATRIX)
    assert graph.with_dependencies(["k:bench[kernel=tiled]"]) == [
        "k:build[kernel=tiled,size=64]", "k:build[kernel=tiled,size=128]", "k:bench[kernel=tiled]"]


def test_caret_dependency_means_that_target_in_each_upstream_project(tmp_path: Path):
    graph = _graph(tmp_path, """
        [projects.lib1.targets.build]
        command = "make"
        outputs = ["lib1.a"]
        [projects.lib2.targets.build]
        command = "make"
        outputs = ["lib2.a"]
        [projects.unrelated.targets.build]
        command = "make"
        outputs = ["other.a"]
        [projects.app]
        depends-on = ["lib1", "lib2"]
        [projects.app.targets.build]
        command    = "make"
        depends-on = ["^build"]
        outputs    = ["app"]
    """)
    assert sorted(graph.tasks["app:build"].deps) == ["lib1:build", "lib2:build"]


def test_a_dependency_cycle_is_a_graph_error_naming_the_cycle(tmp_path: Path):
    with pytest.raises(GraphError) as caught:
        _graph(tmp_path, """
            [projects.p.targets.a]
            command = "true"
            depends-on = ["b"]
            [projects.p.targets.b]
            command = "true"
            depends-on = ["q:c"]
            [projects.q.targets.c]
            command = "true"
            depends-on = ["p:a"]
            [projects.q.targets.free]
            command = "true"
        """)
    message = str(caught.value)
    assert message.startswith("dependency cycle: ")
    cycle = message.splitlines()[0][len("dependency cycle: "):].split(" -> ")
    assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ["p:a", "p:b", "q:c"]
    assert "q:free" not in message and "Remove one of these depends-on entries" in message


def test_a_task_that_depends_on_itself_is_named(tmp_path: Path):
    with pytest.raises(GraphError) as caught:
        _graph(tmp_path, '[projects.p.targets.a]\ncommand = "true"\ndepends-on = ["a"]\n')
    assert "'p:a' depends on itself" in str(caught.value) and "nxrun.toml:1" in str(caught.value)


@pytest.mark.parametrize("depends_on, expected", [
    ('["biuld"]', "depends on 'biuld', but no target 'p:biuld' exists. Did you mean 'p:build'?"),
    ('["build[x=1]"]', "no task of 'p:build' has matrix values [x=1]"),
    ('["^q:build"]', "'^' takes a target name only"),
])
def test_bad_depends_on_entries_are_config_errors(tmp_path: Path, depends_on: str, expected: str):
    with pytest.raises(ConfigError) as caught:
        _graph(tmp_path, f"""
            [projects.p.targets.build]
            command = "make"
            outputs = ["out"]
            [projects.p.targets.t]
            command    = "true"
            depends-on = {depends_on}
        """)
    assert expected in str(caught.value) and "nxrun.toml:5" in str(caught.value)


def test_matrix_reference_to_an_unknown_axis_lists_the_axes(tmp_path: Path):
    with pytest.raises(ConfigError) as caught:
        _graph(tmp_path, """
            [projects.p.targets.t]
            command = "run ${matrix.sise}"
            outputs = []
            matrix  = { size = ["1"] }
        """)
    assert "uses ${matrix.sise}" in str(caught.value) and "Did you mean 'size'?" in str(caught.value)


@pytest.mark.parametrize("output", [".", ".git/hooks/x", ".nxrun/blobs"])
def test_outputs_may_not_be_the_workspace_root_git_or_the_cache(tmp_path: Path, output: str):
    with pytest.raises(ConfigError) as caught:
        _graph(tmp_path, f'[projects.p.targets.t]\ncommand = "true"\noutputs = ["{output}"]\n')
    assert "'p:t'" in str(caught.value) and "nxrun.toml:1" in str(caught.value)


def test_glob_matrix_values_are_the_stems_of_matching_files(tmp_path: Path):
    graph = _graph(tmp_path, """
        [projects.k.targets.build]
        command = "nvcc kernels/${matrix.kernel}.cu -o out/${matrix.kernel}.cubin"
        inputs  = ["kernels/${matrix.kernel}.cu"]
        outputs = ["out/${matrix.kernel}.cubin"]
        matrix  = { kernel = "glob:kernels/*.cu" }
    """, {"kernels/01_naive.cu": "", "kernels/02_tiled.cu": "", "kernels/helper.cuh": ""})
    assert sorted(graph.tasks) == ["k:build[kernel=01_naive]", "k:build[kernel=02_tiled]"]
    assert graph.tasks["k:build[kernel=02_tiled]"].inputs == ["kernels/02_tiled.cu"]
