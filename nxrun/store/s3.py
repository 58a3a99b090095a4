"""The S3 backend: a thin layer over boto3 that speaks in keys and bytes and sorts every failure
into one of three kinds the cache layer acts on: not there (None/False), an outage
(RemoteUnavailable: connection errors, timeouts, 5xx, throttling; it feeds the outage breaker),
or a refusal (RemoteRefused: no credentials, access denied, no such bucket; a setup problem).

A local disk that cannot take a download (full, read-only) is none of these: its OSError goes
to the caller as it is, so the local store handles it and the breaker never sees it.

Time per request is bounded: connect and read timeouts, and no retry after a timeout (a server
that did not answer in read-timeout seconds is not helped by being asked again); an error that
came back quickly (a reset connection, a 503) is retried once. So a request takes at most about
connect-timeout + read-timeout + 1 s, however the server fails.

boto3 is imported here and only when the first request is made, so `nxrun --version` and runs
without a remote never pay for it. Any S3-compatible server works: `endpoint-url` (or
AWS_ENDPOINT_URL) switches to path-style addressing.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from dataclasses import dataclass

from ..errors import ConfigError
from .backend import RemoteBackend, RemoteRefused, RemoteUnavailable

MULTIPART_THRESHOLD = 16 << 20
MULTIPART_CHUNK = 8 << 20
_OUTAGE_CODES = {"SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError", "Throttling",
                 "ThrottlingException", "RequestTimeTooSkewed", "BadGateway", "GatewayTimeout"}
_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
_RETRY_WITHIN = 1.0        # an outage error that came back this quickly is retried once
_RETRY_PAUSE = 0.1
# a file that could not be written here: the local disk's problem, not the remote's
_LOCAL_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def _local_write_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _LOCAL_WRITE_ERRNOS


def _is_timeout(exc: BaseException) -> bool:
    from botocore import exceptions as bx

    return isinstance(exc, (bx.ReadTimeoutError, bx.ConnectTimeoutError, TimeoutError))


class _LocalWriteFailed(Exception):
    """Carries an OSError of the local file being written past the remote error mapping."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


_SETUP_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket", "ExpiredToken",
                "InvalidToken", "AuthorizationHeaderMalformed"}


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str          # no leading or trailing slash; may be ""

    @classmethod
    def parse(cls, url: str) -> S3Location:
        if not url.startswith("s3://"):
            raise ValueError(f"remote cache url {url!r} must look like s3://bucket/prefix")
        bucket, _, prefix = url[len("s3://"):].partition("/")
        if not bucket:
            raise ValueError(f"remote cache url {url!r} names no bucket; write s3://bucket/prefix")
        return cls(bucket, prefix.strip("/"))

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)


def _error_code(exc) -> tuple[str, int]:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def classify(exc: BaseException) -> BaseException | None:
    """Map a boto3/botocore/s3transfer exception onto RemoteUnavailable or RemoteRefused;
    None for 'not there' (404)."""
    from botocore import exceptions as bx

    if isinstance(exc, (RemoteUnavailable, RemoteRefused)):
        return exc
    if isinstance(exc, bx.ClientError):
        code, status = _error_code(exc)
        if code in _MISSING_CODES or status == 404:
            return None
        if status >= 500 or code in _OUTAGE_CODES:
            return RemoteUnavailable(f"{code or status}: {exc}")
        return RemoteRefused(f"{code or status}: {exc}", everything=code in _SETUP_CODES)
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError, bx.NoRegionError)):
        return RemoteRefused(str(exc), everything=True)
    if isinstance(exc, (bx.HTTPClientError, bx.ResponseStreamingError, bx.IncompleteReadError,
                        bx.ReadTimeoutError, bx.ConnectTimeoutError, bx.EndpointConnectionError)):
        return RemoteUnavailable(f"{type(exc).__name__}: {exc}")
    try:
        from s3transfer.exceptions import RetriesExceededError

        if isinstance(exc, RetriesExceededError):
            return RemoteUnavailable(f"transfer failed after retries: {exc.last_exception}")
    except ImportError:  # pragma: no cover - s3transfer always comes with boto3
        pass
    if isinstance(exc, (OSError, TimeoutError)):
        return RemoteUnavailable(f"{type(exc).__name__}: {exc}")
    return RemoteRefused(f"{type(exc).__name__}: {exc}")


def _adjust_headers(request, **_kwargs) -> None:
    """Two workarounds for S3-compatible servers that would otherwise stall a request until the
    read timeout (an outage to the breaker): no `Expect: 100-continue` on uploads (a part upload
    could wait forever for the 100), and a conditional PUT gets a connection of its own (the next
    request on a connection that carried a 412 could be answered late or never). Neither costs
    anything on AWS S3 but an early refusal of a large body and one connection per manifest."""
    request.headers.pop("Expect", None)
    if request.headers.get("If-None-Match"):
        request.headers["Connection"] = "close"


class S3Backend(RemoteBackend):
    large_object = MULTIPART_THRESHOLD

    def __init__(self, location: S3Location, *, endpoint_url: str | None, region: str | None,
                 connect_timeout: float, read_timeout: float, max_concurrency: int):
        self.location = location
        self.endpoint_url = endpoint_url
        self.region = region
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_concurrency = max_concurrency
        self._client = None
        self._transfer_config = None
        self._lock = threading.Lock()
        self.conditional_put = True      # cleared if the server rejects If-None-Match

    # ------------------------------------------------------------------ set-up
    @property
    def client(self):
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import boto3
                    from boto3.s3.transfer import TransferConfig
                    from botocore.config import Config

                    config = Config(
                        connect_timeout=self.connect_timeout, read_timeout=self.read_timeout,
                        # no retry inside botocore, which would retry timeouts too: _call retries
                        # quick failures only
                        retries={"total_max_attempts": 1, "mode": "standard"},
                        max_pool_connections=self.max_concurrency * 2 + 4,
                        s3={"addressing_style": "path"} if self.endpoint_url else None,
                        request_checksum_calculation="when_required",
                        response_checksum_validation="when_required",
                    )
                    session = boto3.session.Session()
                    self._transfer_config = TransferConfig(
                        multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_CHUNK,
                        max_concurrency=min(self.max_concurrency, 10), use_threads=True,
                        num_download_attempts=1)   # its retries would wait out the read timeout again
                    self._client = session.client("s3", endpoint_url=self.endpoint_url,
                                                  region_name=self.region or session.region_name or "us-east-1",
                                                  config=config)
                    self._client.meta.events.register("before-send.s3", _adjust_headers)
        return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                try:
                    self._client.close()
                except Exception:
                    pass
                self._client = None

    def _call(self, operation, **kwargs):
        started = time.monotonic()
        for attempt in (1, 2):
            try:
                return getattr(self.client, operation)(Bucket=self.location.bucket, **kwargs)
            except Exception as exc:
                mapped = classify(exc)
                if mapped is None:
                    raise FileNotFoundError(kwargs.get("Key", "")) from exc
                if attempt == 1 and isinstance(mapped, RemoteUnavailable) and not _is_timeout(exc) \
                        and time.monotonic() - started < _RETRY_WITHIN:
                    time.sleep(_RETRY_PAUSE)
                    continue
                raise mapped from exc
        raise AssertionError("unreachable")

    def key(self, *parts: str) -> str:
        return self.location.key(*parts)

    # ------------------------------------------------------------------ requests
    def check_bucket(self) -> None:
        try:
            self._call("head_bucket")
        except FileNotFoundError:
            raise RemoteRefused(f"bucket {self.location.bucket!r} does not exist") from None

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", Key=key)
            return True
        except FileNotFoundError:
            return False

    def get_bytes(self, key: str, limit: int) -> bytes | None:
        """The object's bytes, or None when it does not exist; ValueError when it is larger
        than `limit`."""
        try:
            response = self._call("get_object", Key=key)
        except FileNotFoundError:
            return None
        body = response["Body"]
        try:
            data = body.read(limit + 1)
        except Exception as exc:
            raise (classify(exc) or RemoteUnavailable(str(exc))) from exc
        finally:
            body.close()
        if len(data) > limit:
            raise ValueError(f"{key} is larger than {limit} bytes")
        return data

    def stream_to(self, key: str, handle, limit: int, on_chunk) -> int | None:
        """Copy the object into an open binary file, calling on_chunk(bytes) for each piece
        (for hashing); returns the size, None when it does not exist. Raises ValueError past
        `limit` bytes."""
        try:
            response = self._call("get_object", Key=key)
        except FileNotFoundError:
            return None
        body = response["Body"]
        size = 0
        try:
            for chunk in body.iter_chunks(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise ValueError(f"{key} is larger than its entry says ({limit} bytes)")
                on_chunk(chunk)
                try:
                    handle.write(chunk)
                except OSError as exc:
                    raise _LocalWriteFailed(exc) from exc
        except ValueError:
            raise
        except _LocalWriteFailed as exc:
            raise exc.error from None
        except Exception as exc:
            raise (classify(exc) or RemoteUnavailable(str(exc))) from exc
        finally:
            body.close()
        return size

    def download_to_file(self, key: str, path: str | os.PathLike, limit: int) -> int:
        """Parallel ranged download (boto3's transfer manager) of a large object into a file;
        returns its size. The size is checked against `limit` first (a HEAD), so a hostile object
        cannot fill the disk. (Streaming into a non-seekable sink, to hash while downloading,
        deadlocked inside the transfer manager on a 1 GiB object: the caller hashes afterwards,
        from the page cache.)"""
        try:
            head = self._call("head_object", Key=key)
        except FileNotFoundError:
            raise
        size = int(head.get("ContentLength", -1))
        if size > limit:
            raise ValueError(f"{key} is larger than its entry says ({limit} bytes)")
        try:
            self.client.download_file(self.location.bucket, key, str(path), Config=self._transfer_config)
        except Exception as exc:
            if _local_write_error(exc):
                raise
            mapped = classify(exc)
            if mapped is None:
                raise FileNotFoundError(key) from exc
            raise mapped from exc
        return size

    def upload_file(self, path: str | os.PathLike, key: str) -> None:
        """Parallel multipart upload (boto3's transfer manager) of a large file."""
        try:
            self.client.upload_file(str(path), self.location.bucket, key, Config=self._transfer_config)
        except Exception as exc:
            raise (classify(exc) or RemoteUnavailable(str(exc))) from exc

    def put(self, key: str, data: bytes) -> None:
        self._call("put_object", Key=key, Body=data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write-once PUT: True if written, False if the key already existed."""
        if self.conditional_put:
            try:
                self._call("put_object", Key=key, Body=data, IfNoneMatch="*")
                return True
            except RemoteRefused as exc:
                code, status = _error_code(exc.__cause__)
                if status == 412 or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                    return False
                if status == 501 or code == "NotImplemented":
                    self.conditional_put = False     # an older server: HEAD, then PUT
                else:
                    raise
            except RemoteUnavailable as exc:
                code, status = _error_code(exc.__cause__)
                if status == 501 or code == "NotImplemented":
                    self.conditional_put = False
                else:
                    raise
        if self.exists(key):
            return False
        self._call("put_object", Key=key, Body=data)
        return True


def open_s3(url: str, config: dict) -> S3Backend:
    """The S3 backend for `url` (s3://bucket/prefix) and the workspace's [remote] table."""
    from .tiered import CONNECT_TIMEOUT, READ_TIMEOUT, _number

    try:
        location = S3Location.parse(url)
    except ValueError as exc:
        raise ConfigError(f"{exc} (from NXRUN_REMOTE or [remote] url).") from None
    endpoint = (config.get("endpoint-url") or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL") or None)
    return S3Backend(location, endpoint_url=endpoint, region=config.get("region"),
                     connect_timeout=_number(config, "connect-timeout", CONNECT_TIMEOUT),
                     read_timeout=_number(config, "read-timeout", READ_TIMEOUT),
                     max_concurrency=int(_number(config, "max-concurrency", 16, int)))
