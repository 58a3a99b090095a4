"""nxrun/config.py: load_workspace on small folders; every error names file:line and the fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from nxrun.config import load_workspace
from nxrun.errors import ConfigError


def _workspace(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def _error(root: Path, files: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_workspace(_workspace(root, files))
    return str(caught.value)


def test_a_valid_workspace_loads_into_typed_specs(tmp_path: Path):
    workspace = load_workspace(_workspace(tmp_path, {"nxrun.toml": """
        [workspace]
        parallel = 3
        [named-inputs]
        src = ["src/**/*.c"]
        [projects.p.targets.build]
        command = "make"
        inputs  = ["src"]
        outputs = "out"
        [projects.p.targets.all]
        depends-on = ["build"]
    """}))
    assert workspace.parallel == 3 and workspace.restore == "auto"
    build = workspace.projects["p"].targets["build"]
    assert (build.command, build.inputs, build.outputs, build.cache) == ("make", ["src"], ["out"], "always")
    assert build.source == "nxrun.toml:6"
    assert workspace.projects["p"].targets["all"].command is None
    assert workspace.named_inputs == {"src": ["src/**/*.c"]}


def test_unknown_target_key_names_file_line_and_suggests_the_right_one(tmp_path: Path):
    message = _error(tmp_path, {"nxrun.toml": """
        [projects.p.targets.t]
        command = "true"

        outputz = ["x"]
    """})
    assert message.startswith("nxrun.toml:5: unknown key 'outputz' in target 'p:t'.")
    assert "Did you mean 'outputs'?" in message and "Allowed keys:" in message


def test_unknown_workspace_key_suggests_the_right_one(tmp_path: Path):
    message = _error(tmp_path, {"nxrun.toml": "[workspace]\nparalel = 2\n"})
    assert message.startswith("nxrun.toml:2: unknown key 'paralel' in [workspace].")
    assert "Did you mean 'parallel'?" in message


def test_unknown_key_with_nothing_close_lists_the_allowed_keys(tmp_path: Path):
    message = _error(tmp_path, {"nxrun.toml": "[remote]\nzzz = 1\n"})
    assert "nxrun.toml:2: unknown key 'zzz' in [remote]." in message
    assert "Did you mean" not in message and "read-only" in message


def test_error_in_an_included_file_names_that_file_and_its_line(tmp_path: Path):
    message = _error(tmp_path, {
        "nxrun.toml": '[workspace]\ninclude = ["conf/*.toml"]\n',
        "conf/more.toml": '[projects.q.targets.t]\ncommand = "true"\ncahce = "never"\n',
    })
    assert message.startswith("conf/more.toml:3: unknown key 'cahce'") and "Did you mean 'cache'?" in message


def test_toml_syntax_error_names_line_and_column(tmp_path: Path):
    message = _error(tmp_path, {"nxrun.toml": '[workspace]\nparallel = 4\nx = "unclosed\n'})
    assert message.startswith("nxrun.toml:3:") and "TOML syntax error" in message


@pytest.mark.parametrize("toml, expected", [
    ('[workspace]\nparallel = 0\n', "nxrun.toml:2: parallel must be a positive integer"),
    ('[workspace]\nparallel = true\n', "nxrun.toml:2: parallel must be a positive integer"),
    ('[workspace]\nrestore = "hardlinks"\n', "Did you mean 'hardlink'?"),
    ('[projects.p.targets.t]\ncommand = 3\n', "nxrun.toml:2: 'command' in target 'p:t' must be a string"),
    ('[projects.p.targets.t]\ncommand = "  "\n', "empty command"),
    ('[projects.p.targets.t]\ncommand = "x"\ninputs = ["a", 1]\n', "every entry of 'inputs'"),
    ('[projects.p.targets.t]\ncommand = "x"\nenv = { A = true }\n', "'env.A' in target 'p:t' must be a string"),
    ('[projects."bad name".targets.t]\ncommand = "x"\n', "project name 'bad name' may hold only"),
    ('[projects.p]\nroot = "../elsewhere"\n', "leads outside the workspace"),
    ('[projects.p]\nroot = "/abs"\n', "is absolute"),
    ('[projects.p]\ndepends-on = ["qq"]\n[projects.q]\n', "depends on unknown project 'qq'. Did you mean 'q'?"),
    ('[workspace]\ninclude = ["nothing/*.toml"]\n', "nxrun.toml:2: include 'nothing/*.toml' matches no file"),
])
def test_bad_values_are_config_errors_that_say_where_and_what(tmp_path: Path, toml: str, expected: str):
    assert expected in _error(tmp_path, {"nxrun.toml": toml})


def test_a_project_declared_twice_names_the_first_declaration(tmp_path: Path):
    message = _error(tmp_path, {
        "nxrun.toml": '[workspace]\ninclude = ["more.toml"]\n[projects.p.targets.t]\ncommand = "x"\n',
        "more.toml": '[projects.p.targets.u]\ncommand = "y"\n',
    })
    assert "more.toml:1: project 'p' is already declared at nxrun.toml:3" in message


def test_project_files_are_found_by_the_projects_glob(tmp_path: Path):
    workspace = load_workspace(_workspace(tmp_path, {
        "nxrun.toml": '[workspace]\nprojects = ["libs/*"]\n',
        "libs/core/nxrun.toml": '[targets.build]\ncommand = "make"\noutputs = ["out"]\n',
        "libs/notaproject/README": "no nxrun.toml here",
    }))
    assert list(workspace.projects) == ["core"]
    assert workspace.projects["core"].root == "libs/core"
    assert workspace.projects["core"].targets["build"].source == "libs/core/nxrun.toml:1"
