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
    assert all(record["rel_error"] < record["tolerance"] for record in document["verification"])
    assert {timed["shape"] for timed in document["timings"]} == {"64", "127x129x65", "256x192x320"}


def test_unknown_kernel_fails_with_the_known_names(tmp_path):
    with pytest.raises(KeyError, match="01_naive"):
        bench.main(["--kernel", "nope", "--cubin-dir", str(tmp_path), "--out", str(tmp_path / "x.json")])


def test_report_renders_ratios_and_baselines(tmp_path):
    results = tmp_path / "results"
    for stem in ("05_2d_register_tiling", "t1_wmma"):
        bench.main(["--kernel", stem, "--cubin-dir", str(tmp_path), "--out", str(results / f"{stem}.json"), "--cpu"])
    document = json.loads((results / "t1_wmma.json").read_text())
    document["timings"][0].update(baseline_tflops=2.0, ratio=0.5, ratio_ci=[0.45, 0.55], tflops=1.0)
    (results / "t1_wmma.json").write_text(json.dumps(document))
    out = tmp_path / "report"
    assert report.main(["--results", str(results), "--out", str(out)]) == 0
    text = (out / "gemm.md").read_text()
    assert "| t1_wmma | bf16 |" in text and "1.0 (50% [45–55])" in text
    assert "cuBLAS (median over its pairings)" in text
    assert (out / "gemm_fp32.png").exists() and (out / "gemm_tensor_core.png").exists()


class SkipsRepeatedWork(bench.NumpyRunner):
    """A broken launcher: computes each output buffer once, then returns early (a memoisation bug)."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def launch(self, dtype, prepared, c, m, n, k, alpha, beta) -> None:
        if id(c) in self.seen:
            return
        self.seen.add(id(c))
        super().launch(dtype, prepared, c, m, n, k, alpha, beta)


class PadsLikeTma(bench.NumpyRunner):
    """A CPU stand-in for t4's launcher: copies A and B into buffers with rows padded to 8 elements."""

    def prepare(self, dtype, a, b, m, n, k):
        def pitched(array, rows, cols):
            pitch = -(-cols // 8) * 8
            buffer = np.zeros((rows, pitch), dtype=array.dtype)

            def copy():
                buffer[:, :cols] = array
            copy()
            return buffer, pitch, copy
        a_buf, lda, copy_a = pitched(a, m, k)
        b_buf, ldb, copy_b = pitched(b, k, n)
        return bench.Prepared(a_buf, b_buf, lda, ldb, padded=True, pad=lambda: (copy_a(), copy_b()))

    def launch(self, dtype, prepared, c, m, n, k, alpha, beta) -> None:
        view = bench.Prepared(prepared.a[:, :k], prepared.b[:, :n], k, n)
        super().launch(dtype, view, c, m, n, k, alpha, beta)


def test_a_launcher_that_skips_work_after_its_first_call_fails_the_bench():
    body = bench.run_cpu("t1_wmma", [(64, 48, 40)], ["fp16"], 4, seed=1, runner=SkipsRepeatedWork())
    stages = {(r["stage"], r["passed"]) for r in body["verification"] if r.get("stage")}
    assert ("before timing", True) in stages            # its first call per buffer is right ...
    assert ("last timed launch", False) in stages       # ... the timed calls computed nothing
    assert not body["timings"]
    healthy = bench.run_cpu("t1_wmma", [(64, 48, 40)], ["fp16"], 4, seed=1)
    assert healthy["timings"] and all(r["passed"] for r in healthy["verification"])
    # every input set was checked before and after timing
    sets = {(r["stage"], r["input_set"]) for r in healthy["verification"] if r.get("stage")}
    assert {("before timing", 0), ("before timing", 1), ("last timed launch", 0), ("last timed launch", 1)} <= sets


def test_odd_shape_gives_the_baseline_the_kernels_padded_buffers_and_times_the_copy():
    body = bench.run_cpu("t4_wgmma_tma", [(67, 45, 37)], ["bf16"], 4, seed=2, runner=PadsLikeTma())
    assert all(r["passed"] for r in body["verification"]), body["verification"]
    timed = body["timings"][0]
    assert timed["baseline_inputs"] == "the kernel's padded buffers"
    pad = timed["padding"]
    assert pad["pitches"] == {"a": 40, "b": 48, "aligned_c": 48}
    assert pad["copy_time"]["median_ms"] > 0 and len(pad["copy_time"]["samples"]) == 4
    assert pad["with_copy_ratio"] is not None and pad["aligned_c_ratio"] is not None
    checked = {r.get("checked") for r in body["verification"] if r.get("stage") == "last timed launch"}
    assert checked == {"kernel", "numpy", "numpy_unaligned", "numpy_aligned_c"}
    assert set(timed["order"][0]) == {"kernel", "baseline", "padding", "baseline_unaligned", "baseline_aligned_c"}


def test_results_keep_raw_samples_order_and_interval(tmp_path):
    out = tmp_path / "r.json"
    assert bench.main(["--kernel", "08_warptiling", "--cubin-dir", str(tmp_path), "--out", str(out), "--cpu",
                       "--seed", "3"]) == 0
    timed = json.loads(out.read_text())["timings"][0]
    assert len(timed["kernel"]["samples"]) == len(timed["baseline_time"]["samples"]) == timed["ratio_n"]
    assert len(timed["paired_ratios"]) == timed["ratio_n"] and len(timed["order"]) == timed["ratio_n"]
    low, high = timed["ratio_ci"]
    assert low <= timed["ratio"] <= high
    assert timed["tflops_ci"][0] <= timed["tflops"] <= timed["tflops_ci"][1]
