"""nxrun/run/resources.py: a grant of every named resource or none, release (once) wakes the
scheduler, and a stopped run grants nothing."""

from __future__ import annotations

import threading

from nxrun.run.resources import Resources


class _Task:
    def __init__(self, *resources: str):
        self.resources = list(resources)


def test_a_grant_is_all_or_nothing_and_release_frees_it():
    wakes: list[int] = []
    resources = Resources(on_release=lambda: wakes.append(1))
    first = resources.try_grant(_Task("gpu", "net"))
    assert first is not None and first.names == ["gpu", "net"] and first.gpus == []
    assert resources.try_grant(_Task("net")) is None
    assert resources.try_grant(_Task("disk", "gpu")) is None
    assert resources.held() == {"gpu", "net"}     # the refused ask took nothing, not even "disk"
    assert resources.try_grant(_Task()) is not None   # asking for nothing always succeeds
    resources.release(first)
    resources.release(first)                      # a second release does nothing
    assert wakes == [1] and resources.held() == set()
    assert resources.try_grant(_Task("net")) is not None


def test_interrupt_wakes_the_scheduler_and_grants_nothing_more():
    woken = threading.Event()
    resources = Resources(on_release=woken.set)
    resources.interrupt()
    assert woken.is_set()
    assert resources.try_grant(_Task("gpu")) is None


def test_concurrent_asks_never_grant_one_resource_twice():
    resources = Resources()
    holders: list[int] = []
    overlap: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(500):
            grant = resources.try_grant(_Task("gpu"))
            if grant is None:
                continue
            with lock:
                holders.append(1)
                if len(holders) > 1:
                    overlap.append(len(holders))
            with lock:
                holders.pop()
            resources.release(grant)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlap == [] and resources.held() == set()
