"""What a panel run records in MLflow: its configuration, the fit (ELBO trace per step, batched), the
forecast file and fitted-model folder, the backtest's scores per method and level, and the effect plots."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tasks.model.inference import FitResult
from tasks.model.panel_effects import EffectDraws
from tasks.track import plots, tracking
from tasks.track.recording import Tracker

ELBO_KEY = "elbo_panel"


def record_panel_fit(
    tracker: Tracker, fit: FitResult, n_series: int, n_masked: int, fitted_info: dict | None = None
) -> dict[str, float]:
    """The fit's summary metrics, its ELBO trace and plot; ``fitted_info`` (``FittedPanel.info``): the scales the
    forecast draws the shocks and the series' walk steps ahead at, when estimated after the fit."""
    metrics = {
        "panel_steps": fit.n_steps,
        "panel_converged": 1.0 if fit.converged else 0.0,
        "panel_compile_seconds": fit.compile_seconds,
        "panel_run_seconds": fit.run_seconds,
        "panel_final_loss": float(fit.losses[-min(100, fit.n_steps) :].mean()),
        "n_series": n_series,
        "n_masked_cells": n_masked,
    }
    info = fitted_info or {}
    metrics |= {f"panel_shock_scale_ahead_{kind}": value for kind, value in info.get("shock_scales_ahead", {}).items()}
    if "level_scale_ahead" in info:
        metrics["panel_level_scale_ahead"] = info["level_scale_ahead"]
    tracking.log_metrics(tracker.client, tracker.run_id, metrics)
    tracking.log_loss_trace(tracker.client, tracker.run_id, ELBO_KEY, fit.losses)
    tracking.log_figure(tracker.client, tracker.run_id, plots.elbo_curve(fit.losses, "panel fit"), "elbo_panel")
    return metrics


def record_effects(tracker: Tracker, effects: EffectDraws, labels: dict | None = None) -> None:
    """A plot of each key's effect with its 90% interval, and the numbers as a Parquet artifact."""
    summary = effects.summary()
    names = [str(labels.get(k, k)) if labels else str(k) for k in effects.keys]
    fig = plots.effect_intervals(
        names, summary["mean"], summary["low"], summary["high"], f"{effects.coefficient} by {effects.side} (90% intervals)", effects.coefficient
    )
    tracking.log_figure(tracker.client, tracker.run_id, fig, f"effect_{effects.coefficient}_{effects.side}")
    frame = pl.DataFrame({effects.side: names, "mean": summary["mean"], "q05": summary["low"], "q95": summary["high"]})
    tracking.log_frame(tracker.client, tracker.run_id, frame, f"effect_{effects.coefficient}_{effects.side}.parquet", "effects")


def record_panel_files(tracker: Tracker, forecast_path: Path | None, fitted_dir: Path | None) -> None:
    if forecast_path is not None:
        tracking.log_artifact(tracker.client, tracker.run_id, forecast_path, "forecast")
    if fitted_dir is not None:
        tracking.log_artifact(tracker.client, tracker.run_id, fitted_dir, "model")


def record_panel_scores(tracker: Tracker, scores: pl.DataFrame) -> None:
    """Backtest scores (one row per method, level and origin) as metrics of the model and as an artifact."""
    model_rows = scores.filter(pl.col("method") == "model")
    metrics = {}
    for row in model_rows.iter_rows(named=True):
        for name in ("wql", "coverage_50", "coverage_90"):
            if row.get(name) is not None:
                metrics[f"backtest_{row['level']}_{name}"] = row[name]
    tracking.log_metrics(tracker.client, tracker.run_id, metrics)
    tracking.log_frame(tracker.client, tracker.run_id, scores, "panel_scores.parquet", "backtest")
