"""The outage breaker (with a fake clock) and entry signatures, without a server."""

from __future__ import annotations

import threading

import pytest

from nxrun.store.breaker import OutageBreaker
from nxrun.store.signing import BadSignature, sign_manifest, verify_manifest


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_three_consecutive_failures_open_the_breaker_once():
    breaker = OutageBreaker(threshold=3, cooldown=30, clock=FakeClock())
    assert [breaker.record_failure() for _ in range(2)] == [False, False]
    assert breaker.allow()
    assert breaker.record_failure() is True
    assert not breaker.allow()
    assert breaker.record_failure() is False          # late errors of requests already in flight
    assert breaker.times_opened == 1


def test_a_success_resets_the_count():
    breaker = OutageBreaker(threshold=3, clock=FakeClock())
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.allow()


def test_sustained_failures_probe_after_cooldown_and_recover():
    clock = FakeClock()
    breaker = OutageBreaker(threshold=3, cooldown=30, clock=clock)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 29.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.allow()                            # the probe
    assert breaker.record_failure() is True           # it failed: another 30 s
    assert not breaker.allow()
    clock.now += 30
    assert breaker.allow()
    breaker.record_success()
    assert breaker.allow() and breaker.allow()
    assert breaker.times_opened == 2


def test_only_one_caller_probes_after_cooldown():
    clock = FakeClock()
    breaker = OutageBreaker(threshold=1, cooldown=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    granted = []
    barrier = threading.Barrier(16)

    def ask():
        barrier.wait()
        granted.append(breaker.allow())

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert granted.count(True) == 1


def test_a_probe_that_never_reports_back_is_replaced_after_a_cooldown():
    clock = FakeClock()
    breaker = OutageBreaker(threshold=1, cooldown=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()                            # the probe, which then never reports back
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.allow()                            # a new probe


def test_the_outage_budget_drops_the_remote_for_the_rest_of_the_run():
    clock = FakeClock()
    breaker = OutageBreaker(threshold=3, cooldown=30, budget=10, clock=clock)
    assert breaker.record_failure(6.0) is False
    breaker.record_success()                          # a success between outages does not refill it
    assert breaker.record_failure(4.5) is True        # 10.5 s lost: the budget is spent
    assert breaker.gave_up and not breaker.allow()
    clock.now += 3600
    breaker.record_success()                          # a late answer of a request already in flight
    assert not breaker.allow()
    assert breaker.times_opened == 1


# ---------------------------------------------------------------- the breaker inside RemoteCache
@pytest.fixture
def remote_cache(tmp_path):
    """A RemoteCache whose requests are the test's own functions (no server, no boto3 calls)."""
    from nxrun.store.s3 import S3Backend, S3Location
    from nxrun.store.tiered import RemoteCache

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
    from nxrun.store.s3 import RemoteUnavailable
    from nxrun.store.tiered import _Skipped

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
    from nxrun.store.s3 import RemoteRefused
    from nxrun.store.tiered import _Skipped

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


MANIFEST = {"etag": "ab" * 16, "task_id": "p:t", "outputs": [{"path": "out/x", "digest": "cd" * 16}],
            "signature": None}


def test_signature_round_trip_and_key_order_does_not_matter():
    signature = sign_manifest("ab" * 16, MANIFEST, b"k")
    signed = dict(reversed(list({**MANIFEST, "signature": signature}.items())))
    verify_manifest("ab" * 16, signed, b"k")


@pytest.mark.parametrize("change", ["etag", "key", "field", "unsigned"])
def test_signature_rejects_any_change(change):
    signed = {**MANIFEST, "signature": sign_manifest("ab" * 16, MANIFEST, b"k")}
    etag, key = "ab" * 16, b"k"
    if change == "etag":
        etag = "ef" * 16
    elif change == "key":
        key = b"other"
    elif change == "field":
        signed["outputs"] = [{"path": "out/x", "digest": "00" * 16}]
    else:
        signed["signature"] = None
    with pytest.raises(BadSignature):
        verify_manifest(etag, signed, key)
