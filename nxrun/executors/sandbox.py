"""Run one action on a worker node in a fresh sandbox: no shared file system, files come from and
go to the remote cache (the worker half of nxrun/executors/action.py).

`run_action` reads the action record (checked against its digest), materialises its inputs into
a new folder outside any workspace (every blob re-hashed; paths checked as restore checks an
entry: relative, no '.', '..' or empty part, links created last and only to paths inside the
sandbox, parents opened without following links), runs the command there with the action's env
(plus CUDA_VISIBLE_DEVICES as the scheduler that placed it set it), scans the declared outputs,
uploads their blobs and the log write-once, and returns a manifest. It never writes an entry: the
driver checks the manifest (store/safety.check_entry) and writes the entry itself, so a worker
that dies half-way leaves blobs at most, never a partial entry.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ..records import as_dict
from ..store import CacheEntry, CorruptBlob, OutputRecord, UnsafeEntry
from ..hashing import StatCache, digest_file
from ..store.capture import digest_of_records, scan_outputs
from ..store.safety import is_plain_relative
from . import task_watchdog
from .action import Action, ActionArea, RemoteSpec
from .task_watchdog import TOKEN_VARIABLE

SANDBOX_DIR_ENV = "NXRUN_SANDBOX_DIR"        # where sandboxes are made (default: the system temp folder)
KEEP_SANDBOX_ENV = "NXRUN_KEEP_SANDBOX"      # "1": leave sandboxes behind, to look into them


_DIGEST = re.compile("[0-9a-f]{32}")


class SandboxError(Exception):
    """The action cannot be materialised or its outputs not stored: an unsafe path, a corrupt blob."""


def make_sandbox() -> Path:
    parent = os.environ.get(SANDBOX_DIR_ENV) or None
    return Path(tempfile.mkdtemp(prefix="nxrun-sandbox-", dir=parent))


def _open_parent(root_fd: int, rel: str, create: bool) -> tuple[int, str]:
    """A directory fd for the folder that holds `rel`, walked from the sandbox root without
    following links (O_NOFOLLOW); folders created on the way when `create`."""
    parts = rel.split("/")
    fd = os.dup(root_fd)
    try:
        for part in parts[:-1]:
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd, parts[-1]


def _link_stays_inside(rel: str, target: str) -> bool:
    if not target or target.startswith("/") or "\0" in target:
        return False
    depth = len(rel.split("/")) - 1
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return False
        elif part not in ("", "."):
            depth += 1
    return True


def materialise(area: ActionArea, action: Action, sandbox: Path) -> int:
    """Write the action's inputs under `sandbox`; returns the number of files. SandboxError for
    an unsafe record, CorruptBlob for a blob that does not hash to its name."""
    seen: dict[str, str] = {}
    for item in action.inputs:
        if not isinstance(item, OutputRecord) or not is_plain_relative(item.path):
            raise SandboxError(f"{action.task_id}: input path {getattr(item, 'path', item)!r} is absolute or "
                               "has '.', '..' or an empty part")
        if item.path in seen:
            raise SandboxError(f"{action.task_id}: input path {item.path!r} appears twice")
        if item.kind not in ("file", "symlink", "dir"):
            raise SandboxError(f"{action.task_id}: input {item.path!r} has unknown kind {item.kind!r}")
        if type(item.mode) is not int or not 0 <= item.mode <= 0o7777:
            raise SandboxError(f"{action.task_id}: input {item.path!r} has a malformed mode {item.mode!r}")
        if item.kind == "file" and (type(item.digest) is not str or not _DIGEST.fullmatch(item.digest)
                                    or type(item.size) is not int or item.size < 0):
            raise SandboxError(f"{action.task_id}: input {item.path!r} has a malformed blob digest or size")
        if item.kind == "symlink" and not _link_stays_inside(item.path, item.target or ""):
            raise SandboxError(f"{action.task_id}: input link {item.path!r} -> {item.target!r} leads out of "
                               "the sandbox")
        seen[item.path] = item.kind
    for path in seen:
        cut = path.rfind("/")
        while cut > 0:
            kind = seen.get(path[:cut])
            if kind is not None and kind != "dir":
                raise SandboxError(f"{action.task_id}: input path {path!r} lies beneath {path[:cut]!r}, "
                                   f"which is a {kind}")
            cut = path.rfind("/", 0, cut)
    if not is_plain_relative(action.cwd) and action.cwd not in ("", "."):
        raise SandboxError(f"{action.task_id}: working folder {action.cwd!r} is not inside the workspace")
    for declared in action.outputs:
        if not is_plain_relative(declared):
            raise SandboxError(f"{action.task_id}: declared output {declared!r} is not inside the workspace")

    temp_dir = Path(tempfile.mkdtemp(prefix="nxrun-fetch-", dir=sandbox.parent))
    root_fd = os.open(sandbox, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    files = 0
    try:
        # files and folders first, links last: nothing is ever written through a link
        for item in sorted(action.inputs, key=lambda r: (r.kind == "symlink", r.path)):
            fd, name = _open_parent(root_fd, item.path, create=True)
            try:
                if item.kind == "dir":
                    try:
                        os.mkdir(name, item.mode & 0o755 or 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                elif item.kind == "symlink":
                    os.symlink(item.target, name, dir_fd=fd)
                else:
                    temp = temp_dir / item.digest
                    if not temp.exists():
                        area.fetch_blob(item.digest, temp, int(item.size))
                    out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=fd)
                    with os.fdopen(out, "wb") as target, open(temp, "rb") as source:
                        shutil.copyfileobj(source, target, 1 << 20)
                        os.fchmod(target.fileno(), (item.mode & 0o755) | 0o600)
                    files += 1
            finally:
                os.close(fd)
    finally:
        os.close(root_fd)
        shutil.rmtree(temp_dir, ignore_errors=True)
    # each link's target stays inside on its own, but one may lead through another (b -> ., a -> b/..):
    # followed as the kernel follows them, every link must still end in the sandbox
    inside = os.path.realpath(sandbox)
    for item in action.inputs:
        if item.kind == "symlink":
            resolved = os.path.realpath(os.path.join(sandbox, item.path))
            if resolved != inside and not resolved.startswith(inside + os.sep):
                raise SandboxError(f"{action.task_id}: input link {item.path!r} -> {item.target!r} leads out of "
                                   "the sandbox through the other links of the action")
    return files


def scan(sandbox: Path, declared_outputs: list[str]) -> tuple[list[OutputRecord], list[str]]:
    """Records of the declared outputs in the sandbox (files hashed); (records, missing): the
    workspace's own output scan, with a stat cache that lives as long as the sandbox."""
    return scan_outputs(sandbox, declared_outputs, StatCache(), None)


def _die_with_parent() -> None:
    """In the command's child: it dies with the worker (PR_SET_PDEATHSIG), in a group of its own."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the process group still lets cancel reach it
        pass


def _dismiss_watchdog(watchdog: subprocess.Popen | None) -> None:
    """The command's group was stopped here: the watchdog exits and kills nothing."""
    if watchdog is None:
        return
    task_watchdog.tell(watchdog, "bye")
    try:
        watchdog.stdin.close()
        watchdog.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        pass


def _kill_group(process: subprocess.Popen) -> None:
    """SIGTERM to the command's group, SIGKILL after 5 s, or at once when another interrupt comes
    meanwhile (the executor sends a cancel again while the task runs on): the group always ends."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=5)
    except BaseException:       # the grace ran out, or a second cancel's KeyboardInterrupt
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while True:
            try:
                process.wait()
                break
            except BaseException:   # noqa: BLE001 - one more interrupt: the group is killed, reap it still
                continue


def probe_here(command: str, cwd: str) -> tuple[int, str]:
    """(exit code, stdout stripped) of a `runtime:` probe command run on this node, as
    runtime.Runtime.probe runs it on the machine of a local run."""
    from ..runtime import command_environment

    try:
        done = subprocess.run(command, shell=True, cwd=cwd, capture_output=True, text=True,
                              env=command_environment(), timeout=120)
    except subprocess.TimeoutExpired:
        return 124, "(did not finish in 120 s)"
    return done.returncode, (done.stdout.strip() if done.returncode == 0 else done.stderr.strip()[-2000:])


def worker_facts(gpu_ids: list[str]) -> dict[str, str]:
    """Where the action ran: host, GPUs and the hardware fingerprint of those GPUs (computed here,
    under the CUDA_VISIBLE_DEVICES this worker got), as the entry's runtime facts."""
    from ..runtime import _hardware_fingerprint

    return {"hardware": _hardware_fingerprint(), "node": socket.gethostname(),
            "gpu_ids": ",".join(gpu_ids), "python": sys.version.split()[0]}


INLINE_LOG = 64 << 10      # a log up to this size also travels back with the result (no GET for it)
_areas: dict[tuple, ActionArea] = {}
_areas_lock = threading.Lock()


def _area_for(spec: dict) -> ActionArea:
    """One client per remote and worker process: Ray reuses its worker processes, and making a
    boto3 client costs more than a small task's requests."""
    key = tuple(sorted((k, repr(v)) for k, v in spec.items()))
    with _areas_lock:
        area = _areas.get(key)
        if area is None:
            area = _areas[key] = ActionArea.open(RemoteSpec(**spec))
        return area


def run_action(spec: dict, digest: str, env_values: dict[str, str], gpu_ids: list[str] | None = None,
               where: dict[str, str] | None = None, args: list[str] | None = None) -> dict:
    """Materialise, run, scan and upload one action; the result as plain data:
    {exit_code, duration, log_digest, log_size, log (its bytes, when small), entry (a manifest dict,
    or None), problem, facts, sandbox}.

    `gpu_ids`: the GPUs the scheduler gave this task (CUDA_VISIBLE_DEVICES is taken from the
    environment it set); `where`: more facts about the place (the Ray node id). The entry is only
    made for exit code 0 and when the hardware matches. `env_values` and `args` (appended to the
    command, as the scheduler appends the args after `--`) are never in the action record: secrets.
    An env name of the record without a value is unset for the command."""
    area = _area_for(spec)
    sandbox = make_sandbox()
    result: dict = {"exit_code": -1, "duration": 0.0, "log_digest": None, "log_size": 0, "entry": None,
                    "problem": None, "facts": {}, "sandbox": str(sandbox), "missing": []}
    try:
        try:
            action = area.get_action(digest)
            materialise(area, action, sandbox)
        except (ValueError, SandboxError, CorruptBlob, UnsafeEntry, OSError) as exc:
            result["problem"] = f"could not prepare the sandbox: {exc}"
            return result
        facts = worker_facts(list(gpu_ids or []))
        facts.update(where or {})
        result["facts"] = facts
        # the runtime probes the ETag holds, run here (as a local run runs them in the workspace):
        # a node that answers otherwise does not run the task
        for name, (command, expected) in sorted(action.probes.items()):
            found = probe_here(command, str(sandbox))
            if found != (0, expected):
                said = f"exit code {found[0]}" if found[0] else repr(found[1][:200])
                result["problem"] = (f"runtime probe '{name}' gives {said} on {facts['node']}, not the output its "
                                     f"ETag holds ({expected[:200]!r}); it did not run there")
                return result
        cwd = sandbox if action.cwd in ("", ".") else sandbox / action.cwd
        try:
            cwd.mkdir(parents=True, exist_ok=True)
            # the folders that hold the declared outputs exist, as they would in a workspace (Bazel
            # does the same): a command may write out/x.txt without making out/ first
            for declared in action.outputs:
                if "/" in declared:
                    (sandbox / declared.rsplit("/", 1)[0]).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            result["problem"] = f"could not prepare the sandbox: {exc}"
            return result
        from ..runtime import command_environment

        env = command_environment()
        for name in action.env_names:
            if name in env_values:
                env[name] = env_values[name]
            else:
                env.pop(name, None)
        env["NXRUN_WORKSPACE"] = str(sandbox)
        env["NXRUN_SANDBOX"] = str(sandbox)
        env.setdefault("PYTHONUNBUFFERED", "1")
        if gpu_ids:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            if visible is not None:
                env["CUDA_VISIBLE_DEVICES"] = visible
            env["NXRUN_GPU_IDS"] = ",".join(gpu_ids)
        log_path = sandbox.parent / f"{sandbox.name}.log"
        started = time.monotonic()
        # private (the log may hold secrets the command printed), and never through a link
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        # the worker can die without a word (a forced cancel SIGKILLs it): PR_SET_PDEATHSIG ends the
        # shell only, so a watchdog outside the worker stops the command's group and every process
        # carrying the run token when the worker's end closes its input
        token = os.urandom(16).hex()
        env[TOKEN_VARIABLE] = token
        watchdog = task_watchdog.start(token, 2.0)
        with os.fdopen(log_fd, "wb") as log:
            command = action.command + "".join(" " + shlex.quote(str(a)) for a in args or [])
            try:
                process = subprocess.Popen(["/bin/sh", "-c", command], cwd=cwd, env=env,
                                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True, preexec_fn=_die_with_parent)
            except BaseException:
                _dismiss_watchdog(watchdog)
                raise
            task_watchdog.tell(watchdog, f"+{process.pid}")
            try:
                # short waits, not one: Ray's cancel raises KeyboardInterrupt in this thread only
                # between Python instructions, never inside one long waitpid
                while True:
                    try:
                        exit_code = process.wait(timeout=0.2)
                        break
                    except subprocess.TimeoutExpired:
                        continue
            except BaseException:      # ray.cancel (KeyboardInterrupt), the worker shutting down
                _kill_group(process)
                _dismiss_watchdog(watchdog)
                raise
            # what the command left running would write on into outputs being hashed and uploaded,
            # and outlive the sandbox (PR_SET_PDEATHSIG covers the shell only): its group goes too
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _dismiss_watchdog(watchdog)
        result["duration"] = time.monotonic() - started
        result["exit_code"] = exit_code
        log_size = log_path.stat().st_size
        log_digest = digest_file(str(log_path))
        area.put_blob_file(log_digest, log_path, log_size)
        result["log_digest"], result["log_size"] = log_digest, log_size
        if log_size <= INLINE_LOG:
            result["log"] = log_path.read_bytes()
        log_path.unlink()
        if exit_code != 0:
            return result
        if action.hardware and facts["hardware"] != action.hardware:
            result["problem"] = (f"ran on {facts['node']} whose hardware ({facts['hardware']}) is not the hardware "
                                 f"its ETag was computed for ({action.hardware}); its result is not stored")
            return result
        records, missing = scan(sandbox, action.outputs)
        result["missing"] = missing
        for item in records:
            if item.kind == "file":
                area.put_blob_file(item.digest, sandbox / item.path, item.size)
        entry = CacheEntry(etag=action.etag, task_id=action.task_id, outputs=records,
                           declared_outputs=list(action.outputs), outputs_digest=digest_of_records(records),
                           log_digest=log_digest, exit_code=0, duration=result["duration"], created=time.time(),
                           runtime_facts={k: v[:2000] for k, v in facts.items()})
        result["entry"] = as_dict(entry)
        return result
    finally:
        if os.environ.get(KEEP_SANDBOX_ENV, "") not in ("1", "true", "yes"):
            shutil.rmtree(sandbox, ignore_errors=True)
            try:
                os.unlink(sandbox.parent / f"{sandbox.name}.log")
            except FileNotFoundError:
                pass
