"""Projects and targets -> the task DAG: matrix expansion, depends-on, cycles, order, affected.

A task is one runnable unit, `project:target` or, for a matrix target, `project:target[k=v,...]`.
Edges point from a dependency to its dependent. Analyses off the run path (cycles, affected,
exports) use a networkx DiGraph; a run orders tasks with a plain Kahn pass over the task table,
because importing networkx alone costs more than a whole no-op run may take.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable
from pathlib import Path

from .config import ProjectSpec, TargetSpec, Workspace, matrix_value_problem
from .errors import ConfigError, GraphError, did_you_mean
from .hashing import FileIndex, compile_glob, has_magic, literal_prefix
from .records import default_factory, record

_MATRIX_REF = re.compile(r"\$\{matrix\.([A-Za-z0-9_-]+)\}")
_DEP = re.compile(r"^(?P<caret>\^)?(?:(?P<project>[^:\[\]]+):)?(?P<target>[^:\[\]]+)(?:\[(?P<sel>[^\]]*)\])?$")
_SPECIAL_INPUT = ("runtime:", "pkg:", "env:")


@record
class Task:
    id: str
    project: str
    target: str
    matrix: dict[str, str]
    command: str | None
    inputs: list[str]          # workspace-relative globs ('!' excludes), runtime:/pkg:/env: names
    outputs: list[str]         # workspace-relative paths
    deps: list[str]
    env: dict[str, str]
    resources: list[str]
    cache: str
    cwd: str                   # workspace-relative folder the command runs in
    source: str                # file:line of the target
    description: str = ""
    dependents: list[str] = default_factory(list)

    @property
    def is_aggregate(self) -> bool:
        return self.command is None

    @property
    def is_bench(self) -> bool:
        """Bench tasks' JSON outputs are read after each run (run/bench_results.py): a target named
        *bench*, or outputs under a results/ folder."""
        if "bench" in self.target.lower():
            return True
        return any(part == "results" for output in self.outputs for part in output.split("/"))


def task_id(project: str, target: str, matrix: dict[str, str]) -> str:
    if not matrix:
        return f"{project}:{target}"
    return f"{project}:{target}[" + ",".join(f"{k}={v}" for k, v in matrix.items()) + "]"


def _interpolate(text: str, values: dict[str, str], spec: TargetSpec) -> str:
    def replace(match: re.Match) -> str:
        axis = match.group(1)
        if axis not in values:
            known = ", ".join(values) or "none"
            raise ConfigError(f"{spec.source}: target '{spec.project}:{spec.name}' uses ${{matrix.{axis}}} but "
                              f"its matrix axes are: {known}.{did_you_mean(axis, values)}")
        return values[axis]
    return _MATRIX_REF.sub(replace, text)


def _workspace_path(project: ProjectSpec, path: str, spec: TargetSpec, what: str) -> str:
    """A project-relative path (or `{workspace}/...`) as a normalised workspace-relative path."""
    if path.startswith("{workspace}/"):
        joined = path[len("{workspace}/"):]
    elif project.root in ("", "."):
        joined = path
    else:
        joined = f"{project.root}/{path}"
    if os.path.isabs(path):
        raise ConfigError(f"{spec.source}: {what} {path!r} of task '{spec.project}:{spec.name}' is absolute; "
                          "give it relative to the project folder (or as {workspace}/...).")
    normal = os.path.normpath(joined).replace(os.sep, "/")
    if normal == ".." or normal.startswith("../"):
        raise ConfigError(f"{spec.source}: {what} {path!r} of task '{spec.project}:{spec.name}' leads outside "
                          "the workspace; outputs and inputs must stay inside it.")
    return "" if normal == "." else normal


def _inside(outer: str, inner: str) -> bool:
    """Whether the workspace-relative path `inner` is `outer` or lies below it."""
    return inner == outer or inner.startswith(outer + "/")


def _path_order(path: str) -> str:
    # component order, so that a folder sorts right before everything below it: "out" < "out/a" <
    # "out-x", where string order would put "out-x" between "out" and "out/a". With "/" as "\0",
    # which sorts before every character a path holds, string order is component order.
    return path.replace("/", "\0")


def own_outputs(paths: list[str]) -> list[str]:
    """A task's normalised outputs in declared order, without repeats and without paths inside
    another of its outputs ("out" already covers "out/a"), so each output file is recorded once."""
    outermost: set[str] = set()
    last: str | None = None
    for path in sorted(set(paths), key=_path_order):
        if last is None or not _inside(last, path):
            outermost.add(path)
            last = path
    return [path for path in dict.fromkeys(paths) if path in outermost]


def first_output_overlap(owned: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], tuple[str, str]] | None:
    """The first two (path, owner) pairs of different owners whose paths are equal or nested, the
    outer one first; None when every path has a single owner.

    O(n log n): in component order the paths enclosing a path come before it, and everything
    between an enclosing path and it lies inside the enclosing path too; so a stack of the chain of
    enclosing paths seen so far (one owner, or a clash was already returned) finds every clash."""
    enclosing: list[tuple[str, str]] = []
    for item in sorted(owned, key=lambda pair: (_path_order(pair[0]), pair[1])):
        while enclosing and not _inside(enclosing[-1][0], item[0]):
            enclosing.pop()
        if enclosing and enclosing[-1][1] != item[1]:
            return enclosing[-1], item
        enclosing.append(item)
    return None


def _check_output_owners(workspace: Workspace, tasks: dict[str, Task]) -> None:
    """One owner per output path: two tasks whose outputs are equal or nested would delete or
    overwrite each other's files on every restore, while both report hits (Bazel and Nx refuse it
    too). Config files count as owned, so no output can swallow an nxrun.toml."""
    owned = [(path, task.id) for task in tasks.values() for path in task.outputs]
    config_owner = {}
    for config_file in workspace.config_files:
        try:
            rel = workspace.rel(config_file)
        except ValueError:
            continue
        config_owner[f"the config file {rel!r}"] = rel
        owned.append((rel, f"the config file {rel!r}"))
    clash = first_output_overlap(owned)
    if clash is None:
        return
    (outer_path, outer_owner), (inner_path, inner_owner) = clash
    if outer_owner in config_owner or inner_owner in config_owner:
        task_owner, config = (inner_owner, outer_owner) if outer_owner in config_owner else (outer_owner, inner_owner)
        task = tasks[task_owner]
        raise ConfigError(
            f"{task.source}: output {outer_path!r} of '{task.id}' is or holds {config}; a restore of the task "
            "would rewrite it. Choose an output path that holds no nxrun.toml."
        )
    outer, inner = tasks[outer_owner], tasks[inner_owner]
    if outer_path == inner_path:
        what = f"both declare the output {inner_path!r}"
    else:
        what = f"'{inner.id}' declares the output {inner_path!r}, inside the output {outer_path!r} of '{outer.id}'"
    if (outer.project, outer.target) == (inner.project, inner.target):
        fix = ("Their matrix values name the same or nested paths: list each value once, in one spelling, "
               "and put every matrix axis into the output path.")
    else:
        fix = ("Give each task its own output path, or let one task write both; a task that reads another's "
               "output names it in depends-on and declares only what it writes itself.")
    raise ConfigError(
        f"{inner.source}: tasks '{outer.id}' ({outer.source}) and '{inner.id}' ({inner.source}) claim the same "
        f"files: {what} (paths compared after resolving '.', '..' and repeated '/'). A path has one owner: "
        "otherwise restoring or cleaning one task's outputs deletes or overwrites the other's, while both "
        f"report hits. {fix}"
    )


def check_linked_output_owners(root: Path, tasks: Iterable[Task], reserved: dict[str, str] | None = None) -> None:
    """One owner per output path on disk too: a symlinked folder on an output's way (`via -> out`)
    can put one task's output inside another's, or inside a path nxrun itself owns (`reserved`:
    absolute path -> what it is, e.g. the cache folder, .git, config files), which the config
    check, comparing paths as written, cannot see. ConfigError naming the tasks and the link.

    Cheap when nothing is linked: one lstat per distinct folder above an output, and only when one
    of them is a symlink are the outputs resolved and compared where they really are."""
    root_real = os.path.realpath(root)
    is_link: dict[str, bool] = {}      # workspace-relative folder -> whether it is a symlink

    def first_link(folder: str) -> str | None:
        prefix = ""
        for part in folder.split("/") if folder else ():
            prefix = f"{prefix}/{part}" if prefix else part
            linked = is_link.get(prefix)
            if linked is None:
                try:
                    linked = is_link[prefix] = os.path.islink(os.path.join(root_real, prefix))
                except OSError:
                    linked = is_link[prefix] = False
            if linked:
                return prefix
        return None

    tasks = list(tasks)
    links: dict[str, str] = {}         # an output -> the symlinked folder on its way
    for task in tasks:
        for path in task.outputs:
            link = first_link(path.rpartition("/")[0])
            if link is not None:
                links[path] = link
    if not links:
        return
    real: dict[tuple[str, str], str] = {}   # (real path, owner) -> the output as declared
    resolved_folders: dict[str, str] = {}
    for task in tasks:
        for path in task.outputs:
            folder, _, name = path.rpartition("/")
            if path in links:
                if folder not in resolved_folders:
                    resolved_folders[folder] = os.path.realpath(os.path.join(root_real, folder))
                where = os.path.join(resolved_folders[folder], name)
            else:
                where = os.path.join(root_real, path)
            real[(where.replace(os.sep, "/"), task.id)] = path
    for where, what in (reserved or {}).items():
        real[(os.path.realpath(where).replace(os.sep, "/"), what)] = what
    clash = first_output_overlap(real)
    if clash is None:
        return
    by_id = {t.id: t for t in tasks}
    (outer_real, outer_id), (inner_real, inner_id) = clash
    outer_path, inner_path = real[(outer_real, outer_id)], real[(inner_real, inner_id)]
    through = [f"'{links[p]}' -> {os.readlink(os.path.join(root_real, links[p]))!r}"
               for p in dict.fromkeys((outer_path, inner_path)) if p in links]
    link_text = f"through the symlinked folder {' and '.join(through)}"
    if outer_id not in by_id or inner_id not in by_id:
        task_id, what = (inner_id, outer_id) if outer_id not in by_id else (outer_id, inner_id)
        task = by_id[task_id]
        path = real[(inner_real, inner_id) if task_id == inner_id else (outer_real, outer_id)]
        raise ConfigError(
            f"{task.source}: output {path!r} of '{task.id}' is, holds or lies in {what} on disk, {link_text}. "
            "Clearing or restoring the output would delete or rewrite it. Choose an output path that no "
            "link leads there, or remove the link."
        )
    outer, inner = by_id[outer_id], by_id[inner_id]
    relation = "the same path as" if outer_real == inner_real else "a path inside"
    raise ConfigError(
        f"{inner.source}: tasks '{outer.id}' ({outer.source}) and '{inner.id}' ({inner.source}) claim the same "
        f"files: the output {inner_path!r} of '{inner.id}' is {relation} the output {outer_path!r} of "
        f"'{outer.id}' on disk, {link_text}. A path has one owner: otherwise restoring or cleaning one task's "
        "outputs deletes or overwrites the other's, while both report hits. Give each task an output path "
        "that no link leads into another's, or remove the link."
    )


class TaskGraph:
    """Every task of the workspace and the dependency DAG between them."""

    def __init__(self, workspace: Workspace, tasks: dict[str, Task], order: list[str],
                 warnings: list[str], file_index: FileIndex, matrix_globs: dict[str, list[str]] | None = None):
        self.workspace = workspace
        self.matrix_globs = matrix_globs or {}   # "glob:" matrix pattern -> stems it expanded to
        self.tasks = tasks
        self.order = order            # a topological order of all tasks
        self.warnings = warnings
        self.file_index = file_index
        self._position = {task_id: i for i, task_id in enumerate(order)}

    # -- selection -------------------------------------------------------------------------
    def resolve(self, pattern: str) -> list[str]:
        """Task ids for 'project:target', 'project:target[k=v]', 'target' (unique) or a task id."""
        if pattern in self.tasks:
            return [pattern]
        match = _DEP.match(pattern)
        if not match or match.group("caret"):
            raise GraphError(f"'{pattern}' is not a task; write it as project:target.")
        project, target, selector = match.group("project"), match.group("target"), match.group("sel")
        if project is None:
            owners = sorted({t.project for t in self.tasks.values() if t.target == target})
            if len(owners) == 1:
                project = owners[0]
            elif owners:
                raise GraphError(f"target '{target}' exists in several projects ({', '.join(owners)}); "
                                 f"name one, e.g. {owners[0]}:{target}, or use `nxrun run-many -t {target}`.")
            else:
                targets = {f"{t.project}:{t.target}" for t in self.tasks.values()}
                raise GraphError(f"no task '{pattern}'.{did_you_mean(pattern, targets)} "
                                 "`nxrun graph` lists every task.")
        wanted = self._select(project, target, selector, context=f"'{pattern}'")
        return wanted

    def _select(self, project: str, target: str, selector: str | None, context: str) -> list[str]:
        candidates = [t for t in self.tasks.values() if t.project == project and t.target == target]
        if not candidates:
            known = {f"{t.project}:{t.target}" for t in self.tasks.values()}
            raise GraphError(f"{context}: no task '{project}:{target}'."
                             f"{did_you_mean(f'{project}:{target}', known)} `nxrun graph` lists every task.")
        if selector:
            wanted = {}
            for pair in selector.split(","):
                key, sep, value = pair.partition("=")
                if not sep:
                    raise GraphError(f"{context}: matrix selector '{pair}' must be key=value.")
                wanted[key.strip()] = value.strip()
            candidates = [t for t in candidates if all(t.matrix.get(k) == v for k, v in wanted.items())]
            if not candidates:
                raise GraphError(f"{context}: no task of '{project}:{target}' has matrix values [{selector}].")
        return sorted((t.id for t in candidates), key=self._position.__getitem__)

    def with_dependencies(self, ids: list[str]) -> list[str]:
        """ids and everything they depend on, in topological order."""
        wanted: set[str] = set()
        stack = list(ids)
        while stack:
            current = stack.pop()
            if current in wanted:
                continue
            wanted.add(current)
            stack.extend(self.tasks[current].deps)
        return sorted(wanted, key=self._position.__getitem__)

    def to_networkx(self):
        import networkx as nx

        graph = nx.DiGraph()
        for task in self.tasks.values():
            graph.add_node(task.id, project=task.project, target=task.target)
            for dep in task.deps:
                graph.add_edge(dep, task.id)
        return graph


def _matrix_glob_files(pattern: str, file_index: FileIndex) -> list[str]:
    regex = compile_glob(pattern)
    return [f for f in file_index.files_under(literal_prefix(pattern)) if regex.match(f)] \
        if has_magic(pattern) else ([pattern] if (file_index.root / pattern).is_file() else [])


def _stem(path: str) -> str:
    return path.rpartition("/")[2].split(".")[0]


def matrix_glob_stems(pattern: str, file_index: FileIndex) -> list[str]:
    """Stems of the files a workspace-relative `glob:` matrix pattern matches."""
    return sorted({_stem(f) for f in _matrix_glob_files(pattern, file_index)})


def _matrix_values(spec: TargetSpec, project: ProjectSpec, file_index: FileIndex,
                   matrix_globs: dict[str, list[str]]) -> list[dict[str, str]]:
    axes: list[tuple[str, list[str]]] = []
    for axis, values in spec.matrix.items():
        if isinstance(values, str):
            pattern = _workspace_path(project, values[len("glob:"):], spec, "matrix glob")
            files = _matrix_glob_files(pattern, file_index)
            for path in files:
                problem = matrix_value_problem(_stem(path), from_file_name=True)
                if problem:
                    raise ConfigError(
                        f"{spec.source}: matrix axis '{axis}' of '{spec.project}:{spec.name}' is {values!r}, which "
                        f"matches the file {path!r}; its stem {_stem(path)!r} cannot be a matrix value: it "
                        f"{problem}. A matrix value is pasted into the command, paths and task ids as it is. "
                        "Rename the file, narrow the pattern so that it does not match, or list the values "
                        f"(matrix = {{ {axis} = [\"a\", \"b\"] }}) instead of the glob."
                    )
            stems = sorted({_stem(path) for path in files})
            matrix_globs[pattern] = stems
            if not stems:
                raise ConfigError(f"{spec.source}: matrix axis '{axis}' of '{spec.project}:{spec.name}' is "
                                  f"{values!r}, which matches no file. Fix the pattern.")
            axes.append((axis, stems))
        else:
            axes.append((axis, list(values)))
    if not axes:
        return [{}]
    return [dict(zip([a for a, _ in axes], combo)) for combo in itertools.product(*[v for _, v in axes])]


def _resolve_inputs(spec: TargetSpec, project: ProjectSpec, workspace: Workspace, values: dict[str, str],
                    seen: tuple[str, ...] = ()) -> list[str]:
    raw = spec.inputs if spec.inputs is not None else workspace.default_inputs
    resolved: list[str] = []

    def add(entry: str, relative_to_workspace: bool, chain: tuple[str, ...]) -> None:
        entry = _interpolate(entry, values, spec)
        if entry.startswith(_SPECIAL_INPUT):
            kind, _, name = entry.partition(":")
            if not name:
                raise ConfigError(f"{spec.source}: input '{entry}' of '{spec.project}:{spec.name}' names nothing "
                                  f"after '{kind}:'.")
            if kind == "runtime" and name not in workspace.runtime:
                raise ConfigError(f"{spec.source}: input 'runtime:{name}' of '{spec.project}:{spec.name}' names an "
                                  f"undefined probe.{did_you_mean(name, workspace.runtime)} Define it under "
                                  "[runtime] in the root nxrun.toml.")
            resolved.append(entry)
            return
        named = project.named_inputs.get(entry)
        named_relative_to_workspace = False
        if named is None and entry in workspace.named_inputs:
            named = workspace.named_inputs[entry]
            named_relative_to_workspace = True
        if named is not None and not has_magic(entry) and "/" not in entry:
            if entry in chain:
                raise ConfigError(f"{spec.source}: named input '{entry}' refers to itself "
                                  f"({' -> '.join(chain + (entry,))}).")
            for item in named:
                add(item, named_relative_to_workspace, chain + (entry,))
            return
        negate = entry.startswith("!")
        body = entry[1:] if negate else entry
        if relative_to_workspace and not body.startswith("{workspace}/"):
            body = "{workspace}/" + body
        path = _workspace_path(project, body, spec, "input")
        resolved.append(("!" if negate else "") + path)

    for entry in raw:
        add(entry, False, seen)
    return resolved


def _cache_exclusion(workspace: Workspace) -> list[str]:
    try:
        return [workspace.cache_dir.relative_to(workspace.root).as_posix()]
    except ValueError:
        return []


def new_file_index(workspace: Workspace, tasks: dict[str, Task]) -> FileIndex:
    file_index = FileIndex(workspace.root, _cache_exclusion(workspace))
    file_index.set_excluded_outputs(o for t in tasks.values() for o in t.outputs)
    return file_index


def build_graph(workspace: Workspace) -> TaskGraph:
    """Expand every target into tasks, resolve depends-on, and order the DAG."""
    excluded = _cache_exclusion(workspace)
    file_index = FileIndex(workspace.root, excluded)
    warnings: list[str] = []
    tasks: dict[str, Task] = {}
    by_target: dict[tuple[str, str], list[Task]] = {}
    pending_deps: list[tuple[Task, TargetSpec, dict[str, str], list[str]]] = []
    matrix_globs: dict[str, list[str]] = {}

    for project in workspace.projects.values():
        for spec in project.targets.values():
            for values in _matrix_values(spec, project, file_index, matrix_globs):
                outputs = []
                for output in spec.outputs:
                    path = _workspace_path(project, _interpolate(output, values, spec), spec, "output")
                    if path in ("", ".git") or path.startswith(".git/"):
                        raise ConfigError(f"{spec.source}: output {output!r} of '{spec.project}:{spec.name}' "
                                          "would be the workspace root or .git; name a file or folder inside.")
                    for cache_rel in excluded:
                        if path == cache_rel or path.startswith(cache_rel + "/") or cache_rel.startswith(path + "/"):
                            raise ConfigError(f"{spec.source}: output {output!r} of '{spec.project}:{spec.name}' "
                                              "overlaps the nxrun cache folder; choose another path.")
                    outputs.append(path)
                outputs = own_outputs(outputs)
                cwd = project.root if spec.cwd is None else _workspace_path(
                    project, _interpolate(spec.cwd, values, spec), spec, "cwd")
                task = Task(
                    id=task_id(project.name, spec.name, values),
                    project=project.name,
                    target=spec.name,
                    matrix=values,
                    command=_interpolate(spec.command, values, spec) if spec.command else None,
                    inputs=[] if spec.command is None and spec.inputs is None
                    else _resolve_inputs(spec, project, workspace, values),
                    outputs=outputs,
                    deps=[],
                    env={k: _interpolate(v, values, spec) for k, v in spec.env.items()},
                    resources=list(spec.resources),
                    cache=spec.cache,
                    cwd=cwd or ".",
                    source=spec.source,
                    description=spec.description,
                )
                tasks[task.id] = task
                by_target.setdefault((project.name, spec.name), []).append(task)
                pending_deps.append((task, spec, values, [_interpolate(d, values, spec) for d in spec.depends_on]))

    _check_output_owners(workspace, tasks)
    all_targets = {f"{p}:{t}" for p, t in by_target}
    for task, spec, _values, deps in pending_deps:
        project = workspace.projects[task.project]
        found: list[str] = []
        for dep in deps:
            match = _DEP.match(dep.strip())
            if not match:
                raise ConfigError(f"{spec.source}: depends-on entry {dep!r} of '{task.id}' is not "
                                  "'target', 'project:target', '^target' or 'target[key=value]'.")
            dep_project, dep_target, selector = match.group("project"), match.group("target"), match.group("sel")
            if match.group("caret"):
                if dep_project:
                    raise ConfigError(f"{spec.source}: '{dep}' of '{task.id}': '^' takes a target name only "
                                      "('^build' = build in each project this project depends on).")
                for upstream in project.depends_on:
                    for t in by_target.get((upstream, dep_target), []):
                        if not selector or _selector_matches(t, selector):
                            found.append(t.id)
                continue
            dep_project = dep_project or task.project
            candidates = by_target.get((dep_project, dep_target))
            if not candidates:
                name = f"{dep_project}:{dep_target}"
                raise ConfigError(f"{spec.source}: task '{task.id}' depends on '{dep}', but no target "
                                  f"'{name}' exists.{did_you_mean(name, all_targets)} Fix the name or add "
                                  "the target.")
            chosen = [t.id for t in candidates if not selector or _selector_matches(t, selector)]
            if not chosen:
                raise ConfigError(f"{spec.source}: task '{task.id}' depends on '{dep}', but no task of "
                                  f"'{dep_project}:{dep_target}' has matrix values [{selector}].")
            found.extend(chosen)
        task.deps = list(dict.fromkeys(d for d in found if d != task.id))
        if task.id in found:
            raise GraphError(f"{spec.source}: task '{task.id}' depends on itself; remove it from depends-on.")
        for dep in task.deps:
            tasks[dep].dependents.append(task.id)

    order = _topological_order(tasks)
    file_index.set_excluded_outputs(o for t in tasks.values() for o in t.outputs)
    return TaskGraph(workspace, tasks, order, warnings, file_index, matrix_globs)


def _selector_matches(task: Task, selector: str) -> bool:
    for pair in selector.split(","):
        key, _, value = pair.partition("=")
        if task.matrix.get(key.strip()) != value.strip():
            return False
    return True


def _topological_order(tasks: dict[str, Task]) -> list[str]:
    """Kahn's algorithm in declaration order (stable output); on a cycle, networkx names it."""
    indegree = {task_id: len(task.deps) for task_id, task in tasks.items()}
    ready = [task_id for task_id, degree in indegree.items() if degree == 0]
    order: list[str] = []
    while ready:
        current = ready.pop(0) if len(ready) < 64 else ready.pop()
        order.append(current)
        for child in tasks[current].dependents:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    if len(order) != len(tasks):
        import networkx as nx

        graph = nx.DiGraph()
        for task in tasks.values():
            for dep in task.deps:
                graph.add_edge(dep, task.id)
        cycle = nx.find_cycle(graph)
        path = " -> ".join([edge[0] for edge in cycle] + [cycle[0][0]])
        first = tasks[cycle[0][0]]
        raise GraphError(f"dependency cycle: {path}\n  (declared at {first.source}). Remove one of these "
                         "depends-on entries to break the cycle.")
    return order


def changed_files(root: Path, base: str, head: str | None = None) -> list[str]:
    """Files changed between `base` and HEAD (or `head`), plus uncommitted and untracked ones."""
    def git(*args: str) -> list[str]:
        import subprocess

        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        if result.returncode != 0:
            raise GraphError(f"git {' '.join(args)} failed in {root}: {result.stderr.strip()} "
                             "(is this a git repository, and does the base ref exist?)")
        return [line for line in result.stdout.splitlines() if line]

    files = set(git("diff", "--name-only", "--relative", f"{base}...{head or 'HEAD'}"))
    if head is None:
        files.update(git("diff", "--name-only", "--relative", "HEAD"))
        files.update(git("ls-files", "--others", "--exclude-standard"))
    return sorted(files)


def affected_tasks(graph: TaskGraph, changed: list[str]) -> set[str]:
    """Tasks whose inputs or config include a changed file, and everything downstream of them."""
    cache_rel = _cache_exclusion(graph.workspace)
    changed = [c for c in changed if not any(c == r or c.startswith(r + "/") for r in cache_rel)]
    config_files = {graph.workspace.rel(p) for p in graph.workspace.config_files}
    touched_configs = {c for c in changed if c in config_files}
    direct: set[str] = set()
    for task in graph.tasks.values():
        source_file = task.source.rsplit(":", 1)[0]
        if source_file in touched_configs:
            direct.add(task.id)
            continue
        includes = [compile_glob(p) for p in task.inputs if not p.startswith(("!", *_SPECIAL_INPUT))]
        excludes = [compile_glob(p[1:]) for p in task.inputs if p.startswith("!")]
        for path in changed:
            if any(rx.match(path) for rx in includes) and not any(rx.match(path) for rx in excludes):
                direct.add(task.id)
                break
    import networkx as nx

    dag = graph.to_networkx()
    return direct | {d for task_id in direct for d in nx.descendants(dag, task_id)}
