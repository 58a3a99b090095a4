"""A stand-in `nvidia-smi` for tests: a script put first on PATH that answers `--query-gpu=FIELDS
--format=csv,noheader` and the plain call (whose header names the CUDA version) for GPUs the test
describes, so GPU pools and hardware fingerprints are tested on machines without a GPU."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

H100 = {"name": "NVIDIA H100 80GB HBM3", "compute_cap": "9.0", "driver_version": "580.95.05",
        "mig.mode.current": "Disabled", "memory.total": "81559 MiB"}
A100 = {"name": "NVIDIA A100-SXM4-40GB", "compute_cap": "8.0", "driver_version": "580.95.05",
        "mig.mode.current": "Disabled", "memory.total": "40960 MiB"}

_SCRIPT = """#!{python}
import json, sys
gpus = json.loads({table!r})
args = sys.argv[1:]
query = [a.split("=", 1)[1] for a in args if a.startswith("--query-gpu=")]
if query:
    for gpu in gpus:
        print(", ".join(gpu.get(field, "[N/A]") for field in query[0].split(",")))
else:
    print("| NVIDIA-SMI 580.95.05   Driver Version: 580.95.05   CUDA Version: {cuda}   |")
"""


def install(folder: Path, models: list[dict], cuda: str = "13.0") -> dict[str, str]:
    """Write the fake nvidia-smi for GPUs of these `models` (index and UUID added) into `folder`;
    the environment (PATH) that puts it first."""
    folder.mkdir(parents=True, exist_ok=True)
    gpus = [{**model, "index": str(n), "uuid": f"GPU-{n:08x}-0000-4000-8000-{n:012x}"}
            for n, model in enumerate(models)]
    script = folder / "nvidia-smi"
    script.write_text(_SCRIPT.format(python=sys.executable, table=json.dumps(gpus), cuda=cuda))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return {"PATH": f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"}


def uuid_of(index: int) -> str:
    return f"GPU-{index:08x}-0000-4000-8000-{index:012x}"
