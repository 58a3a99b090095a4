"""nxrun/store/tiered.py: the write and read namespaces of a remote cache, and how its requests feed
the outage breaker (requests here are the test's own functions: no server, no boto3 call)."""

from __future__ import annotations

import pytest

from nxrun.errors import ConfigError
from nxrun.store.breaker import OutageBreaker
from nxrun.store.backend import RemoteRefused, RemoteUnavailable
from nxrun.store.s3 import S3Backend, S3Location
from nxrun.store.tiered import RemoteCache, _Skipped, normalize_namespace


@pytest.mark.parametrize("name, expected", [
    ("trusted", "trusted"),
    ("scratch/my-branch", "scratch/my-branch"),
    ("/trusted/", "trusted"),
    ("  scratch/x  ", "scratch/x"),
    ("scratch//x", "scratch/x"),                        # empty parts are dropped
    ("refs/heads/feature/x", "heads/feature/x"),        # a git ref loses its refs/ prefix
    ("refs/pull/42/merge", "pull/42/merge"),
    ("scratch/fix: the bug!", "scratch/fix--the-bug-"),  # other characters become '-'
    ("scratch/v1.2_rc", "scratch/v1.2_rc"),
])
def test_namespace_names_are_normalised(name: str, expected: str):
    assert normalize_namespace(name) == expected


@pytest.mark.parametrize("name", ["", "/", "..", "scratch/..", "scratch/./x", "-x", "scratch/.hidden", "a/../b"])
def test_unusable_namespaces_are_config_errors_with_an_example(name: str):
    with pytest.raises(ConfigError) as caught:
        normalize_namespace(name)
    assert "not usable" in str(caught.value) and "'trusted'" in str(caught.value)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def remote_cache(tmp_path):
    """A RemoteCache whose requests are the test's own functions (no server, no boto3 calls)."""
    clock = FakeClock()
    backend = S3Backend(S3Location("bucket", "cache"), endpoint_url="http://127.0.0.1:9", region="us-east-1",
                        connect_timeout=1, read_timeout=1, max_concurrency=2)
    cache = RemoteCache(backend, workspace_root=tmp_path, write_namespace="trusted", read_namespaces=["trusted"],
                        url="s3://bucket/cache", breaker=OutageBreaker(threshold=3, cooldown=30, clock=clock))
    cache.clock = clock
    yield cache
    cache._io.shutdown()
    cache._uploader.shutdown()


def _raise(exc):
    def operation():
        raise exc
    return operation


def _open_and_cool_down(cache) -> None:
    for _ in range(3):
        with pytest.raises(_Skipped):
            cache._request(_raise(RemoteUnavailable("connection refused")))
    assert not cache.breaker.allow()
    cache.clock.now += 30


def test_sustained_failures_probe_and_recover(remote_cache):
    _open_and_cool_down(remote_cache)
    assert remote_cache._request(lambda: b"the probe's answer") == b"the probe's answer"
    assert remote_cache.breaker.allow() and remote_cache.breaker.allow()


@pytest.mark.parametrize("answer", ["refused", "not found", "too large"])
def test_non_outage_answer_closes_breaker(remote_cache, answer):
    """The server answered the probe, if only to say no: the remote is up, so the breaker closes
    (before, it stayed half-open for the rest of the run)."""
    _open_and_cool_down(remote_cache)
    error = {"refused": RemoteRefused("AccessDenied: a key this job may not read"),
             "not found": FileNotFoundError("cache/trusted/blobs/ab"),
             "too large": ValueError("larger than its entry says")}[answer]
    with pytest.raises((_Skipped, FileNotFoundError, ValueError)):
        remote_cache._request(_raise(error))
    assert remote_cache.breaker.state == "closed"
    assert remote_cache.breaker.allow() and remote_cache.breaker.allow()


def test_a_probe_cut_short_by_a_local_error_lets_the_next_caller_probe(remote_cache):
    import errno

    _open_and_cool_down(remote_cache)
    with pytest.raises(OSError):
        remote_cache._request(_raise(OSError(errno.ENOSPC, "No space left on device")))
    assert remote_cache.breaker.consecutive_failures == 3     # not counted as an outage
    assert remote_cache.breaker.allow()                       # the next caller probes at once


def test_a_local_disk_error_never_counts_as_an_outage(remote_cache):
    import errno

    for _ in range(5):
        with pytest.raises(OSError):
            remote_cache._request(_raise(OSError(errno.ENOSPC, "No space left on device")))
    assert remote_cache.breaker.state == "closed" and remote_cache.counts["errors"] == 0


def test_an_env_key_request_answered_with_a_refusal_closes_the_breaker(remote_cache):
    _open_and_cool_down(remote_cache)
    with pytest.raises(RemoteRefused):
        remote_cache._key_request(_raise(RemoteRefused("AccessDenied: credentials limited to a namespace")))
    assert remote_cache.breaker.state == "closed"
    assert not remote_cache._reads_refused               # the entries stay readable
