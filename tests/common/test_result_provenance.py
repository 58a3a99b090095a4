"""Every results JSON names the GPU it was measured on (UUID, model, clocks, power limit) and the GPU
ids nxrun granted the task, whether or not the workload adds its own provenance block."""

from __future__ import annotations

import json

from workloads.common import device, results

FACTS = {"nvml": True, "uuid": "GPU-1234", "name": "NVIDIA H100 80GB HBM3", "power_limit_w": 700.0,
         "enforced_power_limit_w": 690.0, "application_clocks_mhz": {"sm": 1755, "mem": 2619},
         "max_clocks_mhz": {"sm": 1980, "mem": 2619}}


def test_a_result_without_its_own_provenance_gets_the_gpus(tmp_path, monkeypatch):
    monkeypatch.setattr(device, "gpu_identity", lambda: FACTS)
    monkeypatch.setenv("NXRUN_GPU_IDS", "GPU-1234")
    monkeypatch.setenv("NXRUN_TASK", "paged:verify")
    results.write_results(tmp_path / "r.json", {"task": "paged:verify", "passed": True})
    record = json.loads((tmp_path / "r.json").read_text())["provenance"]
    assert record["gpu_uuid"] == "GPU-1234" and record["gpu_name"] == "NVIDIA H100 80GB HBM3"
    assert record["power_limit_w"] == 690.0 and record["application_clocks_mhz"] == {"sm": 1755, "mem": 2619}
    assert record["max_clocks_mhz"] == {"sm": 1980, "mem": 2619}
    assert record["nxrun_gpu_ids"] == ["GPU-1234"] and record["task"] == "paged:verify"


def test_the_payloads_own_gpu_facts_are_used_and_its_provenance_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(device, "gpu_identity", lambda: {"uuid": "GPU-other"})
    written = results.write_results(tmp_path / "a.json", {"gpu": FACTS})
    assert written["provenance"]["gpu_uuid"] == "GPU-1234"
    own = {"invocation": None, "gpu_uuid": "GPU-9"}
    assert results.write_results(tmp_path / "b.json", {"provenance": own})["provenance"] == own


def test_without_a_gpu_the_fields_are_there_and_empty(tmp_path, monkeypatch):
    monkeypatch.delenv("NXRUN_GPU_IDS", raising=False)
    monkeypatch.setattr(device, "cuda_available", lambda: False)
    record = results.write_results(tmp_path / "c.json", {"backend": "cpu"})["provenance"]
    assert record["gpu_uuid"] is None and record["nxrun_gpu_ids"] is None and "power_limit_w" in record
