"""Action records for remote execution (no shared file system): what a worker needs to run one
cache miss, stored in the remote cache beside the blobs it names, as in Bazel's remote execution API.

The driver describes a miss as an `Action` (command, env names, cwd, the input files as records
path -> blob digest, declared outputs, the hardware the ETag was computed for), uploads the input
blobs the remote lacks (write-once, by digest) and the action record under its own digest. A
worker reads the record back, checks it hashes to its name, and materialises the inputs from the
blobs, each re-hashed (nxrun/executors/sandbox.py). Env values are never stored: they travel with
the Ray task, beside the action digest.

Layout under the remote prefix, in the write namespace of the run (store/tiered.py's layout):
`<namespace>/blobs/<digest>`, `<namespace>/actions/<action digest>.json`, and the entry the
driver writes once the worker's manifest has been checked, `<namespace>/entries/<etag>.json`.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import xxhash

from ..hashing import digest_file

from ..records import as_dict, default_factory, record
from ..store import CorruptBlob, OutputRecord
from ..store.backend import fetch_verified_blob
from ..store.s3 import MULTIPART_THRESHOLD, S3Backend, S3Location
from ..store.safety import is_plain_relative

ACTION_FORMAT = 1
ACTION_LIMIT = 64 << 20
SMALL_BLOB = 256 << 10    # blobs up to this size are PUT without a HEAD first


@record
class Action:
    task_id: str
    etag: str
    command: str
    cwd: str                                  # workspace-relative; "" or "." is the root
    env_names: list[str]                      # the values travel with the task, never stored
    inputs: list[OutputRecord]                # files, links and folders to materialise
    outputs: list[str]                        # declared outputs, workspace-relative
    hardware: str = ""                        # the hardware fingerprint the ETag holds ("" if none)
    probes: dict = default_factory(dict)      # runtime probes the ETag holds: name -> [command, output]
    format: int = ACTION_FORMAT

    def to_json(self) -> bytes:
        return json.dumps(as_dict(self), sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> Action:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("format") != ACTION_FORMAT:
            raise ValueError("not an nxrun action record of a known format")
        inputs = data.get("inputs", [])
        if not isinstance(inputs, list) or not all(isinstance(item, dict) for item in inputs):
            raise ValueError("the action record's inputs are not a list of records")
        try:
            data["inputs"] = [OutputRecord(**item) for item in inputs]
            action = cls(**{k: v for k, v in data.items() if k in _ACTION_FIELDS})
        except TypeError as exc:
            raise ValueError(f"the action record is malformed ({exc})") from None
        texts = (action.task_id, action.etag, action.command, action.cwd, action.hardware)
        lists = (action.env_names, action.outputs)
        probes = action.probes
        if not all(type(t) is str for t in texts) \
                or not all(type(v) is list and all(type(s) is str for s in v) for v in lists) \
                or type(probes) is not dict or not all(
                    type(v) is list and len(v) == 2 and all(type(s) is str for s in v) for v in probes.values()):
            raise ValueError("the action record has a field of the wrong type")
        return action


_ACTION_FIELDS = frozenset(Action.__record_fields__)  # type: ignore[attr-defined]


def action_digest(raw: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(raw)


@record
class RemoteSpec:
    """How a worker reaches the remote cache: small and picklable (no clients, no secrets; the
    worker takes credentials from its own environment, the standard AWS chain)."""
    url: str
    namespace: str
    endpoint_url: str | None = None
    region: str | None = None
    connect_timeout: float = 3.0
    read_timeout: float = 30.0
    extra: dict = default_factory(dict)

    def as_plain(self) -> dict:
        return as_dict(self)


class ActionArea:
    """Blobs, action records and entries of one namespace of the remote, over the S3 backend.
    Blobs are content-addressed (HEAD then PUT; re-writing one is harmless), action records and
    entries write-once (conditional PUT); every blob read back is re-hashed."""

    def __init__(self, backend: S3Backend, namespace: str):
        self.backend = backend
        self.namespace = namespace

    @classmethod
    def open(cls, spec: RemoteSpec, max_concurrency: int = 8) -> ActionArea:
        backend = S3Backend(S3Location.parse(spec.url), endpoint_url=spec.endpoint_url, region=spec.region,
                            connect_timeout=spec.connect_timeout, read_timeout=spec.read_timeout,
                            max_concurrency=max_concurrency)
        return cls(backend, spec.namespace)

    def close(self) -> None:
        self.backend.close()

    def key(self, *parts: str) -> str:
        return self.backend.location.key(self.namespace, *parts)

    # ------------------------------------------------------------------ blobs
    def has_blob(self, digest: str) -> bool:
        return self.backend.exists(self.key("blobs", digest))

    def put_blob_bytes(self, digest: str, data: bytes) -> bool:
        """Upload unless present (a small blob is PUT without asking: one request instead of
        two, and the same bytes under the same name); True when it was written."""
        key = self.key("blobs", digest)
        if len(data) > SMALL_BLOB and self.backend.exists(key):
            return False
        self.backend.put(key, data)
        return True

    def put_blob_file(self, digest: str, path: str | os.PathLike, size: int) -> bool:
        key = self.key("blobs", digest)
        if size <= SMALL_BLOB:
            with open(path, "rb") as handle:
                self.backend.put(key, handle.read())
            return True
        if self.backend.exists(key):
            return False
        if size >= MULTIPART_THRESHOLD:
            self.backend.upload_file(path, key)
        else:
            with open(path, "rb") as handle:
                self.backend.put(key, handle.read())
        return True

    def fetch_blob(self, digest: str, destination: str | os.PathLike, size: int) -> None:
        """Download a blob into a new file at `destination`, re-hashed: CorruptBlob when it is
        missing, larger than `size` (-1: any size up to 1 GiB) or does not hash to its name."""
        limit = size if size >= 0 else 1 << 30
        fetch_verified_blob(self.backend, self.key("blobs", digest), destination, digest, size, limit,
                            listed_by="record")

    def read_blob(self, digest: str, limit: int = 1 << 30) -> bytes:
        data = self.backend.get_bytes(self.key("blobs", digest), limit)
        if data is None:
            raise CorruptBlob(f"blob {digest} is missing from the remote")
        if xxhash.xxh3_128_hexdigest(data) != digest:
            raise CorruptBlob(f"blob {digest} does not hash to its name (tampered or corrupt)")
        return data

    # ------------------------------------------------------------------ action records
    def put_action(self, action: Action) -> str:
        raw = action.to_json()
        digest = action_digest(raw)
        self.backend.put_if_absent(self.key("actions", f"{digest}.json"), raw)
        return digest

    def get_action(self, digest: str) -> Action:
        raw = self.backend.get_bytes(self.key("actions", f"{digest}.json"), ACTION_LIMIT)
        if raw is None:
            raise ValueError(f"action record {digest} is not in the remote cache")
        if action_digest(raw) != digest:
            raise ValueError(f"action record {digest} does not hash to its name (tampered or corrupt)")
        return Action.from_json(raw)

    # ------------------------------------------------------------------ entries
    def put_entry(self, etag: str, manifest: dict) -> bool:
        body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode("utf-8")
        return self.backend.put_if_absent(self.key("entries", f"{etag}.json"), body)


# ---------------------------------------------------------------------- driver side
class InputError(Exception):
    """An input of the action cannot be described (a link out of the workspace, a device file)."""


def describe_inputs(root: Path, paths: list[tuple[str, str | None]], upstream_outputs: list[str],
                    memo: dict | None = None) -> list[OutputRecord]:
    """Records of the files a worker must materialise: the inputs the ETag hashed (path, digest
    as hashed; a digest that is not the file's content digest, a link's say, is recomputed) and
    every file under the declared outputs of the task's upstream tasks, as they are on disk now.

    An input that is a link is materialised as a copy of what it leads to; a link inside an
    upstream output stays a link when it leads to a path inside the same output, else a copy.
    `memo` (kept by the caller for a run): digests by (path, size, mtime, inode, ctime), so a
    file read by many tasks is hashed once."""
    if memo is None:
        memo = {}
    root_text = str(root)
    records: dict[str, OutputRecord] = {}

    def add_file(rel: str, known: str | None) -> None:
        full = os.path.join(root_text, rel)
        try:
            st = os.stat(full)
        except FileNotFoundError:
            raise InputError(f"input '{rel}' does not exist (or is a link to nothing)") from None
        if stat.S_ISDIR(st.st_mode):
            for folder, dirs, files in os.walk(full, followlinks=False):
                dirs.sort()
                rel_folder = os.path.relpath(folder, root_text).replace(os.sep, "/")
                for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
                    add_entry(f"{rel_folder}/{name}", rel)
                if not dirs and not files:
                    records[rel_folder] = OutputRecord(rel_folder, "dir", mode=0o755)
            return
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"input '{rel}' is not a regular file")
        digest = known if known and not os.path.islink(full) else None
        if digest is None or len(digest) != 32:
            key = (full, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
            digest = memo.get(key)
            if digest is None:
                digest = memo[key] = digest_file(full)
        records[rel] = OutputRecord(rel, "file", digest=digest, size=st.st_size, mode=st.st_mode & 0o755)

    def add_entry(rel: str, top: str) -> None:
        full = os.path.join(root_text, rel)
        st = os.lstat(full)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(full)
            resolved = os.path.normpath(os.path.join(os.path.dirname(rel), target))
            if not os.path.isabs(target) and (resolved == top or resolved.startswith(top + "/")):
                records[rel] = OutputRecord(rel, "symlink", target=target, mode=0o777)
                return
        add_file(rel, None)

    for rel, known in paths:
        if not is_plain_relative(rel):
            raise InputError(f"input path {rel!r} is not a plain workspace-relative path")
        add_file(rel, known)
    for declared in upstream_outputs:
        full = os.path.join(root_text, declared)
        if os.path.lexists(full):
            add_entry(declared, declared)
    return [records[k] for k in sorted(records)]


def upload_inputs(area: ActionArea, root: Path, inputs: list[OutputRecord], known: set[str]) -> int:
    """Upload the input blobs the remote lacks; `known` (digests seen there this run) grows.
    Each file is re-hashed as it is read, so a file that changed since it was hashed is an
    InputError, never a blob under a wrong name. Returns the number of blobs written."""
    written = 0
    for item in inputs:
        if item.kind != "file" or item.digest in known:
            continue
        if area.has_blob(item.digest):
            known.add(item.digest)
            continue
        full = root / item.path
        if item.size >= MULTIPART_THRESHOLD:
            if digest_file(str(full)) != item.digest:
                raise InputError(f"input '{item.path}' changed while the task was being sent; run again")
            area.put_blob_file(item.digest, full, item.size)
        else:
            data = full.read_bytes()
            if xxhash.xxh3_128_hexdigest(data) != item.digest:
                raise InputError(f"input '{item.path}' changed while the task was being sent; run again")
            area.put_blob_bytes(item.digest, data)
        known.add(item.digest)
        written += 1
    return written
