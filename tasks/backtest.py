"""Backtest: fit on the history before an origin, forecast the days after it, score against what happened.

Pure: validated frames in, scores out. The split happens on the typed train
frame; the fit sees only rows dated before the origin, so the scored days
cannot leak into it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

import jax
import numpy as np
import polars as pl

from tasks import metrics
from tasks import names as n
from tasks.config import FitConfig, ForecastConfig
from tasks.encode import build_spec, encode
from tasks.inference import FitProgress, log_progress
from tasks.pipeline import FitReport, fit_history, forecast_frame

log = logging.getLogger(__name__)

# The scored days: open, with positive sales, as Kaggle scored Rossmann.
SCORE_KEYS = ("rmspe", "rmspe_median", "mape", "wql", "coverage_50", "coverage_90")


@dataclass(frozen=True)
class BacktestSplit:
    """The history before ``origin``, the calendar of the ``horizon_days`` from it, and what was sold then."""

    origin: dt.date
    horizon_days: int
    history: pl.DataFrame  # train rows dated before origin
    calendar: pl.DataFrame  # the horizon's rows in future-calendar form (no sales)
    actual: pl.DataFrame  # Store, Date, Sales, Open of the horizon


@dataclass(frozen=True)
class BacktestResult:
    origin: dt.date
    horizon_days: int
    metrics: dict[str, float]
    scored: pl.DataFrame  # one row per forecast row with its actual sales
    fit: FitReport


def default_origin(train: pl.DataFrame, horizon_days: int) -> dt.date:
    """The origin whose horizon ends on the last train date."""
    return train[n.DATE].max() - dt.timedelta(days=horizon_days - 1)


def split_at(train: pl.DataFrame, origin: dt.date, horizon_days: int) -> BacktestSplit:
    """Split typed train rows at ``origin`` (the first forecast day)."""
    if horizon_days < 1:
        raise ValueError(f"horizon_days must be >= 1, got {horizon_days}")
    end = origin + dt.timedelta(days=horizon_days - 1)
    history = train.filter(pl.col(n.DATE) < origin)
    horizon = train.filter(pl.col(n.DATE).is_between(origin, end)).sort([n.DATE, n.STORE])
    if not history.height:
        raise ValueError(f"no train rows before the backtest origin {origin}")
    if not horizon.height:
        raise ValueError(f"no train rows from the backtest origin {origin} to {end}")
    calendar_columns = [c for c in n.FUTURE_COLUMNS if c != n.ID and c in horizon.columns]
    return BacktestSplit(
        origin=origin,
        horizon_days=horizon_days,
        history=history,
        calendar=horizon.select(calendar_columns),
        actual=horizon.select(n.STORE, n.DATE, n.SALES, n.OPEN),
    )


def score_rows(forecast: pl.DataFrame, actual: pl.DataFrame) -> pl.DataFrame:
    """Forecast rows joined with their actual sales; ``scored`` marks open days with positive sales."""
    return forecast.join(actual.select(n.STORE, n.DATE, n.SALES, n.OPEN), on=[n.STORE, n.DATE], how="inner").with_columns(
        ((pl.col(n.OPEN) == 1) & (pl.col(n.SALES) > 0)).alias("scored")
    )


def score(scored: pl.DataFrame) -> dict[str, float]:
    """The backtest metrics over the scored rows of ``score_rows``."""
    rows = scored.filter(pl.col("scored"))
    if not rows.height:
        raise ValueError("no open day with positive sales to score")
    sales = rows[n.SALES].to_numpy().astype(float)
    levels = tuple(q for q in n.QUANTILE_COLUMNS if n.quantile_column(q) in rows.columns)
    q = {level: rows[n.quantile_column(level)].to_numpy().astype(float) for level in levels}
    return {
        "rmspe": metrics.rmspe(sales, rows[n.MEAN].to_numpy()),
        "rmspe_median": metrics.rmspe(sales, q[0.5]),
        "mape": float(np.mean(np.abs(sales - q[0.5]) / sales)),
        "wql": metrics.scaled_quantile_loss(sales, np.stack([q[level] for level in levels]), levels),
        "coverage_50": metrics.coverage(sales, q[0.25], q[0.75]),
        "coverage_90": metrics.coverage(sales, q[0.05], q[0.95]),
        "n_scored": float(rows.height),
    }


def run_backtest(
    train: pl.DataFrame,
    stores: pl.DataFrame,
    fit_config: FitConfig,
    forecast_config: ForecastConfig,
    key: jax.Array,
    horizon_days: int = 48,
    origin: dt.date | None = None,
    on_progress: Callable[[FitProgress], None] = log_progress,
) -> BacktestResult:
    """Fit on the history before ``origin`` (default: ``horizon_days`` before the end), forecast, score."""
    origin = origin or default_origin(train, horizon_days)
    split = split_at(train, origin, horizon_days)
    log.info("backtest: fit on %d rows before %s, score the %d days from it", split.history.height, origin, horizon_days)
    spec = build_spec(stores, fit_config.yearly_fourier_order, fit_config.monthly_fourier_order)
    encoded = encode(split.history, stores, split.calendar, spec)
    key_fit, key_forecast = jax.random.split(key)
    fitted, report = fit_history(encoded, fit_config, key_fit, encoded.future.stores, on_progress)
    frame = forecast_frame(fitted, encoded.future, split.calendar, forecast_config, key_forecast)
    scored = score_rows(frame, split.actual)
    result = score(scored)
    log.info("backtest from %s: %s", origin, ", ".join(f"{k} {v:.4g}" for k, v in result.items()))
    return BacktestResult(origin=origin, horizon_days=horizon_days, metrics=result, scored=scored, fit=report)
