"""nxrun.toml -> a typed, validated workspace model.

Parsing is strict: an unknown key is an error with a did-you-mean, and every error names the
file and line it comes from and says how to fix it. Nothing here touches the file system beyond
reading config files and listing project folders.
"""

from __future__ import annotations

import glob as _glob
import os
import re
import string
from pathlib import Path

from .errors import ConfigError, did_you_mean
from .records import default_factory, record
from .workspace_root import CONFIG_NAME, find_workspace_root  # noqa: F401 (part of this module's interface)

CACHE_MODES = ("always", "hardware", "never")
RESTORE_MODES = ("auto", "copy", "hardlink")
EXECUTORS = ("local", "ray")   # nxrun/executors/

WORKSPACE_KEYS = {"cache-dir", "parallel", "include", "projects", "restore", "default-inputs", "executor",
                  "gpus", "ray-address"}
REMOTE_KEYS = {
    "url", "read-only", "write-namespace", "read-namespaces", "endpoint-url", "region",
    "connect-timeout", "read-timeout", "required", "max-concurrency", "signing-key-env",
    "outage-budget",
}
TOP_KEYS_ROOT = {"workspace", "remote", "named-inputs", "runtime", "projects"}
TOP_KEYS_INCLUDED = {"projects", "named-inputs", "runtime"}
TOP_KEYS_PROJECT_FILE = {"project", "targets", "named-inputs"}
PROJECT_KEYS = {"root", "depends-on", "targets", "description", "name"}
TARGET_KEYS = {
    "command", "inputs", "outputs", "depends-on", "env", "resources", "cache", "matrix",
    "description", "cwd", "gpus",
}

# A matrix value is pasted verbatim into the command (run by a shell), into paths and input globs,
# and into task ids and depends-on selectors. It is data, so it may hold only characters that mean
# nothing to a shell in any quoting context (bare, inside "..." or '...', or handed on to `sh -c`),
# nothing to a glob, and nothing to a task id: no $ ` \ " ' ! ; & | < > ( ) { } [ ] * ? ~ # , space
# or control character. Refusing the rest, rather than quoting it, never changes what a working
# command means (a quote added inside the author's own quotes would).
MATRIX_VALUE_CHARS = frozenset(string.ascii_letters + string.digits + "_.+-@%=:/")
MATRIX_VALUE_RULE = "letters, digits and _ . + - @ % = : / (ASCII)"
_CHAR_NAMES = {" ": "a space", "\t": "a tab", "\n": "a newline", "\r": "a carriage return"}


def matrix_value_problem(value: str, *, from_file_name: bool = False) -> str | None:
    """Why `value` cannot be a matrix value (a phrase), or None when it can.

    A value taken from a file name (a `glob:` axis) may not start with '-' either: a command would
    read it as an option. A value written in a list may ('-O2'): its author writes the command too.
    """
    if not value:
        return "is empty"
    for char in value:
        if char not in MATRIX_VALUE_CHARS:
            shown = _CHAR_NAMES.get(char, repr(char))
            return f"holds {shown} (a matrix value may hold only {MATRIX_VALUE_RULE})"
    if from_file_name and value.startswith("-"):
        return "starts with '-', which a command would read as an option"
    return None


@record
class TargetSpec:
    """A target as written in a config file, before matrix expansion."""

    project: str
    name: str
    command: str | None
    inputs: list[str] | None          # None: the project's default inputs
    outputs: list[str]
    depends_on: list[str]
    env: dict[str, str]
    resources: list[str]
    cache: str
    matrix: dict[str, list[str] | str]
    description: str
    cwd: str | None                   # workspace-relative; None: the project root
    source: str                       # "file:line" where the target is declared
    gpus: int = 0                     # GPUs it takes at once (`gpus = N`; `resources = ["gpu"]` is 1)


@record
class ProjectSpec:
    name: str
    root: str                         # workspace-relative posix path ("." for the workspace root)
    depends_on: list[str]
    targets: dict[str, TargetSpec] | None   # None in a graph loaded from its snapshot (snapshot.py)
    source: str
    named_inputs: dict[str, list[str]] = default_factory(dict)


@record
class Workspace:
    root: Path
    cache_dir: Path
    parallel: int
    restore: str
    default_inputs: list[str]
    named_inputs: dict[str, list[str]]
    runtime: dict[str, str]
    remote: dict
    projects: dict[str, ProjectSpec]
    config_files: list[Path]
    # (pattern, matches) of every include/projects glob: a cached graph is valid only while these hold
    discovered: list[tuple[str, list[str]]] = default_factory(list)
    executor: str = "local"       # what runs cache misses (nxrun/executors/); --executor, NXRUN_EXECUTOR win
    ray_address: str | None = None   # the Ray cluster of `executor = "ray"`; RAY_ADDRESS wins
    # [workspace] gpus as (value, "file:line"): "auto", a count or ids (run/gpus.py); None when unset
    gpus: tuple | None = None

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


# ---------------------------------------------------------------------------- locating lines

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def _split_dotted(text: str) -> list[str]:
    """Split a TOML dotted key on dots outside quotes."""
    parts, current, quote = [], [], None
    for char in text:
        if quote:
            if char == quote:
                quote = None
            current.append(char)
        elif char in "\"'":
            quote = char
            current.append(char)
        elif char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


class _Source:
    """A config file's text, for turning a TOML table path and key into a line number."""

    def __init__(self, path: Path, text: str, root: Path):
        self.path = path
        self.lines = text.splitlines()
        self._headers: dict[tuple[str, ...], int] | None = None
        try:
            self.display = path.relative_to(root).as_posix()
        except ValueError:
            self.display = str(path)

    def _header_lines(self) -> dict[tuple[str, ...], int]:
        """Table path -> line of its [header], indexed once per file (a lookup per target must not
        rescan the file: a workspace of thousands of targets would parse in quadratic time)."""
        if self._headers is None:
            self._headers = {}
            implicit: dict[tuple[str, ...], int] = {}
            for number, line in enumerate(self.lines, 1):
                match = _HEADER.match(line)
                if match:
                    parts = tuple(p.strip().strip('"').strip("'") for p in _split_dotted(match.group(1)))
                    self._headers.setdefault(parts, number)
                    for end in range(1, len(parts)):
                        implicit.setdefault(parts[:end], number)
            # a table with no header of its own ([projects.p] made by [projects.p.targets.t]) is
            # declared where its first sub-table is
            for parts, number in implicit.items():
                self._headers.setdefault(parts, number)
        return self._headers

    def line_of(self, table: list[str], key: str | None = None) -> int:
        """Best-effort line of `key` inside `[table]` (or of the table header itself)."""
        header_line = self._header_lines().get(tuple(table), 0) if table else 0
        if key is None:
            return header_line or 1
        key_pattern = re.compile(r"^\s*(\"?)" + re.escape(key) + r"\1\s*=")
        for number in range(header_line + 1 if header_line else 1, len(self.lines) + 1):
            line = self.lines[number - 1]
            if header_line and number > header_line and re.match(r"^\s*\[", line):
                break
            if key_pattern.match(line):
                return number
        # dotted keys or inline tables: fall back to any mention of the key
        for number, line in enumerate(self.lines, 1):
            if re.search(r"(^|[\s.{,])\"?" + re.escape(key) + r"\"?\s*=", line):
                return number
        return header_line or 1

    def where(self, table: list[str], key: str | None = None) -> str:
        return f"{self.display}:{self.line_of(table, key)}"


def _load_toml(path: Path, root: Path) -> tuple[dict, _Source]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found. Create it with `nxrun init` or fix the path.") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc}). Save the file as UTF-8.") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a TOML file. Name the file itself (e.g. "
                          f"'{path.name}/tasks.toml', or a glob such as '{path.name}/*.toml').") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror}). Fix its permissions or the path.") from None
    import tomllib  # only when a config is parsed: a run from the graph snapshot never needs it

    source = _Source(path, text, root)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column (\d+)\)", message)
        if match:
            line, col = match.groups()
            reason = message[: match.start()].strip()
            context = source.lines[int(line) - 1] if 0 < int(line) <= len(source.lines) else ""
            raise ConfigError(
                f"{source.display}:{line}:{col}: TOML syntax error: {reason}\n    {context}\n"
                f"    {' ' * (int(col) - 1)}^\nFix the syntax at that position (see https://toml.io)."
            ) from None
        raise ConfigError(f"{source.display}: TOML syntax error: {message}") from None
    return data, source


def _check_keys(table: dict, allowed: set[str], source: _Source, path: list[str], what: str) -> None:
    for key in table:
        if key not in allowed:
            hint = did_you_mean(key, allowed)
            raise ConfigError(
                f"{source.where(path, key)}: unknown key '{key}' in {what}.{hint}"
                f" Allowed keys: {', '.join(sorted(allowed))}."
            )


def _expect(value, kind, source: _Source, path: list[str], key: str, what: str):
    if not isinstance(value, kind):
        names = {str: "a string", list: "a list", dict: "a table", int: "an integer", bool: "true or false"}
        expected = names.get(kind, getattr(kind, "__name__", str(kind)))
        raise ConfigError(
            f"{source.where(path, key)}: '{key}' in {what} must be {expected}, "
            f"not {type(value).__name__} ({value!r})."
        )
    return value


def _string_list(value, source: _Source, path: list[str], key: str, what: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    _expect(value, list, source, path, key, what)
    for item in value:
        if not isinstance(item, str):
            raise ConfigError(
                f"{source.where(path, key)}: every entry of '{key}' in {what} must be a string; got {item!r}."
            )
    return list(value)


def _string_table(value, source: _Source, path: list[str], key: str, what: str) -> dict[str, str]:
    _expect(value, dict, source, path, key, what)
    result = {}
    for name, item in value.items():
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise ConfigError(
                f"{source.where(path, key)}: '{key}.{name}' in {what} must be a string or number; got {item!r}."
            )
        result[name] = str(item)
    return result


# ---------------------------------------------------------------------------- parsing

def _parse_target(project: str, name: str, table: dict, source: _Source, path: list[str]) -> TargetSpec:
    what = f"target '{project}:{name}'"
    _expect(table, dict, source, path[:-1], name, what)
    _check_keys(table, TARGET_KEYS, source, path, what)
    command = table.get("command")
    if command is not None:
        _expect(command, str, source, path, "command", what)
        if not command.strip():
            raise ConfigError(f"{source.where(path, 'command')}: {what} has an empty command. "
                              "Give it a shell command, or remove the key for an aggregate target.")
    cache = table.get("cache", "always")
    if cache not in CACHE_MODES:
        raise ConfigError(
            f"{source.where(path, 'cache')}: {what} has cache = {cache!r}; use one of "
            f"{', '.join(repr(m) for m in CACHE_MODES)}.{did_you_mean(str(cache), CACHE_MODES)}"
        )
    matrix_raw = table.get("matrix", {})
    _expect(matrix_raw, dict, source, path, "matrix", what)
    matrix: dict[str, list[str] | str] = {}
    for axis, values in matrix_raw.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", axis):
            raise ConfigError(f"{source.where(path, 'matrix')}: matrix axis {axis!r} of {what} must be a "
                              "plain name (letters, digits, '_', '-').")
        if isinstance(values, str):
            if not values.startswith("glob:"):
                raise ConfigError(
                    f"{source.where(path, 'matrix')}: matrix axis '{axis}' of {what} is a string; give a "
                    f"list of values, or \"glob:PATTERN\" for one value per matching file's stem."
                )
            matrix[axis] = values
        elif isinstance(values, list) and values:
            if any(isinstance(v, (dict, list)) for v in values):
                raise ConfigError(f"{source.where(path, 'matrix')}: matrix axis '{axis}' of {what} must "
                                  "list plain values (strings or numbers).")
            matrix[axis] = [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
            _check_matrix_list(matrix[axis], axis, what, source.where(path, "matrix"))
        else:
            raise ConfigError(f"{source.where(path, 'matrix')}: matrix axis '{axis}' of {what} must be a "
                              "non-empty list or \"glob:PATTERN\".")
    gpus = _target_gpus(table, source, path, what)
    inputs = table.get("inputs")
    cwd = table.get("cwd")
    if cwd is not None:
        _expect(cwd, str, source, path, "cwd", what)
    return TargetSpec(
        project=project,
        name=name,
        command=command,
        inputs=None if inputs is None else _string_list(inputs, source, path, "inputs", what),
        outputs=_string_list(table.get("outputs", []), source, path, "outputs", what),
        depends_on=_string_list(table.get("depends-on", []), source, path, "depends-on", what),
        env=_string_table(table.get("env", {}), source, path, "env", what),
        resources=_string_list(table.get("resources", []), source, path, "resources", what),
        cache=cache,
        matrix=matrix,
        description=str(table.get("description", "")),
        cwd=cwd,
        source=source.where(path),
        gpus=gpus,
    )


def _target_gpus(table: dict, source: _Source, path: list[str], what: str) -> int:
    """How many GPUs a target takes at once: `gpus = N`, else 1 when it names the `gpu` resource."""
    resources = table.get("resources", [])
    names_gpu = resources == "gpu" or (isinstance(resources, list) and "gpu" in resources)
    if "gpus" not in table:
        return 1 if names_gpu else 0
    gpus = table["gpus"]
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise ConfigError(f"{source.where(path, 'gpus')}: {what} has gpus = {gpus!r}; give the number of GPUs it "
                          "takes at once as a whole number, 1 or more (e.g. gpus = 2), or leave the key out for "
                          "none.")
    return gpus


def _check_matrix_list(values: list[str], axis: str, what: str, where: str) -> None:
    seen: set[str] = set()
    for value in values:
        problem = matrix_value_problem(value)
        if problem:
            raise ConfigError(
                f"{where}: matrix value {value!r} of axis '{axis}' of {what} {problem}. Matrix values are "
                "pasted into the command, paths and task ids as they are, so they must be plain names. "
                "Use a plain name and let the command or a script map it to what it stands for."
            )
        if value in seen:
            raise ConfigError(f"{where}: matrix axis '{axis}' of {what} lists {value!r} twice; list each "
                              "value once.")
        seen.add(value)


_PROJECT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _parse_project(name: str, table: dict, source: _Source, path: list[str], default_root: str,
                   root_dir: Path) -> ProjectSpec:
    what = f"project '{name}'"
    if not _PROJECT_NAME.fullmatch(name):
        raise ConfigError(f"{source.where(path)}: project name {name!r} may hold only letters, digits, "
                          "'_', '-' and '.' (it is used in task ids like 'project:target').")
    _expect(table, dict, source, path[:-1], name, what)
    _check_keys(table, PROJECT_KEYS, source, path, what)
    project_root = table.get("root", default_root)
    _expect(project_root, str, source, path, "root", what)
    project_root = _normalise_relative(project_root, source.where(path, "root"), what, root_dir)
    targets_table = _expect(table.get("targets", {}), dict, source, path, "targets", what)
    targets = {
        target_name: _parse_target(name, target_name, target_table, source, path + ["targets", target_name])
        for target_name, target_table in targets_table.items()
    }
    return ProjectSpec(
        name=name,
        root=project_root,
        depends_on=_string_list(table.get("depends-on", []), source, path, "depends-on", what),
        targets=targets,
        source=source.where(path),
    )


def _normalise_relative(path: str, where: str, what: str, root_dir: Path) -> str:
    if os.path.isabs(path):
        raise ConfigError(f"{where}: {what} path {path!r} is absolute; give it relative to the workspace root.")
    normal = os.path.normpath(path).replace(os.sep, "/")
    if normal == ".." or normal.startswith("../"):
        raise ConfigError(f"{where}: {what} path {path!r} leads outside the workspace; keep it inside.")
    return normal


def load_workspace(root: Path) -> Workspace:
    """Parse the root nxrun.toml, its includes and project folders into a Workspace."""
    root = root.resolve()
    root_file = root / CONFIG_NAME
    data, source = _load_toml(root_file, root)
    _check_keys(data, TOP_KEYS_ROOT, source, [], "the root nxrun.toml")
    config_files = [root_file]

    ws_table = _expect(data.get("workspace", {}), dict, source, [], "workspace", "the root nxrun.toml")
    _check_keys(ws_table, WORKSPACE_KEYS, source, ["workspace"], "[workspace]")
    cache_dir_text = os.environ.get("NXRUN_CACHE_DIR") or ws_table.get("cache-dir", ".nxrun")
    _expect(cache_dir_text, str, source, ["workspace"], "cache-dir", "[workspace]")
    cache_dir = (root / cache_dir_text).resolve()
    parallel = ws_table.get("parallel", max(1, min(os.cpu_count() or 1, 8)))
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise ConfigError(f"{source.where(['workspace'], 'parallel')}: parallel must be a positive integer; "
                          f"got {parallel!r}.")
    restore = ws_table.get("restore", "auto")
    if restore not in RESTORE_MODES:
        raise ConfigError(f"{source.where(['workspace'], 'restore')}: restore = {restore!r}; use one of "
                          f"{', '.join(RESTORE_MODES)}.{did_you_mean(str(restore), RESTORE_MODES)}")
    executor = ws_table.get("executor", "local")
    if executor not in EXECUTORS:
        raise ConfigError(f"{source.where(['workspace'], 'executor')}: executor = {executor!r}; use one of "
                          f"{', '.join(EXECUTORS)}.{did_you_mean(str(executor), EXECUTORS)}")
    ray_address = ws_table.get("ray-address")
    if ray_address is not None and (not isinstance(ray_address, str) or not ray_address.strip()):
        raise ConfigError(f"{source.where(['workspace'], 'ray-address')}: ray-address = {ray_address!r}; write the "
                          "address of the Ray cluster's head, e.g. \"10.0.0.5:6379\" (RAY_ADDRESS takes precedence).")
    default_inputs = _string_list(ws_table.get("default-inputs", ["**/*"]), source, ["workspace"],
                                  "default-inputs", "[workspace]")

    gpus = None
    if "gpus" in ws_table:
        from .run.gpus import parse_setting

        where = source.where(["workspace"], "gpus")
        gpus = (parse_setting(ws_table["gpus"], where).value, where)

    remote = _expect(data.get("remote", {}), dict, source, [], "remote", "the root nxrun.toml")
    _check_keys(remote, REMOTE_KEYS, source, ["remote"], "[remote]")

    named_inputs: dict[str, list[str]] = {}
    runtime: dict[str, str] = {}
    projects: dict[str, ProjectSpec] = {}
    discovered: list[tuple[str, list[str]]] = []

    def absorb(data: dict, source: _Source, default_root: str) -> None:
        for name, patterns in _expect(data.get("named-inputs", {}), dict, source, [], "named-inputs",
                                      source.display).items():
            if name in named_inputs:
                raise ConfigError(f"{source.where(['named-inputs'], name)}: named input '{name}' is defined "
                                  "twice; rename one.")
            named_inputs[name] = _string_list(patterns, source, ["named-inputs"], name, "[named-inputs]")
        for name, command in _expect(data.get("runtime", {}), dict, source, [], "runtime",
                                     source.display).items():
            _expect(command, str, source, ["runtime"], name, "[runtime]")
            if name in runtime:
                raise ConfigError(f"{source.where(['runtime'], name)}: runtime probe '{name}' is defined "
                                  "twice; rename one.")
            runtime[name] = command
        for name, table in _expect(data.get("projects", {}), dict, source, [], "projects",
                                   source.display).items():
            if name in projects:
                raise ConfigError(f"{source.where(['projects', name])}: project '{name}' is already declared "
                                  f"at {projects[name].source}; project names must be unique.")
            projects[name] = _parse_project(name, table, source, ["projects", name], default_root, root)

    absorb(data, source, ".")

    for pattern in _string_list(ws_table.get("include", []), source, ["workspace"], "include", "[workspace]"):
        matches = sorted(_glob.glob(str(root / pattern), recursive=True))
        if not matches:
            raise ConfigError(f"{source.where(['workspace'], 'include')}: include {pattern!r} matches no file. "
                              "Fix the path or remove it.")
        discovered.append((pattern, matches))
        for match in matches:
            path = Path(match)
            included, included_source = _load_toml(path, root)
            _check_keys(included, TOP_KEYS_INCLUDED, included_source, [], "an included file")
            config_files.append(path)
            absorb(included, included_source, ".")

    for pattern in _string_list(ws_table.get("projects", []), source, ["workspace"], "projects", "[workspace]"):
        folders = sorted(p for p in _glob.glob(str(root / pattern)) if (Path(p) / CONFIG_NAME).is_file())
        if not folders:
            raise ConfigError(f"{source.where(['workspace'], 'projects')}: projects {pattern!r} matches no folder "
                              f"holding an {CONFIG_NAME}. Fix the pattern or add the file.")
        discovered.append((pattern, folders))
        for folder in folders:
            path = Path(folder) / CONFIG_NAME
            project_data, project_source = _load_toml(path, root)
            _check_keys(project_data, TOP_KEYS_PROJECT_FILE, project_source, [], "a project file")
            config_files.append(path)
            project_table = dict(_expect(project_data.get("project", {}), dict, project_source, [], "project",
                                         project_source.display))
            folder_rel = Path(folder).resolve().relative_to(root).as_posix()
            name = project_table.pop("name", Path(folder).name)
            _expect(name, str, project_source, ["project"], "name", "[project]")
            if "targets" in project_table:
                raise ConfigError(f"{project_source.where(['project'], 'targets')}: in a project file, "
                                  "targets go in [targets.NAME] tables, not under [project].")
            project_table["targets"] = project_data.get("targets", {})
            if name in projects:
                raise ConfigError(f"{project_source.where(['project'])}: project '{name}' is already declared "
                                  f"at {projects[name].source}; project names must be unique.")
            spec = _parse_project(name, project_table, project_source, ["project"], folder_rel, root)
            for key, patterns in project_data.get("named-inputs", {}).items():
                spec.named_inputs[key] = _string_list(patterns, project_source, ["named-inputs"], key,
                                                      "[named-inputs]")
            projects[name] = spec

    for project in projects.values():
        for dependency in project.depends_on:
            if dependency not in projects:
                raise ConfigError(f"{project.source}: project '{project.name}' depends on unknown project "
                                  f"'{dependency}'.{did_you_mean(dependency, projects)}")

    return Workspace(
        root=root, cache_dir=cache_dir, parallel=parallel, restore=restore, default_inputs=default_inputs,
        named_inputs=named_inputs, runtime=runtime, remote=remote, projects=projects,
        config_files=config_files, discovered=discovered, executor=executor, ray_address=ray_address,
        gpus=gpus,
    )
