"""Markdown tables, the bar chart, result files and timing summaries, all without a GPU."""

import json

import pytest

from workloads.common import plots, results, timing
from workloads.common.device import cuda_available, device_facts


def test_markdown_table_formats_cells_and_headers():
    table = plots.markdown_table(
        [{"kernel": "01_naive", "tflops": 1.23456, "ratio": 0.0123}, {"kernel": "a|b", "tflops": 512.4}],
        ["kernel", ("tflops", "TFLOP/s"), ("ratio", "vs cuBLAS")],
    )
    assert table.splitlines() == [
        "| kernel | TFLOP/s | vs cuBLAS |",
        "| --- | --- | --- |",
        "| 01_naive | 1.23 | 0.0123 |",
        "| a\\|b | 512 | – |",
    ]


def test_bar_chart_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "chart.png"
    plots.bar_chart(out, ["1024", "2048"], {"k1": [1.0, 2.0], "k2": [3.0, None]},
                    baselines={"cuBLAS": [5.0, 6.0]}, ylabel="TFLOP/s", title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_results_adds_device_created_schema_and_loads_back(tmp_path):
    path = tmp_path / "r" / "x.json"
    results.write_results(path, {"kernel": "01", "value": 1.5})
    document = json.loads(path.read_text())
    assert document["schema"] == results.SCHEMA_VERSION
    assert document["created"].endswith("+00:00")
    assert document["device"]["backend"] in {"cpu", "cuda"}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no temp file left behind
    loaded = results.load_results(tmp_path / "r")
    assert loaded[0]["kernel"] == "01"
    assert loaded[0]["_path"] == str(path)


def test_load_results_rejects_unknown_schema(tmp_path):
    (tmp_path / "old.json").write_text(json.dumps({"schema": 0}))
    with pytest.raises(ValueError, match="schema"):
        results.load_results([tmp_path / "old.json"])


def test_summarize_quantiles():
    summary = timing.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert summary["median_ms"] == 3.0
    assert summary["min_ms"] == 1.0
    assert summary["p10_ms"] == pytest.approx(1.4)
    assert summary["p90_ms"] == pytest.approx(4.6)


def test_cpu_time_passes_rotated_index():
    seen = []
    timing.cpu_time(seen.append, warmup=1, repeats=4, rotate=3)
    assert seen == [0, 0, 1, 2, 0]


def test_device_facts_has_every_key():
    facts = device_facts()
    assert set(facts) == {"backend", "name", "compute_capability", "sm_count", "memory_bytes", "l2_bytes",
                          "driver_version", "cuda_runtime_version", "cupy_version"}
    assert facts["backend"] == ("cuda" if cuda_available() else "cpu")


@pytest.mark.gpu
def test_cuda_time_measures_device_work_with_rotation():
    import cupy

    inputs = [cupy.random.standard_normal((512, 512), dtype=cupy.float32) for _ in range(2)]
    seen = []

    def run(i):
        seen.append(i)
        inputs[i] @ inputs[i]

    summary = timing.cuda_time(run, warmup=2, repeats=6, rotate=2)
    assert len(summary["samples"]) == 6
    assert 0 < summary["min_ms"] <= summary["median_ms"] <= summary["p90_ms"]
    assert seen == [0, 1, 0, 1, 0, 1, 0, 1]


def test_stacked_bar_and_line_charts_write_png(tmp_path):
    pytest.importorskip("matplotlib")
    stacked = tmp_path / "stacked.png"
    plots.stacked_bar_chart(stacked, ["a", "b"], {"used": [20.0, 96.0], "wasted": [80.0, None]},
                            markers={"paper": [20.4, None]}, ylabel="%", title="t")
    lines = tmp_path / "lines.png"
    plots.line_chart(lines, {"a": ([0, 1, 2], [1.0, 2.0, 3.0]), "b": ([0, 2], [3.0, 1.0])}, xlabel="s",
                     ylabel="%", ylim=(0, 100), linestyles={"b": "--"})
    for path in (stacked, lines):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
