"""Shared pytest set-up: the gpu marker skips cleanly where no CUDA device answers, and under
NXRUN_REQUIRE_NO_SKIPS=1 (CI) any other skip is a failure, so a green run ran what it claims."""

import functools

import pytest
from require import required

NO_SKIPS = "NO_SKIPS"


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


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:   # (file, line, "Skipped: reason")
        return str(longrepr[2])
    return str(longrepr)


def _forbidden_skip(report, gpu_marked: bool) -> str | None:
    """The failure text for a skip that NXRUN_REQUIRE_NO_SKIPS forbids, or None."""
    if not report.skipped or hasattr(report, "wasxfail") or gpu_marked or not required(NO_SKIPS):
        return None
    return (f"NXRUN_REQUIRE_NO_SKIPS=1: only gpu-marked tests may skip here, but this one did: "
            f"{_skip_reason(report)}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    failure = _forbidden_skip(report, "gpu" in item.keywords)
    if failure is not None:
        report.outcome = "failed"
        report.longrepr = failure
    return report


_skipped_modules: list[str] = []


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """A whole module skipped at import (pytest.importorskip, allow_module_level) counts too. It
    stays a skip, so the other modules still run, and the session fails at the end."""
    report = yield
    failure = _forbidden_skip(report, gpu_marked=False)
    if failure is not None:
        _skipped_modules.append(f"{report.nodeid}: {failure}")
    return report


def pytest_sessionfinish(session, exitstatus):
    if _skipped_modules and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    for line in _skipped_modules:
        terminalreporter.write_line(f"FAILED (module skipped) {line}", red=True)
