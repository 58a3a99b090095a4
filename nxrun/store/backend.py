"""The storage-neutral remote backend: what the remote cache tier (tiered.RemoteCache) asks of a
store of objects by key. S3 (s3.py) is one; a second (HTTP, GCS) is a new module with these
methods and a line in `open_backend`.

A backend speaks in keys and bytes and sorts every failure into one of three kinds the cache tier
acts on: not there (None/False), an outage (RemoteUnavailable: it feeds the outage breaker), or a
refusal (RemoteRefused: credentials, permissions, a missing bucket). A local disk that cannot take
a download is none of these: its OSError goes to the caller as it is.
"""

from __future__ import annotations

import os

from ..errors import ConfigError


class RemoteUnavailable(Exception):
    """The remote did not answer usefully: connection refused or reset, a timeout, a 5xx."""


class RemoteRefused(Exception):
    """The remote answered but refused: credentials, permissions, a missing bucket.
    `everything` when no request can succeed (no or wrong credentials, no such bucket)."""

    def __init__(self, message: str, everything: bool = False):
        super().__init__(message)
        self.everything = everything


class RemoteBackend:
    """The methods the remote cache tier calls (backends need not inherit from this class)."""

    max_concurrency: int = 16          # transfers at once
    large_object: int = 16 << 20       # objects from this size on move by upload_file/download_to_file
    connect_timeout: float = 3.0       # seconds; with read_timeout, bounds one request
    read_timeout: float = 5.0

    def key(self, *parts: str) -> str:
        """The object key of a path of parts (under the backend's prefix)."""
        raise NotImplementedError

    def check_bucket(self) -> None:
        """Raise RemoteRefused/RemoteUnavailable unless the store can be used at all."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def get_bytes(self, key: str, limit: int) -> bytes | None:
        """The object's bytes, None when it does not exist; ValueError past `limit` bytes."""
        raise NotImplementedError

    def stream_to(self, key: str, handle, limit: int, on_chunk) -> int | None:
        """Copy the object into an open binary file, calling on_chunk(bytes) per piece; its size,
        None when it does not exist; ValueError past `limit` bytes."""
        raise NotImplementedError

    def download_to_file(self, key: str, path: str | os.PathLike, limit: int) -> int:
        """A large object into a file (FileNotFoundError when it does not exist); its size."""
        raise NotImplementedError

    def upload_file(self, path: str | os.PathLike, key: str) -> None:
        raise NotImplementedError

    def put(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write-once: True if written, False if the key already existed."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def open_backend(url: str, config: dict) -> RemoteBackend:
    """The backend for a remote cache URL, configured by the workspace's [remote] table."""
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme == "s3":
        from .s3 import open_s3

        return open_s3(url, config)
    raise ConfigError(f"remote cache url {url!r} (from NXRUN_REMOTE or [remote] url) must look like "
                      "s3://bucket/prefix.")


def fetch_verified_blob(backend: RemoteBackend, key: str, destination, digest: str, expected_size: int,
                        limit: int, request=None, sync: bool = False, listed_by: str = "entry") -> int:
    """Download the blob at `key` into the new file `destination`, hashed on the way in; its size.
    CorruptBlob when it is missing, larger than `limit`, does not hash to `digest`, or is not
    `expected_size` bytes (-1: any). Large objects take the backend's ranged download, then one
    hashing pass. `request(operation, *args)` wraps each backend call (the remote tier's breaker);
    `sync` fsyncs the file; `listed_by` names what gave the size, for the message."""
    import xxhash

    from . import CorruptBlob
    from ..hashing import hash_rest

    call = request or (lambda operation, *args: operation(*args))
    hasher = xxhash.xxh3_128()
    if expected_size >= backend.large_object:
        try:
            call(backend.download_to_file, key, destination, expected_size)
        except FileNotFoundError:
            raise CorruptBlob(f"blob {digest} is missing from the remote") from None
        except ValueError as exc:
            raise CorruptBlob(str(exc)) from None
        with open(destination, "rb+", buffering=0) as handle:
            hash_rest(handle, hasher)
            if sync:
                os.fsync(handle.fileno())
        size = os.path.getsize(destination)
    else:
        fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            try:
                got = call(backend.stream_to, key, handle, limit, hasher.update)
            except ValueError as exc:
                raise CorruptBlob(str(exc)) from None
            if got is None:
                raise CorruptBlob(f"blob {digest} is missing from the remote")
            size = got
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
    if hasher.hexdigest() != digest:
        raise CorruptBlob(f"blob {digest} does not hash to its name (tampered or corrupt)")
    if expected_size >= 0 and size != expected_size:
        raise CorruptBlob(f"blob {digest} is {size} bytes, the {listed_by} says {expected_size}")
    return size
