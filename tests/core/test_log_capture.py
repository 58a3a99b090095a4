"""A task's log is kept in memory and spilled to a temp file in the cache only when it is long."""

from __future__ import annotations

import os

import xxhash

from nxrun.store.capture import LogCapture
from nxrun.store.local import LocalStore


def test_short_log_stays_in_memory_and_long_log_spills(tmp_path):
    store = LocalStore(tmp_path / "cache")
    short = LogCapture(store, spill_at=100)
    for line in (b"one\n", b"two\n"):
        short.write(line)
    digest = short.store_blob()
    short.discard()
    assert short.path is None
    assert store.read_blob(digest) == b"one\ntwo\n"

    long = LogCapture(store, spill_at=100)
    lines = [f"line {i:04d} ".encode() * 3 + b"\n" for i in range(50)]
    for line in lines:
        long.write(line)
    assert long.path is not None and long.path.parent == store.tmp_dir
    digest = long.store_blob()
    assert digest == xxhash.xxh3_128_hexdigest(b"".join(lines))
    assert store.read_blob(digest) == b"".join(lines)
    long.discard()
    assert not long.path.exists() and os.listdir(store.tmp_dir) == []


def test_a_log_that_cannot_be_written_never_stops_the_task(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "cache")
    # no temp file can be made: the log stays in memory and is still stored
    monkeypatch.setattr(store, "open_temp", lambda: (_ for _ in ()).throw(OSError(28, "No space left")))
    log = LogCapture(store, spill_at=10)
    for _ in range(5):
        log.write(b"0123456789\n")
    assert log.path is None
    monkeypatch.undo()   # the disk has room again by the time the task ends
    assert store.read_blob(log.store_blob()) == b"0123456789\n" * 5

    class Full:
        def write(self, data):
            raise OSError(28, "No space left on device")

        def close(self):
            pass

    # the disk fills up after the spill: writing goes on, storing the log reports the error
    log = LogCapture(store, spill_at=10)
    log.write(b"x" * 20)
    log._file = Full()
    log.write(b"more\n")
    try:
        log.store_blob()
    except OSError as exc:
        assert exc.errno == 28
    else:
        raise AssertionError("store_blob should report the lost log")
    log.discard()
