"""Matrix values are data: a value that a shell, a glob or a task id would read as more than a name
is refused with an error naming the file, target and character, and is never run."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from cli_workspace import Workspace
from hypothesis import given
from hypothesis import strategies as st

from nxrun.config import MATRIX_VALUE_CHARS, matrix_value_problem

# the value in every quoting context a command can put it in, and handed on to a second shell
GLOB_TARGET = """
[projects.p.targets.build]
matrix  = { kernel = "glob:kernels/*.c" }
command = "echo ${matrix.kernel} > out/${matrix.kernel}.1; echo \\"${matrix.kernel}\\" > out/${matrix.kernel}.2; echo '${matrix.kernel}' > out/${matrix.kernel}.3; sh -c 'echo ${matrix.kernel}' > out/${matrix.kernel}.4"
inputs  = ["kernels/${matrix.kernel}.c"]
outputs = ["out/${matrix.kernel}.1", "out/${matrix.kernel}.2", "out/${matrix.kernel}.3", "out/${matrix.kernel}.4"]
"""

HOSTILE_STEMS = [
    "$(touch PWNED)", "`touch PWNED`", "x';touch PWNED;'", 'x";touch PWNED;"', "x;touch PWNED",
    "x|touch PWNED", "x&&touch PWNED", "x\ntouch PWNED", "a b", "$HOME", "x\\y", "k*", "k[ab]", "x{a,b}",
    "~root", "#x", "x>PWNED", "!x", "-rf", "x,y",
]


def _nothing_ran(ws: Workspace) -> None:
    pwned = [p for p in ws.root.parent.rglob("*PWNED*") if "kernels" not in p.parts]
    assert not pwned, f"a file name ran as a command: {pwned}"
    assert not (ws.root / "out").exists() or not any((ws.root / "out").iterdir())


# ---------------------------------------------------------------------------- the rule itself

@pytest.mark.parametrize("value", ["01_naive", "t4_wgmma_tma", "c++", "v1.2", "n=128", "user@host", "50%",
                                   "a:b", "fp16", "dir/x", "./x", "y/../x", "-O2", "A-Z"])
def test_plain_names_are_matrix_values(value: str):
    assert matrix_value_problem(value) is None


@pytest.mark.parametrize("value", [s for s in HOSTILE_STEMS if s != "-rf"] + ["", "é", "x\x1b[2J", "x\ty"])
def test_values_a_shell_glob_or_task_id_would_read_are_refused(value: str):
    problem = matrix_value_problem(value)
    assert problem is not None
    if value:
        bad = next(c for c in value if c not in MATRIX_VALUE_CHARS)
        assert repr(bad) in problem or {" ": "a space", "\t": "a tab", "\n": "a newline"}[bad] in problem


def test_a_leading_dash_is_refused_from_a_file_name_but_not_from_a_list():
    assert "option" in matrix_value_problem("-rf", from_file_name=True)
    assert matrix_value_problem("-O2") is None


@given(st.text(st.sampled_from([chr(c) for c in range(128)] + ["é", "\u00a0", "\u2028", "\uff04"]), max_size=12))
def test_an_accepted_value_needs_no_quoting_anywhere(value: str):
    if matrix_value_problem(value, from_file_name=True) is None:
        # the same word bare, inside "...", inside '...', as a glob and inside a task id selector
        assert shlex.quote(value) == value
        assert not set(value) & set("$`\\\"'!*?[]{}~#,; \t\n")
        assert not value.startswith("-")


# ---------------------------------------------------------------------------- through the CLI

@pytest.mark.parametrize("stem", HOSTILE_STEMS)
def test_a_hostile_file_name_under_a_glob_axis_is_an_error_and_never_runs(ws: Workspace, stem: str):
    ws.write("nxrun.toml", GLOB_TARGET)
    ws.write("kernels/ok.c", "ok")
    ws.write(f"kernels/{stem}.c", "evil")
    (ws.root / "out").mkdir()
    for args in (("run", "p:build"), ("run-many", "-t", "build"), ("graph",)):
        result = ws.nxrun(*args)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        err = result.stderr
        assert "nxrun.toml:2" in err and "p:build" in err and "'glob:kernels/*.c'" in err
        assert repr(f"kernels/{stem}.c") in err and repr(stem) in err
        assert "Rename the file" in err
    _nothing_ran(ws)


def test_a_file_name_with_an_empty_stem_is_an_error(ws: Workspace):
    ws.write("nxrun.toml", GLOB_TARGET)
    ws.write("kernels/ok.c", "ok")
    ws.write("kernels/.hidden.c", "x")
    result = ws.nxrun("run", "p:build")
    assert result.returncode == 2 and "'kernels/.hidden.c'" in result.stderr and "is empty" in result.stderr


def test_a_hostile_file_added_after_a_run_is_caught_despite_the_graph_snapshot(ws: Workspace):
    ws.write("nxrun.toml", GLOB_TARGET)
    ws.write("kernels/ok.c", "ok")
    (ws.root / "out").mkdir()
    assert ws.statuses(ws.run_json("p:build")) == {"p:build[kernel=ok]": "miss"}
    assert ws.statuses(ws.run_json("p:build")) == {"p:build[kernel=ok]": "local-hit"}
    ws.write("kernels/$(touch PWNED).c", "evil")
    result = ws.nxrun("run", "p:build")
    assert result.returncode == 2 and "'$(touch PWNED)'" in result.stderr and "'$'" in result.stderr
    assert not list(ws.root.parent.rglob("PWNED"))


@pytest.mark.parametrize("value", ["$(touch PWNED)", "`touch PWNED`", "a'b", "x y", "k*"])
def test_a_hostile_value_in_a_list_axis_is_an_error_naming_its_line(ws: Workspace, value: str):
    ws.write("nxrun.toml", "[projects.p.targets.t]\ncommand = \"echo ${matrix.k} > o\"\ninputs = []\n"
                           f"matrix = {{ k = [\"ok\", {json.dumps(value)}] }}\n")
    result = ws.nxrun("run", "p:t")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "nxrun.toml:4" in result.stderr and "p:t" in result.stderr and repr(value) in result.stderr
    assert not list(ws.root.parent.rglob("PWNED"))


def test_a_value_listed_twice_is_an_error(ws: Workspace):
    ws.write("nxrun.toml", '[projects.p.targets.t]\ncommand = "true"\ninputs = []\nmatrix = { k = ["a", "b", "a"] }\n')
    result = ws.nxrun("graph")
    assert result.returncode == 2 and "nxrun.toml:4" in result.stderr and "'a' twice" in result.stderr


def test_plain_names_reach_the_command_unchanged_in_every_quoting_context(ws: Workspace):
    ws.write("nxrun.toml", GLOB_TARGET)
    stems = ["01_naive", "c++", "x@y", "n=128", "50%", "a:b"]
    for stem in stems:
        ws.write(f"kernels/{stem}.c", stem)
    (ws.root / "out").mkdir()
    statuses = ws.statuses(ws.run_json("p:build"))
    assert statuses == {f"p:build[kernel={stem}]": "miss" for stem in stems}
    for stem in stems:
        for context in "1234":
            assert (ws.root / "out" / f"{stem}.{context}").read_text() == stem + "\n"


def test_the_repository_workspaces_still_build_their_graphs(tmp_path: Path):
    repo = Path(__file__).resolve().parents[2]
    for root in (repo, repo / "examples" / "pipeline"):
        result = Workspace(root).nxrun("graph", "--format", "json", env={"NXRUN_CACHE_DIR": str(tmp_path)})
        assert result.returncode == 0, result.stderr
        tasks = json.loads(result.stdout)["tasks"]
        assert any(t["matrix"] for t in tasks)
