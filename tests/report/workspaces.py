"""Workspaces for the page, history and report tests: small CPU-only pipelines whose bench tasks write
result files shaped like the GEMM and paged-attention ones, and a generated one of thousands of tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

BENCH_SCRIPT = '''
"""Fake bench: figures scaled by params.json, results JSON like workloads/common/results.py writes."""
import json, sys, pathlib, datetime
kind, params_path, out = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
params = json.loads(pathlib.Path(params_path).read_text())
scale = params.get("scale", 1.0)
device = {"backend": "cpu", "name": params.get("device", "x86_64")}
created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
if kind == "gemm":
    results = []
    for size in (1024, 4096):
        cublas = 50.0 * size / 4096
        for kernel, share in (("05_2d_register_tiling", 0.6), ("10_autotuned", 0.9)):
            tflops = cublas * share * scale
            results.append({"kernel": kernel, "m": size, "n": size, "k": size, "dtype": "fp32",
                            "tflops": tflops, "cublas_tflops": cublas, "ratio_to_cublas": tflops / cublas})
    payload = {"results": results}
else:
    results = []
    for shape in ("64x32x32x2048x128", "8x32x8x32768x128"):
        results.append({"kernel": "decode_v2", "shape": shape, "tb_per_s": 3.5 * scale,
                        "contiguous_tb_per_s": 4.3, "ratio_to_contiguous": 3.5 * scale / 4.3})
    payload = {"results": results, "read_bandwidth_tb_per_s": 4.3}
out.mkdir(parents=True, exist_ok=True)
doc = {"schema": 1, "created": created, "device": device, **payload}
(out / "results.json").write_text(json.dumps(doc, indent=2))
print(f"{kind}: scale {scale}")
'''

# A step takes a known time on purpose (not a wait): the history counts the time a hit saved.
STEP_SCRIPT = '''
import sys, pathlib, time
out = pathlib.Path(sys.argv[1]); sources = sys.argv[2:]
time.sleep(float(__import__("os").environ.get("STEP_SLEEP", "0.2")))
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text("".join(pathlib.Path(s).read_text() for s in sources if pathlib.Path(s).is_file()) + "step\\n")
'''

PIPELINE_TOML = '''
[workspace]
cache-dir = ".nxrun"
parallel = 4

[projects.data.targets.prepare]
command = "python3 scripts/step.py build/data.txt src/data.txt"
inputs  = ["src/data.txt", "scripts/step.py"]
outputs = ["build/data.txt"]

[projects.gemm.targets.build]
command = "python3 scripts/step.py build/gemm.bin src/gemm.cu"
inputs  = ["src/gemm.cu", "scripts/step.py"]
outputs = ["build/gemm.bin"]

[projects.gemm.targets.bench]
command    = "python3 scripts/bench.py gemm src/params.json results/gemm"
depends-on = ["build", "data:prepare"]
inputs     = ["scripts/bench.py", "src/params.json"]
outputs    = ["results/gemm"]

[projects.paged.targets.bench]
command    = "python3 scripts/bench.py paged src/params.json results/paged"
depends-on = ["data:prepare"]
inputs     = ["scripts/bench.py", "src/params.json"]
outputs    = ["results/paged"]

[projects.report.targets.summary]
command    = "python3 scripts/step.py build/summary.md results/gemm/results.json results/paged/results.json"
depends-on = ["gemm:bench", "paged:bench"]
inputs     = ["scripts/step.py"]
outputs    = ["build/summary.md"]
'''

PIPELINE_TASKS = ["data:prepare", "gemm:build", "gemm:bench", "paged:bench", "report:summary"]


def make_pipeline(root: Path) -> Path:
    """Five tasks over three projects, two of them bench tasks writing results JSON."""
    (root / "scripts").mkdir(parents=True, exist_ok=True)
    (root / "src").mkdir(exist_ok=True)
    (root / "nxrun.toml").write_text(textwrap.dedent(PIPELINE_TOML))
    (root / "scripts" / "bench.py").write_text(BENCH_SCRIPT)
    (root / "scripts" / "step.py").write_text(STEP_SCRIPT)
    (root / "src" / "data.txt").write_text("rows\n")
    (root / "src" / "gemm.cu").write_text("// kernel v1\n")
    set_params(root, 1.0)
    return root


def set_params(root: Path, scale: float, device: str = "x86_64") -> None:
    (root / "src" / "params.json").write_text(json.dumps({"scale": scale, "device": device}))


def make_large(root: Path, projects: int = 40, per_project: int = 50) -> Path:
    """projects x per_project tasks: each project a chain of layers, every task also depending on a
    task of the previous project, so the page has many columns, lanes and cross-project edges."""
    lines = ['[workspace]\ncache-dir = ".nxrun"\n']
    width = 5

    def name(i: int) -> str:
        return "bench" if i == per_project - 1 else f"t{i:03d}"
    for p in range(projects):
        for i in range(per_project):
            layer, slot = divmod(i, width)
            deps = []
            if layer:
                deps.append(name((layer - 1) * width + slot))
                deps.append(name((layer - 1) * width + (slot + 1) % width))
            if p and i % 7 == 0:
                deps.append(f"p{p - 1:02d}:{name(i)}")
            target = name(i)
            lines.append(f"[projects.p{p:02d}.targets.{target}]")
            lines.append(f'command = "echo {p}-{i}"')
            lines.append("inputs = []")
            if deps:
                lines.append("depends-on = [" + ", ".join(json.dumps(d) for d in deps) + "]")
            lines.append("")
    root.mkdir(parents=True, exist_ok=True)
    (root / "nxrun.toml").write_text("\n".join(lines))
    return root


def nxrun(root: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess, in `root`."""
    full_env = dict(os.environ, NO_COLOR="1", **(env or {}))
    full_env.pop("NXRUN_REMOTE", None)
    result = subprocess.run([sys.executable, "-m", "nxrun", "-C", str(root), *args], capture_output=True,
                            text=True, env=full_env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"nxrun {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result
