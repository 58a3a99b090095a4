"""The Ray executor: each cache miss runs as one Ray task on a cluster, with no shared file system.

Files travel through the remote cache (DESIGN.md section 8): the driver uploads the task's
missing input blobs and an action record (nxrun/executors/action.py), the Ray task carries only
the action digest and the env values, and the worker runs the command in a fresh sandbox
(nxrun/executors/sandbox.py) and returns a manifest. The driver checks it (store/safety.check_entry),
writes the entry write-once (signed when a signing key is set) and hands it to the scheduler, which
restores it like a remote hit. Hits never reach this module: they are decided and restored where
nxrun runs.

- Placement: `num_cpus` and `num_gpus` from the job; Ray sets CUDA_VISIBLE_DEVICES, and the GPU
  ids it gave are recorded in the entry's runtime facts (`gpu_ids`, `node`).
- Failures: a command that fails returns its exit code and its log, which is passed to `on_line`
  when the task ends; a worker that dies mid-task is retried once by Ray (`max_retries=1`; each
  try has a fresh sandbox, and only the driver writes entries, so nothing is ever half-stored),
  and a second death fails the task with a `problem`.
- Hardware: a `cache = "hardware"` task's ETag holds the fingerprint of the cluster's nodes
  that will run it, not of this machine (`hardware_fingerprint`, asked once per run of every node
  with enough GPUs), and the task is routed to those nodes (a `ray.io/node-id` label selector).
  The worker takes its own fingerprint where it runs, under the GPUs Ray gave it; one that differs
  from the action record's stores nothing and fails the task, naming both, so a timing from one
  GPU model is never filed under another (docs/ray.md says why this design). `runtime:` probes
  alike: run on those nodes for the ETag (`probe_output`), the task routed there, and re-run in
  the sandbox before the command.
- The cluster: RAY_ADDRESS, or `[workspace] ray-address`, as Ray users expect; neither starts a
  local Ray instance (ray.init()). An address that does not answer is a clear error within
  NXRUN_RAY_CONNECT_TIMEOUT seconds (default 30), never a hang.

Ray is imported only here and only when this executor is used: without it, `--executor ray`
says `pip install 'nxrun[ray]'`.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import NxrunError, ProbeError
from ..records import as_dict
from ..store import CacheEntry, CorruptBlob, UnsafeEntry
from ..store.s3 import RemoteRefused, RemoteUnavailable
from ..store.safety import check_entry
from .action import Action, ActionArea, InputError, RemoteSpec, describe_inputs, upload_inputs
from .base import Finished, Job

CONNECT_TIMEOUT = 30.0
INSTALL_HINT = "pip install 'nxrun[ray]'"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
# env the scheduler sets for the local machine; on a worker they are the worker's own
_LOCAL_ONLY_ENV = ("NXRUN_WORKSPACE", "CUDA_VISIBLE_DEVICES", "NXRUN_GPU_IDS")


def import_ray():
    """The ray module, or an NxrunError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise NxrunError(f"--executor ray needs Ray, which is not installed here: {INSTALL_HINT}") from None
    return ray


def _run_on_worker(spec: dict, digest: str, env_values: dict[str, str], args: list[str] | None = None) -> dict:
    """The body of the Ray task (on the worker node)."""
    import ray

    from nxrun.executors.sandbox import run_action

    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    return run_action(spec, digest, env_values, gpu_ids, {"ray_node": ray.get_runtime_context().get_node_id()},
                      args=args)


def _probe_hardware(gpus: int) -> str:
    """On a node: the hardware fingerprint a task with `gpus` GPUs would take there (its first
    `gpus` GPUs; the fingerprint never holds an index, so which ones does not matter on a node of
    one GPU model)."""
    from nxrun.runtime import _hardware_fingerprint

    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(gpus))
    try:
        return _hardware_fingerprint()
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved


def _run_probe(command: str) -> tuple[int, str]:
    """On a node: a `runtime:` probe, in an empty folder of its own."""
    import shutil
    import tempfile

    from nxrun.executors.sandbox import probe_here

    folder = tempfile.mkdtemp(prefix="nxrun-probe-")
    try:
        return probe_here(command, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _address_host_port(address: str) -> tuple[str, int] | None:
    text = address.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0]
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _without_args(command: str, args: list[str]) -> tuple[str, list[str]]:
    """(the command without the args the scheduler appended to it, those args)."""
    suffix = " " + " ".join(shlex.quote(a) for a in args)
    if not args or not command.endswith(suffix):
        return command, []
    return command[:-len(suffix)], args


class RayExecutor:
    name = "ray"
    produces_entries = True
    places_resources = ("gpu",)        # Ray places GPU tasks on its nodes' GPUs (num_gpus)

    def __init__(self, workspace, remote, console=None, *, address: str | None = None, graph=None,
                 connect_timeout: float | None = None):
        self.workspace = workspace
        self.root = Path(workspace.root)
        self.remote = remote
        self.console = console
        self.graph = graph
        self.address = address or os.environ.get("RAY_ADDRESS") or getattr(workspace, "ray_address", None) or None
        timeout = connect_timeout or os.environ.get("NXRUN_RAY_CONNECT_TIMEOUT") or CONNECT_TIMEOUT
        try:
            self.connect_timeout = float(timeout)
        except ValueError:
            raise NxrunError(f"NXRUN_RAY_CONNECT_TIMEOUT={timeout!r} is not a number of seconds.") from None
        self._ray = None
        self._remote_fn = None
        self._spec: RemoteSpec | None = None
        self._area: ActionArea | None = None
        self._known_blobs: set[str] = set()
        self._digests: dict = {}                  # file digests of this run (action.describe_inputs)
        self._lock = threading.Lock()
        self._running: dict[object, str] = {}     # ObjectRef -> task id
        self._cancelled = False
        self._classes: dict[int, tuple[str, list[str]]] = {}   # GPUs -> (fingerprint, node ids)
        self._classes_lock = threading.Lock()
        self._probes: dict[tuple[str, int], str] = {}           # (probe, GPUs) -> output on the nodes
        self.gpu_ids: dict[str, list[str]] = {}   # task id -> GPU ids Ray gave it (reported by the worker)

    # ------------------------------------------------------------------ start
    def check(self) -> None:
        if self.remote is None:
            raise NxrunError("--executor ray needs a remote cache: a task's input files go to the workers, and "
                             "its outputs come back, through it (no shared file system is assumed). Set [remote] "
                             "url = \"s3://bucket/prefix\" in nxrun.toml (or NXRUN_REMOTE), reachable from this "
                             "machine and from every node of the cluster.")
        if getattr(self.remote, "read_only", False):
            raise NxrunError("--executor ray needs a remote cache it can write to (the workers' outputs come back "
                             "through it), but [remote] is read-only here (read-only = true or "
                             "NXRUN_REMOTE_READ_ONLY). Run with the local executor, or with a writable namespace.")
        self._spec = self._remote_spec()
        host_port = _address_host_port(self.address) if self.address else None
        if host_port is not None and host_port[0] in _LOOPBACK:
            # read when ray is imported: without it Ray turns 127.0.0.1 into this machine's outward address
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray = import_ray()
        self._ray = ray
        if not ray.is_initialized():
            self._connect(ray)
        self._remote_fn = ray.remote(max_retries=1, retry_exceptions=False)(_run_on_worker)
        self._area = ActionArea.open(self._spec)

    def _remote_spec(self) -> RemoteSpec:
        backend = getattr(self.remote, "backend", None)
        location = getattr(backend, "location", None)
        if backend is None or location is None:
            raise NxrunError("--executor ray works with an S3 remote cache ([remote] url = \"s3://...\") only.")
        url = getattr(self.remote, "url", "") or f"s3://{location.bucket}/{location.prefix}"
        return RemoteSpec(url=url, namespace=self.remote.write_namespace, endpoint_url=backend.endpoint_url,
                          region=backend.region, connect_timeout=backend.connect_timeout,
                          read_timeout=max(backend.read_timeout, 30.0))

    def _connect(self, ray) -> None:
        address = self.address
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        if address:
            host_port = _address_host_port(address)
            if host_port is not None:
                host, port = host_port
                try:
                    with socket.create_connection((host, port), timeout=min(self.connect_timeout, 10.0)):
                        pass
                except OSError as exc:
                    raise NxrunError(f"cannot reach {where} ({exc}). Start it (`ray start --head`) or fix "
                                     "RAY_ADDRESS / [workspace] ray-address.") from None
        outcome: list = []
        done = threading.Event()

        def init() -> None:
            try:
                ray.init(address=address or None, log_to_driver=False, configure_logging=False,
                         namespace="nxrun")
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                outcome.append(exc)
            finally:
                done.set()

        threading.Thread(target=init, name="nxrun-ray-connect", daemon=True).start()
        if not done.wait(self.connect_timeout):
            raise NxrunError(f"{where} did not answer within {self.connect_timeout:.0f}s "
                             "(NXRUN_RAY_CONNECT_TIMEOUT). Check RAY_ADDRESS / [workspace] ray-address and that "
                             "the cluster is up (`ray status`).")
        if outcome and outcome[0] is not None:
            raise NxrunError(f"could not connect to {where}: {str(outcome[0]).splitlines()[0][:300]}")

    # ------------------------------------------------------------------ one miss
    def upstream_outputs(self, job: Job) -> list[str]:
        """Declared outputs of every task upstream of the job's (what a local run would find on disk)."""
        given = getattr(job, "upstream_outputs", None)
        if given is not None:
            return list(given)
        if self.graph is None:
            return []
        tasks = self.graph.tasks
        seen: set[str] = set()
        stack = list(job.task.deps)
        outputs: list[str] = []
        while stack:
            task_id = stack.pop()
            if task_id in seen:
                continue
            seen.add(task_id)
            upstream = tasks[task_id]
            outputs.extend(upstream.outputs)
            stack.extend(upstream.deps)
        return list(dict.fromkeys(outputs))

    def _gpu_count(self, job: Job) -> int:
        return len(job.gpus) if job.gpus else self.gpus_of(job.task)

    def gpus_of(self, task) -> int:
        from ..runtime import _gpu_demand

        return _gpu_demand(task)

    def hardware_fingerprint(self, task) -> str:
        """The hardware fingerprint for the ETag of a `cache = "hardware"` task that runs on this
        cluster: that of the nodes it will be routed to (see hardware_class), not this machine's."""
        return self.hardware_class(self.gpus_of(task))[0]

    def hardware_class(self, gpus: int) -> tuple[str, list[str]]:
        """(fingerprint, node ids) of the nodes that run `cache = "hardware"` tasks asking for
        `gpus` GPUs: every alive node with that many GPUs is asked for its fingerprint (once per
        run, a task of no CPU pinned to it), and the fingerprint shared by the most GPUs (nodes, for
        CPU tasks) wins, ties broken by name, so every run against the same cluster picks the same
        one. Such tasks are routed to those nodes only, and a worker whose own fingerprint differs
        still refuses to store its result."""
        with self._classes_lock:
            if gpus in self._classes:
                return self._classes[gpus]
            if self._ray is None:        # a dry run does not check the executor at start
                self.check()
            ray = self._ray
            nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("GPU", 0) >= gpus]
            if not nodes:
                raise NxrunError(f"no node of the Ray cluster has {gpus} GPUs for a task that asks for them.")
            probe = ray.remote(num_cpus=0, max_retries=1)(_probe_hardware)
            refs = [probe.options(label_selector={"ray.io/node-id": n["NodeID"]}).remote(gpus) for n in nodes]
            try:
                found = ray.get(refs, timeout=max(self.connect_timeout, 60.0))
            except ray.exceptions.GetTimeoutError:
                raise NxrunError("the nodes of the Ray cluster did not say what hardware they have within "
                                 f"{max(self.connect_timeout, 60.0):.0f}s.") from None
            groups: dict[str, list[dict]] = {}
            for node, fingerprint in zip(nodes, found):
                groups.setdefault(fingerprint, []).append(node)

            def weight(item) -> tuple:
                fingerprint, members = item
                total = sum(n.get("Resources", {}).get("GPU", 0) for n in members) if gpus else len(members)
                return (-total, fingerprint)

            fingerprint, members = sorted(groups.items(), key=weight)[0]
            chosen = (fingerprint, sorted(n["NodeID"] for n in members))
            self._classes[gpus] = chosen
            return chosen

    def probe_output(self, name: str, command: str, task) -> str:
        """The output of `runtime:NAME` for a task's ETag: run on every node the task may be
        routed to (those of its hardware class); nodes that disagree are an error that names them,
        since the task's ETag could only hold one of the answers."""
        gpus = self.gpus_of(task)
        key = (name, gpus)
        with self._classes_lock:
            if key in self._probes:
                return self._probes[key]
        _fingerprint, nodes = self.hardware_class(gpus)
        ray = self._ray
        run = ray.remote(num_cpus=0, max_retries=1)(_run_probe)
        refs = [run.options(label_selector={"ray.io/node-id": node}).remote(command) for node in nodes]
        try:
            answers = ray.get(refs, timeout=180)
        except ray.exceptions.GetTimeoutError:
            raise ProbeError(f"runtime probe '{name}' did not answer on the Ray nodes within 180 s "
                             f"(needed by {task.id}).") from None
        for node, (code, text) in zip(nodes, answers):
            if code != 0:
                raise ProbeError(f"runtime probe '{name}' failed with exit code {code} on Ray node {node[:12]} "
                                 f"(needed by {task.id}):\n  command: {command}\n  stderr: {text or '(no stderr)'}\n"
                                 "Fix the command under [runtime] in nxrun.toml, or install what it calls on the nodes.")
        outputs = {text for _code, text in answers}
        if len(outputs) > 1:
            raise ProbeError(f"runtime probe '{name}' answers differently on the Ray nodes that may run {task.id} "
                             f"({', '.join(repr(o[:60]) for o in sorted(outputs))}); its ETag can hold one answer "
                             "only. Make those nodes alike, or run the task with --executor local.")
        output = outputs.pop()
        with self._classes_lock:
            self._probes[key] = output
        return output

    def run(self, job: Job, on_line: Callable[[bytes], None]) -> Finished:
        ray = self._ray
        area = self._area
        if ray is None or area is None or self._spec is None:
            raise RuntimeError("RayExecutor.check() must run before run()")
        started = time.monotonic()
        task = job.task
        if self._cancelled:
            return Finished(exit_code=-2, duration=0.0, log=None, entry=None, problem="cancelled")
        try:
            inputs = describe_inputs(self.root, list(job.inputs), self.upstream_outputs(job), self._digests)
            with self._lock:
                known = set(self._known_blobs)
            upload_inputs(area, self.root, inputs, known)
            with self._lock:
                self._known_blobs |= known
            # the values of `env:NAME` inputs are the driver's, as the ETag hashed them (unset ones
            # are unset on the worker too); like the args after `--`, they travel with the Ray task only
            env_inputs = {i[len("env:"):] for i in task.inputs if i.startswith("env:")}
            env_names = sorted((set(job.env) | env_inputs) - set(_LOCAL_ONLY_ENV))
            command, args = _without_args(job.command, list(getattr(job, "args", None) or []))
            probe_names = [i[len("runtime:"):] for i in task.inputs if i.startswith("runtime:")]
            hardware, nodes = "", []
            if task.cache == "hardware" or probe_names:
                hardware, nodes = self.hardware_class(self._gpu_count(job))
                if task.cache != "hardware":
                    hardware = ""
            probes = {}
            for name in probe_names:
                command = self._probe_commands().get(name)
                if command is not None:
                    probes[name] = [command, self.probe_output(name, command, task)]
            action = Action(task_id=task.id, etag=job.etag, command=command, cwd=job.cwd or "",
                            env_names=env_names, inputs=inputs, outputs=list(task.outputs), hardware=hardware,
                            probes=probes)
            digest = area.put_action(action)
        except (InputError, NxrunError) as exc:
            return self._failed(started, f"could not send it to the cluster: {exc}")
        except (RemoteUnavailable, RemoteRefused, OSError) as exc:
            return self._failed(started, f"could not upload its inputs to the remote cache ({exc})")
        env_values = {k: job.env[k] if k in job.env else os.environ[k] for k in env_names
                      if k in job.env or k in os.environ}
        options = {"num_cpus": max(0, int(job.cpus)), "num_gpus": self._gpu_count(job),
                   "name": f"nxrun:{task.id}"}
        if nodes:        # only where the ETag's fingerprint and probe outputs are the node's
            options["label_selector"] = {"ray.io/node-id": f"in({','.join(nodes)})"}
        with self._lock:
            # under the lock cancel_all lists the running tasks with: a cancel that came while this
            # one was being sent either stops it here or finds it there
            if self._cancelled:
                return self._failed(started, "cancelled")
            ref = self._remote_fn.options(**options).remote(self._spec.as_plain(), digest, env_values, args)
            self._running[ref] = task.id
        try:
            result = self._wait(ray, ref)
        except ray.exceptions.TaskCancelledError:
            return self._failed(started, "cancelled")
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc, ray.exceptions.TaskCancelledError) or self._cancelled:
                return self._failed(started, "cancelled")
            return self._failed(started, f"the Ray task failed: {str(exc).splitlines()[0][:300]}")
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError) as exc:
            if self._cancelled:         # a forced cancel ends the worker
                return self._failed(started, "cancelled")
            return self._failed(started, f"the Ray worker running it died, twice (it was retried once); nothing "
                                         f"was cached ({type(exc).__name__})")
        except ray.exceptions.RayError as exc:
            return self._failed(started, f"the Ray task failed: {str(exc).splitlines()[0][:300]}")
        finally:
            with self._lock:
                self._running.pop(ref, None)
        return self._collect(job, result, on_line, started)

    # a cancel is best effort in Ray (its documentation says so): it is sent again while the task runs
    # on, after the sandbox's 5 s grace for the command (a second interrupt SIGKILLs at once), and
    # forced at the end
    CANCEL_AGAIN_S = 6.0
    CANCEL_FORCE_AFTER_S = 20.0

    def _wait(self, ray, ref):
        """ray.get(ref), in short waits: once the run is cancelled, the task's cancel is sent again
        every CANCEL_AGAIN_S, and with force after CANCEL_FORCE_AFTER_S. A forced cancel ends the
        worker process; the sandbox's watchdog then stops the command's processes (sandbox.py)."""
        cancelled_at = None
        while True:
            try:
                return ray.get(ref, timeout=self.CANCEL_AGAIN_S if self._cancelled else 1.0)
            except ray.exceptions.GetTimeoutError:
                if not self._cancelled:
                    continue
            now = time.monotonic()
            cancelled_at = cancelled_at or now
            try:
                ray.cancel(ref, force=now - cancelled_at >= self.CANCEL_FORCE_AFTER_S)
            except Exception:  # noqa: BLE001 - it finished meanwhile, or the cluster is gone
                pass

    def _probe_commands(self) -> dict[str, str]:
        probes = getattr(self.workspace, "runtime", None)
        return probes if isinstance(probes, dict) else {}

    def _failed(self, started: float, problem: str, exit_code: int = -1) -> Finished:
        return Finished(exit_code=exit_code, duration=time.monotonic() - started, log=None, entry=None,
                        problem=problem)

    def _collect(self, job: Job, result: dict, on_line: Callable[[bytes], None], started: float) -> Finished:
        area = self._area
        assert area is not None
        task = job.task
        self.gpu_ids[task.id] = [g for g in str(result.get("facts", {}).get("gpu_ids", "")).split(",") if g]
        log = result.get("log")
        if log is None and result.get("log_digest"):
            try:
                log = area.read_blob(result["log_digest"])
            except (CorruptBlob, RemoteUnavailable, RemoteRefused, ValueError) as exc:
                log = f"(the log of this task could not be fetched: {exc})\n".encode()
        for line in (log or b"").splitlines(keepends=True):
            on_line(line)
        duration = float(result.get("duration") or 0.0)
        exit_code = int(result.get("exit_code", -1))
        if result.get("problem"):
            return Finished(exit_code=exit_code if exit_code != 0 else -1, duration=duration, log=None, entry=None,
                            problem=result["problem"])
        if exit_code != 0:
            return Finished(exit_code=exit_code, duration=duration, log=None, entry=None)
        try:
            entry = CacheEntry.from_json(json.dumps(result["entry"]))
            entry.explain = dict(getattr(job, "explain", None) or {})    # what the ETag was made of, for `why`
            if entry.etag != job.etag or entry.task_id != task.id:
                raise UnsafeEntry(f"{task.id}: the worker returned the manifest of another task")
            check_entry(entry, list(task.outputs))
        except (UnsafeEntry, ValueError, TypeError, KeyError) as exc:
            return Finished(exit_code=0, duration=duration, log=None, entry=None,
                            problem=f"its outputs cannot be restored from the cache, so they cannot come back "
                                    f"from the worker: {exc}. Keep links inside the task's declared outputs.")
        if task.cache != "never":
            manifest = as_dict(entry)
            manifest["signature"] = None
            key = getattr(self.remote, "signing_key", None)
            if key is not None:
                from ..store.signing import sign_manifest

                manifest["signature"] = sign_manifest(entry.etag, manifest, key)
            try:
                area.put_entry(entry.etag, manifest)
            except (RemoteUnavailable, RemoteRefused) as exc:
                return Finished(exit_code=0, duration=duration, log=None, entry=None,
                                problem=f"its outputs are in the remote cache but its entry could not be written "
                                        f"({exc})")
        return Finished(exit_code=0, duration=duration, log=None, entry=entry)

    # ------------------------------------------------------------------ stop
    def cancel_all(self) -> None:
        """Ctrl-C, or the first failure without --keep-going: cancel the run's Ray tasks (their
        commands' process groups are killed on the workers)."""
        self._cancelled = True
        ray = self._ray
        if ray is None:
            return
        with self._lock:
            refs = list(self._running)
        for ref in refs:
            try:
                ray.cancel(ref, force=False)
            except Exception:  # noqa: BLE001 - already finished, or the cluster is gone
                pass

    def close(self, clean: bool) -> None:
        if not clean:
            self.cancel_all()
        if self._area is not None:
            self._area.close()
            self._area = None
        ray = self._ray
        if ray is not None and ray.is_initialized():
            try:
                ray.shutdown()
            except Exception:  # noqa: BLE001 - closing never fails a run
                pass
