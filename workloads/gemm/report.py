"""Turn GEMM results JSON into a markdown table and bar charts (TFLOP/s per kernel and size, cuBLAS lines).

python -m workloads.gemm.report --results results/gemm --out results/gemm-report
writes gemm.md, gemm_fp32.png and gemm_tensor_core.png. Nothing here is typed by hand: every number
comes from the result files, and the device is named from them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

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


def _cell(timed: dict | None) -> str | None:
    if timed is None:
        return None
    if timed.get("ratio") is None:
        return f"{timed['tflops']:.3g}"
    return f"{timed['tflops']:.1f} ({100 * timed['ratio']:.0f}%)"


def render(documents: list[dict]) -> tuple[str, list[str], dict, dict]:
    shapes, by_kernel, baselines = collect(documents)
    devices = sorted({f"{d['device']['name']} ({d['device']['backend']})" for d in documents if "device" in d})
    failed = sorted(d["kernel"] for d in documents if d.get("workload") == "gemm" and not d.get("verified"))
    rows = []
    for (kernel, dtype), timings in sorted(by_kernel.items()):
        rows.append({"kernel": kernel, "dtype": dtype, **{shape: _cell(timings.get(shape)) for shape in shapes}})
    for dtype, per_shape in sorted(baselines.items()):
        rows.append({"kernel": "cuBLAS (median of runs)", "dtype": dtype,
                     **{shape: f"{statistics.median(values):.1f}" for shape, values in per_shape.items()}})
    text = ["# GEMM kernel ladder", "",
            f"Device: {', '.join(devices) or 'none'}. TFLOP/s (median of CUDA-event timings) and, in "
            "parentheses, the ratio to cuBLAS measured in the same run on the same inputs. Shapes are "
            "M=N=K or MxNxK; FP16/BF16 operands accumulate in FP32.", ""]
    text.append(markdown_table(rows, ["kernel", "dtype", *shapes]))
    if failed:
        text += ["", f"Verification FAILED (not timed): {', '.join(failed)}"]
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
