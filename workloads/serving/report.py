"""Turn serving results into a markdown report and charts (never typed by hand).

CLI: python -m workloads.serving.report RESULTS... --out results/serving/report [--latency-bound 0.025] [--no-plot]

RESULTS are files or folders of serving:replay, serving:engine and serving:peer results.

Writes <out>/README.md (per dataset: where the KV memory goes under each policy, averaged over loaded
iterations, next to the paper's token-state shares; the batch each policy runs) and, unless --no-plot,
<out>/memory_<dataset>.png (stacked bars: the paper's Figure 2 shape) and <out>/token_states_<dataset>.png
(token-state share over time, per policy); with engine results, <out>/latency_vs_rate.png (normalized
latency against request rate per engine: the paper's Figure 12 shape), the sweep table and the headline
(the highest rate each engine sustains under the normalized-latency bound, linearly interpolated between
measured rates, and their ratio); with a peer result, the offline comparison with transformers.
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
    lines = ["# Serving: where the KV cache goes (allocator replay, backend: cpu); engine sweep and peer below", "",
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


def sustained_rate(points: list[tuple[float, float]], bound: float) -> float | None:
    """The highest rate whose normalized latency is within `bound`, interpolated linearly to where the
    curve crosses it (None when even the lowest rate is over; the highest rate when none is over)."""
    points = sorted(points)
    if not points or points[0][1] > bound:
        return None
    for (r0, l0), (r1, l1) in zip(points, points[1:]):
        if l1 > bound:
            return r0 + (bound - l0) / (l1 - l0) * (r1 - r0)
    return points[-1][0]


SLO_MISS = 0.1  # the SLO criterion: at most this share of requests miss TTFT or TPOT


def offered_rate(run: dict) -> float:
    """Requests that arrived per second of the point's arrival window: the rate the engine was offered,
    which for one Poisson draw differs from the nominal rate (results without a window: the nominal)."""
    trace = run["trace"]
    if not trace.get("duration_s"):
        return float(run["rate"])
    return trace["requests"] / max(trace["duration_s"], trace.get("arrival_span_s") or 0.0)


def measured_bracket(paged: list, reserved: list, value, limit: float) -> str | None:
    """The ratio's range from measured points alone: [paged's highest passing / reservation's lowest failing,
    paged's lowest failing / reservation's highest passing] (each list: sorted (offered rate, run))."""
    def split(points):
        passing = [rate for rate, d in points if value(d) <= limit]
        failing = [rate for rate, d in points if value(d) > limit]
        return (max(passing) if passing else None), (min(failing) if failing else None)

    p_pass, p_fail = split(paged)
    r_pass, r_fail = split(reserved)
    if p_pass is None or r_fail is None:
        return None
    low = p_pass / r_fail
    high = f"{p_fail / r_pass:.2f}" if p_fail is not None and r_pass else "open"
    return f"[{low:.2f}, {high}]"


ENGINE_COLUMNS = [("engine", "engine"), ("rate", "rate (req/s)"), ("offered", "offered (req/s)"),
                  ("requests", "requests"), ("gpu", "GPU"),
                  ("clocks", "SM MHz start / end"), ("norm", "normalized latency (s/token)"),
                  ("ttft50", "TTFT p50 (s)"), ("ttft99", "TTFT p99 (s)"), ("tpot50", "TPOT p50 (ms)"),
                  ("itl99", "ITL p99 (ms)"), ("e2e90", "e2e p90 (s)"), ("req_s", "served (req/s)"),
                  ("tok_s", "output tok/s"), ("goodput", "goodput (req/s)"), ("slo", "within SLO %"),
                  ("batch", "mean decode batch"), ("kv_alloc", "KV allocated mean %"),
                  ("kv_states", "token states % of allocated"), ("preempt", "preemptions"),
                  ("step", "decode step p50 (ms)")]


def engine_section(runs: list[dict], bound: float, chart: str | None) -> list[str]:
    runs = sorted(runs, key=lambda d: (d["engine"], float(d["rate"])))
    first = runs[0]
    gpu = first.get("gpu_before") or {}
    device = first["device"]
    gpus = sorted({(d.get("gpu_before") or {}).get("uuid") for d in runs} - {None})
    where = (f"{gpu.get('name', device.get('name'))} (power limit {gpu.get('power.limit')} W, max SM clock "
             f"{gpu.get('clocks.max.sm')} MHz, memory {gpu.get('clocks.mem')} MHz; {len(gpus)} GPU(s) of this model, "
             "each point's in the GPU column with its SM clock at start and end)"
             if gpu else f"{device.get('name')} (backend {first['backend']})")
    cfg, model, trace = first["config"], first["model"], first["trace"]
    if trace.get("duration_s"):
        served = (f"the {trace['dataset']} trace's requests arriving in the first {trace['duration_s']:g} s at each "
                  f"rate (at least {trace.get('min_requests') or 0}; the requests column), arrivals rescaled to the rate")
    else:
        served = f"first {trace['requests']} requests of the {trace['dataset']} trace, arrivals rescaled to each rate"
    lines = ["## Engine sweep: normalized latency vs request rate (Figure 12 shape)", "",
             f"backend: {first['backend']}; device: {where}; model: {model['name']} shape with random weights "
             f"({model['parameters'] / 1e9:.2f} B parameters, {first['dtype']}); KV cache {cfg['kv_tokens']} token slots "
             f"(block size {cfg['block_size']}), model maximum length {cfg['max_len']}, at most {cfg['max_batch']} "
             f"running requests; {served}; preemption by {cfg['preemption']}; decode kernel {cfg['kernel']}, CUDA "
             f"graphs {cfg['cuda_graphs']}; clock: {cfg['clock']}. Goodput SLO: TTFT <= "
             f"{first['metrics']['slo']['ttft_s']} s and TPOT <= {first['metrics']['slo']['tpot_s']} s.", ""]
    rows = []
    for d in runs:
        m = d["metrics"]
        ms = lambda v: None if v is None else 1e3 * v  # noqa: E731
        before, after = d.get("gpu_before") or {}, d.get("gpu_after") or {}
        rows.append({"engine": d["engine"], "rate": f"{float(d['rate']):g}", "offered": offered_rate(d),
                     "slo": _percent(m["slo_attained"]), "requests": d["trace"]["requests"],
                     "gpu": (before.get("uuid") or "")[-8:] or None,
                     "clocks": f"{before.get('clocks.sm')} / {after.get('clocks.sm')}" if before else None,
                     "norm": m["normalized_latency_s_per_token"],
                     "ttft50": m["ttft_s"]["p50"], "ttft99": m["ttft_s"]["p99"], "tpot50": ms(m["tpot_s"]["p50"]),
                     "itl99": ms(m["itl_s"]["p99"]), "e2e90": m["e2e_s"]["p90"], "req_s": m["throughput_req_s"],
                     "tok_s": m["throughput_output_tok_s"], "goodput": m["goodput_req_s"],
                     "batch": m["mean_decode_batch"], "kv_alloc": _percent(m["kv"]["allocated_mean"]),
                     "kv_states": _percent(m["kv"]["token_states_of_allocated_mean"]), "preempt": m["preemptions"],
                     "step": ms(d["decode_step_s"]["p50"])})
    lines += [markdown_table(rows, ENGINE_COLUMNS), ""]
    engines = sorted({d["engine"] for d in runs})
    by_engine = {e: sorted((offered_rate(d), d) for d in runs if d["engine"] == e) for e in engines}
    criteria = [(f"normalized latency <= {b:g} s/token" + (" (**headline**)" if b == bound else ""),
                 lambda d: d["metrics"]["normalized_latency_s_per_token"], b) for b in (bound / 2, bound, 2 * bound)]
    criteria.append((f">= {100 * (1 - SLO_MISS):g} % of requests within the goodput SLO",
                     lambda d: 1.0 - d["metrics"]["slo_attained"], SLO_MISS))
    headline = []
    for label, value, limit in criteria:
        rates = {e: sustained_rate([(rate, value(d)) for rate, d in points], limit) for e, points in by_engine.items()}
        tops = {e: points[-1][0] for e, points in by_engine.items()}
        shown = {e: (None if r is None else (f">= {r:.3g}" if r >= tops[e] else f"{r:.3g}")) for e, r in rates.items()}
        paged, reserved = rates.get("paged"), rates.get("reservation")
        ratio = bracket = None
        if paged is not None and reserved:
            capped_p, capped_r = paged >= tops["paged"], reserved >= tops["reservation"]
            ratio = None if capped_r else (f">= {paged / reserved:.2f}" if capped_p else f"{paged / reserved:.2f}")
            bracket = measured_bracket(by_engine.get("paged", []), by_engine.get("reservation", []), value, limit)
        headline.append({"criterion": label, "paged": shown.get("paged"), "reservation": shown.get("reservation"),
                         "ratio": ratio, "bracket": bracket})
    capacity = {e: max(d["metrics"]["throughput_req_s"] for _, d in points) for e, points in by_engine.items()}
    if "paged" in capacity and capacity.get("reservation"):
        headline.append({"criterion": "capacity: the most requests/s served at any offered rate",
                         "paged": f"{capacity['paged']:.3g}", "reservation": f"{capacity['reservation']:.3g}",
                         "ratio": f"{capacity['paged'] / capacity['reservation']:.2f}"})
    lines += ["Highest offered request rate (requests arriving per second of the window, not the nominal rate) "
              "meeting each criterion, interpolated between measured rates (\">= the highest rate\" when no "
              "measured rate fails it, none when the lowest does). The bracket uses measured points only: "
              "paged's highest passing rate over reservation's lowest failing one, up to paged's lowest failing "
              "over reservation's highest passing. A rate within the bound over a finite window is not steady "
              "state: near an engine's capacity its queue is still growing when arrivals stop (compare served "
              "with offered above), so the capacity row is the ratio that leans least on the window (it still counts "
              "the drain after arrivals stop).", "",
              markdown_table(headline, [("criterion", "criterion"), ("paged", "paged (req/s)"),
                                        ("reservation", "reservation (req/s)"), ("ratio", "paged / reservation"),
                                        ("bracket", "from measured points")]), ""]
    if chart:
        lines += [f"![normalized latency vs request rate]({chart})", ""]
    return lines


def peer_section(peer: dict) -> list[str]:
    if peer.get("skipped"):
        return ["## Offline throughput against transformers", "", f"Not measured here: {peer['skipped']}.", ""]
    summary, w = peer["summary"], peer["workload"]
    gpu = peer.get("gpu_before") or {}
    rows = [{"engine": r["engine"], "round": r["round"], "tok_s": r.get("tokens_per_s"), "wall": r.get("wall_s"),
             "tokens": r.get("generated_tokens"), "note": r.get("error", "")} for r in peer["runs"]]
    rows.append({"engine": "physical bound (decode bytes / measured read bandwidth)",
                 "tok_s": summary["bound_tokens_per_s"], "wall": summary["decode_bound_s"], "note":
                 f"read {summary['read_bandwidth_bytes_per_s'] / 1e12:.2f} TB/s"})
    lines = ["## Offline throughput against transformers (same device call)", "",
             f"Device: {gpu.get('name')} (UUID {gpu.get('uuid')}, power limit {gpu.get('power.limit')} W). Model: "
             f"{peer['model']['name']} shape, random weights, {peer['dtype']}. Workload: {w['prompts']} prompts, "
             f"lognormal lengths (target mean {w['input_mean_target']}, max {w['input_max']}, sampled mean "
             f"{w['input_lengths_mean']:.1f}), {w['output_len']} output tokens each, EOS {w['eos']}, "
             f"{w['arrival']}. Rounds alternate the engines.", "",
             markdown_table(rows, [("engine", "engine"), ("round", "round"), ("tok_s", "generated tokens/s"),
                                   ("wall", "time (s)"), ("tokens", "tokens"), ("note", "note")]), ""]
    if summary.get("ratio_ours_over_transformers"):
        decode = sorted(r["decode_s"] for r in peer["runs"] if r.get("decode_s"))
        decode_share = (f"; decode alone: the bound's {summary['decode_bound_s']:.2f} s over our "
                        f"{decode[len(decode) // 2]:.2f} s (median) = {summary['decode_bound_s'] / decode[len(decode) // 2]:.2f}"
                        if decode else "")
        lines += [f"Ours / transformers (medians): **{summary['ratio_ours_over_transformers']:.1f}x** "
                  f"(target >= 4x). Ours / bound: {max(summary['ours_tokens_per_s']) / summary['bound_tokens_per_s']:.2f} "
                  f"(our best end-to-end tokens/s, prefill included, over the decode-only bound{decode_share}).", ""]
    if summary.get("full_batch_step_s"):
        lines += [f"Decode step at the full batch: {1e3 * summary['full_batch_step_s']:.2f} ms measured, "
                  f"{1e3 * summary['full_batch_step_bound_s']:.2f} ms bound (weights + KV read once at the measured "
                  "read bandwidth).", ""]
    return lines


def stepbench_section(doc: dict) -> list[str]:
    if doc.get("skipped"):
        return ["## Decode step: paged vs contiguous KV", "", f"Not measured here: {doc['skipped']}.", ""]
    gpu = doc.get("gpu_before") or {}
    rows = [{"shape": f"{r['batch']} x {r['context']}", "paged": 1e3 * r["paged_step_s"],
             "contig": 1e3 * r["contiguous_step_s"], "ratio": r["paged_over_contiguous"],
             "spread": f"[{r['ratio_p10_p90'][0]:.3f}, {r['ratio_p10_p90'][1]:.3f}]",
             "gb": r["step_bytes"] / 1e9, "tbs": r["step_bytes"] / r["paged_step_s"] / 1e12, "kernel": r["kernel"]}
            for r in doc["shapes"]]
    return ["## Decode step: paged vs contiguous KV (same step, same call)", "",
            f"Device: {gpu.get('name')} (UUID {gpu.get('uuid')}). The {doc['model']['name']} decode step as a CUDA "
            "graph; attention by our paged kernel through shuffled block tables, or by torch SDPA over the same KV "
            "laid out contiguously; rounds alternate, medians. Target: paged within 10 % of contiguous.", "",
            markdown_table(rows, [("shape", "batch x context"), ("kernel", "paged kernel"), ("paged", "paged (ms)"),
                                  ("contig", "contiguous SDPA (ms)"), ("ratio", "paged / contiguous"),
                                  ("spread", "p10-p90 of rounds"), ("gb", "step bytes (GB)"),
                                  ("tbs", "paged effective TB/s")]), ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workloads.serving.report", description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="replay result files or folders of them")
    parser.add_argument("--out", type=Path, default=Path("results/serving/report"))
    parser.add_argument("--no-plot", action="store_true", help="table only (no matplotlib needed)")
    parser.add_argument("--latency-bound", type=float, default=0.025,
                        help="normalized latency (s/token) an engine must stay within to sustain a rate")
    args = parser.parse_args(argv)
    try:
        loaded = load_results(args.results)
    except (OSError, ValueError) as error:
        print(f"report: {error}", file=sys.stderr)
        return 2
    documents = [d for d in loaded if d.get("task") == "serving:replay"]
    engine_runs = [d for d in loaded if d.get("task") == "serving:engine"]
    peers = [d for d in loaded if d.get("task") == "serving:peer"]
    stepbenches = [d for d in loaded if d.get("task") == "serving:stepbench"]
    if not documents:
        print(f"report: no serving:replay result among {', '.join(map(str, args.results))}; run "
              "nxrun run serving:replay first", file=sys.stderr)
        return 2
    documents.sort(key=lambda d: d["trace"]["dataset"] != "sharegpt")  # ShareGPT (the paper's Figure 2) first
    args.out.mkdir(parents=True, exist_ok=True)
    chart_names = None if args.no_plot else {d["trace"]["dataset"]: charts(d, args.out) for d in documents}
    text = render(documents, chart_names)
    if engine_runs:
        chart = None
        if not args.no_plot:
            chart = "latency_vs_rate.png"
            series = {}
            for engine in sorted({d["engine"] for d in engine_runs}):
                points = sorted((offered_rate(d), d["metrics"]["normalized_latency_s_per_token"])
                                for d in engine_runs if d["engine"] == engine)
                series[engine] = ([p[0] for p in points], [p[1] for p in points])
            line_chart(args.out / chart, series, xlabel="offered request rate (req/s)",
                       ylabel="normalized latency (s/token)", markers=True,
                       hlines={f"bound {args.latency_bound:g} s/token": args.latency_bound},
                       title=f"Normalized latency vs rate ({engine_runs[0]['backend']}, {engine_runs[0]['model']['name']})")
        text += "\n" + "\n".join(engine_section(engine_runs, args.latency_bound, chart))
    for peer in peers:
        text += "\n" + "\n".join(peer_section(peer))
    for doc in stepbenches:
        text += "\n" + "\n".join(stepbench_section(doc))
    (args.out / "README.md").write_text(text)
    print(f"serving report -> {args.out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
