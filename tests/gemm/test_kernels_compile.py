"""Every kernel compiles for sm_90a without spills, and its SASS uses the intended instruction class."""

from __future__ import annotations

import pytest

from tests.gemm.conftest import KERNEL_STEMS
from workloads.gemm.registry import kernel_spec

pytestmark = pytest.mark.slow

# The instruction that does the arithmetic in each kernel family, and the ones it must not fall back to.
INTENDED = {"t1": "HMMA", "t2": "HMMA", "t3": "HMMA", "t4": "HGMMA"}


def intended_opcode(stem: str) -> str:
    return INTENDED.get(stem[:2], "FFMA")


@pytest.mark.parametrize("stem", KERNEL_STEMS)
def test_kernel_compiles_for_sm90a_with_every_entry_point_and_no_spills(built_kernels, stem):
    report = built_kernels[stem]["resources"]
    assert report["arch"] == "sm_90a"
    spec = kernel_spec(stem)
    assert set(report["kernels"]) == set(spec.entries.values())
    for entry, resources in report["kernels"].items():
        assert resources["spill_store_bytes"] == 0, f"{entry} spills registers"
        assert resources["stack_bytes"] == 0, f"{entry} uses a stack frame (local memory)"
    assert (built_kernels[stem]["dir"] / f"{stem}.cubin").stat().st_size > 0


@pytest.mark.parametrize("stem", KERNEL_STEMS)
def test_sass_has_the_intended_instruction_class(built_kernels, stem):
    sass = built_kernels[stem]["sass"]
    if not sass["available"]:
        pytest.skip(sass["reason"])
    opcode = intended_opcode(stem)
    for entry, counts in sass["kernels"].items():
        assert counts.get(opcode, 0) > 0, f"{entry}: no {opcode} in SASS ({sorted(counts)})"
        if opcode == "FFMA":
            assert not counts.get("HMMA") and not counts.get("HGMMA"), f"{entry}: FP32 kernel uses tensor cores"
        if opcode == "HMMA":
            assert not counts.get("HGMMA")
        assert not counts.get("LDL") and not counts.get("STL"), f"{entry}: local memory traffic"


def test_tensor_core_kernels_use_wide_or_async_loads(built_kernels):
    sass = built_kernels["t4_wgmma_tma"]["sass"]
    if not sass["available"]:
        pytest.skip(sass["reason"])
    for counts in sass["kernels"].values():
        assert counts.get("UTMALDG", 0) > 0, "t4 must load through TMA"
