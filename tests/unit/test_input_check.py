"""nxrun/run/input_check.py: the stat an input had when hashed, and the check that sees it changed."""

from __future__ import annotations

import os
import time
from pathlib import Path

from waiting import wait_until

from nxrun.hashing import StatCache
from nxrun.run.input_check import RecordingStatCache, compact, first_changed


def test_first_changed_sees_rewrites_that_keep_size_and_mtime(tmp_path: Path):
    path = tmp_path / "f.txt"
    path.write_text("abc")
    os.utime(path, (1_000_000, 1_000_000))
    recorder = RecordingStatCache(StatCache())
    recorder.digest(str(path))
    seen = compact(recorder.take())
    assert [p for p, _, _ in seen] == [str(path)] and recorder.take() == []
    assert first_changed(seen) is None
    # ctime moves on any write even when size and mtime are put back; give it time to tick
    hashed_ctime = path.stat().st_ctime_ns
    wait_until(lambda: time.time_ns() - hashed_ctime > 20_000_000, what="the clock to move")
    path.write_text("xyz")
    os.utime(path, (1_000_000, 1_000_000))
    assert first_changed(seen) == (str(path), "changed")
    path.unlink()
    assert first_changed(seen) == (str(path), "was deleted")
