"""Turn GEMM results JSON into a markdown table and bar charts (TFLOP/s per kernel and size, cuBLAS lines).

python -m workloads.gemm.report --results results/gemm --out results/gemm-report
writes gemm.md, gemm_fp32.png and gemm_tensor_core.png. Nothing here is typed by hand: every number
comes from the result files, and the device is named from them. Each cell is the kernel's TFLOP/s and
its paired ratio to cuBLAS with the interval, with marks for throttling, clock states that differ
between the two sides, and results restored from the cache (workloads/common/figures.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from workloads.common import figures
from workloads.common.plots import bar_chart, markdown_table
from workloads.common.results import load_results


def _shape_order(shape: str) -> tuple[int, str]:
    return (0, f"{int(shape):08d}") if shape.isdigit() else (1, shape)


def collect(documents: list[dict]) -> tuple[list[str], dict, dict]:
    """shapes, {(kernel, dtype): {shape: timing}}, {dtype: {shape: [cuBLAS TFLOP/s, ...]}}."""
    shapes: set[str] = set()
    by_kernel: dict[tuple[str, str], dict[str, dict]] = {}
    baselines: dict[str, dict[str, list[float]]] = {}
    for document in documents:
        if document.get("workload") != "gemm":
            continue
        for timed in document.get("timings", []):
            shapes.add(timed["shape"])
            by_kernel.setdefault((document["kernel"], timed["dtype"]), {})[timed["shape"]] = timed
            if timed.get("baseline_tflops") is not None:
                baselines.setdefault(timed["dtype"], {}).setdefault(timed["shape"], []).append(
                    timed["baseline_tflops"])
    return sorted(shapes, key=_shape_order), by_kernel, baselines


def _cell(timed: dict | None, restored: bool | None) -> str | None:
    if timed is None:
        return None
    dagger = "†" if restored else ""
    if timed.get("ratio") is None:
        return f"{timed['tflops']:.3g}{dagger}"
    marks = figures.clock_marks(timed.get("clock_states"), timed.get("throttled")) + dagger
    return f"{timed['tflops']:.1f} ({figures.ratio_text(timed['ratio'], timed.get('ratio_ci'))}){marks}"


def _notes(by_kernel: dict) -> list[str]:
    notes = []
    for (kernel, dtype), timings in sorted(by_kernel.items()):
        for shape, timed in sorted(timings.items(), key=lambda item: _shape_order(item[0])):
            pad = timed.get("padding")
            if pad:
                base = timed.get("baseline", "cublas")
                notes.append(
                    f"- {kernel} {dtype} {shape}: the kernel needs 16-byte row pitches, so A and B are copied into "
                    f"padded buffers (pitches {pad['pitches']['a']} and {pad['pitches']['b']}); the ratio above "
                    f"gives {base} those same buffers. The copy takes {pad['copy_time']['median_ms']:.3f} ms "
                    f"(kernel {timed['kernel']['median_ms']:.3f} ms). From the caller's unaligned arrays, "
                    f"{base} on them against kernel + copy: "
                    f"{figures.ratio_text(pad['with_copy_ratio'], pad.get('with_copy_ratio_ci'))}."
                    + (f" {base} on the padded buffers with its output rows aligned too (ldc "
                       f"{pad['pitches'].get('aligned_c')}): "
                       f"{figures.ratio_text(pad['aligned_c_ratio'], pad.get('aligned_c_ratio_ci'))}."
                       if pad.get("aligned_c_ratio") is not None else ""))
            if timed.get("clock_states", {}).get("differ"):
                notes.append(f"- {kernel} {dtype} {shape}: § {timed['clock_states']['why']}.")
    return notes


def _methods(by_kernel: dict, shapes: list[str]) -> str:
    """How the two smallest sizes were timed (graph replay or queued launches, launches per block)."""
    parts = []
    for shape in shapes[:2]:
        cells = [t for v in by_kernel.values() for s, t in v.items() if s == shape and isinstance(t.get("method"), dict)]
        methods = sorted({method for t in cells for method in t["method"].values()} - {"host"})
        launches = sorted({t["launches_per_block"] for t in cells if t.get("launches_per_block")})
        if methods and launches:
            how = {"graph": "CUDA graph replay", "queued": "launches queued behind a gate kernel"}
            parts.append(f"{shape}: {' / '.join(how.get(m, m) for m in methods)}, "
                         f"{launches[0]}–{launches[-1]} launches per timed block")
    return "; ".join(parts)


def render(documents: list[dict]) -> tuple[str, list[str], dict, dict]:
    documents = [d for d in documents if d.get("workload") == "gemm"]
    shapes, by_kernel, baselines = collect(documents)
    devices = sorted({f"{d['device']['name']} ({d['device']['backend']})" for d in documents if "device" in d})
    failed = sorted(d["kernel"] for d in documents if not d.get("verified"))
    provenance_rows, restored = figures.provenance_rows(documents, lambda d: d["kernel"])
    rows = []
    for (kernel, dtype), timings in sorted(by_kernel.items()):
        rows.append({"kernel": kernel, "dtype": dtype,
                     **{shape: _cell(timings.get(shape), restored.get(kernel)) for shape in shapes}})
    for dtype, per_shape in sorted(baselines.items()):
        rows.append({"kernel": "cuBLAS (median over its pairings)", "dtype": dtype,
                     **{shape: f"{statistics.median(values):.1f}" for shape, values in per_shape.items()}})
    spread = []
    for dtype, per_shape in sorted(baselines.items()):
        largest = max((s for s in per_shape if s.isdigit()), key=int, default=None)
        values = per_shape.get(largest, []) if largest else []
        if len(values) > 1:
            spread.append(f"{min(values):.0f}–{max(values):.0f} TFLOP/s ({dtype}, {largest})")
    limits = sorted({str(r["power limit W"]) for r in provenance_rows if r["power limit W"] is not None})
    text = ["# GEMM kernel ladder", "",
            f"Device: {', '.join(devices) or 'none'}" + (f", power limit {', '.join(limits)} W" if limits else "")
            + ". TFLOP/s of the kernel (median per launch) and, in parentheses, its paired ratio to cuBLAS "
            "(cuBLAS time / kernel time per round, same inputs, same clock state). Shapes are M=N=K or MxNxK; "
            "FP16/BF16 operands accumulate in FP32.", ""]
    text.append(markdown_table(rows, ["kernel", "dtype", *shapes]))
    text += [figures.LEGEND, ""]
    if spread:
        text += ["cuBLAS's own rate depends on the kernel it was paired with (a hot partner lowers the shared "
                 f"SM clock under the power cap): {'; '.join(spread)} across the pairings. The paired ratio, "
                 "not the absolute cuBLAS figure, compares like with like.", ""]
    method = _methods(by_kernel, shapes)
    if method:
        text += [f"Small sizes: {method}; kernel and baseline are timed the same way, so the figures measure "
                 "the kernels, not the launch path.", ""]
    notes = _notes(by_kernel)
    if notes:
        text += notes + [""]
    if failed:
        text += [f"Verification FAILED (not timed): {', '.join(failed)}", ""]
    text += ["## Where each result was measured", "",
             markdown_table(provenance_rows, ["result", "measured (UTC)", "GPU", "UUID", "power limit W",
                                              "app clocks MHz", "from cache", "nvml"])]
    return "\n".join(text) + "\n", shapes, by_kernel, baselines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workloads.gemm.report", description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, nargs="+", required=True, help="result files or folders")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    documents = load_results(args.results)
    if not documents:
        print(f"no result files in {', '.join(map(str, args.results))}", file=sys.stderr)
        return 1
    text, shapes, by_kernel, baselines = render(documents)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gemm.md").write_text(text)
    for name, dtypes in (("gemm_fp32.png", {"fp32"}), ("gemm_tensor_core.png", {"fp16", "bf16"})):
        series = {f"{kernel} {dtype}": [by_kernel[(kernel, dtype)].get(s, {}).get("tflops") for s in shapes]
                  for (kernel, dtype) in sorted(by_kernel) if dtype in dtypes}
        if not series:
            continue
        lines = {f"cuBLAS {dtype}": [statistics.median(baselines[dtype][s]) if s in baselines.get(dtype, {})
                                     else None for s in shapes] for dtype in sorted(dtypes) if dtype in baselines}
        bar_chart(args.out / name, shapes, series, lines, ylabel="TFLOP/s", title=f"GEMM {name[5:-4]}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
