"""Backtests on a dataset spec's panel: fit before each origin, forecast the horizon after it, and score the
model and the baselines on the same rows, at the series level and at every aggregate level of the spec.

Pure: no Prefect, no MLflow. The rows of a horizon are the sales rows in it (their covariates are known, as a
future table's would be); a row whose target was masked (a return) is forecast but not scored. An aggregate's
actual value is the sum of its rows' targets (masked ones count as 0); the model's aggregate forecast comes
from the sums of its joint draws over the same rows, and each baseline is fitted to the aggregate's own
summed history (its covariates averaged over the members), as a practitioner would forecast a total.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import jax
import numpy as np
import polars as pl

from tasks import names as n
from tasks.config import ForecastConfig, PanelFitConfig
from tasks.data.panel_encode import EncodedPanelData, encode_panel
from tasks.data.panel_ingest import PanelTables
from tasks.data.spec import PanelSpec
from tasks.evaluate import panel_metrics
from tasks.evaluate.panel_baselines import PANEL_BASELINES, BaselineForecast, PanelHistory
from tasks.forecast.panel_draws import AggregateLevel, PanelForecastArrays
from tasks.model.inference import FitResult, log_progress
from tasks.panel_pipeline import aggregate_levels, fit_encoded, forecast_encoded

log = logging.getLogger(__name__)

MODEL = "model"
DEFAULT_ORIGINS = 4
YEAR_DAYS = 364
HORIZON = {7: 13, 1: 28}  # default horizon in periods: a quarter of weeks, four weeks of days
WEIGHT_FLAG = "holiday"  # a flag covariate of this name weighs its rows 5 in the WMAE (Kaggle's Walmart rule)


@dataclass(frozen=True)
class PanelBacktest:
    origin: dt.date
    horizon: int
    scores: pl.DataFrame  # one row per method and level
    fit: FitResult
    seconds: dict[str, float]


def default_origins(tables: PanelTables, horizon: int, count: int = DEFAULT_ORIGINS) -> list[dt.date]:
    """``count`` origins whose horizons tile the last year of the history, the last one ending at its end."""
    if count < 1 or horizon < 1:
        raise ValueError(f"need count >= 1 and horizon >= 1, got {count}, {horizon}")
    step = dt.timedelta(days=tables.spec.period_days)
    last = tables.sales[n.PERIOD].max()
    last_origin = last - (horizon - 1) * step
    span = max(YEAR_DAYS // tables.spec.period_days - horizon, 0)
    spacing = span // max(count - 1, 1) if count > 1 else 0
    origins = sorted(last_origin - k * max(spacing, 1) * step for k in range(count))
    first = tables.sales[n.PERIOD].min()
    if origins[0] <= first:
        raise ValueError(f"the history ({first} to {last}) is too short for {count} origins {horizon} periods apart")
    return origins


def split(tables: PanelTables, origin: dt.date, horizon: int) -> tuple[PanelTables, pl.DataFrame]:
    """The tables as of ``origin`` (history before it, the horizon's rows as the future) and the horizon's actuals."""
    end = origin + dt.timedelta(days=tables.spec.period_days * horizon)
    history = tables.sales.filter(pl.col(n.PERIOD) < origin)
    actual = tables.sales.filter((pl.col(n.PERIOD) >= origin) & (pl.col(n.PERIOD) < end))
    if not history.height or not actual.height:
        raise ValueError(f"origin {origin}: {history.height} history rows and {actual.height} horizon rows; both must be > 0")
    return replace(tables, sales=history, future=actual.drop(n.TARGET)), actual


def future_cells(encoded: EncodedPanelData, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(series, period) positions in the future arrays of ``frame``'s rows."""
    encoding = encoded.encoding
    store_code = {k: i for i, k in enumerate(encoding.store_keys)}
    product_code = {k: i for i, k in enumerate(encoding.product_keys)}
    series_code = {pair: i for i, pair in enumerate(encoding.series)}
    products = frame[n.SERIES_PRODUCT].to_list() if n.SERIES_PRODUCT in frame.columns else [None] * frame.height
    s = np.array([series_code[(store_code[a], product_code[b])] for a, b in zip(frame[n.SERIES_STORE].to_list(), products, strict=True)])
    t = (frame[n.PERIOD].to_numpy().astype("datetime64[D]") - encoded.future.periods[0]).astype(np.int64) // encoding.period_days
    return s.astype(np.int64), t.astype(np.int64)


def series_history(encoded: EncodedPanelData, spec: PanelSpec) -> PanelHistory:
    """The baselines' view of the history: the target with NaN gaps, covariates over history and horizon."""
    history, future = encoded.history, encoded.future
    prices = [c.name for c in spec.covariates if c.kind == "price"]
    covariates = {}
    for j, name in enumerate(encoded.encoding.series_names(spec)):
        # The regression baseline reads the own price as "log_price" (a log relative price: same slope).
        key = "log_price" if prices and name == prices[0] else name
        covariates[key] = np.concatenate([history.x_series[..., j], future.x_series[..., j]], axis=1).astype(np.float64)
    return PanelHistory(
        y=np.where(history.observed, history.y, np.nan).astype(np.float64),
        periods=history.periods,
        season_length=spec.season_length,
        covariates=covariates,
        store=encoded.dims.series_store.astype(np.int64),
        product=encoded.dims.series_product.astype(np.int64),
        events=tuple(e.name for e in spec.events),
    )


def _aggregate_history(history: PanelHistory, level: AggregateLevel) -> PanelHistory:
    inside = level.codes >= 0
    n_groups = len(level.labels)
    y = panel_metrics.aggregate(history.y[inside], level.codes[inside], n_groups, nan_policy="omit")
    covariates = {}
    counts = np.bincount(level.codes[inside], minlength=n_groups).reshape(-1, 1)
    for name, values in history.covariates.items():
        summed = panel_metrics.aggregate(np.nan_to_num(values[inside]), level.codes[inside], n_groups, nan_policy="omit")
        covariates[name] = summed / np.maximum(counts, 1)
    return PanelHistory(
        y=y, periods=history.periods, season_length=history.season_length, covariates=covariates,
        store=np.arange(n_groups, dtype=np.int64), product=np.zeros(n_groups, dtype=np.int64), events=history.events,
    )


def _finite(mean: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    return np.isfinite(mean) & np.all(np.isfinite(quantiles), axis=0)


def _score_level(level: str, y: np.ndarray, forecasts: dict[str, tuple[np.ndarray, np.ndarray]], levels, weights) -> list[dict]:
    """Every method's scores on the rows that every method forecasts (a baseline has nothing for a series
    without history; those rows are left out for all, and ``n`` says how many rows were scored)."""
    common = np.ones(y.shape, bool)
    for mean, quantiles in forecasts.values():
        common &= _finite(mean, quantiles)
    w = None if weights is None else weights[common]
    return [
        {"method": method, "level": level, **panel_metrics.scores(y[common], mean[common], quantiles[:, common], levels, w)}
        for method, (mean, quantiles) in forecasts.items()
    ]


def aggregate_actuals(level: AggregateLevel, s: np.ndarray, t: np.ndarray, y: np.ndarray, n_periods: int) -> tuple[np.ndarray, np.ndarray]:
    """[G, T] sums of the actuals and a mask of the group-periods with at least one row."""
    codes = level.codes[s]
    inside = codes >= 0
    total = np.zeros((len(level.labels), n_periods))
    seen = np.zeros((len(level.labels), n_periods), bool)
    np.add.at(total, (codes[inside], t[inside]), np.nan_to_num(y[inside]))
    seen[codes[inside], t[inside]] = True
    return total, seen


def score_methods(
    encoded: EncodedPanelData,
    actual: pl.DataFrame,
    aggregates: Sequence[AggregateLevel],
    model: PanelForecastArrays,
    baselines: dict[str, tuple[BaselineForecast, dict[str, BaselineForecast]]],
    weight_flag: str | None,
) -> pl.DataFrame:
    """Scores of the model and every baseline, at the series level and at each aggregate level, on the same rows."""
    s, t = future_cells(encoded, actual)
    y = actual[n.TARGET].to_numpy().astype(np.float64)
    scored = np.isfinite(y)
    weights = None
    if weight_flag is not None and weight_flag in actual.columns:
        weights = panel_metrics.holiday_weights(actual[weight_flag].fill_null(0).to_numpy() > 0.5)
    levels = model.levels
    series_forecasts = {MODEL: (model.mean[s, t], model.quantiles[:, s, t])}
    for name, (series, _) in baselines.items():
        series_forecasts[name] = (series.mean[s, t], series.quantiles[:, s, t])
    rows = _score_level(
        n.SERIES_LEVEL, y[scored], {k: (m[scored], q[:, scored]) for k, (m, q) in series_forecasts.items()}, levels,
        None if weights is None else weights[scored],
    )
    n_periods = encoded.future.n_periods
    for level in aggregates:
        total, seen = aggregate_actuals(level, s, t, y, n_periods)
        g, tt = np.nonzero(seen)
        level_weights = None
        if weights is not None:
            inside = level.codes[s] >= 0
            flagged = np.zeros(seen.shape, bool)
            flagged[level.codes[s][inside], t[inside]] = weights[inside] > 1
            level_weights = np.where(flagged[g, tt], 5.0, 1.0)
        mean, quantiles = model.aggregates[level.name]
        level_forecasts = {MODEL: (mean[g, tt], quantiles[:, g, tt])}
        for name, (_, per_level) in baselines.items():
            forecast = per_level[level.name]
            level_forecasts[name] = (forecast.mean[g, tt], forecast.quantiles[:, g, tt])
        rows += _score_level(level.name, total[g, tt], level_forecasts, levels, level_weights)
    return pl.DataFrame(rows)


def origin_key(seed: int, index: int) -> jax.Array:
    """The key of the ``index``-th origin of a backtest with ``seed``: the same wherever the origin runs."""
    return jax.random.fold_in(jax.random.key(seed), index)


def run_panel_backtest(
    tables: PanelTables,
    origin: dt.date,
    horizon: int,
    fit_config: PanelFitConfig,
    forecast_config: ForecastConfig,
    key: jax.Array,
    baselines: Sequence[str] = tuple(PANEL_BASELINES),
    weight_flag: str | None = WEIGHT_FLAG,
    on_progress: Callable = log_progress,
) -> PanelBacktest:
    """Fit on the history before ``origin``, forecast ``horizon`` periods, score the model and ``baselines``."""
    unknown = [b for b in baselines if b not in PANEL_BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; known: {list(PANEL_BASELINES)}")
    seconds: dict[str, float] = {}
    as_of, actual = split(tables, origin, horizon)
    encoded = encode_panel(as_of)
    key_fit, key_forecast = jax.random.split(key)
    t0 = time.perf_counter()
    fitted, fit = fit_encoded(encoded, tables.spec, fit_config, key_fit, on_progress)
    aggregates = aggregate_levels(as_of, encoded)
    model = forecast_encoded(fitted, encoded, aggregates, forecast_config, key_forecast)
    seconds[MODEL] = time.perf_counter() - t0

    history = series_history(encoded, tables.spec)
    n_future = encoded.future.n_periods
    forecasts = {}
    for name in baselines:
        t0 = time.perf_counter()
        method = PANEL_BASELINES[name]
        series = method(history, n_future, model.levels)
        per_level = {level.name: method(_aggregate_history(history, level), n_future, model.levels) for level in aggregates}
        forecasts[name] = (series, per_level)
        seconds[name] = time.perf_counter() - t0
        log.info("baseline %s: %.1fs", name, seconds[name])
    scores = score_methods(encoded, actual, aggregates, model, forecasts, weight_flag)
    return PanelBacktest(
        origin=origin, horizon=horizon, scores=scores.with_columns(pl.lit(origin).alias("origin")), fit=fit, seconds=seconds
    )


def default_horizon(spec: PanelSpec) -> int:
    return HORIZON.get(spec.period_days, 13)


SUMMARY_METRICS = ("wql", "coverage_50", "coverage_90", "wmae", "mape", "rmse_log")


def average_scores(scores: pl.DataFrame) -> pl.DataFrame:
    """The mean of each metric over the origins, per method and level, with the number of origins won on wQL."""
    best = scores.with_columns(
        (pl.col("wql") == pl.col("wql").min().over(["origin", "level"])).cast(pl.Int32).alias("best_wql")
    )
    return (
        best.group_by(["level", "method"], maintain_order=True)
        .agg(*[pl.col(m).mean() for m in SUMMARY_METRICS], pl.col("best_wql").sum().alias("origins_best_wql"), pl.len().alias("origins"))
        .sort(["level", "wql"])
    )


def summary_table(scores: pl.DataFrame) -> str:
    """A markdown table of ``average_scores``: one row per level and method."""
    averaged = average_scores(scores)
    header = "| level | method | wQL | 50% cover | 90% cover | WMAE | MAPE | RMSE log | best wQL at |"
    lines = [header, "|" + "---|" * 9]
    for row in averaged.iter_rows(named=True):
        lines.append(
            f"| {row['level']} | {row['method']} | {row['wql']:.4f} | {row['coverage_50']:.3f} | {row['coverage_90']:.3f} | "
            f"{row['wmae']:,.1f} | {row['mape']:.3f} | {row['rmse_log']:.3f} | {row['origins_best_wql']}/{row['origins']} |"
        )
    return "\n".join(lines)
