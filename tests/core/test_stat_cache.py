"""The stat cache trusts a file's digest only while its (size, mtime, inode, ctime) is unchanged,
and never for a file changed within the file system's timestamp granularity of its hashing."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

from cli_workspace import Workspace

from nxrun.hashing import StatCache, digest_bytes

OLD_NS = 1_600_000_000_123_456_789   # 2020: far from "now", so never in the racy window


def _stat(size=10, mtime_ns=OLD_NS, ino=7, ctime_ns=OLD_NS):
    return SimpleNamespace(st_size=size, st_mtime_ns=mtime_ns, st_ino=ino, st_ctime_ns=ctime_ns)


def test_an_entry_is_trusted_only_while_size_mtime_inode_and_ctime_all_match():
    cache = StatCache()
    cache.remember("/w/a", _stat(), "d1")
    assert cache.lookup("/w/a", _stat()) == "d1"
    assert cache.lookup("/w/a", _stat(ctime_ns=OLD_NS + 1)) is None    # mtime put back, ctime moved on
    assert cache.lookup("/w/a", _stat(mtime_ns=OLD_NS + 1)) is None
    assert cache.lookup("/w/a", _stat(size=11)) is None
    assert cache.lookup("/w/a", _stat(ino=8)) is None
    assert cache.dirty == cache.rows == {"/w/a": (10, OLD_NS, 7, OLD_NS, "d1")}


def test_a_file_changed_within_the_timestamp_granularity_of_hashing_is_not_remembered():
    now = time.time_ns()
    cache = StatCache()
    cache.remember("/w/fresh", _stat(mtime_ns=now, ctime_ns=now), "d")
    cache.remember("/w/fresh-ctime", _stat(ctime_ns=now - 1_000_000), "d")        # touch -d after a write
    cache.remember("/w/future", _stat(mtime_ns=now + 10**12, ctime_ns=now), "d")  # clock skew
    # whole-second stamps: a file system that keeps seconds (or FAT's two) is unsure for that long
    second = (now // 10**9 - 1) * 10**9
    cache.remember("/w/coarse", _stat(mtime_ns=second, ctime_ns=second), "d")
    assert cache.rows == {} and cache.dirty == {}
    cache.remember("/w/old", _stat(), "d")
    old_second = (now // 10**9 - 5) * 10**9
    cache.remember("/w/old-coarse", _stat(mtime_ns=old_second, ctime_ns=old_second), "d")
    assert set(cache.rows) == {"/w/old", "/w/old-coarse"}


def test_the_racy_window_counts_from_when_hashing_began_not_when_it_ended(tmp_path, monkeypatch):
    import nxrun.hashing

    path = tmp_path / "big.bin"
    path.write_bytes(b"A" * 100)            # changed just now: unsure at the start of hashing
    real_digest_file = nxrun.hashing.digest_file

    def slow_digest_file(name):
        time.sleep(0.2)                      # a large file: hashing outlasts the racy window
        return real_digest_file(name)

    monkeypatch.setattr(nxrun.hashing, "digest_file", slow_digest_file)
    cache = StatCache()
    assert cache.digest(str(path)) == digest_bytes(b"A" * 100)
    assert cache.rows == {}


def test_digest_rehashes_a_same_size_in_place_edit_whose_mtime_was_put_back(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"A" * 4096)
    os.utime(path, ns=(OLD_NS, OLD_NS))
    cache = StatCache()
    # the file was written just now (its ctime is recent): hashed, but not yet trusted
    assert cache.digest(str(path)) == digest_bytes(b"A" * 4096)
    assert cache.rows == {}
    st = os.stat(path)
    cache.rows[str(path)] = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, digest_bytes(b"A" * 4096))
    _edit_in_place_keeping_mtime(path, 100, b"B")
    assert os.stat(path).st_mtime_ns == st.st_mtime_ns and os.stat(path).st_size == st.st_size
    assert cache.digest(str(path)) == digest_bytes(b"A" * 100 + b"B" + b"A" * 3995)


def _edit_in_place_keeping_mtime(path, offset: int, data: bytes) -> None:
    """`dd conv=notrunc` then `touch -d <old mtime>`: same size, same inode, same mtime."""
    before = os.stat(path)
    fd = os.open(path, os.O_WRONLY)          # no O_TRUNC
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_an_in_place_edit_with_the_old_mtime_put_back_runs_the_task_again(ws: Workspace):
    ws.write("nxrun.toml", """
        [projects.p.targets.copy]
        command = "cp data.bin out.bin"
        inputs  = ["data.bin"]
        outputs = ["out.bin"]
    """)
    data = ws.root / "data.bin"
    data.write_bytes(b"A" * 4096)
    os.utime(data, ns=(OLD_NS, OLD_NS))
    assert ws.statuses(ws.run_json("p:copy")) == {"p:copy": "miss"}
    assert ws.statuses(ws.run_json("p:copy")) == {"p:copy": "local-hit"}
    assert ws.statuses(ws.run_json("p:copy")) == {"p:copy": "local-hit"}   # the stat cache is settled

    _edit_in_place_keeping_mtime(data, 100, b"B")
    why = ws.nxrun("why", "p:copy", check=True).stdout
    assert "changed  file:data.bin" in why, why
    assert ws.statuses(ws.run_json("p:copy")) == {"p:copy": "miss"}
    assert (ws.root / "out.bin").read_bytes()[100:101] == b"B"
    assert ws.statuses(ws.run_json("p:copy")) == {"p:copy": "local-hit"}
