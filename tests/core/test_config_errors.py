"""Bad input gets a clear error that names the file, line or task and says how to fix it."""

from __future__ import annotations

import os

import pytest
from cli_workspace import Workspace


def error_of(ws: Workspace, toml: str, *args: str) -> str:
    ws.write("nxrun.toml", toml)
    result = ws.nxrun(*(args or ("graph",)))
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    return result.stderr


def test_toml_syntax_error_names_file_line_and_column(ws: Workspace):
    err = error_of(ws, '[workspace]\nparallel = 4\n[projects.p.targets.t]\ncommand = "echo hi\n')
    assert "nxrun.toml:4:" in err and "TOML syntax error" in err


def test_unknown_key_suggests_the_right_one(ws: Workspace):
    err = error_of(ws, '[projects.p.targets.t]\ncommand = "true"\noutputz = ["x"]\n')
    assert "nxrun.toml:3" in err and "unknown key 'outputz'" in err and "Did you mean 'outputs'" in err


def test_unknown_workspace_key(ws: Workspace):
    err = error_of(ws, '[workspace]\nparalel = 2\n')
    assert "nxrun.toml:2" in err and "Did you mean 'parallel'" in err


def test_missing_dependency_target(ws: Workspace):
    err = error_of(ws, '[projects.p.targets.build]\ncommand = "true"\n[projects.p.targets.t]\ncommand = "true"\n'
                       'depends-on = ["biuld"]\n')
    assert "p:t" in err and "'p:biuld'" in err and "Did you mean 'p:build'" in err


def test_cycle_is_printed(ws: Workspace):
    err = error_of(ws, '[projects.p.targets.a]\ncommand = "true"\ndepends-on = ["b"]\n'
                       '[projects.p.targets.b]\ncommand = "true"\ndepends-on = ["c"]\n'
                       '[projects.p.targets.c]\ncommand = "true"\ndepends-on = ["a"]\n')
    assert "dependency cycle" in err
    assert "p:a" in err and "p:b" in err and "p:c" in err and "->" in err


@pytest.mark.parametrize("output", ["../outside.txt", "/tmp/abs.txt", ".nxrun/x"])
def test_output_outside_the_workspace(ws: Workspace, output: str):
    err = error_of(ws, f'[projects.p.targets.t]\ncommand = "true"\noutputs = ["{output}"]\n')
    assert "p:t" in err and "nxrun.toml:1" in err


def test_bad_cache_mode(ws: Workspace):
    err = error_of(ws, '[projects.p.targets.t]\ncommand = "true"\ncache = "hardwar"\n')
    assert "nxrun.toml:3" in err and "'hardware'" in err


def test_glob_matching_nothing_warns_but_runs(ws: Workspace):
    ws.write("nxrun.toml", '[projects.p.targets.t]\ncommand = "echo ok"\ninputs = ["src/**/*.cu"]\n')
    result = ws.nxrun("run", "p:t")
    assert result.returncode == 0
    assert "warning" in result.stdout and "src/**/*.cu" in result.stdout and "p:t" in result.stdout


def test_failing_runtime_probe_shows_its_stderr(ws: Workspace):
    ws.write("nxrun.toml", '[runtime]\ngpu = "echo no driver here >&2; exit 9"\n'
                           '[projects.p.targets.t]\ncommand = "true"\ninputs = ["runtime:gpu"]\n')
    result = ws.nxrun("run", "p:t")
    assert result.returncode != 0
    assert "runtime probe 'gpu'" in result.stderr and "no driver here" in result.stderr and "p:t" in result.stderr


def test_undefined_probe_and_matrix_axis(ws: Workspace):
    err = error_of(ws, '[runtime]\ngpu = "true"\n[projects.p.targets.t]\ncommand = "true"\ninputs = ["runtime:gpo"]\n')
    assert "runtime:gpo" in err and "Did you mean 'gpu'" in err
    err = error_of(ws, '[projects.p.targets.t]\nmatrix = { k = ["a"] }\ncommand = "echo ${matrix.kk}"\n')
    assert "${matrix.kk}" in err and "p:t" in err


def test_unknown_task_on_the_command_line(ws: Workspace):
    ws.write("nxrun.toml", '[projects.p.targets.build]\ncommand = "true"\n')
    result = ws.nxrun("run", "p:biuld")
    assert result.returncode == 2 and "Did you mean 'p:build'" in result.stderr


def test_no_workspace(tmp_path):
    ws = Workspace(tmp_path)
    result = ws.nxrun("graph")
    assert result.returncode == 2 and "nxrun init" in result.stderr


def test_a_workspace_whose_path_is_not_utf8_is_a_clear_error(tmp_path):
    root = tmp_path / os.fsdecode(b"ws-\xff")
    space = Workspace(root)
    root.mkdir()
    space.write("nxrun.toml", '[projects.p.targets.t]\ncommand = "echo hi > out.txt"\noutputs = ["out.txt"]\n')
    for command in (("run", "p:t"), ("show", "p:t"), ("graph",)):
        result = space.nxrun(*command)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "not valid UTF-8" in result.stderr and "ws-\\xff" in result.stderr


def test_an_include_that_names_a_folder_is_a_clear_error(ws: Workspace):
    ws.write("nxrun.toml", '[workspace]\ninclude = ["sub"]\n')
    ws.write("sub/tasks.toml", '[projects.p.targets.t]\ncommand = "true"\n')
    result = ws.nxrun("graph")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "sub" in result.stderr and "is a folder" in result.stderr


@pytest.mark.parametrize("value", ["0", "-1", '"2"', "true", "1.5"])
def test_target_gpus_must_be_a_whole_number(ws: Workspace, value: str):
    err = error_of(ws, f'[projects.p.targets.t]\ncommand = "true"\ngpus = {value}\n')
    assert "nxrun.toml:3" in err and "'p:t'" in err and "gpus = 2" in err


@pytest.mark.parametrize("value, problem", [
    ('"gpu0"', "neither an nvidia-smi index nor a UUID"), ("0", "at least 1"), ('["0", "0"]', "twice"),
    ("[0, 1]", "as strings"),
])
def test_workspace_gpus_errors_name_the_line_and_the_fix(ws: Workspace, value: str, problem: str):
    err = error_of(ws, f'[workspace]\nparallel = 2\ngpus = {value}\n[projects.p.targets.t]\ncommand = "true"\n')
    assert "nxrun.toml:3" in err and problem in err
