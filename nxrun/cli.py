"""The `nxrun` command line: parse, call the library, print. Behaviour lives in the modules."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import __version__
from .errors import NxrunError
from .run_command import Context, execute, print_error, run_tasks

if TYPE_CHECKING:
    from .graph import TaskGraph

EXAMPLES = """
\b
Examples:
  nxrun run bench:paged              run a task after its dependencies
  nxrun run gemm:bench[kernel=t4]    one task of a matrix target
  nxrun run-many -t build            the target in every project
  nxrun affected -t test --base main what a change touches
  nxrun why demo:report              what changed since the last run
"""


def _fail(message: str, code: int = 2):
    print_error(message)
    sys.exit(code)


@click.group(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="nxrun")
@click.option("-C", "--directory", default=None, help="Run as if started in this folder.")
@click.pass_context
def cli(ctx: click.Context, directory: str | None) -> None:
    """nxrun: an incremental, cached DAG task runner for GPU pipelines."""
    ctx.obj = Context(directory)


def _run_options(function):
    options = [
        click.option("-p", "--parallel", type=int, default=None, help="Tasks at once (default: [workspace] "
                     "parallel)."),
        click.option("--keep-going", is_flag=True, help="After a failure, run everything that does not depend "
                     "on it."),
        click.option("--skip-cache", is_flag=True, help="Do not read the cache (results are still stored)."),
        click.option("--only", is_flag=True, help="Run just these tasks; dependencies' outputs as on disk or "
                     "restored from cache."),
        click.option("--dry-run", is_flag=True, help="Print ETags and predicted hits/misses; run nothing."),
        click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout (task output goes "
                     "to stderr)."),
        click.option("--remote", "remote_mode", type=click.Choice(["auto", "off", "required"]), default="auto",
                     show_default=True, help="Use the remote cache if configured / never / fail without it."),
        click.option("--namespace", default=None, help="Remote namespace to write (e.g. trusted, scratch/REF)."),
        click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
                     help="What runs cache misses (default: NXRUN_EXECUTOR, else [workspace] executor, else local)."),
        click.option("-q", "--quiet", is_flag=True, help="Print only failures and the summary."),
        click.option("--gpus", default=None, metavar="IDS", help="The GPUs tasks may take: nvidia-smi indices "
                     "or UUIDs (0,2), or auto (default: NXRUN_GPUS, else [workspace] gpus, else every GPU)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _split_args(tasks: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """click passes everything after `--` as extra positional args: the task args."""
    argv = sys.argv
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        names = list(tasks[: len(tasks) - len(extra)]) if extra else list(tasks)
        return names, extra
    return list(tasks), []


@cli.command(epilog="Arguments after `--` are appended to the requested tasks' commands (and enter their ETags).")
@click.argument("tasks", nargs=-1, required=True)
@_run_options
@click.pass_obj
def run(obj: Context, tasks: tuple[str, ...], **options) -> None:
    """Run TASKS (project:target) after their dependencies, restoring what is cached."""
    names, args = _split_args(tasks)
    run_tasks(obj, names, args, **options)


@cli.command("run-many")
@click.option("-t", "--target", "targets", multiple=True, required=True, help="Target name (repeatable).")
@click.option("--projects", default=None, help="Comma-separated projects (default: all that have the target).")
@_run_options
@click.pass_obj
def run_many(obj: Context, targets: tuple[str, ...], projects: str | None, **options) -> None:
    """Run a target in every project that has it."""
    from .run_command import journal_first

    journal = journal_first("run-many", obj, list(targets), [], options, projects)
    ids = tasks_of_targets(obj.graph, targets, set(projects.split(",")) if projects else None)
    if not ids:
        _fail(f"no project has target(s) {', '.join(targets)}; `nxrun graph` lists every task.")
    execute(obj, ids, [], set(), journal=journal, **options)


def tasks_of_targets(graph: TaskGraph, targets: Iterable[str], projects: set[str] | None = None) -> list[str]:
    """The tasks of these targets (in these projects, or all), in the graph's order. One pass over
    the tasks: no set is rebuilt per task, which made run-many quadratic in the workspace's size."""
    wanted = set(targets)
    return [t for t in graph.order if graph.tasks[t].target in wanted
            and (projects is None or graph.tasks[t].project in projects)]


@cli.command()
@click.option("-t", "--target", "targets", multiple=True, help="Only tasks of these targets (repeatable).")
@click.option("--base", default="main", show_default=True, help="Git ref to compare against.")
@click.option("--head", default=None, help="Git ref of the change (default: the working tree).")
@click.option("--list", "list_only", is_flag=True, help="Print the affected tasks; run nothing.")
@_run_options
@click.pass_obj
def affected(obj: Context, targets, base: str, head: str | None, list_only: bool, **options) -> None:
    """Run (or --list) tasks affected by changes since --base."""
    from .graph import affected_tasks, changed_files

    changed = changed_files(obj.workspace.root, base, head)
    hit = affected_tasks(obj.graph, changed)
    ids = [t for t in obj.graph.order if t in hit and (not targets or obj.graph.tasks[t].target in targets)]
    if list_only or not ids:
        if options.get("as_json"):
            click.echo(json.dumps({"changed_files": changed, "affected": ids}, indent=2))
        else:
            click.echo(f"{len(changed)} changed file(s) since {base}; {len(ids)} affected task(s)")
            for task_id in ids:
                click.echo(f"  {task_id}")
        return
    execute(obj, ids, [], set(), **options)


@cli.command()
@click.argument("tasks", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["text", "dot", "json"]), default="text", show_default=True)
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None,
              help="Write an interactive, self-contained HTML page of the graph.")
@click.option("--open", "open_page", is_flag=True, help="Open the --html page in a browser.")
@click.option("--affected", "affected_base", default=None, metavar="BASE",
              help="With --html: highlight tasks affected by changes since BASE.")
@click.pass_obj
def graph(obj: Context, tasks, fmt: str, html_path, open_page: bool, affected_base) -> None:
    """Show the task graph (text tree, DOT or JSON; --html for a page)."""
    from .views.graph_view import render_dot, render_json, render_text

    graph = obj.graph
    ids = None
    if tasks:
        ids = []
        for name in tasks:
            ids.extend(graph.resolve(name))
        ids = graph.with_dependencies(ids)
    if html_path:
        from .views.graph_page import write_page

        write_page(obj, Path(html_path), ids, affected_base)
        click.echo(f"wrote {html_path}")
        if open_page:
            click.launch(str(Path(html_path).resolve()))
        return
    render = {"text": render_text, "dot": render_dot, "json": render_json}[fmt]
    click.echo(render(graph, ids))


@cli.command()
@click.argument("task")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def show(obj: Context, task: str, as_json: bool) -> None:
    """Resolved config, input files, ETag and each ETag component of TASK."""
    from .views.inspect import show_task

    click.echo(show_task(obj, task, as_json))


@cli.command()
@click.argument("task")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def why(obj: Context, task: str, as_json: bool) -> None:
    """What changed since the last run of TASK, component by component."""
    from .views.inspect import why_task

    click.echo(why_task(obj, task, as_json))


@cli.command()
@click.argument("task", required=False)
@click.option("-n", "--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def history(obj: Context, task: str | None, limit: int, as_json: bool) -> None:
    """The last runs of TASK (or of every task) from the run history."""
    from .views.inspect import history_text

    click.echo(history_text(obj, task, limit, as_json))


@cli.group()
def cache() -> None:
    """Inspect and maintain the local cache."""


@cache.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def stats(obj: Context, as_json: bool) -> None:
    """Entries, blobs and bytes in the cache; hit counts from the history."""
    from .views.inspect import cache_stats

    click.echo(cache_stats(obj, as_json))


def _parse_size(text: str) -> int:
    units = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
             "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40,
             "tib": 1 << 40}
    import re

    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in units:
        raise click.BadParameter(f"{text!r} is not a size; write e.g. 500M, 20G or 1.5GiB.")
    return int(float(match.group(1)) * units[match.group(2).lower()])


def _exclusive(obj: Context):
    """The cache to ourselves: running nxrun processes finish first (they hold it shared)."""
    return obj.store.exclusive(on_wait=lambda: click.echo(
        f"waiting for the nxrun runs using {obj.store.cache_dir} to finish...", err=True))


def _in_use(obj: Context):
    """The cache shared, as a run holds it: a prune, clear or verify waits (and is waited for), so
    none deletes the blobs a pull is writing, and a starting run leaves its temp files alone."""
    return obj.store.in_use(on_wait=lambda: click.echo(
        f"waiting for a `nxrun cache prune`, `clear` or `verify` of {obj.store.cache_dir} to finish...", err=True))


@cache.command()
@click.option("--max-size", required=True, help="Keep at most this much (e.g. 20G); evicts least recently used.")
@click.option("--keep-runs", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Keep per-task history rows of this many recent runs (run totals and bench figures are "
                   "always kept).")
@click.pass_obj
def prune(obj: Context, max_size: str, keep_runs: int) -> None:
    """Evict least-recently-used entries down to --max-size, collect unreferenced blobs and trim
    per-task history to the last --keep-runs runs, and forget the file digests of files that are gone
    or changed."""
    with _exclusive(obj):
        result = obj.store.prune(_parse_size(max_size), keep_runs)
    click.echo(f"evicted {result['entries_evicted']} entries, removed {result['blobs_removed']} blobs "
               f"({result['bytes_removed'] / 1e6:.1f} MB); {result['bytes_kept'] / 1e6:.1f} MB kept; "
               f"{result['history_rows_removed']} history rows of older runs removed; "
               f"{result['stat_rows_removed']} file digests of gone or changed files forgotten")


@cache.command()
@click.option("-y", "--yes", is_flag=True, help="Do not ask.")
@click.pass_obj
def clear(obj: Context, yes: bool) -> None:
    """Delete every entry and blob of the local cache (history is kept)."""
    if not yes and sys.stdin.isatty():
        click.confirm(f"Delete everything in {obj.store.cache_dir}?", abort=True)
    with _exclusive(obj):
        obj.store.clear()
    click.echo(f"cleared {obj.store.cache_dir}")


@cache.command()
@click.pass_obj
def verify(obj: Context) -> None:
    """Check the index and re-hash every blob; report and drop corrupt blobs and the entries that need
    them; move a damaged index aside and rebuild it with what can be read."""
    notices: list[str] = []
    obj.store.report_to(notices.append)   # part of the report: on stdout, not as warnings
    with _exclusive(obj):
        result = obj.store.verify(repair=True)
    for notice in notices:
        click.echo(notice)
    for digest in result["corrupt_blobs"]:
        click.echo(f"corrupt blob {digest} (removed)")
    for etag, task_id, reason in result["broken_entries"]:
        click.echo(f"entry {etag[:16]} of {task_id}: {reason} (removed; the task will run again)")
    if notices or result["corrupt_blobs"] or result["broken_entries"] or result["index_problems"]:
        sys.exit(1)
    click.echo("cache verified: the index is sound, every entry's blobs are present and every blob matches its "
               "digest")


@cache.command()
@click.argument("tasks", nargs=-1, required=True)
@click.option("--namespace", default=None)
@click.pass_obj
def push(obj: Context, tasks, namespace) -> None:
    """Upload the cached entries of TASKS (their current ETags) to the remote cache."""
    from .views.inspect import sync_tasks

    with _in_use(obj):
        click.echo(sync_tasks(obj, tasks, "push", namespace))


@cache.command()
@click.argument("tasks", nargs=-1, required=True)
@click.option("--namespace", default=None)
@click.pass_obj
def pull(obj: Context, tasks, namespace) -> None:
    """Download the entries of TASKS (their current ETags) from the remote cache."""
    from .views.inspect import sync_tasks

    with _in_use(obj):
        click.echo(sync_tasks(obj, tasks, "pull", namespace))


@cli.command()
@click.option("--force", is_flag=True, help="Overwrite an existing nxrun.toml.")
@click.pass_obj
def init(obj: Context, force: bool) -> None:
    """Write a starter nxrun.toml in the current folder."""
    from .config import CONFIG_NAME
    from .starter import STARTER

    path = obj.directory / CONFIG_NAME
    if path.exists() and not force:
        _fail(f"{path} exists; pass --force to overwrite it.")
    path.write_text(STARTER, encoding="utf-8")
    click.echo(f"wrote {path}; try `nxrun run demo:hello`")


@cli.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="nxrun-report", show_default=True)
@click.option("--summary-md", type=click.Path(dir_okay=False), default=None,
              help="Also write a CI job summary (markdown) here, e.g. $GITHUB_STEP_SUMMARY.")
@click.pass_obj
def report(obj: Context, out_dir: str, summary_md: str | None) -> None:
    """A markdown report and plots of cache hit rates, time saved and benchmark trends."""
    from .views.report import write_report

    paths = write_report(obj, Path(out_dir), Path(summary_md) if summary_md else None)
    for path in paths:
        click.echo(f"wrote {path}")


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted", 1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except NxrunError as exc:
        _fail(str(exc), exc.exit_code)
    except BrokenPipeError:
        sys.exit(1)


if __name__ == "__main__":
    main()
