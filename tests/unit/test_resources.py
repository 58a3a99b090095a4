"""nxrun/run/resources.py: a grant of every named resource or none, release (once) wakes the
scheduler, and a stopped run grants nothing."""

from __future__ import annotations

import threading

from nxrun.run.gpus import Inventory, build_pool, parse_setting
from nxrun.run.resources import Resources


class _Task:
    def __init__(self, *resources: str, gpus: int = 0):
        self.resources = list(resources)
        self.gpus = gpus


def test_a_grant_is_all_or_nothing_and_release_frees_it():
    wakes: list[int] = []
    resources = Resources(on_release=lambda: wakes.append(1))
    first = resources.try_grant(_Task("licence", "net"))
    assert first is not None and first.names == ["licence", "net"] and first.gpus == []
    assert resources.try_grant(_Task("net")) is None
    assert resources.try_grant(_Task("disk", "licence")) is None
    assert resources.held() == {"licence", "net"}     # the refused ask took nothing, not even "disk"
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
    assert resources.try_grant(_Task("licence")) is None


def test_concurrent_asks_never_grant_one_resource_twice():
    resources = Resources()
    holders: list[int] = []
    overlap: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(500):
            grant = resources.try_grant(_Task("licence"))
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


def test_gpus_come_from_the_pool_and_the_gpu_resource_is_one_of_them():
    pool = build_pool(parse_setting("0,1", "NXRUN_GPUS"), Inventory([]), None)
    resources = Resources(gpu_pool=pool)
    first = resources.try_grant(_Task("gpu"))
    second = resources.try_grant(_Task("gpu", gpus=1))
    assert first.gpus == ["0"] and second.gpus == ["1"] and first.names == [] == second.names
    assert resources.try_grant(_Task(gpus=1)) is None
    assert resources.try_grant(_Task("net")) is not None        # a named resource is apart from GPUs
    resources.release(first)
    both = resources.try_grant(_Task(gpus=2))
    assert both is None                                          # GPU 1 is still held
    resources.release(second)
    both = resources.try_grant(_Task(gpus=2))
    assert both.gpus == ["0", "1"]
    resources.release(both)
    resources.release(both)
    assert pool.free_count() == 2


def test_a_refused_gpu_ask_takes_no_named_resource():
    pool = build_pool(parse_setting("0", "NXRUN_GPUS"), Inventory([]), None)
    resources = Resources(gpu_pool=pool)
    held = resources.try_grant(_Task(gpus=1))
    assert resources.try_grant(_Task("net", gpus=1)) is None
    assert resources.held() == set()
    resources.release(held)
    assert resources.try_grant(_Task("net", gpus=1)).gpus == ["0"]


def test_without_a_pool_gpu_tasks_are_not_held_back_here():
    resources = Resources()          # a remote executor places GPU tasks itself
    assert resources.try_grant(_Task("gpu", gpus=4)).gpus == []
    assert resources.try_grant(_Task("gpu", gpus=4)) is not None
