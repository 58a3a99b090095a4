"""One owner per output path: two tasks whose normalised outputs are equal or nested are a config
error naming both tasks and the path; a task's own nested outputs fold into the outer one."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from cli_workspace import Workspace
from hypothesis import given
from hypothesis import strategies as st

from nxrun.graph import first_output_overlap, own_outputs


def _inside(outer: str, inner: str) -> bool:
    return inner == outer or inner.startswith(outer + "/")


def clash_error(ws: Workspace, toml: str) -> str:
    ws.write("nxrun.toml", toml)
    for args in (("graph",), ("run-many", "-t", "t")):
        result = ws.nxrun(*args)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr and "claim the same files" in result.stderr
    return result.stderr


# ---------------------------------------------------------------------------- the functions

def test_own_outputs_drop_repeats_and_paths_inside_another_in_declared_order():
    assert own_outputs(["b", "out/a", "out", "b", "out/a/x"]) == ["b", "out"]
    assert own_outputs(["out", "out-x", "out/a", "out.txt"]) == ["out", "out-x", "out.txt"]
    assert own_outputs([]) == []


@pytest.mark.parametrize("owned, clash", [
    ([("out", "a"), ("out", "b")], (("out", "a"), ("out", "b"))),
    ([("out/b", "b"), ("out", "a")], (("out", "a"), ("out/b", "b"))),
    # string order would put out-x between out and out/a and hide the clash
    ([("out", "a"), ("out-x", "b"), ("out/a", "c")], (("out", "a"), ("out/a", "c"))),
    ([("out", "a"), ("out/a", "a"), ("out/b", "b")], (("out", "a"), ("out/b", "b"))),
    ([("out", "a"), ("out2", "b"), ("out-x", "c"), ("out.d/x", "d")], None),
    ([("out", "a"), ("out/a", "a")], None),
    ([], None),
])
def test_first_output_overlap(owned, clash):
    assert first_output_overlap(owned) == clash


paths = st.lists(st.sampled_from(["a", "b", "a-b", "a.b"]), min_size=1, max_size=3).map("/".join)


@given(st.lists(st.tuples(paths, st.sampled_from("PQR")), max_size=12))
def test_first_output_overlap_finds_a_clash_exactly_when_a_pairwise_check_does(owned):
    pairwise = any(o1 != o2 and (_inside(p1, p2) or _inside(p2, p1)) for p1, o1 in owned for p2, o2 in owned)
    clash = first_output_overlap(owned)
    assert (clash is not None) == pairwise
    if clash:
        (outer, outer_owner), (inner, inner_owner) = clash
        assert outer_owner != inner_owner and _inside(outer, inner)


def test_first_output_overlap_is_not_quadratic():
    owned = [(f"build/k{i:05d}/out", f"p:t[k={i}]") for i in range(50_000)]
    owned.append(("build/k49999", "p:other"))
    start = time.perf_counter()
    assert first_output_overlap(owned) == (("build/k49999", "p:other"), ("build/k49999/out", "p:t[k=49999]"))
    assert time.perf_counter() - start < 10   # a pairwise check takes minutes at this size


# ---------------------------------------------------------------------------- through the CLI

def test_two_tasks_declaring_one_output_is_an_error_naming_both(ws: Workspace):
    err = clash_error(ws, """\
[projects.a.targets.t]
command = "mkdir -p out && echo a > out/r.txt"
inputs  = []
outputs = ["out/r.txt"]

[projects.b]
root = "sub"
[projects.b.targets.t]
command = "echo b > ../out/r.txt"
inputs  = []
outputs = ["{workspace}/out//./r.txt"]
""")
    assert "'a:t' (nxrun.toml:1)" in err and "'b:t' (nxrun.toml:8)" in err
    assert "both declare the output 'out/r.txt'" in err and "its own output path" in err


def test_an_output_inside_another_tasks_output_is_an_error_even_with_depends_on(ws: Workspace):
    err = clash_error(ws, """\
[projects.p.targets.t]
command = "mkdir -p out && echo a > out/a"
inputs  = []
outputs = ["out/"]

[projects.p.targets.u]
command    = "mkdir -p out/b && echo b > out/b/f"
depends-on = ["t"]
inputs     = []
outputs    = ["./out/b/../b"]
""")
    assert "'p:t' (nxrun.toml:1)" in err and "'p:u' (nxrun.toml:6)" in err
    assert "'out/b'" in err and "inside the output 'out'" in err


def test_tasks_in_different_config_files_are_named_with_their_files(ws: Workspace):
    ws.write("parts/more.toml", '[projects.q.targets.t]\ncommand = "true"\ninputs = []\noutputs = ["res/x.json"]\n')
    err = clash_error(ws, """\
[workspace]
include = ["parts/*.toml"]
[projects.p.targets.t]
command = "true"
inputs  = []
outputs = ["res"]
""")
    assert "'p:t' (nxrun.toml:3)" in err and "'q:t' (parts/more.toml:1)" in err and "'res/x.json'" in err


@pytest.mark.parametrize("values", [["x", "./x"], ["x", "y/../x"], ["x", "x/", "y/../x"], ["x/a", "x"]])
def test_matrix_values_that_normalise_to_one_output_are_an_error(ws: Workspace, values: list[str]):
    err = clash_error(ws, f"""\
[projects.p.targets.t]
matrix  = {{ k = {json.dumps(values)} }}
command = "mkdir -p build && echo ${{matrix.k}} > build/${{matrix.k}}"
inputs  = []
outputs = ["build/${{matrix.k}}"]
""")
    assert "nxrun.toml:1" in err and err.count("p:t[k=") >= 2 and "'build/x" in err
    assert "matrix values name the same or nested paths" in err


def test_a_matrix_axis_missing_from_the_output_path_is_an_error(ws: Workspace):
    err = clash_error(ws, """\
[projects.p.targets.t]
matrix  = { k = ["a", "b"], opt = ["O2", "O3"] }
command = "true"
inputs  = []
outputs = ["build/${matrix.k}.o"]
""")
    assert "'p:t[k=a,opt=O2]'" in err and "'p:t[k=a,opt=O3]'" in err and "'build/a.o'" in err


def test_an_output_holding_a_config_file_is_an_error(ws: Workspace):
    ws.write("parts/more.toml", '[projects.q.targets.u]\ncommand = "true"\ninputs = []\n')
    ws.write("nxrun.toml", '[workspace]\ninclude = ["parts/*.toml"]\n'
                           '[projects.p.targets.t]\ncommand = "true"\ninputs = []\noutputs = ["parts"]\n')
    result = ws.nxrun("graph")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "nxrun.toml:3" in result.stderr and "'parts/more.toml'" in result.stderr and "p:t" in result.stderr


def test_a_tasks_own_nested_outputs_fold_into_the_outer_one(ws: Workspace):
    ws.write("nxrun.toml", """
        [projects.p.targets.t]
        command = "mkdir -p out/a && echo f > out/a/f.txt && echo g > out/g.txt"
        inputs  = []
        outputs = ["out/a", "./out/", "out//a/f.txt", "other"]
    """)
    tasks = json.loads(ws.nxrun("graph", "--format", "json", check=True).stdout)["tasks"]
    assert tasks[0]["outputs"] == ["out", "other"]
    assert ws.statuses(ws.run_json("p:t")) == {"p:t": "miss"}
    shutil.rmtree(ws.root / "out")
    assert ws.statuses(ws.run_json("p:t")) == {"p:t": "local-hit"}
    assert ws.read("out/a/f.txt") == "f\n" and ws.read("out/g.txt") == "g\n"


def test_the_check_runs_where_the_graph_is_built_and_not_on_a_run_from_the_snapshot(ws: Workspace, monkeypatch):
    from nxrun import graph, snapshot

    ws.write("nxrun.toml", '[projects.p.targets.t]\ncommand = "true"\ninputs = []\noutputs = ["out"]\n')
    checks = []
    real_check = graph._check_output_owners
    monkeypatch.setattr(graph, "_check_output_owners", lambda *args: checks.append(1) or real_check(*args))
    assert snapshot.load_graph(ws.root).tasks["p:t"].outputs == ["out"]
    assert snapshot.load_graph(ws.root).tasks["p:t"].outputs == ["out"]
    assert checks == [1]
    ws.write("nxrun.toml", '[projects.p.targets.t]\ncommand = "true"\ninputs = []\noutputs = ["out", "out/x"]\n'
                           '[projects.p.targets.u]\ncommand = "true"\ninputs = []\noutputs = ["./out/x"]\n')
    with pytest.raises(graph.ConfigError, match="claim the same files"):
        snapshot.load_graph(ws.root)


# ---------------------------------------------------------------------------- through symlinked folders

LINKED = """
    [projects.p.targets.a]
    command = "mkdir -p out && echo a > out/a"
    inputs  = []
    outputs = ["out"]
    [projects.p.targets.b]
    command = "echo b > via/b"
    inputs  = []
    outputs = ["via/b"]
"""


@pytest.mark.parametrize("link", ["out", "./out/", "elsewhere/out"])
def test_outputs_that_meet_through_a_symlinked_folder_are_refused_before_anything_runs(ws: Workspace, link: str):
    """`via -> out` puts p:b's output inside p:a's: each restore of p:a deletes via/b, each of p:b
    writes it back, and both report hits. Refused with both tasks and the link named."""
    ws.write("nxrun.toml", LINKED)
    (ws.root / "out").mkdir()
    (ws.root / "elsewhere").mkdir()
    (ws.root / "elsewhere" / "out").symlink_to("../out")
    (ws.root / "via").symlink_to(link)
    for args in (("run", "p:a", "p:b"), ("run", "p:b"), ("run-many", "-t", "a")):
        result = ws.nxrun(*args)
        text = result.stdout + result.stderr
        assert result.returncode == 2 and "Traceback" not in text, text
        assert "claim the same files" in text and "p:a" in text and "p:b" in text and "'via'" in text, text
        assert not (ws.root / "out" / "a").exists() and not (ws.root / "out" / "b").exists(), text


def test_two_links_to_one_folder_outside_the_workspace_are_one_path(ws: Workspace, tmp_path_factory):
    outside = tmp_path_factory.mktemp("disk")
    ws.write("nxrun.toml", """
        [projects.p.targets.a]
        command = "echo a > one/x"
        inputs  = []
        outputs = ["one/x"]
        [projects.p.targets.b]
        command = "echo b > two/x"
        inputs  = []
        outputs = ["two/x"]
    """)
    (ws.root / "one").symlink_to(outside)
    (ws.root / "two").symlink_to(outside)
    result = ws.nxrun("run", "p:a", "p:b")
    assert result.returncode == 2 and "claim the same files" in result.stderr, result.stdout + result.stderr


def test_an_output_folder_linked_to_another_disk_still_works(ws: Workspace, tmp_path_factory):
    """Linking an output's folder elsewhere on purpose is fine while no other task's output is there."""
    outside = tmp_path_factory.mktemp("disk")
    ws.write("nxrun.toml", LINKED.replace('"out"]', '"results"]').replace("out/a", "results/a")
                           .replace("mkdir -p out", "mkdir -p results"))
    (ws.root / "via").symlink_to(outside)
    assert ws.statuses(ws.run_json("p:a", "p:b")) == {"p:a": "miss", "p:b": "miss"}
    assert (outside / "b").read_text() == "b\n"
    assert ws.statuses(ws.run_json("p:a", "p:b")) == {"p:a": "local-hit", "p:b": "local-hit"}


@pytest.mark.parametrize("link, output, owner", [
    (".nxrun", "via/blobs", "the nxrun cache folder"),
    (".git", "via/hooks", ".git"),
    (".", "via/nxrun.toml", "nxrun.toml"),
])
def test_an_output_a_symlinked_folder_leads_into_the_cache_git_or_a_config_file_is_refused(
        ws: Workspace, link: str, output: str, owner: str):
    """`via -> .nxrun` with the output via/blobs: clearing the output before the run deleted every
    blob of the cache; `via -> .git` let a task's restore write hooks."""
    ws.write("nxrun.toml", f"""
        [projects.p.targets.s]
        command = "echo s > s.txt"
        inputs  = []
        outputs = ["s.txt"]
        [projects.p.targets.t]
        command = "mkdir -p {output} && echo t > {output}/x"
        inputs  = []
        outputs = ["{output}"]
    """)
    ws.run_json("p:s")
    (ws.root / ".git" / "hooks").mkdir(parents=True)
    blobs = sorted(p.name for p in (ws.root / ".nxrun" / "blobs").rglob("*"))
    (ws.root / "via").symlink_to(link)
    result = ws.nxrun("run", "p:t")
    text = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in text, text
    assert owner in text and "'via'" in text and "p:t" in text, text
    assert sorted(p.name for p in (ws.root / ".nxrun" / "blobs").rglob("*")) == blobs
    assert list((ws.root / ".git" / "hooks").iterdir()) == []
    assert "[projects.p.targets.t]" in ws.read("nxrun.toml")
