"""A cached copy of the parsed workspace and expanded task graph, so that a run whose config did
not change skips TOML parsing and graph expansion (as a build daemon keeps its project graph).

The snapshot is keyed on everything the graph is computed from: the nxrun version and sources,
the workspace path, the bytes of every config file, what each include/projects glob and each
`glob:` matrix axis matched, and the environment that config reads. Any difference rebuilds it,
so a stale snapshot can never be used; a damaged or unreadable one is simply rebuilt.
"""

from __future__ import annotations

import glob as _glob
import json
import os
from pathlib import Path

from . import __version__
from .config import CONFIG_NAME, ProjectSpec, Workspace, load_workspace
from .graph import Task, TaskGraph, build_graph, matrix_glob_stems, new_file_index
from .hashing import digest_bytes
from .records import as_dict
from .workspace_root import cache_dir_guess as _cache_dir_guess

SNAPSHOT_FORMAT = 3
_CODE = [Path(__file__).with_name(name) for name in ("config.py", "graph.py", "snapshot.py")]


def _key(root: Path, root_bytes: bytes) -> str:
    code = ";".join(f"{p.stat().st_mtime_ns}:{p.stat().st_size}" for p in _CODE)
    parts = [str(SNAPSHOT_FORMAT), __version__, code, str(root), os.environ.get("NXRUN_CACHE_DIR", ""),
             str(os.cpu_count())]
    return digest_bytes("\0".join(parts).encode() + b"\0" + root_bytes)


def _still_valid(data: dict, graph: TaskGraph) -> bool:
    for path_text, digest in data["files"].items():
        try:
            if digest_bytes(Path(path_text).read_bytes()) != digest:
                return False
        except OSError:
            return False
    root = graph.workspace.root
    for pattern, matches in data["discovered"]:
        if sorted(_glob.glob(str(root / pattern), recursive=True)) != matches and \
                sorted(p for p in _glob.glob(str(root / pattern)) if (Path(p) / CONFIG_NAME).is_file()) != matches:
            return False
    return all(matrix_glob_stems(pattern, graph.file_index) == stems for pattern, stems in data["matrix_globs"].items())


def _encode(graph: TaskGraph, key: str) -> str:
    ws = graph.workspace
    return json.dumps({
        "format": SNAPSHOT_FORMAT, "key": key,
        "files": {str(p): digest_bytes(p.read_bytes()) for p in ws.config_files[1:]},
        "discovered": ws.discovered,
        "matrix_globs": graph.matrix_globs,
        "workspace": {
            "root": str(ws.root), "cache_dir": str(ws.cache_dir), "parallel": ws.parallel, "restore": ws.restore,
            "default_inputs": ws.default_inputs, "named_inputs": ws.named_inputs, "runtime": ws.runtime,
            "remote": ws.remote, "config_files": [str(p) for p in ws.config_files], "gpus": ws.gpus,
            "executor": ws.executor,
            # without their target specs: only build_graph reads those, and they would double the
            # snapshot; a graph from the snapshot has targets=None, so a new reader fails loudly
            "projects": {name: {**as_dict(project), "targets": None} for name, project in ws.projects.items()},
        },
        "tasks": [as_dict(graph.tasks[t]) for t in graph.order],
        "warnings": graph.warnings,
    }, separators=(",", ":"))


def _decode(data: dict) -> TaskGraph:
    w = data["workspace"]
    projects = {}
    for name, project in w["projects"].items():
        projects[name] = ProjectSpec(**project)
    workspace = Workspace(
        root=Path(w["root"]), cache_dir=Path(w["cache_dir"]), parallel=w["parallel"], restore=w["restore"],
        default_inputs=w["default_inputs"], named_inputs=w["named_inputs"], runtime=w["runtime"],
        remote=w["remote"], projects=projects, config_files=[Path(p) for p in w["config_files"]],
        discovered=[tuple(d) for d in data["discovered"]],
        gpus=tuple(w["gpus"]) if w["gpus"] is not None else None, executor=w["executor"])
    tasks = {t["id"]: Task(**t) for t in data["tasks"]}
    order = [t["id"] for t in data["tasks"]]
    return TaskGraph(workspace, tasks, order, data["warnings"], new_file_index(workspace, tasks),
                     data["matrix_globs"])


def load_graph(root: Path) -> TaskGraph:
    """The workspace's task graph, from the snapshot when nothing it depends on changed."""
    root = root.resolve()
    try:
        root_bytes = (root / CONFIG_NAME).read_bytes()
    except OSError:
        return build_graph(load_workspace(root))
    snapshot = _cache_dir_guess(root, root_bytes) / "graph-snapshot.json"
    key = _key(root, root_bytes)
    try:
        data = json.loads(snapshot.read_bytes())
        if data.get("format") == SNAPSHOT_FORMAT and data.get("key") == key:
            graph = _decode(data)
            if _still_valid(data, graph):
                return graph
    except (OSError, ValueError, KeyError, TypeError):
        pass
    graph = build_graph(load_workspace(root))
    temp = snapshot.with_name(f"{snapshot.name}.{os.getpid()}.tmp")
    try:
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        temp.write_text(_encode(graph, key), encoding="utf-8")
        os.replace(temp, snapshot)
    except OSError:   # a full or read-only disk: the snapshot is only a shortcut
        try:
            temp.unlink()
        except OSError:
            pass
    return graph
