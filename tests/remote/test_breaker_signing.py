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
