"""Shared pytest set-up: the gpu marker skips cleanly where no CUDA device answers."""

import functools

import pytest


@functools.cache
def _cuda_device_present() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no cupy, no driver, or cudaErrorInsufficientDriver: no device
        return False


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (cupy found none); run `pytest -m gpu` on a GPU machine")
    for item in items:
        if "gpu" in item.keywords and not _cuda_device_present():
            item.add_marker(skip_gpu)
