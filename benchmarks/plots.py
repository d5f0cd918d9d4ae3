"""The PNG plots of docs/benchmarks.md, drawn from the JSON a benchmark run writes.

    .venv/bin/python -m benchmarks.plots docs/benchmarks.json docs/

- bench-summary.png: each main figure of ssehub against Nchan's (above 1 is better for ssehub);
- bench-fanout.png: fan-out deliveries/s and p99 latency over the number of subscribers;
- bench-chat.png: chat publishes/s and p99 latency over the number of topics.
Needs matplotlib (the `bench` extra).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from .report import FIGURES, figure

__all__ = ["check", "draw"]

COLOURS = {"ssehub": "#1f77b4", "nchan": "#2ca02c", "naive": "#d62728"}


def check() -> None:
    """Raise SystemExit with the fix when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit("the plots need matplotlib: .venv/bin/pip install -e '.[bench]'") from None


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _positive(result: dict[str, Any] | None, key: str) -> float | None:
    if result is None or "error" in result:
        return None
    value = result.get(key)
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _summary(doc: dict[str, Any], path: Path) -> Path | None:
    labels, ratios = [], []
    for scenario, key, label, higher in FIGURES:
        ours = _positive(figure(doc, "main", scenario, "ssehub"), key)
        # The agents run inside ssehub only: they compare with Nchan's per-token chat deliveries.
        theirs = _positive(figure(doc, "main", "chat" if scenario == "agents" else scenario, "nchan"), key)
        if ours is None or theirs is None:
            continue
        labels.append(label + (" (vs Nchan's chat)" if scenario == "agents" else ""))
        ratios.append(ours / theirs if higher else theirs / ours)
    if not ratios:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(ratios) + 1.4))
    colours = [COLOURS["ssehub"] if r >= 1 else "#ff7f0e" for r in ratios]
    # Bars grow from 1 (as good as Nchan) to the right when ssehub is better, to the left when worse.
    ax.barh(range(len(ratios)), [r - 1 for r in ratios], left=1, color=colours)
    ax.axvline(1, color="black", linewidth=1)
    ax.set_yticks(range(len(ratios)), labels)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ticks = [t for t in (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20) if min(ratios) / 2 <= t <= max(ratios) * 2]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlim(min(ticks[0], min(ratios) / 2.5), max(ticks[-1], max(ratios) * 2.5))
    ax.set_xlabel("ssehub / Nchan (x; inverted for latency, memory): above 1, ssehub is better")
    for i, r in enumerate(ratios):
        ax.text(r, i, f" {r:.2f} ", va="center", ha="left" if r >= 1 else "right")
    ax.set_title(f"ssehub against Nchan, {doc['meta']['date'][:10]}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _two_and_five(value: float, _: object) -> str:
    """Labels for the minor ticks of a log axis: 2 and 5 of each decade, the rest unlabelled."""
    if value <= 0:
        return ""
    leading = round(value / 10 ** math.floor(math.log10(value)))
    return f"{value:g}" if leading in (2, 5) else ""


def _sweep(doc: dict[str, Any], group: str, x: str, key: str, ylabel: str, path: Path) -> Path | None:
    records = [r for r in doc["records"] if r["group"] == group]
    if not records:
        return None
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
    for system in doc["meta"]["systems"]:
        points = [
            (r["params"][x], _positive(r["result"], key), _positive(r["result"], "lat_p99_ms"))
            for r in records
            if r["system"] == system
        ]
        throughput = [(p, v) for p, v, _ in points if v is not None]
        p99 = [(p, v) for p, _, v in points if v is not None]
        style = {"color": COLOURS.get(system), "marker": "o", "label": system}
        if throughput:
            top.plot(*zip(*throughput, strict=True), **style)
        if p99:
            bottom.plot(*zip(*p99, strict=True), **style)
    xs = sorted({r["params"][x] for r in records})
    bottom.set_xscale("log")
    bottom.set_xticks(xs, [f"{v:,}" for v in xs])
    bottom.minorticks_off()
    top.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    top.set_ylabel(ylabel)
    top.set_ylim(bottom=0)
    top.legend()
    top.grid(alpha=0.3)
    bottom.set_ylabel("p99 latency, ms")
    bottom.set_yscale("log")  # it resets the formatters: set them after
    bottom.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    bottom.yaxis.set_minor_formatter(plt.FuncFormatter(_two_and_five))
    bottom.set_xlabel("topics (2 readers each)" if x == "topics" else "subscribers of one topic")
    bottom.grid(alpha=0.3, which="both")
    fig.suptitle(f"{group}, {doc['meta']['date'][:10]}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw(doc: dict[str, Any], folder: Path) -> list[Path]:
    """Draw every plot the document has figures for into `folder`; returns their paths."""
    check()
    folder.mkdir(parents=True, exist_ok=True)
    drawn = [
        _summary(doc, folder / "bench-summary.png"),
        _sweep(doc, "fanout sweep", "subscribers", "deliveries_per_s", "deliveries/s", folder / "bench-fanout.png"),
        _sweep(
            doc, "chat sweep", "topics", "publish_per_s", "publishes/s (one POST per token)", folder / "bench-chat.png"
        ),
    ]
    return [p for p in drawn if p is not None]


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m benchmarks.plots RESULTS.json FOLDER")
    for drawn_path in draw(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])):
        print(drawn_path)
