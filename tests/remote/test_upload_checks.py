"""What the remote cache gets from a local blob that no longer holds its digest's bytes. Written in review:
it fails on the code it was written against (large blobs go up by path, unhashed, while small ones are
read and checked through LocalStore.read_blob)."""

from __future__ import annotations

import os
from pathlib import Path

import xxhash

from remote_helpers import nxrun

BIG = """
[remote]
url = "{url}"
connect-timeout = 1
read-timeout = 5

[projects.p.targets.big]
command = "python3 -c \\"open('big.bin', 'wb').write(bytes(range(256)) * (72 << 10))\\""
outputs = ["big.bin"]
"""


def test_a_large_blob_damaged_on_disk_is_not_uploaded_under_its_digest(remote, tmp_path: Path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "nxrun.toml").write_text(BIG.format(url=remote.url))
    first = nxrun(root, "run", "--json", "p:big", endpoint=remote.endpoint,
                  env={"NXRUN_REMOTE_READ_ONLY": "1"})
    assert first.returncode == 0, first.stderr
    data = (root / "big.bin").read_bytes()          # 18 MiB: over the 16 MiB multipart threshold
    digest = xxhash.xxh3_128_hexdigest(data)
    blob = root / ".nxrun" / "blobs" / digest[:2] / digest[2:]
    assert blob.is_file()
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as handle:               # bit rot: same size, other bytes
        handle.seek(1 << 20)
        handle.write(b"\xff" * 16)
    pushed = nxrun(root, "cache", "push", "p:big", endpoint=remote.endpoint)
    uploaded = [k for k in remote.keys() if k.endswith(digest)]
    if uploaded:        # what is under a digest's key must hash to it: else every reader misses, forever
        assert xxhash.xxh3_128_hexdigest(remote.get(uploaded[0])) == digest, pushed.stderr
