"""The run journal: a repeated no-op run answered from one file, without parsing config, building
the graph or hashing (what a build server or daemon keeps in memory, kept on disk).

After a run in which every selected task was a local cache hit whose outputs were in place and
nothing was warned about, the journal records, for that exact request (workspace, folder,
command, targets, flags), the lstat of every path the run's outcome depended on: the config files
and what each `projects`/`include` glob listed, every input file and every folder an input glob or
folder walked, each non-glob input path (present or absent), every output file and folder, and
every folder above them up to the workspace root; also the env, package and probe digests the
ETags used, the identity of the key env values are hashed with, the nxrun version and sources,
the index rows of the entries used, and what the run printed and recorded.

The next identical request, while no other run holds a task lock of the workspace, stats those
paths; when all match and the index still has the same entries, it prints and records exactly what
the normal path would (replayed logs, the summary or --json, the history), and exits. Anything else
(a mismatch, an error, any doubt) takes the normal path, which writes the journal again. A replay
closes the index itself, and the process then ends without the interpreter's teardown
(run_command.exit_now).

Why a matching stat is enough: a journal is written only when every path it records last changed
(mtime and ctime) longer before the run started than the file system's timestamp granularity (the
stat cache's racy rule, hashing._unsure). What the run hashed, listed and found in place is then
what the journal recorded, and nothing changes a path afterwards without moving its ctime, which
cannot be set back: an edit whose mtime was put back, a file added to or removed from a walked or
output folder (the folder's mtime), a folder swapped for a link (its parent's mtime). A path absent
when the journal is written has no times: the folder that holds it (or would hold a dangling
link's target) is judged by the same rule instead, since a path the run saw and that went since
changed it.

`NXRUN_JOURNAL=off` turns the journal off; `NXRUN_JOURNAL_TRACE=FILE` appends to FILE one line
per run saying whether the journal answered, and why not (tests and benchmarks).
"""

from __future__ import annotations

import json
import operator
import os
import re
import struct
import sys
import time
from itertools import starmap
from stat import S_ISLNK
from types import SimpleNamespace

import xxhash

from . import __version__

JOURNAL_FORMAT = 3
TRACE_VAR = "NXRUN_JOURNAL_TRACE"
SWITCH_VAR = "NXRUN_JOURNAL"
_REQUEST_OPTIONS = ("parallel", "keep_going", "as_json", "remote_mode", "namespace", "quiet", "executor",
                    "gpus")
_INPUT_KINDS = ("runtime:", "pkg:", "env:")


class _Doubt(Exception):
    """A reason to take the normal path."""


def _trace(message: str) -> None:
    path = os.environ.get(TRACE_VAR)
    if path:
        try:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(message + "\n")
        except OSError:
            pass


def request_for(command: str, names: list[str], args: list[str], options: dict, directory,
                projects: str | None = None) -> dict | None:
    """The request a journal is kept for, or None when this invocation never uses one (args after
    `--`, a dry run, --skip-cache, --only, a required remote, or the journal turned off)."""
    if os.environ.get(SWITCH_VAR, "").lower() in ("off", "0", "no", "false"):
        return None
    if args or options.get("dry_run") or options.get("skip_cache") or options.get("only") \
            or options.get("remote_mode") == "required" or os.environ.get("NXRUN_REMOTE"):
        return None
    return {"command": command, "names": list(names), "projects": projects,
            "options": {k: options.get(k) for k in _REQUEST_OPTIONS},
            "directory": os.path.realpath(directory)}


# absolute, a `.` or `..` part, an empty part, a line break: never written by nxrun itself
_UNUSUAL_PATH = r"^/|(^|/)\.\.?(/|$)|//|\n"
_CHUNK = 1024    # paths per stamp: a check stops at the first chunk that differs
_KEY = operator.attrgetter("st_mode", "st_size", "st_mtime_ns", "st_ino", "st_ctime_ns")


def _keys(root: str | bytes, paths: list, look, here: bool = False) -> list:
    """The stat key of each path (`look`: os.lstat or os.stat; "" is the root), None for an
    absent one. The loop runs in C while every path is there, which is nearly always. `root` and
    `paths` are both text or both bytes (as os.fsencode gives them: no encoding per call).

    `here`: the current folder is the workspace root (_at_root), and the paths are looked up from
    it, which saves the kernel a lookup of every folder of the root's own path (the current folder
    is the folder itself, not a path to it, so they name the same files); `paths` sorted then, so
    that the root, if there, comes first."""
    dot, sep = (".", "/") if isinstance(root, str) else (b".", b"/")
    if here:
        full = [dot, *paths[1:]] if paths and not paths[0] else paths
    else:
        prefix = root + sep
        full = [prefix + rel if rel else root for rel in paths]
    try:
        return list(map(_KEY, map(look, full)))
    except FileNotFoundError:
        keys = []
        for path in full:
            try:
                keys.append(_KEY(look(path)))
            except FileNotFoundError:
                keys.append(None)
        return keys


def _first_racy(paths: list[str], keys: list, started_ns: int) -> str | None:
    """The first path whose mtime or ctime is within the file system's timestamp granularity of
    `started_ns`, or later (hashing._unsure on stat keys), else None."""
    from .hashing import _COARSE_RACY_WINDOW_NS, _unsure

    maybe = started_ns - _COARSE_RACY_WINDOW_NS     # the wider window: older than this is never racy
    for rel, key in zip(paths, keys):
        if key is not None and (key[2] > maybe or key[4] > maybe) \
                and _unsure(SimpleNamespace(st_mtime_ns=key[2], st_ctime_ns=key[4]), started_ns):
            return rel
    return None


def _first_racy_holder(absent: list[str], started_ns: int) -> str | None:
    """For paths absent when the journal is written (absolute; a dangling link's target): the
    first folder holding one (the nearest one there, followed if a link) that changed within the
    racy window of `started_ns`, else None. An absent path has no times of its own, yet the run may
    have seen it before it went (an input hashed, then deleted); its going changed that folder."""
    holders: set[str] = set()
    for path in absent:
        folder = os.path.dirname(path)
        while folder not in holders and not os.path.lexists(folder) and folder != os.path.dirname(folder):
            folder = os.path.dirname(folder)
        holders.add(folder)
    paths = sorted(holders)
    keys = []
    for path in paths:
        try:
            keys.append(_KEY(os.stat(path)))
        except OSError:
            keys.append(None)
    return _first_racy(paths, keys, started_ns)


def _parent(rel: str) -> str:
    """The folder of a workspace-relative path ("" for the root)."""
    cut = rel.rfind("/")
    return rel[:cut] if cut > 0 else ""


def _at_root(root_text: str) -> bool:
    """Whether the current folder is the (resolved) workspace root: by name, and by identity, since a
    file system mounted over the root after a shell entered it leaves the shell's folder (and its
    getcwd) on the hidden files while the root's name leads to the mounted ones."""
    try:
        if os.getcwd() != root_text:
            return False
        here, root = os.stat("."), os.stat(root_text)
    except OSError:         # the current folder was deleted
        return False
    return (here.st_dev, here.st_ino) == (root.st_dev, root.st_ino)


_PACK_KEY = struct.Struct("<5q").pack


def _stamp(keys: list) -> str:
    """The digest of a chunk's stat keys: of their values packed as 64-bit integers (a fixed
    width, so one list of keys packs one way only); of their repr where that cannot be done (an
    absent path's None, an inode past 2**63), marked so that the two forms never meet."""
    try:
        return xxhash.xxh3_128_hexdigest(b"".join(starmap(_PACK_KEY, keys)))
    except (TypeError, struct.error):
        return "r" + xxhash.xxh3_128_hexdigest(repr(keys).encode())


def _check_stamps(root_text: str, lstat_paths: list[bytes], stat_paths: list[bytes], expected: list[str]) -> None:
    """_Doubt at the first chunk of paths whose stats differ from the recorded stamps."""
    chunks = [(lstat_paths[i:i + _CHUNK], os.lstat) for i in range(0, len(lstat_paths), _CHUNK)]
    chunks += [(stat_paths[i:i + _CHUNK], os.stat) for i in range(0, len(stat_paths), _CHUNK)]
    if len(chunks) != len(expected):
        raise _Doubt("the journal is damaged")
    here = _at_root(root_text)
    root = os.fsencode(root_text)
    for (paths, look), stamp in zip(chunks, expected):
        if _stamp(_keys(root, paths, look, here)) != stamp:
            raise _Doubt("a recorded path changed")


def _code_stamp(started_ns: int | None = None) -> str | None:
    """The nxrun sources as installed (names, sizes, mtimes): an upgrade or an edit of an
    editable install changes it, even without a new version number. With `started_ns` (a run's
    start, when its journal is written): None when a source changed since, or just before (the
    racy rule), since the run may have used the code from before the change."""
    from .hashing import _unsure

    package = os.path.dirname(os.path.abspath(__file__))
    parts: list[str] = []
    stack = [package]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.endswith(".py"):
                    st = entry.stat()
                    if started_ns is not None and _unsure(st, started_ns):
                        return None
                    parts.append(f"{entry.path}:{st.st_size}:{st.st_mtime_ns}")
                elif entry.is_dir(follow_symlinks=False) and entry.name != "__pycache__":
                    stack.append(entry.path)
    parts.sort()
    return xxhash.xxh3_128_hexdigest("\n".join(parts).encode("utf-8", "surrogateescape"))


def _env_stamp(salt: bytes) -> str:
    """A salted digest of the NXRUN_* variables (some are secrets, so only a digest is kept)."""
    from .hashing import blake2b

    items = sorted((k, v) for k, v in os.environ.items() if k.startswith("NXRUN_") and k != TRACE_VAR)
    text = "\0".join(f"{k}={v}" for k, v in items)
    return blake2b(text.encode("utf-8", "surrogateescape"), key=salt, digest_size=16).hexdigest()


def _journal_path(cache_dir, root: str, request: dict):
    from pathlib import Path

    name = xxhash.xxh3_128_hexdigest(json.dumps([root, request], sort_keys=True).encode("utf-8", "surrogateescape"))
    return Path(cache_dir) / "journals" / f"{name}.json"


def _env_key(store) -> bytes | None:
    from .store.keys import ENV_KEY_VAR, team_key

    secret = os.environ.get(ENV_KEY_VAR)
    return team_key(secret) if secret else store.read_key("cache")


def _hit_rows(store, etags: list[str]) -> dict[str, tuple[str, float]]:
    """etag -> (compact hit row, last used) of the entries the index has, in one query."""
    rows = store.read("SELECT etag, hit, last_used FROM entries WHERE etag IN (SELECT value FROM json_each(?))",
                      (json.dumps(etags),))
    return {etag: (hit, last_used or 0.0) for etag, hit, last_used in rows}


def _same_entries(store, hits: list[list]) -> dict[str, float]:
    """etag -> last used, of the entries whose compact index rows are still exactly the journal's
    (by digest: an entry gone, or stored anew under its ETag, is missing); one query."""
    recorded = {t[2]: t[3] for t in hits}
    return {etag: last_used for etag, (hit, last_used) in _hit_rows(store, list(recorded)).items()
            if _row_digest(hit) == recorded[etag]}


def _row_digest(hit: str | None) -> str | None:
    return None if hit is None else xxhash.xxh3_64_hexdigest(hit.encode("utf-8", "surrogateescape"))


# ---------------------------------------------------------------------------- the short cut

def replay(directory, request: dict, argv: list[str], started_wall: float) -> bool:
    """Answer the request from its journal: True when it did (everything is printed and recorded;
    the caller exits 0), False when the normal path must run (nothing was printed)."""
    wall = time.monotonic()
    printing: list[bool] = []    # once anything is printed, no way back to the normal path
    try:
        done = _replay(directory, request, argv, started_wall, wall, printing)
    except _Doubt as doubt:
        if printing:
            raise
        _trace(f"fallback: {doubt}")
        return False
    except Exception as exc:  # any doubt: the normal path decides, and says what is wrong
        if printing:
            raise
        _trace(f"fallback: {type(exc).__name__}: {exc}")
        return False
    if done:
        _trace("replayed")
    return done


def _replay(directory, request: dict, argv: list[str], started_wall: float, wall: float,
            printing: list[bool]) -> bool:
    from pathlib import Path

    from .workspace_root import CONFIG_NAME, cache_dir_guess, find_workspace_root

    root = find_workspace_root(Path(directory)).resolve()
    root_text = str(root)
    cache_dir = cache_dir_guess(root, (root / CONFIG_NAME).read_bytes())
    path = _journal_path(cache_dir, root_text, request)
    try:
        data = _parse(path.read_bytes())
    except FileNotFoundError:
        raise _Doubt("no journal") from None
    if data.get("format") != JOURNAL_FORMAT or data.get("version") != __version__:
        raise _Doubt("another nxrun version wrote the journal")
    if data["root"] != root_text or data["cache_dir"] != str(cache_dir) or data["request"] != request:
        raise _Doubt("another workspace or request")
    if data["code"] != _code_stamp():
        raise _Doubt("nxrun's sources changed")
    if data["env"] != _env_stamp(bytes.fromhex(data["salt"])):
        raise _Doubt("NXRUN_* variables changed")

    from .store.local import LocalStore
    from .run.task_locks import TaskLocks

    store = LocalStore(Path(cache_dir))
    try:
        _check_values(store, root_text, data)      # env, packages, probes (which may take a while)
        locks = TaskLocks(Path(cache_dir), root)
        lock_fd = None
        try:
            try:
                # no other run of this workspace may be on: it could be writing what is checked here
                if not locks.try_acquire_all():
                    raise _Doubt("another run holds a task lock of the workspace")
                _check_paths(root_text, data)
                # the cache shared, as a run holds it: no prune, clear or verify meanwhile
                import fcntl

                lock_fd = store._open_cache_lock()
                try:
                    fcntl.flock(lock_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise _Doubt("the cache is being pruned, cleared or verified") from None
                hits = [t for t in data["tasks"] if t[1] == "local-hit"]
                used = _same_entries(store, hits)
                if len(used) != len({t[2] for t in hits}):
                    raise _Doubt("an entry is gone or was stored anew")
                oldest = time.time() - _touch_after()
                touched = [etag for etag, last_used in used.items() if last_used < oldest]
            finally:
                locks.close()
            done = _print_and_record(store, data, root_text, argv, started_wall, wall, touched, printing)
        finally:
            if lock_fd is not None:
                os.close(lock_fd)
    finally:
        # closed here, on a fallback too (the normal path opens its own), not when the interpreter
        # tears down (which the caller skips after a replay: run_command.exit_now); closing
        # checkpoints the WAL, as the end of a normal run does
        store.close()
    return done


def _sealed(data: dict) -> bytes:
    """The journal's bytes: its JSON, then a line with the JSON's digest."""
    body = json.dumps(data, separators=(",", ":")).encode("utf-8")
    return body + b"\n" + xxhash.xxh3_128_hexdigest(body).encode() + b"\n"


def _parse(raw: bytes) -> dict:
    """The journal of _sealed's bytes; _Doubt when the digest does not match. A journal damaged on
    disk (a flipped byte in a task id, a digest, a duration) may still be valid JSON that passes
    every other check, and would then print a wrong summary or fail halfway through printing."""
    body, _, digest = raw.rstrip(b"\n").rpartition(b"\n")
    if not body or xxhash.xxh3_128_hexdigest(body).encode() != digest:
        raise _Doubt("the journal is damaged")
    return json.loads(body)


def _touch_after() -> float:
    from .store.local import TOUCH_AFTER

    return TOUCH_AFTER


def _check_paths(root_text: str, data: dict) -> None:
    # sorted (as _write keeps them), as bytes
    lstat_paths = os.fsencode(data["lstat"]).split(b"\n") if data["lstat"] else []
    stat_paths = os.fsencode(data["stat"]).split(b"\n") if data["stat"] else []
    _check_stamps(root_text, lstat_paths, stat_paths, data["stamps"])


def _check_values(store, root_text: str, data: dict) -> None:
    values = data["values"]
    if not values and data["key_id"] is None:
        return
    from .hashing import digest_text, keyed_digest
    from .runtime import Runtime

    key = None
    if data["key_id"] is not None:
        key = _env_key(store)
        if key is None or keyed_digest(key, "journal-key-id", "") != data["key_id"]:
            raise _Doubt("the env key changed")
    runtime = Runtime(data["probes"], root_text)
    for name, digest in values.items():
        kind, _, what = name.partition(":")
        if kind == "env":
            value = os.environ.get(what)
            now = keyed_digest(key, name, "\0unset" if value is None else "=" + value) if key else None
        elif kind == "pkg":
            now = digest_text(runtime.package_version(what))
        else:
            now = digest_text(runtime.probe(what))
        if now != digest:
            raise _Doubt(f"{name} changed")


def _print_and_record(store, data: dict, root_text: str, argv: list[str], started_wall: float, wall: float,
                      touched: list[str], printing: list[bool]) -> bool:
    from .console import Console
    from .run.history import RunRecord, local_hit_row, save_rows
    from .run_command import finish_output, print_counts, print_summary
    from .run.results import RunResult, TaskResult

    options = data["request"]["options"]
    quiet, as_json = bool(options["quiet"]), bool(options["as_json"])
    tasks = data["tasks"]
    logs: dict[str, bytes] = {}
    if not quiet:
        from .store import CorruptBlob

        for task in tasks:
            if task[1] == "local-hit" and task[5]:
                try:
                    logs[task[0]] = store.read_blob(task[5])
                except CorruptBlob:
                    raise _Doubt(f"the log of {task[0]} is missing or corrupt") from None
    real = [t for t in tasks if t[1] != "aggregate"]
    console = Console(stream=sys.stderr if as_json else sys.stdout, prefix_tasks=len(real) > 1, quiet=quiet)
    # a quiet run shows nothing of a hit but in the status line of a terminal: no console call then
    shown = not quiet or console.live
    by_id = {t[0]: t for t in tasks}
    results: dict[str, TaskResult] = {}     # for --json only: the counts line needs none
    rows: dict[str, tuple] = {}
    printing.append(True)
    console.start(len(real))
    try:
        for task_id in data["events"]:
            task = by_id[task_id]
            tick = time.monotonic()
            started = time.time()
            if shown:
                console.replay(task_id, logs.get(task_id, b""), "local")
            duration = time.monotonic() - tick
            if shown:
                console.task_finished(task_id, "local-hit", duration)
            if as_json:
                results[task_id] = TaskResult(task_id, "local-hit", task[2], duration, "local",
                                              outputs_digest=task[6])
            rows[task_id] = local_hit_row(task_id, task[2], duration, started, task[4], task[6])
    finally:
        console.stop()
    try:
        if touched:
            store.touch_entries(touched)
        run = RunRecord(started=started_wall, argv=argv, cwd=root_text)
        run.finished = time.time()
        run.status = "ok"
        save_rows(store, run, [rows[t] for t in data["history"]])
    except Exception as exc:  # history is a record, never a reason to fail a run
        console.warn(f"could not record the run in the history: {exc}")
    def last_words() -> None:
        if as_json:
            ordered = {t[0]: results.get(t[0]) or TaskResult(t[0], "aggregate", outputs_digest=t[6])
                       for t in tasks}
            print_summary(RunResult(ordered, time.monotonic() - wall, []), as_json, dry_run=False)
        else:
            print_counts({"local-hit": len(real), "aggregate": len(tasks) - len(real)}, time.monotonic() - wall)
            if sys.stdout is not None:      # closed before the start (>&-)
                sys.stdout.flush()

    finish_output(console, last_words, as_json)     # raises, after printing began, when the output failed
    return True


# ---------------------------------------------------------------------------- writing

def write(obj, runner, result, request: dict | None, started_ns: int, warned: int) -> None:
    """After a normal run: keep its journal when the run qualifies, else remove the request's old
    one (never fails the run)."""
    if request is None:
        return
    try:
        reason = _write(obj, runner, result, request, started_ns, warned)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
    if reason is not None:
        try:
            _journal_path(obj.workspace.cache_dir, str(obj.workspace.root), request).unlink()
        except Exception:
            pass
    _trace("written" if reason is None else f"not written: {reason}")


def _write(obj, runner, result, request: dict, started_ns: int, warned: int) -> str | None:
    import glob

    from .config import CONFIG_NAME
    from .hashing import has_magic, literal_prefix
    from .store.keys import configured_remote_url
    from .workspace_root import cache_dir_guess

    graph = obj.graph
    workspace = graph.workspace
    store = obj.store
    root_text = str(workspace.root)
    if warned or graph.warnings or runner.warnings:
        return "the run warned"
    if runner.remote is not None or configured_remote_url(workspace):
        return "a remote cache is configured"
    from .run_command import executor_name

    if executor_name(request["options"].get("executor"), workspace) != "local":
        return "another executor than the local one (its nodes probe the runtime)"
    if store.unusable or store.writes_off or store.repairs:
        return "the cache was not fully usable"
    if graph.matrix_globs or graph.file_index.unreadable:
        return "glob matrix axes or unreadable folders"
    if cache_dir_guess(workspace.root, (workspace.root / CONFIG_NAME).read_bytes()) != workspace.cache_dir:
        return "the cache folder cannot be found without reading the config"
    statuses = list(result.results.values())
    if not statuses or any(r.status not in ("local-hit", "aggregate")
                           or (r.status == "local-hit" and r.origin != "local") for r in statuses):
        return "not every task was a local hit"

    lpaths: set[str] = set()

    def rel_of(path) -> str:
        text = str(path)
        if text == root_text:
            return ""
        if text.startswith(root_text + "/"):
            return text[len(root_text) + 1:]
        return text                          # outside the workspace: kept absolute

    for path in workspace.config_files:
        lpaths.add(rel_of(path))
    for pattern, _matches in workspace.discovered:
        prefix = os.path.dirname(pattern)
        if has_magic(prefix):
            return f"the glob {pattern!r} lists more than one folder"
        lpaths.add(rel_of(workspace.root / prefix) if prefix else "")
        # every path the glob lists, as the config loader globs it (recursive: a superset), whether
        # or not it holds an nxrun.toml: a folder that gains one shows in its own mtime. Other
        # entries of the folder cannot become matches; among them the cache folder `.nxrun`, which
        # every run changes, for projects listed at the workspace root
        lpaths.update(rel_of(match) for match in glob.glob(str(workspace.root / pattern), recursive=True))
    lpaths.update(graph.file_index.listed)

    values: dict[str, str] = {}
    needs_key = False
    tasks = graph.tasks
    hits = [r for r in statuses if r.status == "local-hit"]
    for r in hits:
        task = tasks[r.task_id]
        if task.is_bench or task.cache == "hardware":
            return f"{task.id} is a bench or hardware task"
        for name, digest in runner.records[r.task_id].explain.items():
            if name.startswith("file:"):
                lpaths.add(name[5:])
            elif name.startswith(_INPUT_KINDS):
                values[name] = digest
                needs_key = needs_key or name.startswith("env:")
            elif name.startswith("env-set:"):
                needs_key = True
            elif name in ("args", "hardware"):
                return f"{task.id} has args or a hardware fingerprint"
        for pattern in task.inputs:
            if pattern.startswith(_INPUT_KINDS) or pattern.startswith("!"):
                continue
            lpaths.add(literal_prefix(pattern) if has_magic(pattern) else pattern.rstrip("/"))
        for output in task.outputs:
            lpaths.add(output.rstrip("/"))

    rows = _hit_rows(store, [r.etag for r in hits])
    task_rows = []
    for r in statuses:
        if r.status == "aggregate":
            task_rows.append([r.task_id, "aggregate", None, None, 0.0, None, r.outputs_digest])
            continue
        row = rows.get(r.etag)
        if row is None:
            return f"the entry of {r.task_id} is not in the index"
        outputs_digest, log_digest, duration, declared, files = json.loads(row[0])
        if outputs_digest != r.outputs_digest:
            # stored anew under its ETag since the hit (a clone sharing the cache): the outputs on
            # disk are the old entry's, which the next normal run would replace with this one's
            return f"the entry of {r.task_id} was stored anew during the run"
        roots = {d.rstrip("/") for d in declared}
        for file in files:
            lpaths.add(file[0])
            # every folder of a declared output folder: a stale file added anywhere in it shows there
            folder = _parent(file[0])
            while folder and file[0] not in roots and folder not in lpaths:
                lpaths.add(folder)
                if folder in roots:
                    break
                folder = _parent(folder)
        task_rows.append([r.task_id, "local-hit", r.etag, _row_digest(row[0]), duration, log_digest,
                          outputs_digest])

    # a folder above a recorded path swapped for a link (or moved away) shows either in its own lstat
    # or in its parent folder's mtime: make sure one of the two is recorded for every folder above
    lpaths.add("")
    done: set[str] = set()      # folders seen to, with every folder above them
    for rel in list(lpaths):
        folder = _parent(rel)
        while folder and folder not in done:
            done.add(folder)
            parent = _parent(folder)
            if folder not in lpaths and parent not in lpaths:
                lpaths.add(parent)
            folder = parent

    unusual = next(filter(re.compile(_UNUSUAL_PATH).search, lpaths), None)
    if unusual is not None:
        return f"an unusual path {unusual!r}"
    lstat_paths = sorted(lpaths)
    lstat_keys = _keys(root_text, lstat_paths, os.lstat)
    # a link: what it leads to counts too
    stat_paths = [rel for rel, key in zip(lstat_paths, lstat_keys) if key is not None and S_ISLNK(key[0])]
    stat_keys = _keys(root_text, stat_paths, os.stat)
    racy = _first_racy(lstat_paths + stat_paths, lstat_keys + stat_keys, started_ns)
    if racy is None:
        absent = [f"{root_text}/{rel}" for rel, key in zip(lstat_paths, lstat_keys) if key is None]
        absent += [os.path.realpath(f"{root_text}/{rel}") for rel, key in zip(stat_paths, stat_keys) if key is None]
        racy = _first_racy_holder(absent, started_ns) if absent else None
    if racy is not None:
        return f"{racy or '.'} changed just before or during the run"
    stamps = [_stamp(lstat_keys[i:i + _CHUNK]) for i in range(0, len(lstat_keys), _CHUNK)]
    stamps += [_stamp(stat_keys[i:i + _CHUNK]) for i in range(0, len(stat_keys), _CHUNK)]

    code = _code_stamp(started_ns)
    if code is None:
        return "nxrun's sources changed just before or during the run"
    key_id = runner.hasher.keyed("journal-key-id", "") if needs_key else None
    probes = {name[8:]: workspace.runtime[name[8:]] for name in values if name.startswith("runtime:")}
    salt = os.urandom(16)
    data = {
        "format": JOURNAL_FORMAT, "version": __version__, "code": code, "salt": salt.hex(),
        "env": _env_stamp(salt), "root": root_text, "cache_dir": str(workspace.cache_dir), "request": request,
        "key_id": key_id, "values": values, "probes": probes, "lstat": "\n".join(lstat_paths),
        "stat": "\n".join(stat_paths), "stamps": stamps,
        "tasks": task_rows,
        "events": [t for t, r in runner.results.items() if r.status == "local-hit"],
        "history": [t for t in graph.order if t in runner.records],
    }
    if sorted(data["events"]) != sorted(data["history"]) or len(data["events"]) != len(hits):
        return "the run's events and records disagree"
    path = _journal_path(workspace.cache_dir, root_text, request)
    path.parent.mkdir(exist_ok=True)
    temp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        temp.write_bytes(_sealed(data))
        os.replace(temp, path)
    finally:
        try:
            temp.unlink()
        except FileNotFoundError:
            pass
    return None
