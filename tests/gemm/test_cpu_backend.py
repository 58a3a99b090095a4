"""The bench's NumPy backend, operand rounding, size parsing and the report, without a GPU."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workloads.gemm import bench, operands, report


def test_bf16_rounding_is_round_to_nearest_even():
    values = np.array([1.0, 1.00390625, 1.01171875, -2.5, 3.0e38], dtype=np.float32)
    bits = operands.float32_to_bf16_bits(values)
    back = operands.bf16_bits_to_float32(bits)
    # 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even mantissa (1.0) wins; 1 + 3*2^-8 rounds up to 1 + 2^-6.
    assert back.tolist()[:4] == [1.0, 1.0, 1.015625, -2.5]
    assert np.isfinite(back[4])


def test_exact_float64_of_fp16_matches_numpy():
    stored = operands.to_storage(np.array([[0.1, -3.3]], dtype=np.float32), "fp16")
    assert operands.exact_float64(stored, "fp16").tolist() == stored.astype(np.float64).tolist()


def test_parse_sizes():
    assert bench.parse_sizes("1024, 4097x3001x2053") == [(1024, 1024, 1024), (4097, 3001, 2053)]
    with pytest.raises(ValueError, match="MxNxK"):
        bench.parse_sizes("12x0")


@pytest.mark.parametrize("stem", ["05_2d_register_tiling", "t3_swizzle_multistage"])
def test_cpu_backend_verifies_against_float64_and_labels_results(tmp_path, stem):
    out = tmp_path / f"{stem}.json"
    assert bench.main(["--kernel", stem, "--cubin-dir", str(tmp_path), "--out", str(out), "--cpu"]) == 0
    document = json.loads(out.read_text())
    assert document["backend"] == "cpu"
    assert document["verified"] is True
    dtypes = {record["dtype"] for record in document["verification"]}
    assert dtypes == ({"fp32"} if stem.startswith("0") else {"fp16", "bf16"})
    assert all(record["rel_error"] < 1e-5 for record in document["verification"])
    assert {timed["shape"] for timed in document["timings"]} == {"64", "127x129x65", "256x192x320"}


def test_unknown_kernel_fails_with_the_known_names(tmp_path):
    with pytest.raises(KeyError, match="01_naive"):
        bench.main(["--kernel", "nope", "--cubin-dir", str(tmp_path), "--out", str(tmp_path / "x.json")])


def test_report_renders_ratios_and_baselines(tmp_path):
    results = tmp_path / "results"
    for stem in ("05_2d_register_tiling", "t1_wmma"):
        bench.main(["--kernel", stem, "--cubin-dir", str(tmp_path), "--out", str(results / f"{stem}.json"), "--cpu"])
    document = json.loads((results / "t1_wmma.json").read_text())
    document["timings"][0].update(baseline_tflops=2.0, ratio=0.5, tflops=1.0)
    (results / "t1_wmma.json").write_text(json.dumps(document))
    out = tmp_path / "report"
    assert report.main(["--results", str(results), "--out", str(out)]) == 0
    text = (out / "gemm.md").read_text()
    assert "| t1_wmma | bf16 |" in text and "1.0 (50%)" in text
    assert "cuBLAS (median of runs)" in text
    assert (out / "gemm_fp32.png").exists() and (out / "gemm_tensor_core.png").exists()
