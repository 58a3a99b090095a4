"""Every pipeline task declares the workloads files and packages its command imports.

A file a command imports but its task does not list is an input the ETag never sees: an edit to it would
leave the task a hit that restores what the old code wrote. The check follows imports transitively through
the repository's own modules (`from workloads.common import device` is the module workloads.common.device),
including imports inside functions, and covers every target of the root nxrun.toml and its includes.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
# cupy is imported only to probe for a device (device.cuda_available): its absence is a value ("cpu").
PROBE_ONLY = {"cupy"}
# Packages whose distribution has another name than the module (pkg: takes either; the distribution's name
# needs no lookup of every installed distribution).
DISTRIBUTION = {"pynvml": "nvidia-ml-py"}


def _imports(module: str) -> tuple[set[Path], set[str]]:
    """(workloads files, third-party top-level packages) that `module` imports, transitively; packages
    imported inside functions (matplotlib in plots.py, pynvml in clocks.py) count too."""
    files: set[Path] = set()
    packages: set[str] = set()
    todo = [module]
    while todo:
        parts = todo.pop().split(".")
        for depth in range(1, len(parts) + 1):  # a package's __init__ runs before its modules
            for candidate in (REPO.joinpath(*parts[:depth]).with_suffix(".py"),
                              REPO.joinpath(*parts[:depth], "__init__.py")):
                if not candidate.exists() or candidate in files or candidate == REPO / "workloads" / "__init__.py":
                    continue
                files.add(candidate)
                for node in ast.walk(ast.parse(candidate.read_text())):
                    if isinstance(node, ast.Import):
                        names = [alias.name for alias in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                        # a name that is no module resolves to no file and adds nothing
                        names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
                    else:
                        continue
                    for imported in names:
                        top = imported.split(".")[0]
                        if top == "workloads":
                            todo.append(imported)
                        elif top not in sys.stdlib_module_names and top != "__future__":
                            packages.add(top)
    return files, packages


def _targets() -> list[tuple[str, dict]]:
    root = tomllib.loads((REPO / "nxrun.toml").read_text())
    found = []
    for config in [REPO / "nxrun.toml", *(REPO / p for p in root["workspace"]["include"])]:
        for project, table in tomllib.loads(config.read_text()).get("projects", {}).items():
            for name, target in table.get("targets", {}).items():
                if "command" in target and "python -m workloads." in target["command"]:
                    found.append((f"{project}:{name}", target))
    return found


@pytest.mark.parametrize(("task", "target"), _targets(), ids=[task for task, _ in _targets()])
def test_every_task_declares_the_modules_and_packages_its_command_imports(task, target):
    module = re.search(r"python -m (\S+)", target["command"]).group(1)
    files, packages = _imports(module)
    inputs = target.get("inputs", [])
    for file in sorted(files):
        rel = str(file.relative_to(REPO))
        assert any(rel == pattern or fnmatch.fnmatch(rel, pattern.replace("**/", "*")) for pattern in inputs), \
            f"{task} imports {rel} but does not list it in inputs: an edit would not re-run it"
    for package in sorted(packages - PROBE_ONLY):
        names = {f"pkg:{package}", f"pkg:{DISTRIBUTION.get(package, package)}"}
        assert names & set(inputs), f"{task} imports {package}; add pkg:{DISTRIBUTION.get(package, package)} to its inputs"


def test_the_check_follows_a_module_imported_by_name_from_its_package():
    files, packages = _imports("workloads.common.results")  # `from workloads.common import device, provenance`
    names = {str(f.relative_to(REPO)) for f in files}
    assert {"workloads/common/device.py", "workloads/common/provenance.py", "workloads/common/clocks.py"} <= names
    assert "pynvml" in packages and "numpy" in packages  # clocks.py: numpy at the top, pynvml inside a function


def test_every_result_a_command_reads_is_a_declared_output():
    # A command that reads a folder of results (results/gemm) also takes in files an earlier kernel list or
    # rate grid left there: files no task declares, which the ETag never sees and a sandbox would not have.
    # The workspace's own graph expands the matrices, as a run does.
    from nxrun.config import load_workspace
    from nxrun.graph import build_graph

    tasks = build_graph(load_workspace(REPO)).tasks.values()
    declared = [out for task in tasks for out in task.outputs]
    for task in tasks:
        for word in (task.command or "").split():
            if not word.startswith(("results/", "build/")):
                continue
            assert any(word == out or word.startswith(out.rstrip("/") + "/") for out in declared), \
                f"{task.id} reads {word}, which is no task's declared output (nor inside one): name the files"
