"""Fixtures: the example pipeline run several times with changes in between, through the real CLI."""

from __future__ import annotations

import json

import pytest

from .workspaces import make_pipeline, nxrun, set_params


@pytest.fixture(scope="module")
def history_workspace(tmp_path_factory):
    """Four runs: all ran; params changed (2 hits, 3 ran); nothing changed (5 hits); a 50% slowdown
    measured on another device (2 hits, 3 ran). Then a kernel edit is left on disk, not yet run."""
    root = make_pipeline(tmp_path_factory.mktemp("history"))
    runs = []
    for scale, device in ((1.0, "x86_64"), (1.2, "x86_64"), (1.2, "x86_64"), (0.6, "H200")):
        set_params(root, scale, device)
        runs.append(json.loads(nxrun(root, "run", "report:summary", "--json").stdout))
    (root / "src" / "gemm.cu").write_text("// kernel v2\n")
    return root, runs
