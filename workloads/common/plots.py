"""Tables and charts generated from result documents (never typed by hand)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if value else "0"
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[dict], columns: Sequence[str | tuple[str, str]]) -> str:
    """A GitHub markdown table; `columns` are keys, or (key, header) pairs. Missing cells show as '–'."""
    pairs = [(column, column) if isinstance(column, str) else column for column in columns]
    lines = ["| " + " | ".join(header for _, header in pairs) + " |",
             "|" + "|".join(" --- " for _ in pairs) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key)) for key, _ in pairs) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(path: Path | str, categories: Sequence[str], series: dict[str, Sequence[float]],
              baselines: dict[str, Sequence[float]] | None = None, ylabel: str = "", title: str = "") -> None:
    """Grouped bars (one group per category, one bar per series) with optional baseline lines per category.

    A baseline is drawn as a dashed horizontal segment across each category's group.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_series = max(1, len(series))
    width = 0.8 / n_series
    figure, axes = plt.subplots(figsize=(max(6.0, 1.2 * len(categories) + 0.25 * n_series * len(categories)), 4.5))
    for index, (label, values) in enumerate(series.items()):
        positions = [c - 0.4 + width * (index + 0.5) for c in range(len(categories))]
        heights = [v if v is not None else 0.0 for v in values]
        axes.bar(positions, heights, width=width, label=label)
    for line_index, (label, values) in enumerate((baselines or {}).items()):
        legend_label = label
        for c, value in enumerate(values):
            if value is None:
                continue
            axes.hlines(value, c - 0.45, c + 0.45, colors=f"C{(n_series + line_index) % 10}", linestyles="dashed",
                        label=legend_label)
            legend_label = None
    axes.set_xticks(range(len(categories)))
    axes.set_xticklabels(categories)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend(fontsize="small", ncol=2)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(figure)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, plt, path: Path | str) -> None:
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(figure)


def stacked_bar_chart(path: Path | str, categories: Sequence[str], stacks: dict[str, Sequence[float]],
                      markers: dict[str, Sequence[float | None]] | None = None, ylabel: str = "",
                      title: str = "") -> None:
    """One bar per category, split into `stacks` (bottom first); each bar's parts are labelled in percent of
    the bar when they are tall enough. A marker is a black tick across the bar at a value (e.g. a published
    figure to compare with); None skips a category.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(categories) + 2.5), 4.8))
    bottoms = [0.0] * len(categories)
    total = max((sum(values[c] or 0.0 for values in stacks.values()) for c in range(len(categories))), default=1.0)
    for label, values in stacks.items():
        heights = [v or 0.0 for v in values]
        bars = axes.bar(range(len(categories)), heights, bottom=bottoms, width=0.7, label=label)
        for bar, height in zip(bars, heights):
            if height >= 0.06 * total:
                axes.text(bar.get_x() + bar.get_width() / 2, bar.get_y() + height / 2, f"{height:.1f}",
                          ha="center", va="center", fontsize="x-small")
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    for marker_index, (label, values) in enumerate((markers or {}).items()):
        legend_label = label
        for c, value in enumerate(values):
            if value is None:
                continue
            axes.hlines(value, c - 0.42, c + 0.42, colors="black", linestyles=("solid", "dashed")[marker_index % 2],
                        linewidth=2, label=legend_label)
            legend_label = None
    axes.set_xticks(range(len(categories)))
    axes.set_xticklabels(categories, fontsize="small")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(figure, plt, path)


def line_chart(path: Path | str, series: dict[str, tuple[Sequence[float], Sequence[float]]], xlabel: str = "",
               ylabel: str = "", title: str = "", ylim: tuple[float, float] | None = None,
               linestyles: dict[str, str] | None = None, markers: bool = False,
               hlines: dict[str, float] | None = None) -> None:
    """One line per series, each given as (xs, ys); `linestyles` maps a series to a matplotlib style ("--");
    `markers` marks each measured point (so a straight segment reads as no data between them); `hlines`
    draws labelled horizontal reference lines (a bound)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8.0, 4.5))
    for label, (xs, ys) in series.items():
        axes.plot(xs, ys, label=label, linewidth=1.2, linestyle=(linestyles or {}).get(label, "-"),
                  marker="o" if markers else None, markersize=3.5)
    for label, y in (hlines or {}).items():
        axes.axhline(y, color="0.4", linewidth=0.9, linestyle=":", label=label)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    if ylim is not None:
        axes.set_ylim(*ylim)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(figure, plt, path)
