"""Compile one CUDA C++ file to a cubin and describe it: ptxas resource report and SASS opcode mix.

nvcc is used when it is on the PATH; otherwise NVRTC through CuPy. Outputs are byte-reproducible for
identical source and flags (no timings, paths or dates are written), so a comment-only edit that leaves
the machine code alone gives identical files and lets the runner cut off downstream tasks.

CLI: python -m workloads.common.build SRC.cu --out DIR [--arch sm_90a] [-D NAME=VAL ...] [--defines-json F]
writes DIR/<stem>.cubin, DIR/<stem>.resources.json and DIR/<stem>.sass.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from workloads.common import gpu_lock

RESOURCE_FIELDS = ("registers", "barriers", "shared_bytes", "constant_bytes", "local_bytes",
                   "stack_bytes", "spill_store_bytes", "spill_load_bytes")

# Opcode classes worth a glance in a matrix kernel, printed by the CLI summary.
SUMMARY_OPCODES = ("FFMA", "HMMA", "HGMMA", "LDG", "LDGSTS", "UTMALDG", "LDS", "LDSM", "STS", "STG",
                   "LDL", "STL")


class BuildError(RuntimeError):
    """The compiler rejected the source; the message carries its diagnostics."""


def _compute_target(arch: str) -> str:
    if not arch.startswith("sm_"):
        raise ValueError(f"arch must look like 'sm_90a', got {arch!r}")
    return "compute_" + arch[len("sm_"):]


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for")
_PROPERTIES = re.compile(r"Function properties for (\S+)")
_STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_BARRIERS = re.compile(r"used (\d+) barriers")
_SMEM = re.compile(r"(\d+) bytes smem")
_CMEM = re.compile(r"(\d+) bytes cmem\[\d+\]")
_LMEM = re.compile(r"(\d+) bytes lmem")


def parse_resource_report(ptxas_log: str) -> dict[str, dict[str, int]]:
    """Parse `ptxas -v` output (from nvcc or NVRTC) into {kernel: {registers, shared_bytes, ...}}.

    Only entry functions are reported; properties of non-inlined device functions are skipped.
    Compile times are dropped on purpose: they differ run to run and would break reproducibility.
    """
    kernels: dict[str, dict[str, int]] = {}
    current_entry: str | None = None
    properties_target: str | None = None
    for line in ptxas_log.splitlines():
        if match := _ENTRY.search(line):
            current_entry = match.group(1)
            kernels[current_entry] = {field: 0 for field in RESOURCE_FIELDS}
            properties_target = None
            continue
        if match := _PROPERTIES.search(line):
            properties_target = match.group(1)
            continue
        if current_entry is None:
            continue
        report = kernels[current_entry]
        if (match := _STACK.search(line)) and properties_target == current_entry:
            report["stack_bytes"], report["spill_store_bytes"], report["spill_load_bytes"] = (
                int(group) for group in match.groups())
        if match := _USED.search(line):
            report["registers"] = int(match.group(1))
            if match := _BARRIERS.search(line):
                report["barriers"] = int(match.group(1))
            if match := _SMEM.search(line):
                report["shared_bytes"] = int(match.group(1))
            report["constant_bytes"] = sum(int(found) for found in _CMEM.findall(line))
            if match := _LMEM.search(line):
                report["local_bytes"] = int(match.group(1))
    return kernels


def _warnings(log: str) -> list[str]:
    return [line.strip() for line in log.splitlines() if "warning" in line.lower()]


def _nvcc_compile(src: Path, out_cubin: Path, arch: str, flags: list[str]) -> str:
    command = ["nvcc", "-cubin", f"-gencode=arch={_compute_target(arch)},code={arch}", "-O3",
               "-Xptxas", "-v", "-std=c++17", *flags, "-o", str(out_cubin), str(src)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    log = completed.stdout + completed.stderr
    if completed.returncode != 0:
        raise BuildError(f"nvcc failed for {src} (exit {completed.returncode}):\n{log}")
    return log


def _nvrtc_compile(src: Path, out_cubin: Path, arch: str, flags: list[str]) -> str:
    from cupy.cuda import nvrtc

    program = nvrtc.createProgram(src.read_text(), src.name, [], [])
    try:
        options = [f"--gpu-architecture={arch}", "--ptxas-options=-v", "-std=c++17", *flags]
        try:
            nvrtc.compileProgram(program, options)
        except nvrtc.NVRTCError as error:
            raise BuildError(f"NVRTC failed for {src}: {error}\n{nvrtc.getProgramLog(program)}") from error
        log = nvrtc.getProgramLog(program)
        out_cubin.write_bytes(nvrtc.getCUBIN(program))
    finally:
        nvrtc.destroyProgram(program)
    return log


def compiler_name() -> str:
    """Which compiler compile_cubin will use here: "nvcc" or "nvrtc"."""
    return "nvcc" if shutil.which("nvcc") else "nvrtc"


def compile_cubin_with_log(src: Path, out_cubin: Path, arch: str = "sm_90a", defines: dict | None = None,
                           include_dirs=()) -> tuple[dict[str, dict[str, int]], str]:
    """compile_cubin, also returning the compiler's log (for its warnings)."""
    src, out_cubin = Path(src), Path(out_cubin)
    flags = [f"-D{name}={value}" for name, value in sorted((defines or {}).items())]
    flags += [f"-I{directory}" for directory in (src.parent, *include_dirs)]
    out_cubin.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(suffix=".cubin", dir=out_cubin.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        with gpu_lock.shared(f"compile {src.name}"):  # never beside a timed task (see gpu_lock)
            if compiler_name() == "nvcc":
                log = _nvcc_compile(src, tmp_path, arch, flags)
            else:
                log = _nvrtc_compile(src, tmp_path, arch, flags)
        os.replace(tmp_path, out_cubin)
    finally:
        tmp_path.unlink(missing_ok=True)
    return parse_resource_report(log), log


def compile_cubin(src: Path, out_cubin: Path, arch: str = "sm_90a", defines: dict | None = None,
                  include_dirs=()) -> dict[str, dict[str, int]]:
    """Compile `src` to `out_cubin` for `arch`; return the resource report per kernel.

    The source's own folder is always on the include path (for shared .cuh headers). The cubin is
    written to a temporary file and renamed, so a failed build never leaves a half-written cubin.
    """
    return compile_cubin_with_log(src, out_cubin, arch, defines, include_dirs)[0]


def _nvidia_wheel_bin_dirs() -> list[Path]:
    """bin folders of the PyPI CUDA tool wheels (nvidia-cuda-cuobjdump, nvidia-cuda-nvdisasm)."""
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    if spec is None or spec.submodule_search_locations is None:
        return []
    return [candidate for root in spec.submodule_search_locations
            for candidate in sorted(Path(root).glob("cu*/bin"))]


def find_cuda_tool(name: str) -> Path | None:
    """A CUDA binary tool (cuobjdump, nvdisasm) from PATH, the CUDA install, or the PyPI wheels."""
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    candidates = [Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin", *_nvidia_wheel_bin_dirs()]
    for directory in candidates:
        if (directory / name).is_file() and os.access(directory / name, os.X_OK):
            return directory / name
    return None


_SASS_FUNCTION = re.compile(r"^\s*Function\s*:\s*(\S+)")
_SASS_INSTRUCTION = re.compile(r"^\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P(?:T|\d+)\s+)?([A-Z][A-Z0-9_]*)")


def parse_sass(sass_text: str) -> dict[str, dict[str, int]]:
    """Count opcodes (the part before the first '.', e.g. LDG for LDG.E.128) per function."""
    per_function: dict[str, collections.Counter] = {}
    current = None
    for line in sass_text.splitlines():
        if match := _SASS_FUNCTION.match(line):
            current = per_function.setdefault(match.group(1), collections.Counter())
            continue
        if current is not None and (match := _SASS_INSTRUCTION.match(line)):
            current[match.group(1)] += 1
    return {name: dict(sorted(counts.items())) for name, counts in sorted(per_function.items())}


def sass_by_kernel(cubin: Path) -> dict[str, dict[str, int]] | None:
    """Opcode counts per kernel via `cuobjdump -sass`, or None when cuobjdump or nvdisasm is missing."""
    cuobjdump = find_cuda_tool("cuobjdump")
    nvdisasm = find_cuda_tool("nvdisasm")
    if cuobjdump is None or nvdisasm is None:
        return None
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(nvdisasm.parent), str(cuobjdump.parent), env.get("PATH", "")])
    completed = subprocess.run([str(cuobjdump), "-sass", str(cubin)], capture_output=True, text=True,
                               env=env, check=False)
    if completed.returncode != 0:
        raise BuildError(f"cuobjdump -sass failed on {cubin}:\n{completed.stderr}")
    return parse_sass(completed.stdout)


def sass_mix(cubin: Path) -> dict[str, int] | None:
    """Opcode counts summed over every kernel in the cubin (FFMA, HMMA, HGMMA, LDG, LDS, ...)."""
    per_kernel = sass_by_kernel(cubin)
    if per_kernel is None:
        return None
    total: collections.Counter = collections.Counter()
    for counts in per_kernel.values():
        total.update(counts)
    return dict(sorted(total.items()))


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _parse_define(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    return name, (value if sep else "1")


def build(src: Path, out_dir: Path, arch: str = "sm_90a", defines: dict | None = None) -> dict:
    """Compile and describe `src` into `out_dir`; return what was written to <stem>.resources.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cubin = out_dir / f"{src.stem}.cubin"
    resources, log = compile_cubin_with_log(src, cubin, arch=arch, defines=defines)
    resources_doc = {"source": src.name, "arch": arch, "compiler": compiler_name(),
                     "defines": {name: str(value) for name, value in sorted((defines or {}).items())},
                     "kernels": resources, "warnings": _warnings(log)}
    _write_json(out_dir / f"{src.stem}.resources.json", resources_doc)
    per_kernel = sass_by_kernel(cubin)
    if per_kernel is None:
        sass_doc = {"available": False, "reason": "cuobjdump/nvdisasm not found "
                    "(pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)"}
    else:
        total: collections.Counter = collections.Counter()
        for counts in per_kernel.values():
            total.update(counts)
        sass_doc = {"available": True, "total": dict(sorted(total.items())), "kernels": per_kernel}
    _write_json(out_dir / f"{src.stem}.sass.json", sass_doc)
    return {"resources": resources_doc, "sass": sass_doc}


def summary_lines(built: dict) -> list[str]:
    lines = []
    sass = built["sass"]
    for kernel, report in built["resources"]["kernels"].items():
        text = (f"{kernel}: {report['registers']} regs, {report['shared_bytes']} B smem, "
                f"{report['stack_bytes']} B stack, spills {report['spill_store_bytes']}/"
                f"{report['spill_load_bytes']} B")
        if sass.get("available"):
            counts = sass["kernels"].get(kernel, {})
            mix = ", ".join(f"{op} {counts[op]}" for op in SUMMARY_OPCODES if counts.get(op))
            text += f" | {mix}"
        lines.append(text)
    lines.extend(f"warning: {text}" for text in built["resources"]["warnings"])
    if not sass.get("available"):
        lines.append(f"SASS: {sass['reason']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workloads.common.build", description=__doc__.split("\n")[0])
    parser.add_argument("src", type=Path, help="CUDA C++ source file")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--arch", default="sm_90a")
    parser.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME=VAL")
    parser.add_argument("--defines-json", type=Path,
                        help='JSON file with {"defines": {NAME: VALUE}} (e.g. an autotuning result)')
    args = parser.parse_args(argv)
    defines: dict[str, str] = {}
    if args.defines_json:
        defines.update({k: str(v) for k, v in json.loads(args.defines_json.read_text())["defines"].items()})
    defines.update(dict(_parse_define(text) for text in args.defines))
    try:
        built = build(args.src, args.out, arch=args.arch, defines=defines)
    except BuildError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"{args.src} -> {args.out / (args.src.stem + '.cubin')} ({built['resources']['compiler']}, {args.arch})")
    for line in summary_lines(built):
        print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
