"""Extraction of benchmark figures from result documents of different shapes."""

from __future__ import annotations

import math

from nxrun.run.bench_results import created_of, device_of, extract_figures, headline


def _by_key(document):
    return {(f.series, f.case, f.metric): (f.value, f.baseline) for f in extract_figures(document)}


def test_gemm_list_of_records_with_cublas_suffix_baseline():
    document = {"schema": 1, "device": {"name": "NVIDIA H200", "backend": "cuda", "sm_count": 132},
                "results": [{"kernel": "10_autotuned", "m": 4096, "n": 4096, "k": 4096, "dtype": "fp32",
                             "tflops": 48.0, "cublas_tflops": 50.9, "ratio_to_cublas": 0.943}]}
    figures = _by_key(document)
    assert figures[("10_autotuned", "4096x4096x4096 fp32", "tflops")] == (48.0, False)
    assert figures[("cublas", "4096x4096x4096 fp32", "tflops")] == (50.9, True)
    assert figures[("10_autotuned", "4096x4096x4096 fp32", "ratio_to_cublas")] == (0.943, False)
    assert not any(key[0] == "" for key in figures), "the device block is not a figure"


def test_dict_keyed_by_kernel_and_shape_lists():
    document = {"kernels": {"decode_v1": {"shape": [64, 32, 32, 2048, 128], "tb_per_s": 3.1},
                            "contiguous_sdpa": {"shape": [64, 32, 32, 2048, 128], "tb_per_s": 4.3}}}
    figures = _by_key(document)
    assert figures[("decode_v1", "64x32x32x2048x128", "tb_per_s")] == (3.1, False)
    assert figures[("contiguous_sdpa", "64x32x32x2048x128", "tb_per_s")] == (4.3, True)


def test_tolerates_missing_keys_nan_and_non_dicts():
    assert extract_figures([1, 2, "x"]) == []
    assert extract_figures({"results": [{"kernel": "a"}, {"tflops": "fast"}, {"tflops": math.nan}]}) == []
    assert extract_figures("text") == []
    figures = _by_key({"tflops": 3, "nested": {"deeper": [{"name": "k", "gb_per_s": 900}]}})
    assert figures[("result", "", "tflops")] == (3.0, False)
    assert figures[("k", "", "gb_per_s")] == (900.0, False)


def test_headline_picks_main_metric_and_largest_common_case():
    rows = [{"series": s, "case": c, "metric": "tflops", "value": v, "baseline": s == "cublas"}
            for s, c, v in (("k1", "1024", 1.0), ("k1", "4096", 4.0), ("cublas", "1024", 2.0), ("cublas", "4096", 5.0))]
    rows.append({"series": "k1", "case": "4096", "metric": "ratio_to_cublas", "value": 0.8, "baseline": False})
    result = headline(rows)
    assert (result["metric"], result["case"]) == ("tflops", "4096")
    assert result["values"] == {"k1": 4.0, "cublas": 5.0}
    assert result["baselines"] == ["cublas"] and result["best"] == 4.0


def test_device_and_created():
    assert device_of({"device": {"name": "NVIDIA H200", "backend": "cuda"}}) == ("NVIDIA H200", "cuda")
    assert device_of({"device": {"name": "x86_64", "backend": "cpu"}}) == ("cpu (x86_64)", "cpu")
    assert device_of({}) == ("unknown", "")
    assert created_of({"created": "2026-11-21T06:00:00+00:00"}, 0.0) == 1795240800.0
    assert created_of({"created": "garbage"}, 7.0) == 7.0
