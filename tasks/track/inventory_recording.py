"""What a replenish run records in MLflow: the figures of the orders to place now (expected cost, fill rate,
service level), their distribution as plots, and the orders file."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from matplotlib.figure import Figure

from tasks import names as n
from tasks.track import tracking
from tasks.track.recording import Tracker


def record_orders(tracker: Tracker, frame: pl.DataFrame, metrics: dict[str, float], orders_path: Path) -> None:
    tracking.log_metrics(tracker.client, tracker.run_id, metrics)
    tracking.log_artifact(tracker.client, tracker.run_id, orders_path, "orders")
    now = frame.filter(pl.col(n.PLACE_NOW))
    if now.is_empty():
        return
    fig = Figure(figsize=(13, 3.6))
    axes = fig.subplots(1, 3)
    axes[0].hist(now[n.FILL_RATE].to_numpy(), bins=40, color="tab:blue")
    axes[0].axvline(float(now[n.CRITICAL_RATIO].mean()), color="black", linestyle="--", label="critical ratio (mean)")
    axes[0].set(title="expected fill rate per series", xlabel="fill rate", ylabel="series")
    axes[0].legend(loc="upper left", fontsize=8)
    axes[1].hist(now[n.STOCKOUT_PROBABILITY].to_numpy(), bins=40, color="tab:red")
    axes[1].set(title="probability of a stock-out", xlabel="probability", ylabel="series")
    axes[2].scatter(now[n.EXPECTED_DEMAND].to_numpy(), now[n.ORDER_QUANTITY].to_numpy(), s=4, alpha=0.5)
    axes[2].set(title="order vs expected demand (protection interval)", xlabel="expected demand", ylabel="order (units)")
    fig.tight_layout()
    tracking.log_figure(tracker.client, tracker.run_id, fig, "orders")
