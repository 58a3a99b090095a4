"""The Ray executor's wait for a task sends the cancel again while the task runs on (Ray's cancel is
best effort: one can be lost), and forces it in the end. Ray itself is replaced by a stand-in whose
cancels are lost on purpose; the real cluster's cancel is tested in tests/remote."""

from __future__ import annotations

import types

import pytest

from nxrun.executors.ray import RayExecutor


class _Cancelled(Exception):
    pass


class _Timeout(Exception):
    pass


class _LossyRay:
    """get() times out until a cancel that is not lost arrives: the first `lose` are lost, and
    with `only_force` every cancel without force is."""

    def __init__(self, lose: int, only_force: bool = False):
        self.lose, self.only_force, self.cancels, self.done = lose, only_force, [], False
        self.exceptions = types.SimpleNamespace(GetTimeoutError=_Timeout)

    def get(self, ref, timeout):
        if self.done:
            raise _Cancelled(ref)
        raise _Timeout

    def cancel(self, ref, force=False):
        self.cancels.append(force)
        if len(self.cancels) > self.lose and (force or not self.only_force):
            self.done = True


def _waiter(cancelled: bool = True, force_after: float = 60.0):
    return types.SimpleNamespace(_cancelled=cancelled, CANCEL_AGAIN_S=0.001, CANCEL_FORCE_AFTER_S=force_after)


def test_a_lost_cancel_is_sent_again():
    ray = _LossyRay(lose=2)             # two cancels in a row are lost
    with pytest.raises(_Cancelled):
        RayExecutor._wait(_waiter(), ray, "ref")
    assert ray.cancels == [False, False, False]


def test_a_task_that_ignores_every_cancel_is_forced():
    ray = _LossyRay(lose=0, only_force=True)
    with pytest.raises(_Cancelled):
        RayExecutor._wait(_waiter(force_after=0.02), ray, "ref")
    assert ray.cancels[-1] is True and not any(ray.cancels[:-1])


def test_nothing_is_cancelled_while_the_run_is_not():
    ray = _LossyRay(lose=0)
    waiter = _waiter(cancelled=False)
    calls = []

    def get(ref, timeout):
        calls.append(timeout)
        if len(calls) == 3:
            return "result"
        raise _Timeout

    ray.get = get
    assert RayExecutor._wait(waiter, ray, "ref") == "result"
    assert ray.cancels == [] and len(calls) == 3
