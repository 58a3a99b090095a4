"""Turn allocator-replay results into a markdown report and Figure-2-shaped charts (never typed by hand).

CLI: python -m workloads.serving.report results/serving/replay --out results/serving/report [--no-plot]

Writes <out>/README.md (per dataset: where the KV memory goes under each policy, averaged over loaded
iterations, next to the paper's token-state shares; the batch each policy runs) and, unless --no-plot,
<out>/memory_<dataset>.png (stacked bars: the paper's Figure 2 shape) and <out>/token_states_<dataset>.png
(token-state share over time, per policy).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workloads.common.plots import line_chart, markdown_table, stacked_bar_chart
from workloads.common.results import load_results

CATEGORY_LABELS = {"token_states": "token states", "reservation": "reservation", "internal_frag": "internal frag.",
                   "external_frag": "external frag.", "free": "free"}


def _percent(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def _with_paper(document: dict) -> bool:
    """The paper's Figure 2 is set beside the ShareGPT replay only (see NOTES.md)."""
    return document["trace"]["dataset"] == "sharegpt"


def policy_rows(document: dict) -> list[dict]:
    rows = []
    for result in document["policies"]:
        loaded = result["loaded"]
        row = {"policy": result["label"], **{name: _percent(loaded[name]) for name in CATEGORY_LABELS}}
        if loaded["external_frag"] is not None:
            row["ext_and_free"] = _percent(loaded["external_frag"] + loaded["free"])
        row["of_allocated"] = _percent(loaded["token_states_of_allocated"])
        row["paper"] = _percent(result["paper_token_states"]) if _with_paper(document) else None
        row["mean_batch"] = loaded["mean_batch"]
        row["max_batch"] = loaded["max_batch"]
        row["loaded_share"] = _percent(result["loaded_iterations"] / result["iterations"])
        row["preemptions"] = result["preemptions"]
        row["makespan_s"] = result["makespan_s"]
        rows.append(row)
    return rows


COLUMNS = [("policy", "policy"), ("token_states", "token states %"), ("reservation", "reservation %"),
           ("internal_frag", "internal frag. %"), ("external_frag", "external frag. %"), ("free", "free %"),
           ("ext_and_free", "ext. frag. + free %"), ("of_allocated", "token states % of allocated"),
           ("paper", "paper: token states %"), ("mean_batch", "mean batch"), ("max_batch", "max batch"),
           ("preemptions", "preemptions"), ("makespan_s", "trace served in (s)"),
           ("loaded_share", "loaded iterations %")]


def _trace_line(trace: dict) -> str:
    lengths = trace["lengths"]
    parts = [f"{trace['requests']} requests, Poisson arrivals at {trace['rate']} req/s, seed {trace['seed']}"]
    for side in ("input", "output"):
        dist = lengths[side]
        parts.append(f"{side} lengths lognormal on [1, {dist['max']}] (sigma {dist['sigma']:g}, mu {dist['mu']:.3f}): "
                     f"mean {dist['target_mean']:g} fitted, {dist['sample_mean']:.1f} sampled, "
                     f"median {dist['sample_p50']:g}")
    return "; ".join(parts)


def render(documents: list[dict], chart_names: dict[str, tuple[str, str]] | None) -> str:
    config = documents[0]["config"]
    lines = ["# Serving: where the KV cache goes (allocator replay, backend: cpu)", "",
             "Generated from " + ", ".join(f"`{Path(d['_path']).name}`" for d in documents)
             + f" ({documents[0]['created']}). A trace replayed at iteration level (continuous batching, "
             f"FCFS, one token per running request per iteration) through each KV-memory policy: a pool of "
             f"{config['capacity_tokens']} token slots, model maximum length {config['max_len']}, block size "
             f"{config['block_size']}, at most {config['max_batch']} running requests, {config['step_s']} s of "
             f"trace time per iteration, paging's admission watermark {config['watermark']:g} of the blocks, "
             f"preemption by {config['preemption']}.", "",
             "Shares are of the whole KV pool, averaged over *loaded* iterations (a request waits for memory or a "
             "batch slot), the regime of the paper's Figure 2. Token states: KV of computed tokens. Reservation: "
             "allocated, filled later by the same request. Internal frag.: allocated beyond the request's final "
             "length (never filled). External frag.: free, while the head of the queue waits although the free "
             "slots add up to its need. Free: the rest. The paper's Figure 2 shows token states at 20.4 / 26.8 / "
             "38.2 / 96.3 % (Orca Max / Pow2 / Oracle / vLLM) and lumps the last two as \"external frag. & "
             "others\"; it is set beside the ShareGPT replay only. `workloads/serving/NOTES.md` says where and why "
             "these numbers differ. With a constant iteration time, the time a policy takes to serve the whole "
             "trace is inversely proportional to its throughput.", "",
             "The GPU serving engine (paged and reservation engines, latency sweep) is not part of this report yet.",
             ""]
    for document in documents:
        dataset = document["trace"]["dataset"]
        lines += [f"## {dataset}", "", _trace_line(document["trace"]) + ".", "",
                  markdown_table(policy_rows(document), COLUMNS)]
        if chart_names and dataset in chart_names:
            memory, over_time = chart_names[dataset]
            lines += [f"![KV memory by policy, {dataset}]({memory})", "",
                      f"![token-state share over time, {dataset}]({over_time})", ""]
    return "\n".join(lines)


def charts(document: dict, out: Path) -> tuple[str, str]:
    dataset = document["trace"]["dataset"]
    results = document["policies"]
    categories = [result["label"].replace(", ", ",\n") for result in results]
    stacks = {label: [_percent(result["loaded"][name]) for result in results] for name, label in CATEGORY_LABELS.items()}
    markers = ({"paper (Fig. 2): token states": [_percent(result["paper_token_states"]) for result in results]}
               if _with_paper(document) else None)
    memory = f"memory_{dataset}.png"
    stacked_bar_chart(out / memory, categories, stacks, markers, ylabel="% of KV cache (loaded iterations)",
                      title=f"KV cache by policy, {dataset} trace ({document['trace']['requests']} requests)")
    over_time = f"token_states_{dataset}.png"
    series = {result["label"]: (result["series"]["t_s"], [100 * v for v in result["series"]["token_states"]])
              for result in results}
    dashed = {result["label"]: "--" for result in results if result["policy"].endswith("-buddy")}
    line_chart(out / over_time, series, xlabel="trace time (s)", ylabel="token states, % of KV cache",
               title=f"Token-state share over time, {dataset} trace", ylim=(0, 100), linestyles=dashed)
    return memory, over_time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workloads.serving.report", description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="replay result files or folders of them")
    parser.add_argument("--out", type=Path, default=Path("results/serving/report"))
    parser.add_argument("--no-plot", action="store_true", help="table only (no matplotlib needed)")
    args = parser.parse_args(argv)
    try:
        documents = [d for d in load_results(args.results) if d.get("task") == "serving:replay"]
    except (OSError, ValueError) as error:
        print(f"report: {error}", file=sys.stderr)
        return 2
    if not documents:
        print(f"report: no serving:replay result among {', '.join(map(str, args.results))}; run "
              "nxrun run serving:replay first", file=sys.stderr)
        return 2
    documents.sort(key=lambda d: d["trace"]["dataset"] != "sharegpt")  # ShareGPT (the paper's Figure 2) first
    args.out.mkdir(parents=True, exist_ok=True)
    chart_names = None if args.no_plot else {d["trace"]["dataset"]: charts(d, args.out) for d in documents}
    (args.out / "README.md").write_text(render(documents, chart_names))
    print(f"serving report -> {args.out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
