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
