"""nxrun/fresh_outputs.py: what is removed before a run, what is spared, and that nothing is
followed."""

from __future__ import annotations

import os
from pathlib import Path

from nxrun.fresh_outputs import clear_outputs


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
    assert spared == ["gen", "formatted.py"]
    assert (tmp_path / "formatted.py").exists()
    assert (tmp_path / "gen" / "stale.txt").exists()
    assert os.listdir(tmp_path / "build") == []
    assert not (tmp_path / "file.txt").exists() and not os.path.lexists(tmp_path / "link")
