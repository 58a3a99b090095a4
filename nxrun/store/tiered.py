"""The remote tier of the cache, over any remote backend (backend.py; S3 in s3.py): the tiered
cache (cache.py) looks in the local store first, then here; a remote hit is verified and written
through to the local store, and entries of tasks that ran are uploaded (blobs first, the
manifest last) by a background pool that `close()` drains.

Everything read from the remote is untrusted: the manifest's signature (with a signing key set)
and paths are checked before any blob is fetched, every blob is re-hashed, and one bad part
rejects the whole entry. Reads look in the job's own write namespace, then in the read
namespaces (`trusted` by default). An outage never fails a run unless the remote is required:
errors feed the outage breaker, skipped reads and writes are counted, and one warning is printed.
What a run can lose to a remote that hangs is bounded: connect and read timeouts per request,
the breaker, and a budget of seconds per run (docs/remote-cache.md gives the figure). A local
disk that cannot take a downloaded blob is the local store's problem, never an outage.

Layout under the bucket prefix: `<namespace>/entries/<etag>.json` and `<namespace>/blobs/<digest>`.
Blobs are per namespace so that no writer can plant bytes under a name a more trusted namespace
will later skip uploading.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path


from ..errors import ConfigError, NxrunError
from ..records import as_dict
from . import CacheEntry, CorruptBlob, UnsafeEntry
from .breaker import OutageBreaker
from .local import LocalStore, blob_digest
from .backend import RemoteBackend, RemoteRefused, RemoteUnavailable, fetch_verified_blob, open_backend
from .safety import check_entry
from .signing import BadSignature, sign_manifest, signing_key, verify_manifest

DEFAULT_NAMESPACE = "trusted"
CONNECT_TIMEOUT = 3.0      # seconds; [remote] connect-timeout
READ_TIMEOUT = 5.0         # seconds without a byte from the server; [remote] read-timeout
OUTAGE_BUDGET = 10.0       # seconds of failed requests per run before the remote is dropped; [remote] outage-budget
# a request that moves no blob (a lookup, an existence check, a manifest or key write) and is
# answered only after this many seconds counts its whole time against the outage budget
SLOW_ANSWER = 1.0
MANIFEST_LIMIT = 64 << 20
LOG_LIMIT = 1 << 30
_HEX32 = re.compile(r"[0-9a-f]{32}")
_NAMESPACE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class _Skipped(Exception):
    """The breaker is open (or the remote refused us): the operation was not attempted."""


def normalize_namespace(name: str) -> str:
    """`trusted`, `scratch/<ref>`, ...: slash-separated parts of letters, digits, '.', '_', '-'.
    A git ref's other characters become '-'."""
    text = name.strip().strip("/")
    if text.startswith("refs/"):
        text = text[len("refs/"):]
    parts = [re.sub(r"[^A-Za-z0-9._-]", "-", part) for part in text.split("/") if part]
    if not parts or any(not _NAMESPACE_PART.fullmatch(p) or p in (".", "..") for p in parts):
        raise ConfigError(f"remote namespace {name!r} is not usable; write e.g. 'trusted' or 'scratch/my-branch'.")
    return "/".join(parts)


def _number(config: dict, key: str, default: float, kind=float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"nxrun.toml [remote] {key} = {value!r}: it must be a positive number.")
    return kind(value)


def _truthy(text: str | None) -> bool:
    return (text or "").strip().lower() in ("1", "true", "yes", "on")


def open_remote(url: str, workspace, required: bool, namespace: str | None, console) -> RemoteCache:
    """The remote cache for `url` (s3://bucket/prefix) configured by the workspace's [remote] table.

    Precedence for the write namespace: `namespace` (--namespace), NXRUN_NAMESPACE, [remote]
    write-namespace, then `trusted`."""
    config = dict(getattr(workspace, "remote", {}) or {})
    backend = open_backend(url, config)
    write_ns = normalize_namespace(namespace or os.environ.get("NXRUN_NAMESPACE")
                                   or config.get("write-namespace") or DEFAULT_NAMESPACE)
    read_extra = config.get("read-namespaces", [DEFAULT_NAMESPACE])
    if isinstance(read_extra, str):
        read_extra = [read_extra]
    if not isinstance(read_extra, list) or not all(isinstance(n, str) for n in read_extra):
        raise ConfigError("nxrun.toml [remote] read-namespaces must be a list of names, e.g. [\"trusted\"].")
    read_namespaces = list(dict.fromkeys([write_ns] + [normalize_namespace(n) for n in read_extra]))
    read_only = bool(config.get("read-only", False)) or _truthy(os.environ.get("NXRUN_REMOTE_READ_ONLY"))
    breaker = OutageBreaker(budget=_number(config, "outage-budget", OUTAGE_BUDGET))
    key_env = config.get("signing-key-env")
    remote = RemoteCache(backend, workspace_root=Path(workspace.root), write_namespace=write_ns,
                         read_namespaces=read_namespaces, read_only=read_only,
                         required=required or bool(config.get("required", False)),
                         signing_key=signing_key(key_env), console=console, url=url, breaker=breaker)
    if remote.required:
        remote.check_reachable()
    return remote


class RemoteCache:
    def __init__(self, backend: RemoteBackend, *, workspace_root: Path, write_namespace: str,
                 read_namespaces: list[str], read_only: bool = False, required: bool = False,
                 signing_key: bytes | None = None, console=None, url: str = "",
                 breaker: OutageBreaker | None = None):
        self.backend = backend
        self.root = workspace_root
        self.write_namespace = write_namespace
        self.read_namespaces = read_namespaces
        self.read_only = read_only
        self.required = required
        self.signing_key = signing_key
        self.console = console
        self.url = url
        self.breaker = breaker or OutageBreaker()
        self.counts = {"hits": 0, "misses": 0, "uploads": 0, "skipped": 0, "rejected": 0,
                       "bytes_down": 0, "bytes_up": 0, "blobs_down": 0, "blobs_up": 0, "errors": 0}
        self._count_lock = threading.Lock()
        self._warned: set[str] = set()
        self._reads_refused = False
        self._writes_refused = False
        self._failure: str | None = None     # first error in required mode, raised by close()
        concurrency = backend.max_concurrency
        self._io = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="nxrun-remote-io")
        self._uploader = ThreadPoolExecutor(max_workers=max(1, min(8, concurrency // 2)),
                                            thread_name_prefix="nxrun-remote-up")
        self._pending: list[Future] = []
        self._pending_lock = threading.Lock()
        self._store: LocalStore | None = None
        self._started = time.time()
        self._closed = False

    # ------------------------------------------------------------------ bookkeeping
    def _count(self, key: str, amount: int = 1) -> None:
        with self._count_lock:
            self.counts[key] += amount

    def _warn(self, kind: str, message: str) -> None:
        with self._count_lock:
            if kind in self._warned:
                return
            self._warned.add(kind)
        self._report(message)

    def _report(self, message: str) -> None:
        """A warning about one entry (rejected, badly signed): every one is worth seeing."""
        if self.console is not None:
            self.console.warn(message)
        else:
            print(f"warning: {message}", file=sys.stderr)

    def _answered(self, started: float, transfer: bool) -> None:
        """The server answered a request begun at `started`: the remote is up; but an answer to a
        request that moves no blob (`transfer` False) that took over SLOW_ANSWER seconds counts its
        time against the outage budget, so a server that answers everything just before the read
        timeout costs a run a bounded time too."""
        elapsed = time.monotonic() - started
        lost = elapsed if not transfer and elapsed > SLOW_ANSWER else 0.0
        if self.breaker.record_success(lost):
            self._warn_outage(TimeoutError(f"answers took over {SLOW_ANSWER:.0f}s"), slow=True)

    def _bounded(self, operation, args: tuple):
        """operation(*args) in a thread of its own, given connect-timeout + read-timeout + 1 s in
        all: the timeouts bound each wait for a byte, not the answer, and a server that sends one
        byte of it just before each read timeout would hold the run for as long as it likes.
        Past the limit, RemoteUnavailable; the request is left to end on its own (a daemon thread:
        it holds neither the run nor its exit)."""
        limit = getattr(self.backend, "connect_timeout", CONNECT_TIMEOUT) + \
            getattr(self.backend, "read_timeout", READ_TIMEOUT) + 1.0
        outcome: list = []
        done = threading.Event()

        def call() -> None:
            try:
                outcome.append((True, operation(*args)))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                outcome.append((False, exc))
            finally:
                done.set()

        threading.Thread(target=call, name="nxrun-remote-request", daemon=True).start()
        if not done.wait(limit):
            raise RemoteUnavailable(f"no complete answer within {limit:.0f}s")
        succeeded, value = outcome[0]
        if not succeeded:
            raise value
        return value

    def _request(self, operation, *args, writing: bool = False, transfer: bool = False):
        """Run one backend request through the breaker; _Skipped when it was not attempted.

        Any answer of the server, even a refusal or a 404, counts as the remote being up; only
        connection errors, timeouts and 5xx (RemoteUnavailable) count as an outage, and slow
        answers against the budget (see _answered; `transfer`: the request moves a blob, whose
        time depends on its size). A request cut short by a local error says nothing about the
        remote either way."""
        if (self._reads_refused and not writing) or (writing and self._writes_refused):
            raise _Skipped()
        if not self.breaker.allow():
            raise _Skipped()
        started = time.monotonic()
        try:
            result = operation(*args) if transfer else self._bounded(operation, args)
        except RemoteUnavailable as exc:
            self._count("errors")
            if self.required:
                self.breaker.release()
                self._fail(f"remote cache {self.url} is unavailable ({exc}) and --remote=required is set.")
            if self.breaker.record_failure(time.monotonic() - started):
                self._warn_outage(exc)
            raise _Skipped() from exc
        except RemoteRefused as exc:
            self._answered(started, transfer)
            self._count("errors")
            if self.required:
                self._fail(f"remote cache {self.url} refused the request ({exc}) and --remote=required is set.")
            if exc.everything:
                self._reads_refused = self._writes_refused = True
                self._warn("refused", f"remote cache {self.url} refused the request ({_short(exc)}); not "
                                      "using it in this run. Check credentials (the standard AWS chain), "
                                      "the bucket name and endpoint-url.")
            elif writing:
                self._writes_refused = True
                self._warn("refused-write", f"remote cache {self.url} refused a write ({_short(exc)}); not "
                                            f"uploading to namespace '{self.write_namespace}' in this run. Set "
                                            "[remote] read-only = true if this job should not write.")
            else:
                self._reads_refused = True
                self._warn("refused", f"remote cache {self.url} refused a read ({_short(exc)}); not using "
                                      "it in this run. Check the read permissions of these credentials.")
            raise _Skipped() from exc
        except (FileNotFoundError, ValueError):
            self._answered(started, transfer)   # the server answered: not there, or larger than it should be
            raise
        except BaseException:
            self.breaker.release()
            raise
        self._answered(started, transfer)
        return result

    def _warn_outage(self, exc: BaseException, slow: bool = False) -> None:
        breaker = self.breaker
        if not breaker.gave_up:
            self._warn("outage", f"remote cache {self.url} is unavailable ({_short(exc)}); skipping it for "
                                 f"{breaker.cooldown:.0f}s at a time for the rest of this run.")
            return
        with self._count_lock:
            if slow:
                cause = f" answers slowly ({_short(exc)}) and"
            else:
                cause = "" if "outage" in self._warned else f" is unavailable ({_short(exc)}) and"
            self._warned.add("outage")
        self._warn("gave-up", f"remote cache {self.url}{cause} has cost this run {breaker.lost:.1f}s of timeouts, "
                              f"errors and slow answers (the limit is {breaker.budget:.0f}s, [remote] outage-budget); "
                              "not using it for the rest of this run.")

    def _fail(self, message: str):
        if self._failure is None:
            self._failure = message
        raise NxrunError(message)

    def check_reachable(self) -> None:
        try:
            self.backend.check_bucket()
        except (RemoteUnavailable, RemoteRefused) as exc:
            raise NxrunError(f"remote cache {self.url} is required but not reachable: {exc}") from None

    def _key(self, namespace: str, *parts: str) -> str:
        return self.backend.key(namespace, *parts)

    # ------------------------------------------------------------------ the env key (store/keys.py)
    def shared_env_key(self, create: bool = True) -> tuple[bytes | None, str]:
        """(the key every machine sharing this remote hashes env values with, ''), or (None, why).

        It lives at `<prefix>/env-key`, outside the namespaces, since every namespace must agree.
        When there is none yet, `create` is set and this job may write, a random one is written once
        (a conditional PUT: of machines racing, one wins) and the winner is read back. Requests go straight to the
        backend, through the breaker: a refusal here (credentials limited to a namespace) must not
        stop this run's reads and writes of entries."""
        key_name = self.backend.key(_ENV_KEY_OBJECT)
        try:
            for attempt in range(2):
                raw = self._key_request(self.backend.get_bytes, key_name, 4096)
                if raw is not None:
                    key = _parse_env_key(raw)
                    return (key, "") if key else (None, f"{key_name} in the remote is not a key nxrun wrote")
                if attempt or self.read_only or not create:
                    break
                self._key_request(self.backend.put_if_absent, key_name,
                                  f"{_ENV_KEY_HEADER}\n{os.urandom(32).hex()}\n".encode("ascii"))
        except _Skipped:
            return None, "the remote cache is unavailable, so its env-key could not be read"
        except (RemoteUnavailable, RemoteRefused) as exc:
            return None, f"the remote's env-key could not be read or made ({_short(exc)})"
        except ValueError:                   # larger than any key nxrun writes
            return None, f"{key_name} in the remote is not a key nxrun wrote"
        return None, ("the remote has no env-key yet and this job may not write one (read-only)" if create else
                      "the remote has no env-key yet (the first run that may write makes it)")

    def _key_request(self, operation, *args):
        """One request for the env key through the breaker, as _request does (any answer of the
        server closes it, an outage counts against it), except that a refusal is only raised: it
        must not turn the remote off for entries."""
        if not self.breaker.allow():
            raise _Skipped()
        started = time.monotonic()
        try:
            result = self._bounded(operation, args)
        except RemoteUnavailable as exc:
            self._count("errors")
            if self.breaker.record_failure(time.monotonic() - started):
                self._warn_outage(exc)
            raise
        except (RemoteRefused, FileNotFoundError, ValueError):
            self._answered(started, False)
            raise
        except BaseException:
            self.breaker.release()
            raise
        self._answered(started, False)
        return result

    # ------------------------------------------------------------------ reads
    def fetch(self, etag: str, local_store: LocalStore, dry_run: bool = False) -> CacheEntry | None:
        """The entry for `etag` from the remote, verified, with its blobs in `local_store` (unless
        dry_run), or None: not there, rejected, or the remote unavailable."""
        self._store = local_store
        if not _HEX32.fullmatch(etag or ""):
            return None
        if local_store.writes_off and not dry_run:
            return None          # a remote hit is restored through the local store, which takes nothing now
        for namespace in self.read_namespaces:
            try:
                raw = self._request(self.backend.get_bytes, self._key(namespace, "entries", f"{etag}.json"),
                                    MANIFEST_LIMIT)
            except _Skipped:
                self._count("skipped")
                return None
            except ValueError as exc:
                self._count("rejected")
                self._report(f"remote cache entry {etag[:12]} from '{namespace}' rejected: {exc}; "
                             "the task will run instead.")
                continue
            if raw is None:
                continue
            self._count("bytes_down", len(raw))
            entry = self._validate(etag, raw, namespace)
            if entry is None:
                continue
            if dry_run:
                return entry
            try:
                self._download_blobs(entry, namespace, local_store)
            except _Skipped:
                self._count("skipped")
                return None
            except (CorruptBlob, UnsafeEntry, ValueError) as exc:
                self._count("rejected")
                self._report(f"remote cache entry {etag[:12]} of {entry.task_id} from '{namespace}' rejected: "
                             f"{exc}; the task will run instead.")
                continue
            except OSError as exc:
                # the local disk (full, read-only): not the remote's fault, and no outage. In a run the
                # local store turns caching off with one warning; elsewhere it raises a clear error
                local_store.disk_problem(exc)
                if not local_store.writes_off:
                    self._report(f"remote cache entry {etag[:12]} of {entry.task_id} could not be stored "
                                 f"locally: {exc}; the task will run instead.")
                return None
            try:
                local_store.put_entry(entry, origin="remote")
            except OSError:          # caching went off in this run (a full local disk), said once already
                return None
            self._count("hits")
            return entry
        self._count("misses")
        return None

    def fetch_blobs(self, entry: CacheEntry, local_store: LocalStore) -> str | None:
        """Download the blobs of `entry`, a checked manifest an executor's worker made (its blobs in
        the write namespace), each re-hashed, into `local_store`: None, or why not. Not the entry
        stored under its ETag: that one may be another run's (entries are write-once), or absent
        (cache = "never")."""
        try:
            self._download_blobs(entry, self.write_namespace, local_store)
        except _Skipped:
            return "the remote cache did not answer"
        except (CorruptBlob, UnsafeEntry, ValueError) as exc:
            return f"a blob of its outputs is corrupt or missing in the remote cache ({exc})"
        except OSError as exc:
            local_store.disk_problem(exc)
            return f"its outputs could not be stored locally ({exc})"
        return None

    def _validate(self, etag: str, raw: bytes, namespace: str) -> CacheEntry | None:
        try:
            manifest = json.loads(raw)
            if not isinstance(manifest, dict):
                raise ValueError("the manifest is not a JSON object")
            if self.signing_key is not None:
                verify_manifest(etag, manifest, self.signing_key)
            entry = CacheEntry.from_json(raw)
            if entry.etag != etag:
                raise ValueError(f"the manifest is for etag {str(entry.etag)[:12]}, not this one")
            _check_shape(entry)
            check_entry(entry, entry.declared_outputs)
        except BadSignature as exc:
            self._count("rejected")
            self._report(f"remote cache entry {etag[:12]} from '{namespace}' counts as a miss: {exc} "
                         "(NXRUN_SIGNING_KEY is set).")
            return None
        except (ValueError, TypeError, KeyError, UnsafeEntry) as exc:
            self._count("rejected")
            self._report(f"remote cache entry {etag[:12]} from '{namespace}' rejected: {exc}; "
                         "the task will run instead.")
            return None
        return entry

    def _download_blobs(self, entry: CacheEntry, namespace: str, local_store: LocalStore) -> None:
        sizes: dict[str, int] = {}
        for record in entry.outputs:
            if record.kind == "file" and record.digest:
                sizes[record.digest] = max(sizes.get(record.digest, 0), int(record.size))
        if entry.log_digest and entry.log_digest not in sizes:
            sizes[entry.log_digest] = -1
        wanted = [d for d in sizes if not local_store.has_blob(d)]
        futures = [self._io.submit(self._download_blob, namespace, digest, sizes[digest], local_store)
                   for digest in wanted]
        first_error: BaseException | None = None
        for future in futures:
            try:
                future.result()
            except BaseException as exc:  # noqa: BLE001 - the first one is re-raised below
                if first_error is None or isinstance(first_error, _Skipped):
                    first_error = exc
        if first_error is not None:
            raise first_error

    def _download_blob(self, namespace: str, digest: str, expected_size: int, local_store: LocalStore) -> None:
        key = self._key(namespace, "blobs", digest)
        temp = local_store.temp_path()
        try:
            limit = expected_size if expected_size >= 0 else LOG_LIMIT
            size = fetch_verified_blob(self.backend, key, temp, digest, expected_size, limit, sync=True,
                                       request=lambda operation, *args: self._request(operation, *args,
                                                                                      transfer=True))
            self._count("bytes_down", size)
            self._count("blobs_down")
            local_store.put_verified_file(temp, digest)
        finally:
            if temp.exists():
                temp.unlink()

    # ------------------------------------------------------------------ writes
    def upload(self, entry: CacheEntry, local_store: LocalStore) -> None:
        """Queue the entry for upload (blobs first, manifest last); never raises for an outage."""
        self._store = local_store
        if self.read_only or self._closed:
            return
        future = self._uploader.submit(self._upload_entry, entry, local_store)
        with self._pending_lock:
            self._pending = [f for f in self._pending if not f.done()]
            self._pending.append(future)

    def _upload_entry(self, entry: CacheEntry, local_store: LocalStore) -> None:
        namespace = self.write_namespace
        manifest_key = self._key(namespace, "entries", f"{entry.etag}.json")
        try:
            if self._request(self.backend.exists, manifest_key, writing=True):
                return
            futures = [self._io.submit(self._upload_blob, namespace, digest, local_store)
                       for digest in entry.blob_digests()]
            errors = []
            for future in futures:
                try:
                    future.result()
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)
            if errors:
                raise errors[0]
            manifest = as_dict(entry)
            manifest["signature"] = None
            if self.signing_key is not None:
                manifest["signature"] = sign_manifest(entry.etag, manifest, self.signing_key)
            body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode("utf-8")
            if self._request(self.backend.put_if_absent, manifest_key, body, writing=True):
                self._count("bytes_up", len(body))
            self._count("uploads")
        except _Skipped:
            self._count("skipped")
        except (CorruptBlob, FileNotFoundError) as exc:
            self._report(f"{entry.task_id}: not uploaded to the remote cache: a local blob is missing or "
                         f"corrupt ({exc}); run `nxrun cache verify`.")
        except NxrunError:
            pass                         # required mode: remembered in self._failure, raised by close()
        except Exception as exc:  # noqa: BLE001 - an upload must never take the run down
            self._count("errors")
            self._report(f"{entry.task_id}: upload to the remote cache failed: {exc}")

    def _upload_blob(self, namespace: str, digest: str, local_store: LocalStore) -> None:
        key = self._key(namespace, "blobs", digest)
        path = local_store.blob_path(digest)
        size = os.lstat(path).st_size
        # content-addressed: a blob that exists holds these bytes, and writing them twice is
        # harmless, so HEAD then a plain PUT (the manifest is the write-once part)
        if self._request(self.backend.exists, key, writing=True):
            return
        if size >= self.backend.large_object:
            # sent by path, so hashed here first: a blob damaged on disk must never go up under its
            # digest (the existence check above would then keep the bad object there for good)
            if blob_digest(path) != digest:
                local_store.discard_blob(digest)
                raise CorruptBlob(digest)
            self._request(self.backend.upload_file, path, key, writing=True, transfer=True)
        else:
            self._request(self.backend.put, key, local_store.read_blob(digest), writing=True, transfer=True)
        self._count("bytes_up", size)
        self._count("blobs_up")

    # ------------------------------------------------------------------ end of run
    def wait(self) -> None:
        """Block until queued uploads have finished (each bounded by timeouts and the breaker)."""
        while True:
            with self._pending_lock:
                pending = [f for f in self._pending if not f.done()]
                self._pending = pending
            if not pending:
                return
            for future in pending:
                future.exception()

    def summary(self, wait: bool = True) -> dict:
        """Counters of this run; waits for queued uploads first unless wait=False."""
        if wait:
            self.wait()
        with self._count_lock:
            data = dict(self.counts)
        data.update({"url": self.url, "namespace": self.write_namespace, "read_only": self.read_only,
                     "breaker_opened": self.breaker.times_opened})
        return data

    def close(self) -> None:
        if self._closed:
            return
        self.wait()
        self._closed = True
        self._uploader.shutdown(wait=True)
        self._io.shutdown(wait=True)
        self.backend.close()
        if self._store is not None:
            try:
                record_transfers(self._store, self._started, self.summary(wait=False))
            except Exception:  # noqa: BLE001 - statistics never fail a run
                pass
        if self._failure is not None:
            raise NxrunError(self._failure)


_ENV_KEY_OBJECT = "env-key"
_ENV_KEY_HEADER = "nxrun-env-key-v1"


def _parse_env_key(raw: bytes) -> bytes | None:
    lines = raw.decode("ascii", "replace").split()
    if len(lines) != 2 or lines[0] != _ENV_KEY_HEADER or not re.fullmatch(r"[0-9a-f]{64}", lines[1]):
        return None
    return bytes.fromhex(lines[1])


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _check_shape(entry: CacheEntry) -> None:
    """Fields of an untrusted manifest that check_entry does not judge: the task id, the outputs
    list and the log digest. check_entry covers every output record and the declared outputs."""
    if not isinstance(entry.task_id, str) or not isinstance(entry.outputs, list):
        raise ValueError("the manifest's task_id or outputs are malformed")
    if entry.log_digest is not None and not (isinstance(entry.log_digest, str)
                                             and _HEX32.fullmatch(entry.log_digest)):
        raise ValueError("the manifest's log digest is malformed")


def record_transfers(store: LocalStore, started: float, summary: dict) -> None:
    """Add this run's remote counters to the local index (`nxrun cache stats` sums them)."""
    if not any(summary.get(k) for k in ("hits", "misses", "uploads", "skipped", "rejected")):
        return

    def write(conn):
        conn.execute("CREATE TABLE IF NOT EXISTS remote_transfers (started REAL, finished REAL, url TEXT, "
                     "namespace TEXT, hits INTEGER, misses INTEGER, uploads INTEGER, skipped INTEGER, "
                     "rejected INTEGER, bytes_down INTEGER, bytes_up INTEGER)")
        conn.execute("INSERT INTO remote_transfers VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                     (started, time.time(), summary.get("url", ""), summary.get("namespace", ""),
                      summary["hits"], summary["misses"], summary["uploads"], summary["skipped"],
                      summary["rejected"], summary["bytes_down"], summary["bytes_up"]))
    store.write(write)


def transfer_totals(store: LocalStore) -> dict:
    """Sums of the recorded remote counters (zeros when none were recorded)."""
    keys = ("hits", "misses", "uploads", "skipped", "rejected", "bytes_down", "bytes_up")
    exists = store.read("SELECT 1 FROM sqlite_master WHERE type='table' AND name='remote_transfers'")
    if not exists:
        return dict.fromkeys(keys, 0)
    row = store.read("SELECT " + ", ".join(f"coalesce(sum({k}),0)" for k in keys) + " FROM remote_transfers")[0]
    return dict(zip(keys, row))
