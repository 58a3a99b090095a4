"""nxrun/store/breaker.py with a fake clock. tests/remote/test_breaker_signing.py pins the
threshold, the recovery and the single probe; these pin what happens around them."""

from __future__ import annotations

import pytest

from nxrun.store.breaker import CLOSED, OPEN, PROBING, OutageBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _opened(threshold: int = 3, cooldown: float = 30) -> tuple[OutageBreaker, FakeClock]:
    clock = FakeClock()
    breaker = OutageBreaker(threshold=threshold, cooldown=cooldown, clock=clock)
    for _ in range(threshold):
        breaker.record_failure()
    assert breaker.state == OPEN
    return breaker, clock


def test_a_new_breaker_is_closed_and_lets_requests_through():
    breaker = OutageBreaker(clock=FakeClock())
    assert breaker.state == CLOSED and not breaker.is_open
    assert all(breaker.allow() for _ in range(10))


@pytest.mark.parametrize("threshold", [1, 2, 5])
def test_the_breaker_opens_on_exactly_the_thresholdth_consecutive_failure(threshold: int):
    breaker = OutageBreaker(threshold=threshold, clock=FakeClock())
    opened = [breaker.record_failure() for _ in range(threshold)]
    assert opened == [False] * (threshold - 1) + [True]
    assert breaker.is_open and not breaker.allow()


def test_late_failures_while_open_do_not_extend_the_cooldown():
    breaker, clock = _opened(cooldown=30)
    clock.now += 20
    assert breaker.record_failure() is False            # a request that was already in flight
    clock.now += 10
    assert breaker.allow()                              # 30 s after opening, not after the late error
    assert breaker.state == PROBING


def test_cooldown_is_measured_from_the_clock_it_was_given():
    breaker, clock = _opened(cooldown=5)
    clock.now += 4.999
    assert not breaker.allow()
    clock.now += 0.001
    assert breaker.allow()


def test_nobody_else_goes_out_while_the_probe_is_pending():
    breaker, clock = _opened()
    clock.now += 30
    assert breaker.allow()                              # the probe
    clock.now += 1000                                   # however long the probe takes
    assert not any(breaker.allow() for _ in range(5))
    assert breaker.is_open


def test_a_successful_probe_closes_the_breaker_and_resets_the_count():
    breaker, clock = _opened(threshold=2)
    clock.now += 30
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == CLOSED and breaker.consecutive_failures == 0
    assert breaker.record_failure() is False            # one failure again is not yet an outage
    assert breaker.allow()


def test_a_failed_probe_reopens_for_a_full_cooldown_and_counts_another_opening():
    breaker, clock = _opened()
    clock.now += 30
    assert breaker.allow()
    assert breaker.record_failure() is True
    assert breaker.times_opened == 2
    clock.now += 29
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_a_probe_cut_short_by_a_local_error_lets_the_next_caller_probe():
    breaker, clock = _opened()
    clock.now += 30
    assert breaker.allow()                              # the probe, which a full local disk cuts short
    breaker.release()
    assert breaker.state == OPEN and breaker.consecutive_failures == 3
    assert breaker.allow()                              # the next caller probes at once


def test_a_release_by_anyone_but_the_prober_changes_nothing():
    import threading

    breaker, clock = _opened()
    clock.now += 30
    assert breaker.allow()
    other = threading.Thread(target=breaker.release)    # a request that started before the outage
    other.start()
    other.join()
    assert breaker.state == PROBING and not breaker.allow()


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


def test_slow_answers_spend_the_budget_though_each_one_closes_the_breaker():
    breaker = OutageBreaker(budget=10, clock=FakeClock())
    for _ in range(5):
        assert breaker.record_success(lost=1.9) is False
        assert breaker.state == CLOSED and breaker.allow()
    assert breaker.record_success(lost=1.9) is True     # 11.4 s in all
    assert breaker.gave_up and not breaker.allow()
    assert breaker.record_success(lost=5) is False and not breaker.allow()   # open for good
    assert breaker.times_opened == 1


def test_answers_that_cost_nothing_never_spend_the_budget():
    breaker = OutageBreaker(budget=1, clock=FakeClock())
    for _ in range(1000):
        assert breaker.record_success() is False
    assert breaker.lost == 0 and breaker.allow()
