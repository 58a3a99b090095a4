"""The GEMM pipeline through the real nxrun CLI, without a GPU: what an edit to one kernel re-runs.

Builds compile with nvcc (CI has it); bench tasks fall back to the NumPy backend. The kernel matrix is cut
to two kernels to keep the test short; everything else is the real tasks.toml.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on the PATH: build tasks need it")]

REPO = Path(__file__).parents[2]
KERNELS = ["01_naive", "03_smem_tiling"]


def _workspace(root: Path) -> Path:
    shutil.copytree(REPO / "workloads", root / "workloads", ignore=shutil.ignore_patterns("__pycache__"))
    tasks = root / "workloads" / "gemm" / "tasks.toml"
    subset = "[" + ", ".join(f'"{k}"' for k in KERNELS) + "]"
    text = re.sub(r"kernel = \[[^\]]*\]", f"kernel = {subset}", tasks.read_text())
    # the report names each result file: the subset's and the tuned kernel's
    files = " ".join(f"results/gemm/{k}.json" for k in [*KERNELS, "10_autotuned"])
    tasks.write_text(re.sub(r"--results (results/gemm/\S+ )+", f"--results {files} ", text))
    (root / "nxrun.toml").write_text(
        '[workspace]\ninclude = ["workloads/gemm/tasks.toml"]\n\n[runtime]\n'
        'gpu = "nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || echo none"\n'
        'nvcc = "nvcc --version"\n'
        'gpu-state = "python -m workloads.common.probes gpu-state"\n'
        'gpu-libs = "python -m workloads.common.probes gpu-libs"\n')
    return root


def _run(root: Path) -> dict[str, str]:
    env = dict(os.environ, NO_COLOR="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))
    env.pop("NXRUN_REMOTE", None)
    result = subprocess.run([sys.executable, "-m", "nxrun", "run", "--json", "gemm:report"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return {t["id"]: t["status"] for t in json.loads(result.stdout)["tasks"] if t["status"] != "aggregate"}


def _ran(statuses: dict[str, str]) -> set[str]:
    return {task for task, status in statuses.items() if status == "miss"}


def test_kernel_edits_rerun_only_that_kernel_and_comment_edits_stop_at_the_build(tmp_path):
    root = _workspace(tmp_path / "ws")
    first = _run(root)
    assert _ran(first) == set(first)  # a cold cache runs everything
    assert json.loads((root / "results/gemm/01_naive.json").read_text())["backend"] == "cpu"
    assert _ran(_run(root)) == set()

    kernel = root / "workloads/gemm/kernels/03_smem_tiling.cu"
    kernel.write_text("// a comment-only edit: the cubin stays byte-identical\n" + kernel.read_text())
    assert _ran(_run(root)) == {"gemm:build[kernel=03_smem_tiling]"}  # early cutoff: no bench, no report

    kernel.write_text(kernel.read_text().replace("#define TILE 32", "#define TILE 16"))
    assert _ran(_run(root)) == {"gemm:build[kernel=03_smem_tiling]", "gemm:bench[kernel=03_smem_tiling]",
                                "gemm:report"}
