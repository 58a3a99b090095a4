"""nxrun/run/fresh_outputs.py: what is removed before a run, what is spared, and that nothing is
followed."""

from __future__ import annotations

import os
from pathlib import Path

from nxrun.run.fresh_outputs import HOLDS_A_SOURCE, LINKED_PARENT, clear_outputs


def test_clear_outputs_spares_outputs_that_hold_sources(tmp_path: Path):
    (tmp_path / "gen").mkdir()
    (tmp_path / "gen" / "source.txt").write_text("a source")
    (tmp_path / "gen" / "stale.txt").write_text("stale")
    (tmp_path / "build" / "sub").mkdir(parents=True)
    (tmp_path / "build" / "sub" / "x").write_text("x")
    os.chmod(tmp_path / "build" / "sub", 0o555)
    (tmp_path / "file.txt").write_text("f")
    os.symlink("gen", tmp_path / "link")
    (tmp_path / "formatted.py").write_text("an input the task rewrites in place")
    spared = clear_outputs(str(tmp_path), ["gen", "build", "file.txt", "link", "absent", "formatted.py"],
                           keep=[str(tmp_path / "gen" / "source.txt"), str(tmp_path / "formatted.py")])
    assert spared == [("gen", HOLDS_A_SOURCE), ("formatted.py", HOLDS_A_SOURCE)]
    assert (tmp_path / "formatted.py").exists()
    assert (tmp_path / "gen" / "stale.txt").exists()
    assert os.listdir(tmp_path / "build") == []
    assert not (tmp_path / "file.txt").exists() and not os.path.lexists(tmp_path / "link")


def test_clear_outputs_never_reaches_through_a_symlinked_parent(tmp_path: Path):
    root = tmp_path / "ws"
    (root / "src" / "gen").mkdir(parents=True)
    (root / "src" / "gen" / "input.txt").write_text("an input")
    (tmp_path / "outside" / "gen").mkdir(parents=True)
    (tmp_path / "outside" / "gen" / "precious").write_text("not the workspace's")
    os.symlink(tmp_path / "outside", root / "ext")
    os.symlink("src", root / "data")
    (root / "real" / "out").mkdir(parents=True)
    (root / "real" / "out" / "stale").write_text("stale")
    spared = clear_outputs(str(root), ["ext/gen", "data/gen", "real/out"], keep=[])
    assert spared == [("ext/gen", LINKED_PARENT), ("data/gen", LINKED_PARENT)]
    assert (tmp_path / "outside" / "gen" / "precious").exists()
    assert (root / "src" / "gen" / "input.txt").exists()
    assert os.listdir(root / "real" / "out") == []


def test_clear_outputs_spares_an_input_named_through_a_symlinked_folder(tmp_path: Path):
    (tmp_path / "src" / "gen").mkdir(parents=True)
    (tmp_path / "src" / "gen" / "input.txt").write_text("an input")
    os.symlink("src", tmp_path / "data")
    spared = clear_outputs(str(tmp_path), ["src/gen"], keep=[str(tmp_path / "data" / "gen" / "input.txt")])
    assert spared == [("src/gen", HOLDS_A_SOURCE)]
    assert (tmp_path / "src" / "gen" / "input.txt").exists()


def test_clear_outputs_works_in_a_workspace_reached_through_a_symlink(tmp_path: Path):
    (tmp_path / "real" / "out").mkdir(parents=True)
    (tmp_path / "real" / "out" / "stale").write_text("stale")
    os.symlink("real", tmp_path / "ws")
    assert clear_outputs(str(tmp_path / "ws"), ["out"], keep=[]) == []
    assert os.listdir(tmp_path / "real" / "out") == []
