"""Figures of a backtest: scores in, a matplotlib ``Figure`` out (headless, no pyplot state)."""

from __future__ import annotations

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from tasks import names as n
from tasks.evaluate.backtest import pit_histogram, squared_percentage_error

NOMINAL = (0.5, 0.9)


def coverage_vs_nominal(methods: dict[str, dict[str, float]]) -> Figure:
    """Each method's 50% and 90% interval coverage against the nominal level (the diagonal is calibrated)."""
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="calibrated")
    for method, scores in methods.items():
        ax.plot(NOMINAL, [scores["coverage_50"], scores["coverage_90"]], marker="o", label=method)
    ax.set_xlim(0.3, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("observed coverage")
    ax.set_title("Interval coverage")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def pit_histograms(scored: pl.DataFrame, bins: int = 10) -> Figure:
    """The randomised PIT histogram of each method (flat at 1/bins when calibrated)."""
    methods = scored["method"].unique(maintain_order=True).to_list()
    fig = Figure(figsize=(3.2 * len(methods), 3), layout="constrained")
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    edges = np.linspace(0, 1, bins + 1)
    for ax, method in zip(axes, methods, strict=True):
        pit = scored.filter((pl.col("method") == method) & pl.col("scored"))["pit"].drop_nulls().to_numpy()
        ax.bar(edges[:-1], pit_histogram(pit, bins), width=1 / bins, align="edge", color="tab:blue", alpha=0.7)
        ax.axhline(1 / bins, color="0.3", ls="--", lw=1)
        ax.set_title(method, fontsize="medium")
        ax.set_xlabel("PIT")
    axes[0].set_ylabel("share of days")
    return fig


def store_errors(scored: pl.DataFrame) -> Figure:
    """Distribution across stores of each method's RMSPE (of its point forecast) over the scored days."""
    per_store = (
        scored.filter(pl.col("scored"))
        .group_by("method", n.STORE)
        .agg(squared_percentage_error().mean().sqrt().alias("rmspe"))
    )
    methods = per_store["method"].unique(maintain_order=True).to_list()
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    values = [per_store.filter(pl.col("method") == m)["rmspe"].to_numpy() for m in methods]
    ax.boxplot(values, showfliers=False)
    ax.set_xticks(range(1, len(methods) + 1), methods, rotation=15)
    ax.set_ylabel("per-store RMSPE")
    ax.set_title("Errors across stores")
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def cold_start_curve(points: list[dict], established: dict[str, float], full_history: dict[str, float]) -> Figure:
    """RMSPE and interval coverage of new stores against their days of history, per method; as reference
    lines, the RMSPE of the same stores fitted on their whole history and of the established stores."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    accuracy, coverage = fig.subplots(1, 2)
    methods = list(dict.fromkeys(p["method"] for p in points))
    for method in methods:
        mine = sorted((p for p in points if p["method"] == method), key=lambda p: p["days"])
        days = [p["days"] for p in mine]
        accuracy.plot(days, [p["rmspe"] for p in mine], marker="o", label=method)
        line = coverage.plot(days, [p["coverage_90"] for p in mine], marker="o", label=f"{method} 90%")[0]
        coverage.plot(days, [p["coverage_50"] for p in mine], marker="s", ls=":", color=line.get_color(), label=f"{method} 50%")
    accuracy.axhline(full_history["rmspe"], color="0.3", ls="--", lw=1, label="same stores, whole history")
    accuracy.axhline(established["rmspe"], color="0.6", ls=":", lw=1, label="established stores")
    accuracy.set_yscale("log")
    accuracy.set_ylabel("RMSPE")
    accuracy.set_title("Accuracy against days of history")
    for nominal in NOMINAL:
        coverage.axhline(nominal, color="0.5", ls="--", lw=1)
    coverage.set_ylim(0, 1)
    coverage.set_ylabel("interval coverage")
    coverage.set_title("Coverage against days of history (dashed: nominal)")
    for ax in (accuracy, coverage):
        ax.set_xscale("log")
        ax.set_xticks(sorted({p["days"] for p in points}), [str(d) for d in sorted({p["days"] for p in points})])
        ax.set_xlabel("days of history")
        ax.grid(True, alpha=0.3)
    accuracy.legend(fontsize="small")
    coverage.legend(fontsize="x-small", ncols=2)
    return fig
