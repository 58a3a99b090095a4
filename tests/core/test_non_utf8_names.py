"""Files whose names are not valid UTF-8 (any bytes but / and NUL are a Linux file name).

Such a name among a task's inputs used to end the run with a traceback (the ETag's encoding and the
stat cache's SQLite key both required UTF-8). Now it is hashed like any other name, so an edit re-runs
the task and a repeat is a hit; it is only not remembered in the stat cache (hashed again each run).
"""

from __future__ import annotations

import os
import sys

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "darwin", reason="APFS refuses names that are not UTF-8")


def _workspace(ws):
    ws.write("nxrun.toml", """
        [projects.a.targets.build]
        command = "mkdir -p out && cat src/* > out/all.txt"
        inputs  = ["src/**"]
        outputs = ["out"]
        """)
    (ws.root / "src").mkdir()
    odd = os.path.join(os.fsencode(ws.root), b"src", b"in\xff.txt")
    with open(odd, "wb") as handle:
        handle.write(b"one")
    return odd


def test_an_input_named_in_other_bytes_than_utf8_is_hashed_and_its_edits_seen(ws):
    odd = _workspace(ws)
    first = ws.nxrun("run", "a:build")
    assert first.returncode == 0 and "Traceback" not in first.stderr, first.stderr
    assert "could not record" not in first.stderr  # the run is in the history
    assert ws.statuses(ws.run_json("a:build")) == {"a:build": "local-hit"}
    with open(odd, "wb") as handle:
        handle.write(b"two")
    assert ws.statuses(ws.run_json("a:build")) == {"a:build": "miss"}
    assert ws.read("out/all.txt") == "two"
    assert ws.statuses(ws.run_json("a:build")) == {"a:build": "local-hit"}
    history = ws.nxrun("history")
    assert history.returncode == 0 and history.stdout.count("nxrun run") >= 4, history.stdout
