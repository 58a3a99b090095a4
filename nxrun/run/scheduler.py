"""The scheduler: run a set of tasks in graph order. A hit restores outputs and replays the log;
a miss goes to the executor (nxrun/executors/), and its outputs and log are stored.

Tasks become ready when their dependencies have finished; each ready task is hashed (its ETag
keyed on its upstream tasks' output digests, for early cutoff), looked up, and either restored or
queued to run. A queued task takes a worker only once its `resources` are granted (resources.py)
and the task with the same ETag before it, if any, is done: a task waiting for a resource holds no
worker, and tasks with the same ETag in one run execute once.

Runs in one workspace never race on a task's outputs: a task's lock (task_locks.py) is held from
before its cache lookup until its outputs are restored, or run and recorded in the index, so a
second run waits and then hits. Locks are never held while waiting for dependencies, a twin or
another lock; the scheduling thread only tries them, and a worker waits when one is taken. A
command's input files are re-checked when it exits (input_check.py): a result made while an input
changed is not cached. A local command starts from clean declared outputs (fresh_outputs.py).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import deque

from ..console import Console
from ..errors import NxrunError
from ..graph import Task, TaskGraph, check_linked_output_owners
from ..hashing import InputMemo, StatCache, TaskHasher, etag_of
from ..records import record
from ..runtime import Runtime
from ..store import CacheEntry, CorruptBlob, UnsafeEntry
from ..store.cache import TieredCache
from ..store.capture import LogCapture, digest_of_records, scan_outputs
from ..store.local import LocalStore
from ..store.safety import check_entry
from .etag import CurrentETags, aggregate_digest
from .history import RunRecord, TaskRecord, save_run
from .input_check import InputStats, RecordingStatCache, compact, first_changed
from .resources import Grant, Resources
from .results import RunOptions, RunResult, TaskResult
from .task_locks import TaskLocks

AGGREGATE = "aggregate"


class _LazyPool:
    """A thread pool created on the first submit: a run where every task is cached never imports
    concurrent.futures (and logging with it) nor starts a thread."""

    def __init__(self, workers: int):
        self.workers = workers
        self._pool = None

    def submit(self, fn, *args):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self.workers)
        return self._pool.submit(fn, *args)

    def __enter__(self) -> _LazyPool:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


@record
class _Pending:
    """A hashed task that was not restored from the local cache."""

    etag: str
    record: TaskRecord
    tick: float
    owner_event: threading.Event | None   # set when an identical task of this run is done
    inputs: InputStats                    # its input files as they were hashed
    locked: bool = False                  # whether this run holds the task's lock already
    grant: Grant | None = None            # its resources, granted before it took a worker
    gpu_class: str | None = None          # the GPU class its ETag names (`cache = "hardware"`)


# An ETag's claim in one run: absent until a task with it is prepared; None while its first task
# (the owner) is on it and nobody waits; an Event once a twin waits; _DONE when the owner finished.
# Events are made only for twins: most runs have none, and an Event per task costs a lock each.
_DONE = threading.Event()
_DONE.set()
# from this many tasks on, a run reads the entries of their latest ETags in one query up front
_PREFETCH_FROM = 32


class _TerminateAsInterrupt:
    """While a run is on, SIGTERM (a CI cancel, a timeout) stops it as Ctrl-C does: running tasks
    are stopped, and the entries of finished ones and the history are written before exit."""

    def __enter__(self):
        import signal

        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self._previous is not None:
            import signal

            signal.signal(signal.SIGTERM, self._previous)


class Runner:
    def __init__(self, graph: TaskGraph, store: LocalStore, options: RunOptions, console: Console,
                 remote=None, argv: list[str] | None = None, env_key=None, executor="local"):
        """`executor`: the name of the executor that runs cache misses (executors/), or one made
        already (an object with the methods of executors.base.Executor)."""
        self.graph = graph
        self.workspace = graph.workspace
        self.root = graph.workspace.root
        self.store = store
        self.remote = remote          # a store.tiered.RemoteCache, or None
        self.options = options
        self.console = console
        self.argv = argv or []
        self.warnings: list[str] = []
        self._lock = threading.Lock()
        # a cache disk that is full or read-only turns caching off for this run, with one warning
        store.uncached_on_disk_problems(self._warn)
        self.stat_cache = StatCache(store.load_stat_cache(under=str(self.root)))
        # the cache tiers: local first, then remote
        self.cache = TieredCache(store, remote, self.root, graph.workspace.restore, self.stat_cache)
        self.runtime = Runtime(graph.workspace.runtime, str(self.root), gpu_setting=graph.workspace.gpus,
                               gpu_cli=options.gpus)
        if env_key is None:   # the key of the configured remote, asked for when needed (show, why)
            from ..store.keys import EnvKeySource

            env_key = EnvKeySource(store, graph.workspace, remote, warn=console.warn)
        # the hasher's view of the stat cache notes each input's stat, for the check after the run
        self._input_stats = RecordingStatCache(self.stat_cache)
        # inputs digested once per run while nothing writes: emptied around each command and each
        # restore that wrote a file
        self.input_memo = InputMemo()
        self.hasher = TaskHasher(self.root, graph.file_index, self._input_stats, self.runtime, env_key,
                                 memo=self.input_memo)
        # what upstream tasks of --only tasks stand for: their entries restored, else as on disk
        self.current = CurrentETags(graph, store, self.hasher, self.stat_cache, after_hash=self._input_stats.take,
                                    use_entry=self._restore_locked)
        self.task_locks = TaskLocks(store.cache_dir, self.root, on_broken=lambda exc: self._warn(
            f"could not lock tasks in {self.task_locks.path} ({exc}); runs in this workspace at the same time "
            "are not kept from running the same task."))
        self.records: dict[str, TaskRecord] = {}
        self.results: dict[str, TaskResult] = {}
        # set when a worker finishes or a grant is released: the scheduling thread has work
        self._wake = threading.Event()
        self.resources = Resources(on_release=self._wake.set)
        self._etag_claims: dict[str, threading.Event | None] = {}
        self._interrupted = threading.Event()
        self._executor_choice = executor
        self.executor = None   # made at the start of run()
        # task locks kept until the index holds their tasks' entries (a waiting run must find them)
        self._locks_until_flushed: list[tuple[str, str]] = []   # (task id, etag)

    # ------------------------------------------------------------------ public
    def run(self, requested: list[str]) -> RunResult:
        started = time.time()
        wall = time.monotonic()
        selected = list(requested) if self.options.only else self.graph.with_dependencies(requested)
        workspace = self.graph.workspace
        reserved = {str(workspace.cache_dir): "the nxrun cache folder", str(self.root / ".git"): ".git",
                    **{str(path): f"the config file {path.name}" for path in workspace.config_files}}
        check_linked_output_owners(self.root, self.graph.tasks.values(), reserved)
        digests: dict[str, str | None] = {}
        waiting = f"waiting for a `nxrun cache prune`, `clear` or `verify` of {self.store.cache_dir} to finish..."
        self.executor = self._make_executor()
        self._check_gpu_requests(selected)
        with self.store.in_use(on_wait=lambda: self.console.warn(waiting)), _TerminateAsInterrupt():
            if len(selected) > _PREFETCH_FROM and not self.options.skip_cache:
                self.store.prefetch_hits(selected)
            self.console.start(sum(1 for t in selected if not self.graph.tasks[t].is_aggregate))
            clean = False
            try:
                self._schedule(selected, digests)
                clean = True
            except KeyboardInterrupt:
                self._interrupt()
                raise NxrunError("interrupted; running tasks were stopped and nothing of theirs was cached") \
                    from None
            finally:
                try:
                    self.console.stop()
                    self._finish(started)
                finally:
                    self.task_locks.close()   # after _finish: the index holds every entry by now
                    self.executor.close(clean)
        ordered = {t: self.results[t] for t in selected if t in self.results}
        summary = self.cache.summary()
        return RunResult(ordered, time.monotonic() - wall, self.warnings, summary)

    def _make_executor(self):
        choice = self._executor_choice
        if not isinstance(choice, str):
            executor = choice
        else:
            from ..executors import make_executor

            executor = make_executor(choice, self.workspace, self.remote, self.console, store=self.store,
                                     watchdog_holds=self.task_locks.inheritable_fds, graph=self.graph)
        if not self.options.dry_run:
            executor.check()
        # an executor that runs tasks elsewhere says what hardware a task's ETag must hold, and may
        # place GPU tasks itself
        self.runtime.hardware_source = getattr(executor, "hardware_fingerprint", None)
        self.runtime.probe_source = getattr(executor, "probe_output", None)
        self.resources.placed_elsewhere = frozenset(getattr(executor, "places_resources", ()))
        return executor

    def _check_gpu_requests(self, selected: list[str]) -> None:
        """Give the run its GPU pool when a selected task takes GPUs and this machine runs them, and
        fail now, before anything runs, when a task asks for more GPUs than the pool has."""
        from .resources import GPU

        if GPU in self.resources.placed_elsewhere:   # the executor places GPU tasks itself (Ray)
            return
        gpu_tasks = [self.graph.tasks[t] for t in selected if self.graph.tasks[t].gpus]
        if not gpu_tasks:
            return
        from .gpus import check_requests

        pool = self.runtime.gpu_pool()
        check_requests(pool, gpu_tasks)
        self.resources.gpu_pool = pool

    def _gpu_class(self, task: Task, components: dict[str, str]) -> str | None:
        """The GPU class a `cache = "hardware"` task is hashed for and will be granted (gpus.choose_class);
        its `hardware` component is set for that class."""
        pool = self.resources.gpu_pool
        if pool is None:
            return None
        from .gpus import choose_class

        def cached(gpu_class: str) -> bool:
            if self.options.skip_cache:
                return False
            trial = dict(components, hardware=self.hasher.hardware_digest(task, gpu_class))
            return self.store.get_hit(etag_of(trial)) is not None

        gpu_class = choose_class(pool, task.gpus, cached)
        if gpu_class is not None:
            components["hardware"] = self.hasher.hardware_digest(task, gpu_class)
        return gpu_class

    # ------------------------------------------------------------------ scheduling
    def _schedule(self, selected: list[str], digests: dict[str, str | None]) -> None:
        tasks = self.graph.tasks
        selected_set = set(selected)
        remaining_deps = {t: [d for d in tasks[t].deps if d in selected_set] for t in selected}
        if self.options.only:
            for task_id in selected:
                for dep in tasks[task_id].deps:
                    if dep not in selected_set:
                        digests[dep] = self.current.outputs_digest(dep)
        children: dict[str, list[str]] = {t: [] for t in selected}
        unfinished: dict[str, int] = {}
        for task_id in selected:
            deps = [d for d in tasks[task_id].deps if d in selected_set]
            unfinished[task_id] = len(deps)
            for dep in deps:
                children[dep].append(task_id)
        ready = deque(t for t in selected if unfinished[t] == 0)
        running: dict = {}   # Future -> task id
        stop_launching = False

        def finished(task_id: str) -> None:
            for child in children[task_id]:
                unfinished[child] -= 1
                if unfinished[child] == 0:
                    ready.append(child)

        def done_with(task_id: str, result: TaskResult) -> bool:
            """Record a finished task; True when it failed and the run should stop launching."""
            self.results[task_id] = result
            digests[task_id] = result.outputs_digest
            finished(task_id)
            return result.status == "failed" and not self.options.keep_going

        workers = max(1, self.options.parallel)
        # prepared misses waiting for a worker, their resources, or the identical task before them
        queued: deque[tuple[str, _Pending]] = deque()
        wake = self._wake

        def dispatch() -> None:
            """Hand queued tasks to free workers, in order, each once its resources are granted and
            the identical task before it (if any) is done; the others stay queued, holding nothing."""
            if len(running) >= workers:
                return
            for item in list(queued):
                task_id, pending = item
                if pending.owner_event is not None and not pending.owner_event.is_set():
                    continue
                grant = self.resources.try_grant(tasks[task_id], pending.gpu_class)
                if grant is None:
                    continue
                queued.remove(item)
                pending.grant = grant
                future = pool.submit(self._complete, tasks[task_id], pending)
                future.add_done_callback(lambda _future: wake.set())
                running[future] = task_id
                if len(running) >= workers:
                    return

        with _LazyPool(workers) as pool:
            try:
                while ready or running or queued:
                    while ready:
                        task_id = ready.popleft()
                        bad = [d for d in remaining_deps[task_id]
                               if self.results[d].status in ("failed", "skipped")]
                        if bad or stop_launching:
                            reason = f"dependency {bad[0]} {self.results[bad[0]].status}" if bad else \
                                "an earlier task failed (use --keep-going to run independent tasks)"
                            self._record_skip(task_id, reason)
                            finished(task_id)
                            continue
                        dep_digests = {d: digests.get(d) for d in tasks[task_id].deps}
                        # hashing, lookup and local restore happen here, in the scheduling thread: a
                        # cached task costs no thread hand-off; only misses (and remote lookups) go to
                        # the pool
                        try:
                            outcome = self._prepare(tasks[task_id], dep_digests)
                        except NxrunError:
                            self._interrupt()
                            raise
                        if isinstance(outcome, TaskResult):
                            stop_launching |= done_with(task_id, outcome)
                        else:
                            queued.append((task_id, outcome))
                    dispatch()
                    if not running:
                        if queued:   # nothing runs, so nothing is held: every queued task can go
                            raise NxrunError(f"internal error: {len(queued)} tasks cannot be scheduled "
                                             f"({queued[0][0]} first)")
                        continue
                    wake.wait(0.5)
                    wake.clear()
                    self.store.flush_due()
                    self._release_flushed_locks()
                    for future in [f for f in running if f.done()]:
                        task_id = running.pop(future)
                        try:
                            result = future.result()
                        except NxrunError:
                            self._interrupt()
                            raise
                        stop_launching |= done_with(task_id, result)
            except KeyboardInterrupt:
                self._interrupt()   # before the pool waits for its workers: stop their commands first
                raise
            finally:
                self._drop_queued(queued)

    def _drop_queued(self, queued) -> None:
        """The run stopped with prepared tasks that never got a worker: they are skipped, and
        give back their locks and their claims on their ETags."""
        while queued:
            task_id, pending = queued.popleft()
            pending.record.status = "skipped"
            if pending.locked:
                self.task_locks.release(task_id)
            if pending.owner_event is None:
                self._release_claim(pending.etag)

    def _record_skip(self, task_id: str, reason: str) -> None:
        self.results[task_id] = TaskResult(task_id, "skipped", note=reason)
        if not self.graph.tasks[task_id].is_aggregate:
            self.records[task_id] = TaskRecord(task_id, None, "skipped", error=reason, started=time.time())
            self.console.task_finished(task_id, "skipped", 0.0, reason)

    # ------------------------------------------------------------------ one task
    def _prepare(self, task: Task, dep_digests: dict[str, str | None]) -> TaskResult | _Pending:
        """Hash the task and try the local cache; a _Pending when it must run (or wait)."""
        started = time.time()
        tick = time.monotonic()
        if task.is_aggregate:
            return TaskResult(task.id, AGGREGATE, outputs_digest=aggregate_digest(dep_digests))
        if any(v is None for v in dep_digests.values()):
            # dry run: an upstream task would run, so this ETag cannot be known yet
            return TaskResult(task.id, "unknown", note="an upstream task would run first")
        args = self.options.args if task.id in self.options.args_for else None
        self._input_stats.take()
        try:
            components, warnings = self.hasher.components(task, dep_digests, args)  # type: ignore[arg-type]
        finally:
            hashed_inputs = self._input_stats.take()
        for warning in warnings:
            self._warn(warning)
        gpu_class = self._gpu_class(task, components) if task.gpus and task.cache == "hardware" else None
        etag = etag_of(components)
        record = TaskRecord(task.id, etag, "miss", started=started, explain=components)
        self.records[task.id] = record

        if self.options.dry_run:
            entry, origin = self.cache.lookup(etag, task, dry_run=True)
            status = "predicted-hit" if entry else "predicted-miss"
            self.records.pop(task.id, None)
            self.console.task_finished(task.id, status, 0.0, f"{origin} " if entry else "")
            return TaskResult(task.id, status, etag, origin=origin,
                              outputs_digest=entry.outputs_digest if entry else None)

        # tasks with identical ETags in one run execute once: later ones wait for the first
        with self._lock:
            if etag not in self._etag_claims:
                self._etag_claims[etag] = owner_event = None
            else:
                owner_event = self._etag_claims[etag]
                if owner_event is None:
                    owner_event = self._etag_claims[etag] = threading.Event()
        pending = _Pending(etag, record, tick, owner_event, [], gpu_class=gpu_class)
        # the task's lock, taken here only when it is free: when another run holds it, or a twin
        # of this run is on it, a worker waits instead of the scheduling thread
        if owner_event is None and self.task_locks.try_acquire(task.id):
            pending.locked = True
            if task.cache != "never" and not self.options.skip_cache:
                try:
                    entry, origin = self.cache.lookup(etag, task, remote=False)
                    result = self._hit(task, entry, origin, pending) if entry is not None else None
                except BaseException:
                    self.task_locks.release(task.id)
                    raise
                if result is not None:
                    self.task_locks.release(task.id)
                    self._release_claim(etag)
                    return result
        pending.inputs = compact(hashed_inputs)
        return pending

    def _release_claim(self, etag: str) -> None:
        with self._lock:
            waiting = self._etag_claims[etag]
            self._etag_claims[etag] = _DONE
        if waiting is not None:
            waiting.set()

    def _complete(self, task: Task, pending: _Pending) -> TaskResult:
        """In a worker, holding the task's resources: wait for the task's lock (its identical task
        is done already), try the caches, else run the command."""
        owner_event = pending.owner_event
        if owner_event is not None:
            owner_event.wait()
        waited = not pending.locked
        keep_lock = False
        try:
            if waited:
                if not self._wait_for_lock(task):
                    pending.record.status = "skipped"
                    return TaskResult(task.id, "skipped", pending.etag, note="interrupted")
                pending.locked = True
            if task.cache != "never" and not self.options.skip_cache:
                # the local cache again when the task's twin or another run may have stored it meanwhile
                entry, origin = self.cache.lookup(pending.etag, task, local=waited)
                if entry is not None:
                    result = self._hit(task, entry, "dedup" if owner_event is not None else origin, pending)
                    if result is not None:
                        return result
            result = self._execute(task, pending)
            result.gpus = list(pending.record.gpus)
            # an entry still waiting for its batch write: keep the lock until the index has it
            keep_lock = result.status == "miss" and self.store.is_deferred(pending.etag)
            return result
        finally:
            self.resources.release(pending.grant)   # a hit, or stopped before running: held no longer
            if pending.locked:
                if keep_lock:
                    with self._lock:
                        self._locks_until_flushed.append((task.id, pending.etag))
                else:
                    self.task_locks.release(task.id)
            if owner_event is None:
                self._release_claim(pending.etag)

    def _wait_for_lock(self, task: Task) -> bool:
        """Take the task's lock, waiting (and saying so) while another run holds it; False when
        this run is stopped first."""
        def say_so() -> None:
            self.console.warn(f"waiting for another nxrun run in this workspace that holds {task.id}...")

        return self.task_locks.acquire(task.id, self._interrupted, on_wait=say_so)

    def _release_flushed_locks(self) -> None:
        """Give back the locks of tasks whose entries the index now holds."""
        if not self._locks_until_flushed:
            return
        with self._lock:
            flushed = [(t, e) for t, e in self._locks_until_flushed if not self.store.is_deferred(e)]
            self._locks_until_flushed = [held for held in self._locks_until_flushed if held not in flushed]
        for task_id, _etag in flushed:
            self.task_locks.release(task_id)

    def _hit(self, task: Task, entry: CacheEntry, origin: str, pending: _Pending) -> TaskResult | None:
        try:
            restored = self._restore(task, entry, origin)
        except OSError as exc:   # the workspace's disk (full, read-only): the task fails, saying where
            from ..store.disk import describe

            where = os.path.dirname(exc.filename) if exc.filename else self.root
            return self._fail(task, pending.record, pending.tick,
                              f"could not restore its outputs from the cache into {where}: {describe(exc, where)}",
                              pending.etag)
        if not restored:
            return None
        record = pending.record
        record.status = "remote-hit" if origin == "remote" else "local-hit"
        record.explain_stored = True
        record.origin = origin
        record.saved = entry.duration
        record.duration = time.monotonic() - pending.tick
        record.outputs_digest = entry.outputs_digest
        self.console.task_finished(task.id, record.status, record.duration)
        return TaskResult(task.id, record.status, pending.etag, record.duration, origin,
                          outputs_digest=entry.outputs_digest)

    def _restore(self, task: Task, entry: CacheEntry, origin: str) -> bool:
        problem = self._restore_files(task, entry, origin)
        log = b""
        if problem is None and entry.log_digest and not self.console.quiet:
            try:
                log = self.cache.read_log(entry)
            except CorruptBlob as exc:
                problem = f"cache entry {entry.etag[:12]} has a corrupt or missing blob ({exc})"
        if problem is not None:
            self._warn(f"{task.id}: {problem}; treating it as a miss and running the task.")
            self.cache.forget(entry.etag)
            return False
        self.console.replay(task.id, log, origin)
        return True

    def _restore_files(self, task: Task, entry: CacheEntry, origin: str = "local") -> str | None:
        """Restore an entry's outputs; None on success, else why it could not be used."""
        try:
            written = -1
            self.input_memo.writing_started(forget=False)
            try:
                written = self.cache.restore(task, entry, origin)
            finally:
                self.input_memo.writing_ended(changed=written != 0)
            return None
        except CorruptBlob as exc:
            return f"cache entry {entry.etag[:12]} has a corrupt or missing blob ({exc})"
        except UnsafeEntry as exc:
            return f"rejected unsafe cache entry from {origin} cache: {exc}"

    def _execute(self, task: Task, pending: _Pending) -> TaskResult:
        etag, record, tick = pending.etag, pending.record, pending.tick
        if self._interrupted.is_set():
            record.status = "skipped"
            return TaskResult(task.id, "skipped", etag, note="interrupted")
        command = task.command or ""
        args = self.options.args if task.id in self.options.args_for else []
        if args:
            import shlex

            command = command + " " + " ".join(shlex.quote(a) for a in args)
        cwd = self.root / task.cwd
        if not cwd.is_dir():
            return self._fail(task, record, tick, f"working folder '{task.cwd}' does not exist ({task.source}); "
                                                  "create it or fix the target's cwd.", etag)
        from ..executors.base import Job

        env = dict(task.env)
        env["NXRUN_TASK"] = task.id
        env["NXRUN_WORKSPACE"] = str(self.root)
        job = Job(task, etag, command, env, task.cwd,
                  [(name[5:], digest) for name, digest in record.explain.items() if name.startswith("file:")])
        job.args = list(args)
        job.explain = record.explain     # an executor that writes the entry records it (`nxrun why`)
        grant = pending.grant
        if grant is not None and grant.gpus:
            env.update(self.resources.gpu_pool.env_for(grant.gpus))   # type: ignore[union-attr]
            job.gpus = list(grant.gpus)
            record.gpus = list(grant.gpus)
        executor = self.executor
        in_workspace = not executor.produces_entries
        tail: list[bytes] = []

        def on_line(line: bytes) -> None:
            self.console.task_output(task.id, line)
            tail.append(line)
            if len(tail) > 5:
                tail.pop(0)

        # a local command may change any file (its outputs are cleared first): no input digest of
        # this run is trusted from now until it has ended
        if in_workspace:
            self.input_memo.writing_started()
        try:
            if in_workspace:
                problem = self._clear_outputs(task, cwd, pending.inputs)
                if problem is not None:
                    return self._fail(task, record, tick, problem, etag)
            self.console.task_started(task.id, command, job.gpus)
            finished = executor.run(job, on_line)
        finally:
            if in_workspace:
                self.input_memo.writing_ended()
            self.resources.release(grant)   # now, not after storing: a queued task may start
        try:
            if finished.problem is not None:
                return self._fail(task, record, tick, finished.problem, etag)
            if self._interrupted.is_set():
                return self._fail(task, record, tick, "interrupted", etag)
            exit_code = finished.exit_code
            if exit_code != 0:
                if exit_code < 0:
                    reason = f"killed by signal {-exit_code}"
                else:
                    reason = f"exit code {exit_code}"
                text = b"".join(tail).decode("utf-8", errors="replace")
                if exit_code == 127 and ("not found" in text or "No such file" in text):
                    reason += (f": the command was not found. Check `command` of {task.id} ({task.source}) "
                               "and that the program is installed and on PATH")
                return self._fail(task, record, tick, reason, etag)
            if not in_workspace:
                return self._adopt(task, pending, finished)
            changed = first_changed(pending.inputs)
            if changed is not None:
                path, what = changed
                rel = os.path.relpath(path, self.root).replace(os.sep, "/")
                self._warn(f"{task.id}: input '{rel}' {what} while the task ran, so its result is not cached "
                           "(the next run runs it again).")
            return self._store(task, etag, record, tick, finished.duration, finished.log,
                               cache_result=changed is None)
        finally:
            if finished.log is not None:
                finished.log.discard()

    def _adopt(self, task: Task, pending: _Pending, finished) -> TaskResult:
        """A command that ran elsewhere and stored its entry in the remote cache (`finished`, an
        executors.base.Finished, holds it): index that entry locally and restore its outputs, as
        for a remote hit (the entry is untrusted alike)."""
        etag, record, tick = pending.etag, pending.record, pending.tick
        entry, problem = self.cache.adopt(task, etag, finished.entry)
        if entry is not None:
            try:
                problem = self._restore_files(task, entry, "remote")
            except OSError as exc:   # the workspace's disk (full, read-only)
                from ..store.disk import describe

                where = os.path.dirname(exc.filename) if exc.filename else self.root
                problem = f"could not restore its outputs from the cache into {where}: {describe(exc, where)}"
            if problem is not None or task.cache == "never":
                self.cache.forget(entry.etag)
        if problem is not None:
            return self._fail(task, record, tick, f"{problem} (it ran on the {self.executor.name} executor)", etag)
        made: set[str] = set()          # every record's path and the folders above it
        for item in entry.outputs:
            path = item.path
            while path and path not in made:
                made.add(path)
                path = path.rpartition("/")[0]
        for path in task.outputs:       # as _store says it of a local run
            if path not in made:
                self._warn(f"{task.id}: declared output '{path}' was not produced ({task.source}).")
        record.status = "miss"
        record.duration = time.monotonic() - tick
        record.outputs_digest = entry.outputs_digest
        self.console.task_finished(task.id, "miss", finished.duration)
        return TaskResult(task.id, "miss", etag, record.duration, outputs_digest=entry.outputs_digest)

    def _clear_outputs(self, task: Task, cwd, inputs: InputStats) -> str | None:
        """Remove the task's declared outputs before its command runs; why not, when that failed."""
        if not task.outputs:
            return None
        from .fresh_outputs import LINKED_PARENT, clear_outputs

        try:
            spared = clear_outputs(str(self.root), task.outputs, keep=[str(cwd)] + [p for p, _, _ in inputs],
                                   unshare=self.workspace.restore == "hardlink")
        except OSError as exc:
            return (f"could not clear its declared outputs before running ({exc}); remove them by hand or fix "
                    "their permissions.")
        for rel, why in spared:
            fix = "declare it by its real path" if why == LINKED_PARENT else "keep sources out of declared outputs"
            self._warn(f"{task.id}: declared output '{rel}' {why}, so it is not cleared before the run "
                       f"({task.source}); {fix}.")
        return None

    def _fail(self, task: Task, record: TaskRecord, tick: float, reason: str, etag: str | None) -> TaskResult:
        record.status = "failed"
        record.error = reason
        record.duration = time.monotonic() - tick
        self.console.task_finished(task.id, "failed", record.duration, reason)
        return TaskResult(task.id, "failed", etag, record.duration, note=reason)

    def _store(self, task: Task, etag: str, record: TaskRecord, tick: float, duration: float,
               log: LogCapture, cache_result: bool = True) -> TaskResult:
        store_blobs = task.cache != "never" and cache_result and not self.store.writes_off
        note = "" if cache_result else "not cached"
        try:
            records, missing = scan_outputs(self.root, task.outputs, self.stat_cache,
                                            self.store if store_blobs else None)
        except OSError as exc:
            # cannot read or store the outputs (a full disk, say): the task still succeeded
            if not self.store.writes_off:   # else the store has said once that caching is off
                self._warn(f"{task.id}: could not store its outputs in the cache ({exc}); it will run again "
                           "next time.")
            records, missing = scan_outputs(self.root, task.outputs, self.stat_cache, None)
            store_blobs = False
        for path in missing:
            self._warn(f"{task.id}: declared output '{path}' was not produced ({task.source}).")
        digest = digest_of_records(records)
        if store_blobs:
            try:
                log_digest = log.store_blob()
                entry = CacheEntry(
                    etag=etag, task_id=task.id, outputs=records, declared_outputs=list(task.outputs),
                    outputs_digest=digest, log_digest=log_digest, exit_code=0, duration=duration,
                    created=time.time(), runtime_facts=self._public_facts(), explain=record.explain)
                check_entry(entry, task.outputs)     # what a hit could not restore is not stored
                self.cache.store(entry)
            except (OSError, sqlite3.Error) as exc:
                if not self.store.writes_off:   # else the store has said once that caching is off
                    self._warn(f"{task.id}: could not write its cache entry ({exc}); it will run again next time.")
                note = "not cached"
            except UnsafeEntry as exc:
                self._warn(f"{exc}: a cache hit would refuse to restore it, so it is not cached ({task.source}). "
                           "Keep links inside the task's declared outputs.")
                note = "not cached"
        record.status = "miss"
        record.duration = time.monotonic() - tick
        record.outputs_digest = digest
        self.console.task_finished(task.id, "miss", duration, note)
        return TaskResult(task.id, "miss", etag, record.duration, note=note, outputs_digest=digest)

    def _public_facts(self) -> dict[str, str]:
        facts = {}
        for key, value in self.runtime.facts().items():
            facts[key] = value[:2000]
        return facts

    # ------------------------------------------------------------------ --only
    def _restore_locked(self, task: Task, entry: CacheEntry) -> bool:
        """Restore an upstream task's entry for --only, under the task's lock; whether it worked."""
        if not self._wait_for_lock(task):
            return False
        try:
            return self._restore_files(task, entry) is None
        finally:
            self.task_locks.release(task.id)

    # ------------------------------------------------------------------ end of run
    def _warn(self, message: str) -> None:
        with self._lock:
            self.warnings.append(message)
        self.console.warn(message)

    def _interrupt(self) -> None:
        """Stop the run: no command starts from now on (one starting right now is killed by the
        worker that starts it), and running ones are stopped, SIGKILLed after a grace period."""
        self._interrupted.set()
        self.resources.interrupt()
        if self.executor is not None:
            self.executor.cancel_all()

    def _finish(self, started: float) -> None:
        try:
            self.store.sync()
            self.store.flush_entries()
        except (OSError, sqlite3.Error) as exc:
            lost = self.store.drop_deferred()
            self._warn(f"could not write {len(lost)} cache entries ({exc}); those tasks will run again next time.")
        try:
            self.store.save_stat_cache(self.stat_cache.dirty)
            self.stat_cache.dirty = {}
            self.cache.mark_used()
            if self.options.dry_run:
                return
            run = RunRecord(started=started, argv=self.argv, cwd=str(self.root))
            run.tasks = [self.records[t] for t in self.graph.order if t in self.records]
            run.finished = time.time()
            run.status = "failed" if any(t.status == "failed" for t in run.tasks) else "ok"
            if self.remote is not None:
                run.remote_skipped = self.cache.summary().get("skipped", 0)
            run_id = save_run(self.store, run)
            tasks = self.graph.tasks
            if any(tasks[t.task_id].is_bench for t in run.tasks if t.task_id in tasks):
                from .bench_results import record_bench_results

                record_bench_results(self.store, run_id, self.graph, run.tasks, run.finished)
        except Exception as exc:  # history is a record, never a reason to fail a run
            self.console.warn(f"could not record the run in the history: {exc}")

