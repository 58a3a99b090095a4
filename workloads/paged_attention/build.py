"""Build the paged-attention kernels: one cubin per kernels/*.cu plus its resource report and SASS mix.

CLI: python -m workloads.paged_attention.build --out build/paged [--arch sm_90a] [-j N]

Writes <out>/<stem>.cubin, <stem>.resources.json, <stem>.sass.json for each source, and <out>/build.json
summarising every kernel (registers, shared memory, spills). Uses nvcc, else NVRTC through CuPy; with
neither, build.json says so and the command still succeeds, because the CPU backend needs no cubins.
Nothing time- or path-dependent is written, so identical sources give identical outputs (early cutoff).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from workloads.common import build as common_build

KERNEL_DIR = Path(__file__).parent / "kernels"


def compiler_available() -> tuple[bool, str]:
    """(usable, why): nvcc on PATH, or CuPy's NVRTC importable."""
    if common_build.compiler_name() == "nvcc":
        return True, "nvcc"
    try:
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
    except Exception as error:  # noqa: BLE001 -- any failure means NVRTC cannot compile here
        return False, f"no nvcc on PATH and NVRTC unusable ({type(error).__name__}: {error})"
    return True, "nvrtc"


def build_all(out_dir: Path, arch: str = "sm_90a", jobs: int = 4, defines: dict | None = None) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = sorted(KERNEL_DIR.glob("*.cu"))
    usable, compiler = compiler_available()
    summary: dict = {"arch": arch, "sources": [src.name for src in sources], "defines": dict(defines or {})}
    if not usable:
        summary.update(status="unavailable", reason=compiler,
                       note="the CPU backend needs no cubins; GPU verify/bench need a compiler")
    else:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            built = list(pool.map(lambda src: common_build.build(src, out_dir, arch=arch, defines=defines),
                                  sources))
        kernels = {}
        for result in built:
            for name, report in result["resources"]["kernels"].items():
                kernels[name] = {field: report[field] for field in
                                 ("registers", "shared_bytes", "stack_bytes", "spill_store_bytes", "spill_load_bytes")}
        spilling = sorted(name for name, report in kernels.items() if report["spill_store_bytes"])
        summary.update(status="built", compiler=compiler, kernels=dict(sorted(kernels.items())), spilling=spilling,
                       warnings=sorted({w for result in built for w in result["resources"]["warnings"]}))
    (out_dir / "build.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workloads.paged_attention.build", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/paged"))
    parser.add_argument("--arch", default="sm_90a")
    parser.add_argument("-j", "--jobs", type=int, default=min(8, os.cpu_count() or 1),
                        help="sources compiled in parallel")
    parser.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME=VAL",
                        help="preprocessor define for every source (e.g. PAGED_V3_UNROLL=4)")
    args = parser.parse_args(argv)
    defines = dict(text.partition("=")[::2] for text in args.defines)
    try:
        summary = build_all(args.out, args.arch, args.jobs, defines)
    except common_build.BuildError as error:
        print(error, file=sys.stderr)
        return 1
    if summary["status"] != "built":
        print(f"paged build: no compiler ({summary['reason']}); wrote {args.out / 'build.json'}")
        return 0
    print(f"paged build: {len(summary['sources'])} sources, {len(summary['kernels'])} kernels "
          f"({summary['compiler']}, {args.arch}) -> {args.out}")
    for name in ("paged_decode_v1_f16_d128_g4", "paged_decode_v2_f16_d128_g4", "paged_decode_v3_f16_d128_g4",
                 "reshape_and_cache_16b"):
        if name in summary["kernels"]:
            report = summary["kernels"][name]
            print(f"  {name}: {report['registers']} regs, {report['shared_bytes']} B smem, "
                  f"spills {report['spill_store_bytes']}/{report['spill_load_bytes']} B")
    if summary["spilling"]:
        print(f"  spilling: {', '.join(summary['spilling'])}")
    for warning in summary["warnings"]:
        print(f"  warning: {warning}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
