"""Turn paged-attention results JSON into a markdown report and a bandwidth chart (never typed by hand).

CLI: python -m workloads.paged_attention.report results/paged/bench.json [results/paged/verify.json]
     --out results/paged/report

Writes <out>/README.md (device, backend, decode table led by the best kernel against the device read
bandwidth, then against the best contiguous-KV baseline, both as paired ratios with intervals, then the
effective bandwidth of every kernel version and baseline; cache-op table against copy bandwidth; clock
state and provenance; verification summary) and <out>/decode_bandwidth.png (bars per kernel version,
baselines as dashed lines).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workloads.common import figures
from workloads.common.plots import bar_chart, markdown_table
from workloads.common.results import load_results

# Kernel versions drawn as bars (partition-size sweep entries appear in the table only).
LADDER = ("v1_per_head", "v1", "v2_splitk", "v3_pipelined", "v4_mma", "v5_smem", "numpy_splitk")


def _unit(backend: str) -> tuple[str, float]:
    """GPU results in TB/s; the NumPy backend's are thousands of times smaller, so GB/s."""
    return ("TB/s", 1.0) if backend == "cuda" else ("GB/s", 1e3)


def decode_rows(bench: dict) -> tuple[list[dict], list[str], list[dict], list[str]]:
    """(main rows, main columns, sweep rows, sweep columns): the lead figures, the ladder and baselines,
    then partition sweeps."""
    unit, factor = _unit(bench["backend"])

    def value(result):
        return result["tbps"] * factor if result.get("tbps") is not None else None

    kernels = [name for entry in bench["decode"] for name in entry["kernels"]]
    ladder = [name for name in LADDER if name in kernels]
    sweep = sorted({name for name in kernels if name not in LADDER}, key=lambda n: (n.split("_p")[0], len(n), n))
    baselines = list(dict.fromkeys(name for entry in bench["decode"] for name in entry["baselines"]))
    rows, sweep_rows = [], []
    for entry in bench["decode"]:
        paired = entry.get("paired") or {}
        marks = "".join(sorted({figures.clock_marks(f.get("clock_states"), f.get("throttled"))
                                for f in paired.values() if f}))
        row = {"shape": entry["shape"],
               "best vs device read": figures.ratio_text(entry.get("ratio_to_read"), entry.get("ratio_to_read_ci"))
               + marks,
               "best": entry["best_kernel"], f"best {unit}": value({"tbps": entry["best_tbps"]}),
               "vs contiguous baseline": (figures.ratio_text(entry["ratio_to_baseline"],
                                                             entry.get("ratio_to_baseline_ci"))
                                          + f" ({entry['baseline_key']})") if entry.get("baseline_key") else "–"}
        row.update({name: value(entry["kernels"][name]) for name in ladder if name in entry["kernels"]})
        row.update({name: value(entry["baselines"][name]) for name in baselines if name in entry["baselines"]})
        rows.append(row)
        sweep_rows.append({"shape": entry["shape"], "heuristic_P": entry.get("partition_tokens"),
                           **{name: value(entry["kernels"][name]) for name in sweep if name in entry["kernels"]}})
    return (rows, ["shape", "best vs device read", "best", f"best {unit}", "vs contiguous baseline", *ladder,
                   *baselines], sweep_rows, ["shape", "heuristic_P", *sweep])


def _clock_lines(bench: dict) -> list[str]:
    if not (bench.get("gpu") or {}).get("nvml"):
        return []
    lines = []
    for entry in bench["decode"]:
        sides = (entry.get("clock") or {}).get("sides") or {}
        best = entry.get("best_kernel")
        if not best or best not in sides:
            continue
        text = f"- {entry['shape']}: {best}: {figures.side_clock_text(sides.get(best))}"
        base = entry.get("baseline_key")
        if base and base in sides:
            text += f"; {base}: {figures.side_clock_text(sides.get(base))}"
        for figure in (entry.get("paired") or {}).values():
            if figure and (figure.get("clock_states") or {}).get("differ"):
                text += f"; § vs {figure['against']}: {figure['clock_states']['why']}"
        lines.append(text)
    return lines


def render(bench: dict, verify: dict | None, chart_name: str) -> str:
    device = bench["device"]
    unit, factor = _unit(bench["backend"])
    ceilings = bench["ceilings"]
    gpu = bench.get("gpu") or {}
    limit = gpu.get("enforced_power_limit_w") or gpu.get("power_limit_w")
    lines = [f"# Paged-attention decode: {device['name']} (backend: {bench['backend']})", "",
             f"Generated from `{Path(bench['_path']).name}` ({bench['created']}); block size {bench['block_size']}, "
             f"{bench['dtype']}" + (f", power limit {limit:.0f} W" if limit else "") + ". The best kernel against "
             "the device read bandwidth and against the best contiguous-KV baseline are medians of paired "
             "per-round ratios (every kernel, baseline and the read ceiling run interleaved in the same rounds) "
             "with 95% bootstrap intervals. Effective bandwidth = K and V bytes read once / median time. Device "
             f"read bandwidth {ceilings['read']['tbps'] * factor:.3g} {unit}, copy "
             f"{ceilings['copy']['tbps'] * factor:.3g} {unit} (read + write), measured in the same run.", ""]
    if bench["backend"] != "cuda":
        lines += ["No CUDA device: these are the NumPy backend's numbers on small shapes (a pipeline check, "
                  "not a GPU benchmark).", ""]
    rows, columns, sweep_rows, sweep_columns = decode_rows(bench)
    lines += [f"## Decode ({unit})", "", markdown_table(rows, columns), figures.LEGEND, "",
              f"![decode bandwidth]({chart_name})", ""]
    if len(sweep_columns) > 2:
        lines += [f"Split-K partition sweep ({unit}; `_pN` = N tokens per partition, unsuffixed = heuristic_P):",
                  "", markdown_table(sweep_rows, sweep_columns)]
    notes = [f"- {entry['shape']}: {name}: {result['label']}" + (f"; {result['note']}" if result.get("note") else "")
             for entry in bench["decode"] for name, result in entry["baselines"].items() if result.get("label")]
    notes += [f"- {entry['shape']}: {name} unavailable: {why}" for entry in bench["decode"]
              for name, why in (entry.get("unavailable") or {}).items()]
    notes += [f"- {entry['shape']}: torch's own SDPA choice: {entry['sdpa']['default_choice']}"
              for entry in bench["decode"] if (entry.get("sdpa") or {}).get("default_choice")]
    libraries = bench.get("libraries") or {}
    if libraries.get("torch"):
        notes.append(f"- torch {libraries['torch']} (CUDA {libraries.get('cuda')}), cuDNN {libraries.get('cudnn_version')}")
    lines += notes + ([""] if notes else [])
    clock_lines = _clock_lines(bench)
    if clock_lines:
        lines += ["Clock state during the timed blocks (NVML samples):", "", *clock_lines, ""]
    cache_rows = [{"op": row["op"], "kernel": row["kernel"], unit: row["tbps"] * factor,
                   "vs copy": figures.ratio_text(row.get("ratio_to_copy"), row.get("ratio_to_copy_ci"), percent=False)
                   + figures.clock_marks(row.get("clock_states"), row.get("throttled")),
                   "note": row.get("note")} for row in bench["cache_ops"]]
    lines += ["## Cache kernels", "", markdown_table(cache_rows, ["op", "kernel", unit, "vs copy", "note"])]
    bm = bench.get("block_manager")
    if bm:
        lines += [f"Block manager (host): {bm['appends_per_s']:.3g} appends/s, {bm['step_ms']:.3g} ms per decode "
                  f"step of {bm['sequences']} sequences.", ""]
    provenance_rows, _ = figures.provenance_rows([bench], lambda d: d.get("task", "paged:bench"))
    lines += ["## Where this result was measured", "",
              markdown_table(provenance_rows, ["result", "measured (UTC)", "GPU", "UUID", "power limit W",
                                               "app clocks MHz", "from cache", "nvml"])]
    if verify:
        by_kernel: dict[str, list[dict]] = {}
        for check in verify["checks"]:
            by_kernel.setdefault(check["kernel"], []).append(check)
        verify_rows = [{"kernel": name, "checks": len(checks), "failed": sum(not c["passed"] for c in checks),
                        "worst_rel_err": max(c["rel_err"] for c in checks)} for name, checks in by_kernel.items()]
        lines += [f"## Verification (backend: {verify['backend']}, seed {verify['seed']})", "",
                  markdown_table(verify_rows, ["kernel", "checks", "failed", "worst_rel_err"])]
    return "\n".join(lines)


def chart(bench: dict, path: Path) -> None:
    unit, factor = _unit(bench["backend"])
    categories = [entry["shape"] for entry in bench["decode"]]
    series = {}
    for name in LADDER:
        if any(name in entry["kernels"] for entry in bench["decode"]):
            series[name] = [(entry["kernels"].get(name, {}).get("tbps") or 0.0) * factor for entry in bench["decode"]]
    baselines = {"device read": [(entry.get("read") or bench["ceilings"]["read"])["tbps"] * factor
                                 for entry in bench["decode"]]}
    for name in ("sdpa_cudnn", "sdpa_flash", "sdpa_efficient", "flash_varlen", "contiguous_numpy",
                 "gather_then_attend"):
        if any(name in entry["baselines"] for entry in bench["decode"]):
            baselines[name] = [entry["baselines"][name]["tbps"] * factor if name in entry["baselines"] else None
                               for entry in bench["decode"]]
    bar_chart(path, [c.replace("_", "\n", 1) for c in categories], series, baselines, ylabel=f"effective {unit}",
              title=f"Paged decode, {bench['device']['name']} ({bench['backend']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workloads.paged_attention.report", description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="bench.json (and optionally verify.json)")
    parser.add_argument("--out", type=Path, default=Path("results/paged/report"))
    parser.add_argument("--no-plot", action="store_true", help="table only (no matplotlib needed)")
    args = parser.parse_args(argv)
    documents = load_results(args.results)
    bench = next((d for d in documents if d.get("task") == "paged:bench"), None)
    verify = next((d for d in documents if d.get("task") == "paged:verify"), None)
    if bench is None:
        print("report: none of the files is a paged:bench result", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    chart_name = "decode_bandwidth.png"
    plotted = False
    if not args.no_plot:
        try:
            chart(bench, args.out / chart_name)
            plotted = True
        except ImportError:
            print("report: matplotlib not installed; table only (pip install matplotlib)", file=sys.stderr)
    text = render(bench, verify, chart_name if plotted else "")
    if not plotted:
        text = text.replace("![decode bandwidth]()", "(no chart: matplotlib missing)")
    (args.out / "README.md").write_text(text + "\n")
    print(f"paged report [backend: {bench['backend']}] -> {args.out / 'README.md'}"
          + (f", {args.out / chart_name}" if plotted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
