"""What `nxrun run` (and run-many, affected) does once its arguments are parsed: load the
workspace, run the tasks, print the summary, exit with the run's status.

Kept free of click so the launcher (launch.py) can call it for a plain `nxrun run` without
importing the command-line framework; cli.py calls the same functions.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from .console import use_colour
from .errors import NxrunError

RUN_DEFAULTS = {"parallel": None, "keep_going": False, "skip_cache": False, "only": False, "dry_run": False,
                "as_json": False, "remote_mode": "auto", "namespace": None, "quiet": False, "executor": None,
                "gpus": None}


class Context:
    """The workspace a command works on, its graph and its stores, each loaded on first use."""

    def __init__(self, directory: str | None):
        self.directory = Path(directory) if directory else Path.cwd()
        self._graph = None
        self._store = None

    @property
    def workspace(self):
        return self.graph.workspace

    @property
    def graph(self):
        if self._graph is None:
            from .config import find_workspace_root
            from .snapshot import load_graph

            self._graph = load_graph(find_workspace_root(self.directory))
        return self._graph

    @property
    def store(self):
        if self._store is None:
            from .store.local import LocalStore

            self._store = LocalStore(self.workspace.cache_dir)
        return self._store

    def remote(self, mode: str = "auto", namespace: str | None = None, console=None):
        """The remote cache configured by [remote] or NXRUN_REMOTE, or None."""
        if mode == "off":
            return None
        url = os.environ.get("NXRUN_REMOTE") or self.workspace.remote.get("url")
        if not url:
            if mode == "required":
                raise NxrunError("--remote=required, but no remote cache is configured: set [remote] url in "
                                 "nxrun.toml or NXRUN_REMOTE=s3://bucket/prefix.")
            return None
        from .store.tiered import open_remote

        return open_remote(url, self.workspace, required=(mode == "required"), namespace=namespace,
                           console=console)


def _paint(text: str, code: str, stream) -> str:
    return f"\033[{code}m{text}\033[0m" if use_colour(stream) else text


def print_error(message: str) -> None:
    if sys.stderr is None:      # closed when Python started (2>&-): print would fall back onto stdout
        return
    with contextlib.suppress(OSError, ValueError):     # stderr full or closed: nowhere left to say it
        print(_paint("error: ", "31;1", sys.stderr) + message, file=sys.stderr, flush=True)


def run_tasks(obj: Context, names: list[str], args: list[str], **options) -> None:
    """`nxrun run NAMES -- ARGS`: resolve each name (a task, a matrix target, a project:target)
    and run them after their dependencies; ARGS go to the requested tasks' commands."""
    journal = journal_first("run", obj, names, args, options)
    ids: list[str] = []
    for name in names:
        ids.extend(obj.graph.resolve(name))
    execute(obj, list(dict.fromkeys(ids)), args, set(ids), journal=journal, **options)


def journal_first(command: str, obj: Context, names: list[str], args: list[str], options: dict,
                  projects: str | None = None) -> tuple[dict, int] | None:
    """Answer a repeated no-op request from its run journal (run_journal.py) and exit; else the
    (request, start time) that `execute` keeps a journal for, or None for none. Called before
    anything of the workspace is looked at: the start time bounds what the journal may trust."""
    import time

    from . import run_journal

    started_ns = time.time_ns()
    started = time.time()
    request = run_journal.request_for(command, names, args, options, obj.directory, projects)
    if request is None:
        return None
    if run_journal.replay(obj.directory, request, sys.argv[1:], started):
        exit_now(0)
    return request, started_ns


# False in a caller that runs nxrun in-process and goes on afterwards (benchmarks/profile_run.py)
EXIT_AT_ONCE = True


def exit_now(code: int) -> None:
    """End the process after a replayed no-op: the output flushed, then os._exit, which skips the
    interpreter's teardown (freeing every module and object, a tenth of a replay's time at 1,000
    tasks). Nothing is left for it to do: the replay closed the index and its locks, and runs no
    thread (atexit handlers: none is registered on this path)."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:      # None where the stream was closed when Python started (2>&-)
            stream.flush()
    if EXIT_AT_ONCE:
        os._exit(code)
    sys.exit(code)


def executor_name(option: str | None, workspace) -> str:
    """The executor a run uses: --executor, else NXRUN_EXECUTOR, else [workspace] executor."""
    if option:
        return option
    name = os.environ.get("NXRUN_EXECUTOR")
    if name is None or name == "":
        return workspace.executor
    from .config import EXECUTORS

    if name not in EXECUTORS:
        raise NxrunError(f"NXRUN_EXECUTOR={name!r} names no executor; use one of {', '.join(EXECUTORS)}.")
    return name


def execute(obj: Context, task_ids: list[str], args: list[str], args_for: set[str], *, parallel, keep_going,
            skip_cache, only, dry_run, as_json, remote_mode, namespace, quiet, executor, gpus=None,
            journal: tuple[dict, int] | None = None) -> None:
    """Run the tasks and print the summary; `journal`: (request, start time) from journal_first,
    for a run whose journal is to be kept."""
    from .console import Console
    from .run.results import RunOptions
    from .run.scheduler import Runner

    graph = obj.graph
    options = RunOptions(parallel=parallel or obj.workspace.parallel, keep_going=keep_going,
                         skip_cache=skip_cache, only=only, dry_run=dry_run, args=args, args_for=args_for,
                         gpus=gpus)
    selected = task_ids if only else graph.with_dependencies(task_ids)
    real = [t for t in selected if not graph.tasks[t].is_aggregate]
    console = Console(stream=sys.stderr if as_json else sys.stdout, prefix_tasks=len(real) > 1, quiet=quiet)
    warned = _count_warnings(console)
    for warning in graph.warnings:
        console.warn(warning)
    remote = obj.remote(remote_mode, namespace, console)
    from .store.keys import EnvKeySource

    env_key = EnvKeySource(obj.store, obj.workspace, remote, contact=remote_mode != "off", create=not dry_run,
                           warn=console.warn)
    runner = Runner(graph, obj.store, options, console, remote=remote, argv=sys.argv[1:], env_key=env_key,
                    executor=executor_name(executor, obj.workspace))
    result = runner.run(task_ids)
    if remote is not None:
        remote.close()
    if journal is not None:
        from . import run_journal

        run_journal.write(obj, runner, result, journal[0], journal[1], warned[0])
    finish_output(console, lambda: print_summary(result, as_json, dry_run), as_json)
    sys.exit(1 if result.failed else 0)


def finish_output(console, print_last, as_json: bool) -> None:
    """Print a run's last words with `print_last`. When any of the run's output on stdout could not be
    written (the console keeps its first write error rather than failing tasks or hits over it), raise
    OutputNotWritten, or BrokenPipeError where the reader of a pipe left (`nxrun run ... | head`:
    ended quietly with status 1, as the CLI does for it). Under --json the console writes to stderr:
    its lines are commentary, and the summary on stdout is what decides."""
    from .errors import OutputNotWritten

    error = None if as_json else console.write_error
    try:
        print_last()
    except (OSError, ValueError) as exc:    # ValueError: stdout was closed
        error = error or exc
    if error is None:
        return
    # what is still buffered would fail again when the interpreter flushes stdout at exit
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    if isinstance(error, BrokenPipeError):
        raise BrokenPipeError
    raise OutputNotWritten(f"could not write the run's output ({error}); the run went on without it, and its "
                           "results are recorded and cached as usual (`nxrun history` lists them).")


def _count_warnings(console) -> list[int]:
    """A one-item list counting what `console` warns from now on (a run that warned keeps no journal)."""
    count = [0]
    warn = console.warn

    def counted(message: str) -> None:
        count[0] += 1
        warn(message)

    console.warn = counted
    return count


def print_summary(result, as_json: bool, dry_run: bool) -> None:
    """The run's last words: the --json summary, or the counts line (and a dry run's predictions)."""
    out = sys.stdout
    if as_json:
        print(json.dumps(result.to_json(), indent=2), file=out)
    else:
        print_counts(result.counts(), result.duration, result.remote_summary)
        if dry_run:
            for task_result in result.results.values():
                if task_result.status != "aggregate":
                    print(f"  {task_result.status:15} {(task_result.etag or '?')[:16]:16}  {task_result.task_id}",
                          file=out)
    if out is not None:     # None when stdout was closed before the start (>&-): print wrote nothing
        out.flush()


def print_counts(by_status: dict[str, int], duration: float, remote_summary: dict | None = None) -> None:
    """The counts line of print_summary: `by_status`, how many tasks ended in each status
    (aggregates included, as RunResult.counts gives them); the run took `duration` seconds."""
    out = sys.stdout
    counts = [(by_status.get(status, 0), label) for status, label in (
        ("local-hit", "local hits"), ("remote-hit", "remote hits"), ("miss", "ran"), ("failed", "failed"),
        ("skipped", "skipped"), ("predicted-hit", "would hit"), ("predicted-miss", "would run"),
        ("unknown", "unknown"))]
    shown = [f"{n} {label}" for n, label in counts if n or label in ("ran",)]
    total = sum(by_status.values()) - by_status.get("aggregate", 0)
    line = f"nxrun: {total} task{'s' if total != 1 else ''}: {', '.join(shown)} in {duration:.2f}s"
    if remote_summary and remote_summary.get("skipped"):
        line += f"; remote cache unavailable, {remote_summary['skipped']} remote reads/writes skipped"
    print(_paint(line, "31;1" if by_status.get("failed") else "32", out), file=out)
