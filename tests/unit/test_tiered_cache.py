"""nxrun/store/cache.py: the tiered cache looks in the local store first, then in the remote; a
remote hit is indexed locally (the next lookup finds it there); a stored entry is uploaded. The
remote here is a second backend, in memory, written against backend.RemoteBackend alone: the
remote tier needs nothing more of a backend."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from nxrun.hashing import StatCache
from nxrun.store import CacheEntry
from nxrun.store.backend import RemoteBackend
from nxrun.store.cache import TieredCache
from nxrun.store.capture import digest_of_records, scan_outputs
from nxrun.store.local import LocalStore
from nxrun.store.tiered import RemoteCache


class MemoryBackend(RemoteBackend):
    max_concurrency = 2

    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.lock = threading.Lock()

    def key(self, *parts: str) -> str:
        return "/".join(parts)

    def check_bucket(self) -> None:
        pass

    def exists(self, key: str) -> bool:
        return key in self.objects

    def get_bytes(self, key: str, limit: int) -> bytes | None:
        data = self.objects.get(key)
        if data is not None and len(data) > limit:
            raise ValueError(f"{key} is larger than {limit} bytes")
        return data

    def stream_to(self, key: str, handle, limit: int, on_chunk) -> int | None:
        data = self.get_bytes(key, limit)
        if data is None:
            return None
        on_chunk(data)
        handle.write(data)
        return len(data)

    def download_to_file(self, key: str, path, limit: int) -> int:
        data = self.get_bytes(key, limit)
        if data is None:
            raise FileNotFoundError(key)
        Path(path).write_bytes(data)
        return len(data)

    def upload_file(self, path, key: str) -> None:
        self.put(key, Path(path).read_bytes())

    def put(self, key: str, data: bytes) -> None:
        with self.lock:
            self.objects[key] = data

    def put_if_absent(self, key: str, data: bytes) -> bool:
        with self.lock:
            if key in self.objects:
                return False
            self.objects[key] = data
            return True

    def close(self) -> None:
        pass


class _Task:
    id = "p:a"
    outputs = ["out"]
    cache = "always"


def _tiered(root: Path, backend: MemoryBackend) -> TieredCache:
    local = LocalStore(root / ".nxrun")
    remote = RemoteCache(backend, workspace_root=root, write_namespace="trusted", read_namespaces=["trusted"],
                         url="memory://")
    return TieredCache(local, remote, root, "copy", StatCache())


def _entry_of(root: Path, cache: TieredCache, etag: str) -> CacheEntry:
    records, _ = scan_outputs(root, ["out"], StatCache(), cache.local)
    log_digest, _ = cache.local.put_bytes(b"made it\n")
    return CacheEntry(etag=etag, task_id="p:a", outputs=records, declared_outputs=["out"],
                      outputs_digest=digest_of_records(records), log_digest=log_digest)


def test_local_first_then_remote_and_a_remote_hit_is_indexed_locally(tmp_path: Path):
    backend = MemoryBackend()
    etag = "ab" * 16
    first_root = tmp_path / "first"
    (first_root / "out").mkdir(parents=True)
    (first_root / "out" / "result.txt").write_text("result\n")
    first = _tiered(first_root, backend)
    first.store(_entry_of(first_root, first, etag))
    first.local.flush_entries()
    first.remote.wait()
    assert f"trusted/entries/{etag}.json" in backend.objects
    assert first.lookup(etag, _Task())[1] == "local"

    second_root = tmp_path / "second"
    second_root.mkdir()
    second = _tiered(second_root, backend)
    assert second.lookup(etag, _Task(), remote=False) == (None, "")
    entry, origin = second.lookup(etag, _Task())
    assert origin == "remote" and entry is not None
    assert second.restore(_Task(), entry, origin) == 1
    assert (second_root / "out" / "result.txt").read_text() == "result\n"
    assert second.read_log(entry) == b"made it\n"
    # indexed: found locally now, with the remote gone
    backend.objects.clear()
    assert second.lookup(etag, _Task())[1] == "local"
    assert os.path.exists(second.local.blob_path(entry.log_digest))
    first.remote.close()
    second.remote.close()
