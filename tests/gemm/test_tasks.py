"""tasks.toml and the registry agree with the kernel files."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests.gemm.conftest import KERNEL_STEMS
from workloads.gemm.registry import KERNELS

TASKS = Path(__file__).parents[2] / "workloads" / "gemm" / "tasks.toml"


def _targets() -> dict:
    return tomllib.loads(TASKS.read_text())["projects"]["gemm"]["targets"]


def test_every_kernel_file_is_built_and_benched_exactly_once():
    targets = _targets()
    matrix = targets["build"]["matrix"]["kernel"]
    assert matrix == targets["bench"]["matrix"]["kernel"]
    assert len(matrix) == len(set(matrix))
    assert "10_autotuned" in targets["build-tuned"]["command"]
    assert sorted([*matrix, "10_autotuned"]) == KERNEL_STEMS


def test_every_kernel_file_has_a_launch_spec():
    assert sorted(KERNELS) == KERNEL_STEMS


def test_gpu_targets_are_serialized_and_hardware_keyed():
    targets = _targets()
    for name in ("bench", "bench-tuned", "autotune"):
        assert targets[name]["resources"] == ["gpu"]
        assert targets[name]["cache"] == "hardware"
    assert targets["report"]["depends-on"] == ["bench", "bench-tuned"]


def test_the_report_names_every_bench_result_and_nothing_else():
    targets = _targets()
    named = {word for word in targets["report"]["command"].split() if word.startswith("results/gemm/")}
    benched = {f"results/gemm/{k}.json" for k in targets["bench"]["matrix"]["kernel"]}
    assert named == benched | {targets["bench-tuned"]["outputs"][0]}
