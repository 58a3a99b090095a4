"""The build module: ptxas report parsing, SASS opcode counting, and (with nvcc) a reproducible compile."""

import json
import shutil
from pathlib import Path

import pytest

from workloads.common import build

DATA = Path(__file__).parent / "data"

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None,
                                reason="nvcc is not on the PATH (install the CUDA toolkit to run compile tests)")


def test_resource_report_parses_nvcc_output_and_skips_device_functions():
    report = build.parse_resource_report((DATA / "ptxas_nvcc13.txt").read_text())
    assert set(report) == {"mul", "add"}
    assert report["mul"]["registers"] == 10
    assert report["mul"]["stack_bytes"] == 0  # the non-inlined helper's 24-byte frame is not mul's
    assert report["add"] == {
        "registers": 255, "barriers": 1, "shared_bytes": 1024, "constant_bytes": 376, "local_bytes": 0,
        "stack_bytes": 16, "spill_store_bytes": 12, "spill_load_bytes": 20,
    }


def test_resource_report_parses_nvrtc_log_with_ptxas_prefix():
    report = build.parse_resource_report((DATA / "ptxas_nvrtc13.txt").read_text())
    assert report["add"]["shared_bytes"] == 1024
    assert report["add"]["barriers"] == 1
    assert report["mul"]["spill_store_bytes"] == 0


def test_sass_parser_counts_base_opcodes_per_function_including_predicated():
    counts = build.parse_sass((DATA / "sass_snippet.txt").read_text())
    assert counts["mul"] == {"EXIT": 1, "FFMA": 1, "ISETP": 1, "LDC": 1, "LDG": 2, "STG": 1}
    assert counts["tc"] == {"HGMMA": 1, "HMMA": 1}


def test_compute_target_rejects_non_sm_arch():
    assert build._compute_target("sm_90a") == "compute_90a"
    with pytest.raises(ValueError, match="sm_90a"):
        build._compute_target("90a")


@needs_nvcc
def test_build_is_byte_reproducible_and_ignores_comments(tmp_path):
    source = "extern \"C\" __global__ void scale(float* x, float a, int n) {\n" \
             "  int i = blockIdx.x * blockDim.x + threadIdx.x;\n  if (i < n) x[i] *= a;\n}\n"
    first = tmp_path / "a" / "scale.cu"
    second = tmp_path / "b" / "scale.cu"
    first.parent.mkdir()
    second.parent.mkdir()
    first.write_text(source)
    second.write_text("// a comment that moves every line down\n\n" + source)
    assert build.main([str(first), "--out", str(tmp_path / "out1")]) == 0
    assert build.main([str(first), "--out", str(tmp_path / "out2")]) == 0
    assert build.main([str(second), "--out", str(tmp_path / "out3")]) == 0
    for name in ("scale.cubin", "scale.resources.json", "scale.sass.json"):
        first_bytes = (tmp_path / "out1" / name).read_bytes()
        assert first_bytes == (tmp_path / "out2" / name).read_bytes(), name
        assert first_bytes == (tmp_path / "out3" / name).read_bytes(), name
    resources = json.loads((tmp_path / "out1" / "scale.resources.json").read_text())
    assert resources["kernels"]["scale"]["registers"] > 0


@needs_nvcc
def test_build_reports_compiler_errors_with_source_name(tmp_path, capsys):
    broken = tmp_path / "broken.cu"
    broken.write_text("extern \"C\" __global__ void k() { undefined_symbol; }\n")
    assert build.main([str(broken), "--out", str(tmp_path / "out")]) == 1
    assert "broken.cu" in capsys.readouterr().err
    assert not (tmp_path / "out" / "broken.cubin").exists()


@needs_nvcc
def test_defines_reach_the_compiler(tmp_path):
    source = tmp_path / "tile.cu"
    source.write_text("extern \"C\" __global__ void k(float* x) { __shared__ float s[TILE]; "
                      "s[threadIdx.x] = 1.f; __syncthreads(); x[threadIdx.x] = s[TILE - 1 - threadIdx.x]; }\n")
    small = build.compile_cubin(source, tmp_path / "small.cubin", defines={"TILE": 64})
    large = build.compile_cubin(source, tmp_path / "large.cubin", defines={"TILE": 256})
    assert small["k"]["shared_bytes"] == 256
    assert large["k"]["shared_bytes"] == 1024
