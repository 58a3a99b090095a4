"""GPU kernels against the float64 reference (run with `pytest -m gpu` on a CUDA machine)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def kernels_dir(tmp_path_factory):
    from workloads.paged_attention.build import build_all

    out = tmp_path_factory.mktemp("paged_build")
    summary = build_all(out, jobs=8)
    if summary["status"] != "built":
        pytest.skip(f"no CUDA compiler: {summary['reason']}")
    return out


def _failures(checks):
    return [check for check in checks if not check["passed"]]


def test_cache_kernels_match_numpy_bit_for_bit(kernels_dir):
    from workloads.paged_attention import verify
    from workloads.paged_attention.kernels import KernelLibrary

    assert _failures(verify.gpu_cache_checks(KernelLibrary(kernels_dir), seed=11, level="full")) == []


def test_serving_scenario_with_cow_and_prefix_sharing(kernels_dir):
    from workloads.paged_attention import verify
    from workloads.paged_attention.kernels import KernelLibrary

    checks = verify.gpu_scenario_checks(KernelLibrary(kernels_dir), seed=12, level="full")
    assert _failures(checks) == [] and all(check["cache_mismatches"] == 0 for check in checks)


def test_decode_kernels_all_dtypes_head_dims_block_sizes_groups(kernels_dir):
    from workloads.paged_attention import verify
    from workloads.paged_attention.kernels import KernelLibrary

    checks = verify.gpu_decode_checks(KernelLibrary(kernels_dir), seed=13, level="full")
    assert {c["dtype"] for c in checks} == {"fp16", "bf16"} and {c["head_dim"] for c in checks} == {64, 128, 256}
    assert {c["block_size"] for c in checks} == {8, 16, 32}
    assert _failures(checks) == []


def test_memcheck_clean_on_a_small_case(kernels_dir, tmp_path):
    sanitizer = shutil.which("compute-sanitizer")
    if sanitizer is None:
        pytest.skip("compute-sanitizer is not on the PATH")
    completed = subprocess.run(
        [sanitizer, "--tool", "memcheck", "--error-exitcode", "3", sys.executable, "-m",
         "workloads.paged_attention.verify", "--level", "small", "--kernels", str(kernels_dir),
         "--out", str(tmp_path / "verify.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    assert "ERROR SUMMARY: 0 errors" in completed.stdout + completed.stderr


def test_bench_pairs_kernels_with_read_bandwidth_and_every_sdpa_backend(kernels_dir, tmp_path):
    import json

    from workloads.paged_attention import bench

    out = tmp_path / "bench.json"
    assert bench.main(["--kernels", str(kernels_dir), "--out", str(out), "--repeats", "6",
                       "--shapes", "b8_h32_kv8_ctx32768,ragged64_h32_kv8_ctx1-8192"]) == 0
    document = json.loads(out.read_text())
    uniform, ragged = document["decode"]
    assert document["libraries"]["cudnn_version"] and document["gpu"]["nvml"] in (True, False)
    tried = set(uniform["baselines"]) | set(uniform["unavailable"])
    assert {"sdpa_cudnn", "sdpa_flash", "sdpa_efficient"} <= tried and uniform["sdpa"]["default_choice"]
    assert uniform["baseline_key"].startswith("sdpa_")
    assert ragged["baseline_key"] == "flash_varlen" and "sdpa_dense_equivalent" in ragged["baselines"]
    for row in (uniform, ragged):
        low, high = row["ratio_to_read_ci"]
        assert low <= row["ratio_to_read"] <= high and 0.2 < row["ratio_to_read"] < 1.2
        assert all(k["passed"] and k["rel_err_last_timed"] <= k["rel_err"] * 10 + 1e-3 for k in row["kernels"].values())
        assert len(row["order"]) == 6
