"""A task that runs starts from clean declared outputs: files of an earlier version of the task,
or a temp file a killed restore left, are never recorded as its outputs; an output hardlinked to
a cache blob is unlinked before the command can write through it; and nothing is followed out of
the declared outputs while clearing them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from cli_workspace import Workspace



def _with_command(command: str) -> str:
    return f"""
[projects.p.targets.t]
command = "{command}"
inputs  = ["v.txt"]
outputs = ["out"]
"""


def test_a_new_version_of_a_task_does_not_keep_the_old_versions_files(ws: Workspace):
    ws.write("v.txt", "1")
    ws.write("nxrun.toml", _with_command("mkdir -p out && echo a > out/a && echo b > out/b"))
    ws.run_json("p:t")
    assert sorted(os.listdir(ws.root / "out")) == ["a", "b"]
    ws.write("nxrun.toml", _with_command("mkdir -p out && echo a2 > out/a"))
    assert ws.statuses(ws.run_json("p:t")) == {"p:t": "miss"}
    assert sorted(os.listdir(ws.root / "out")) == ["a"]
    shutil.rmtree(ws.root / "out")
    assert ws.statuses(ws.run_json("p:t")) == {"p:t": "local-hit"}
    assert sorted(os.listdir(ws.root / "out")) == ["a"] and ws.read("out/a") == "a2\n"


def test_a_stray_temp_file_in_an_output_folder_is_not_captured(ws: Workspace):
    ws.write("v.txt", "1")
    # the command writes into the folder without making it: it relies on the folder existing
    ws.write("nxrun.toml", _with_command("echo a > out/a"))
    (ws.root / "out").mkdir()
    ws.run_json("p:t")
    # as a restore killed half-way leaves one
    ws.write("out/.nxrun-0123456789abcdef.tmp", "half a blob")
    ws.write("v.txt", "2")
    assert ws.statuses(ws.run_json("p:t")) == {"p:t": "miss"}
    assert os.listdir(ws.root / "out") == ["a"]
    shutil.rmtree(ws.root / "out")
    assert ws.statuses(ws.run_json("p:t")) == {"p:t": "local-hit"}
    assert os.listdir(ws.root / "out") == ["a"]


IN_PLACE = """
[workspace]
restore = "hardlink"
[projects.p.targets.t]
# rewrites out.txt in place when it exists (no truncation, no new inode), as some tools do
command = "python -c \\"import os; fd = os.open('out.txt', os.O_WRONLY | os.O_CREAT, 0o644); os.write(fd, open('v.txt', 'rb').read()); os.close(fd)\\""
inputs  = ["v.txt"]
outputs = ["out.txt"]
"""


def test_a_task_rewriting_a_hardlinked_output_in_place_never_changes_the_blob(tmp_path: Path):
    cache = tmp_path / "shared-cache"
    env = {"NXRUN_CACHE_DIR": str(cache)}
    clones = []
    for name in ("one", "two"):
        clone = Workspace(tmp_path / name)
        clone.root.mkdir()
        clone.write("nxrun.toml", IN_PLACE)
        clone.write("v.txt", "old\n")
        clones.append(clone)
    one, two = clones
    assert one.statuses(one.run_json("p:t", env=env)) == {"p:t": "miss"}
    (one.root / "out.txt").unlink()
    assert one.statuses(one.run_json("p:t", env=env)) == {"p:t": "local-hit"}
    assert os.stat(one.root / "out.txt").st_nlink > 1, "restore = hardlink did not link the blob"
    one.write("v.txt", "new\n")
    assert one.statuses(one.run_json("p:t", env=env)) == {"p:t": "miss"}
    assert one.read("out.txt") == "new\n"
    verify = one.nxrun("cache", "verify", env=env)
    assert verify.returncode == 0, verify.stdout
    # another clone at the old version restores the old content
    assert two.statuses(two.run_json("p:t", env=env)) == {"p:t": "local-hit"}
    assert two.read("out.txt") == "old\n"


def test_clearing_never_follows_a_link_out_of_the_declared_outputs(ws: Workspace):
    ws.write("v.txt", "1")
    ws.write("keep/precious.txt", "keep me\n")
    ws.write("nxrun.toml", """
        [projects.p.targets.t]
        command = "mkdir -p out && echo fresh > out/file && ln -s ../keep out/inner && ln -s keep link"
        inputs  = ["v.txt"]
        outputs = ["out", "link"]
    """)
    ws.run_json("p:t")
    assert os.path.islink(ws.root / "out/inner") and os.path.islink(ws.root / "link")
    ws.write("v.txt", "2")
    assert ws.statuses(ws.run_json("p:t")) == {"p:t": "miss"}
    assert ws.read("keep/precious.txt") == "keep me\n"
    assert os.readlink(ws.root / "link") == "keep"


def test_an_output_folder_holding_an_input_is_not_cleared(ws: Workspace):
    ws.write("gen/template.txt", "template\n")
    ws.write("v.txt", "1")
    ws.write("nxrun.toml", """
        [projects.p.targets.t]
        command = "cat gen/template.txt v.txt > gen/made.txt"
        inputs  = ["gen/template.txt", "v.txt"]
        outputs = ["gen"]
    """)
    summary = ws.run_json("p:t")
    assert [w for w in summary["warnings"] if "'gen'" in w and "not cleared" in w], summary["warnings"]
    ws.write("v.txt", "2")
    ws.run_json("p:t")
    assert ws.read("gen/template.txt") == "template\n" and ws.read("gen/made.txt") == "template\n2"


def test_clearing_never_reaches_through_a_linked_parent_folder(ws: Workspace, tmp_path: Path):
    """A declared output under a symlinked folder (`ext/gen` with `ext -> /elsewhere`, or `data/gen`
    with `data -> src`, an input folder) is not cleared: that would delete files outside the
    workspace, or the task's own inputs."""
    outside = tmp_path / "outside"
    (outside / "gen").mkdir(parents=True)
    (outside / "gen/precious.txt").write_text("not the workspace's\n")
    os.symlink(outside, ws.root / "ext")
    ws.write("src/gen/input.txt", "an input\n")
    os.symlink("src", ws.root / "data")
    ws.write("nxrun.toml", """
        [projects.p.targets.outside]
        command = "echo made > ext/gen/made.txt"
        inputs  = ["nxrun.toml"]
        outputs = ["ext/gen"]

        [projects.p.targets.input]
        command = "cat src/gen/input.txt > data/gen/made.txt"
        inputs  = ["src/**"]
        outputs = ["data/gen"]
    """)
    summary = ws.nxrun("run", "--json", "p:outside", "p:input")
    assert (outside / "gen/precious.txt").read_text() == "not the workspace's\n"
    assert ws.read("src/gen/input.txt") == "an input\n"
    warnings = json.loads(summary.stdout)["warnings"]
    for output in ("ext/gen", "data/gen"):
        assert [w for w in warnings if f"'{output}'" in w and "symlink" in w], warnings


def test_a_hardlinked_output_in_a_folder_that_is_not_cleared_never_changes_the_blob(ws: Workspace):
    """An output folder holding an input is not cleared; a file in it that a hit hardlinked to a
    cache blob must still be unlinked from the blob before the command rewrites it."""
    ws.write("nxrun.toml", """
        [workspace]
        restore = "hardlink"
        [projects.p.targets.t]
        command = "cat gen/template.txt v.txt > gen/made.txt"
        inputs  = ["gen/template.txt", "v.txt"]
        outputs = ["gen"]
    """)
    ws.write("gen/template.txt", "template\n")
    ws.write("v.txt", "1\n")
    ws.run_json("p:t")
    (ws.root / "gen/made.txt").unlink()
    assert ws.statuses(ws.run_json("p:t")) == {"p:t": "local-hit"}
    assert os.stat(ws.root / "gen/made.txt").st_nlink > 1, "restore = hardlink did not link the blob"
    ws.write("v.txt", "2\n")
    assert ws.statuses(ws.run_json("p:t")) == {"p:t": "miss"}
    assert ws.read("gen/made.txt") == "template\n2\n"
    verify = ws.nxrun("cache", "verify")
    assert verify.returncode == 0 and "corrupt" not in verify.stdout + verify.stderr, verify.stdout
    ws.write("v.txt", "1\n")
    assert ws.statuses(ws.run_json("p:t")) == {"p:t": "local-hit"}
    assert ws.read("gen/made.txt") == "template\n1\n"


def test_a_stray_temp_file_in_an_output_folder_that_is_not_cleared_is_not_captured(ws: Workspace):
    ws.write("gen/template.txt", "template\n")
    ws.write("v.txt", "1")
    ws.write("nxrun.toml", """
        [projects.p.targets.t]
        command = "cat gen/template.txt v.txt > gen/made.txt"
        inputs  = ["gen/template.txt", "v.txt"]
        outputs = ["gen"]
    """)
    ws.run_json("p:t")
    ws.write("gen/.nxrun-0123456789abcdef01234567.tmp", "half a blob")   # as a killed restore leaves one
    ws.write("v.txt", "2")
    assert ws.statuses(ws.run_json("p:t")) == {"p:t": "miss"}
    (ws.root / "gen/made.txt").unlink()
    assert ws.statuses(ws.run_json("p:t")) == {"p:t": "local-hit"}
    assert sorted(os.listdir(ws.root / "gen")) == ["made.txt", "template.txt"]
