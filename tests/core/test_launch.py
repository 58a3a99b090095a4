"""The launcher's own parser for `nxrun run` must read every command line it accepts exactly as
click would, and leave everything else to click."""

from __future__ import annotations

import subprocess
import sys
import warnings

import click
import pytest

from nxrun import __version__
from nxrun.cli import cli
from nxrun.launch import parse_run

ACCEPTED = [
    ["run", "p:a"],
    ["run", "p:a", "p:b", "-q"],
    ["run", "-q", "p:a", "--keep-going", "--skip-cache"],
    ["run", "p:a", "--only", "--dry-run", "--json"],
    ["run", "p:a", "-p", "3"],
    ["run", "p:a", "--parallel", "8"],
    ["run", "p:a", "--parallel=2"],
    ["run", "p:a", "-p", "-1"],
    ["run", "p:a", "--remote", "off"],
    ["run", "p:a", "--remote=required", "--namespace", "scratch/x"],
    ["run", "p:a", "--namespace=trusted", "--quiet"],
    ["run", "p:a", "--executor", "local"],
    ["run", "p:a", "--executor=ray", "-q"],
    ["run", "gemm:bench[kernel=t4]", "--", "--size", "64", "-q"],
    ["run", "p:a", "--"],
    ["-C", "sub", "run", "p:a"],
    ["--directory", "sub", "run", "p:a", "-q"],
    ["--directory=sub", "run", "p:a"],
]

LEFT_TO_CLICK = [
    [], ["--help"], ["run"], ["run", "--help"], ["run", "p:a", "-h"], ["run", "p:a", "--parallel"],
    ["run", "p:a", "-p", "x"], ["run", "p:a", "-p4"], ["run", "p:a", "-qp", "2"], ["run", "p:a", "--remote", "on"],
    ["run", "p:a", "--executor", "slurm"],
    ["run", "p:a", "--quiet=yes"], ["run", "p:a", "--frobnicate"], ["run", "p:a", "-p", "2", "-p", "3"],
    ["run", "p:a", "-C", "x"], ["-C"], ["-C", "--", "run", "p:a"], ["run", "p:b", "--namespace", "--", "--dry-run"],
    ["run", "p:b", "-p", "--", "2"], ["graph"], ["run-many", "-t", "build"], ["show", "p:a"], ["--version", "x"],
]


def click_reading(argv: list[str]) -> tuple[str | None, list[str], list[str], dict]:
    """What click makes of a `run` command line: directory, task names, args after `--`, options."""
    group_ctx = cli.make_context("nxrun", list(argv), resilient_parsing=False)
    with warnings.catch_warnings():   # click 8.2 deprecates protected_args; 9.0 puts them in args
        warnings.simplefilter("ignore", DeprecationWarning)
        tokens = [*group_ctx.protected_args, *group_ctx.args]
    name, command, rest = cli.resolve_command(group_ctx, tokens)
    assert name == "run"
    ctx = command.make_context(name, rest, parent=group_ctx)
    params = dict(ctx.params)
    tasks = list(params.pop("tasks"))
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    names = tasks[: len(tasks) - len(extra)] if extra else tasks
    return group_ctx.params["directory"], names, extra, params


@pytest.mark.parametrize("argv", ACCEPTED, ids=" ".join)
def test_accepted_forms_parse_as_click_parses_them(argv):
    assert parse_run(argv) == click_reading(argv)


@pytest.mark.parametrize("argv", LEFT_TO_CLICK, ids=lambda a: " ".join(a) or "(none)")
def test_other_forms_go_to_click(argv):
    assert parse_run(argv) is None


def test_every_run_option_is_known_to_the_launcher():
    """A new option of `nxrun run` must be taught to the launcher (or it silently goes to click)."""
    from nxrun.launch import _FLAGS, _VALUED

    known = set(_FLAGS) | set(_VALUED)
    for param in cli.commands["run"].params:
        if isinstance(param, click.Option):
            assert set(param.opts) | set(param.secondary_opts) <= known, param.opts


def test_version_matches_click():
    fast = subprocess.run([sys.executable, "-m", "nxrun", "--version"], capture_output=True, text=True)
    slow = subprocess.run([sys.executable, "-c", "import sys; from nxrun.cli import main; "
                           "sys.argv = ['nxrun', '--version']; main()"], capture_output=True, text=True)
    assert fast.returncode == slow.returncode == 0
    assert fast.stdout == slow.stdout == f"nxrun, version {__version__}\n"


def test_a_plain_run_does_not_import_click(tmp_path):
    (tmp_path / "nxrun.toml").write_text('[projects.p.targets.a]\ncommand = "true"\n')
    code = ("import sys, runpy; sys.argv = ['nxrun', 'run', '-q', 'p:a']\n"
            "try:\n    runpy.run_module('nxrun', run_name='__main__')\n"
            "except SystemExit as exit:\n    assert exit.code in (0, None), exit.code\n"
            "print('click' in sys.modules, 'subprocess' in sys.modules)")
    first = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split()[-1] == "True"     # the task ran (a new cache's schema is made with
                                                 # sqlite-utils, which imports click itself)
    again = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert again.stdout.split()[-2:] == ["False", "False"]   # all cached: no process, no click


def test_errors_on_the_fast_path_read_as_on_the_click_path(tmp_path):
    (tmp_path / "nxrun.toml").write_text('[projects.p.targets.a]\ncommand = "true"\n')
    fast = subprocess.run([sys.executable, "-m", "nxrun", "run", "p:nope"], cwd=tmp_path, capture_output=True,
                          text=True)
    slow = subprocess.run([sys.executable, "-m", "nxrun", "run", "p:nope", "-p", "1", "-p", "1"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert fast.returncode == slow.returncode == 2
    assert "no task 'p:nope'" in fast.stderr
    assert fast.stderr == slow.stderr
