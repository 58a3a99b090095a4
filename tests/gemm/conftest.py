"""Shared fixtures for the GEMM tests: every kernel compiled once per session (nvcc needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from workloads.common import build
from workloads.gemm.registry import KERNEL_DIR

KERNEL_STEMS = sorted(path.stem for path in KERNEL_DIR.glob("*.cu"))


@pytest.fixture(scope="session")
def built_kernels(tmp_path_factory) -> dict[str, dict]:
    """{stem: {"dir": Path, "resources": ..., "sass": ...}} for every kernel file, built with nvcc for sm_90a."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not on the PATH: kernel compile tests need the CUDA toolkit")
    root = tmp_path_factory.mktemp("gemm-build")
    built = {}
    for stem in KERNEL_STEMS:
        out_dir: Path = root / stem
        built[stem] = {"dir": out_dir, **build.build(KERNEL_DIR / f"{stem}.cu", out_dir)}
    return built
