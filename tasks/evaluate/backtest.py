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
import scoringrules as sr

from tasks import names as n
from tasks.config import FitConfig, ForecastConfig
from tasks.data.encode import EncodedPanel, build_spec, encode
from tasks.evaluate import metrics
from tasks.evaluate.baselines import BASELINES, PanelForecast
from tasks.model.inference import FitProgress, log_progress
from tasks.pipeline import FitReport, fit_history, forecast_frame

log = logging.getLogger(__name__)



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
    scored: pl.DataFrame  # one row per forecast row and method, with its actual sales
    fit: FitReport
    methods: dict[str, dict[str, float]]  # every method's scores, the model's included

    @property
    def metrics(self) -> dict[str, float]:
        """The model's scores."""
        return self.methods["model"]


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


class DrawScores:
    """CRPS and randomised PIT of each scored [store, day] of a panel, from the predictive draws.

    Pass an instance as ``on_draws`` to the forecast: it sees every chunk's
    draws once, so the draws never have to be held all at once.
    """

    def __init__(self, panel: EncodedPanel, actual: pl.DataFrame, seed: int = 0) -> None:
        self.stores, self.dates = panel.stores, panel.dates
        self.sales = np.full((panel.n_stores, panel.n_days), np.nan)
        scored = actual.filter((pl.col(n.OPEN) == 1) & (pl.col(n.SALES) > 0))
        s_idx = panel.store_positions(scored[n.STORE].to_numpy())
        t_idx = (scored[n.DATE].to_numpy().astype("datetime64[D]") - panel.dates[0]).astype(np.int64)
        self.sales[s_idx, t_idx] = scored[n.SALES].to_numpy()
        self.crps = np.full_like(self.sales, np.nan)
        self.pit = np.full_like(self.sales, np.nan)
        self._rng = np.random.default_rng(seed)

    def __call__(self, rows: np.ndarray, draws: np.ndarray) -> None:
        y = self.sales[rows]
        known = np.isfinite(y)
        ensemble = np.moveaxis(np.asarray(draws, dtype=float), 0, -1)  # [stores, days, draws]
        self.crps[rows] = np.where(known, sr.crps_ensemble(np.where(known, y, 0.0), ensemble, m_axis=-1), np.nan)
        self.pit[rows] = np.where(known, randomized_pit(np.where(known, y, 0.0), ensemble, self._rng), np.nan)

    def frame(self) -> pl.DataFrame:
        s_idx, t_idx = np.nonzero(np.isfinite(self.crps))
        return pl.DataFrame(
            {
                n.STORE: self.stores[s_idx].astype(np.int32),
                n.DATE: self.dates[t_idx].astype("datetime64[D]"),
                "crps": self.crps[s_idx, t_idx],
                "pit": self.pit[s_idx, t_idx],
            }
        ).with_columns(pl.col(n.DATE).cast(pl.Date))


def randomized_pit(y: np.ndarray, ensemble: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Randomised PIT of counts ``y`` under the empirical law of ``ensemble`` (draws on the last axis):
    uniform between F(y - 1) and F(y), so that a calibrated forecast gives uniform values."""
    below = (ensemble < y[..., None]).mean(axis=-1)
    at_or_below = (ensemble <= y[..., None]).mean(axis=-1)
    return below + rng.random(y.shape) * (at_or_below - below)


def pit_histogram(pit: np.ndarray, bins: int = 10) -> np.ndarray:
    """Share of PIT values in each of ``bins`` equal bins of [0, 1] (a calibrated forecast: all 1 / bins)."""
    values = np.asarray(pit, float)
    values = values[np.isfinite(values)]
    counts, _ = np.histogram(values, bins=bins, range=(0.0, 1.0))
    return counts / max(1, values.size)


def score_rows(forecast: pl.DataFrame, actual: pl.DataFrame, draw_scores: pl.DataFrame | None = None) -> pl.DataFrame:
    """Forecast rows joined with their actual sales; ``scored`` marks open days with positive sales.

    With ``draw_scores`` (``DrawScores.frame()``), the rows carry their CRPS and PIT too.
    """
    rows = forecast.join(actual.select(n.STORE, n.DATE, n.SALES, n.OPEN), on=[n.STORE, n.DATE], how="inner").with_columns(
        ((pl.col(n.OPEN) == 1) & (pl.col(n.SALES) > 0)).alias("scored")
    )
    if draw_scores is not None:
        rows = rows.join(draw_scores, on=[n.STORE, n.DATE], how="left")
    return rows


def score(scored: pl.DataFrame) -> dict[str, float]:
    """The backtest metrics over the scored rows of ``score_rows``."""
    rows = scored.filter(pl.col("scored"))
    if not rows.height:
        raise ValueError("no open day with positive sales to score")
    sales = rows[n.SALES].to_numpy().astype(float)
    levels = tuple(q for q in n.QUANTILE_COLUMNS if n.quantile_column(q) in rows.columns)
    q = {level: rows[n.quantile_column(level)].to_numpy().astype(float) for level in levels}
    result = {
        "rmspe": metrics.rmspe(sales, rows[n.MEAN].to_numpy()),
        "rmspe_median": metrics.rmspe(sales, q[0.5]),
        "mape": float(np.mean(np.abs(sales - q[0.5]) / sales)),
        "wql": metrics.scaled_quantile_loss(sales, np.stack([q[level] for level in levels]), levels),
        "coverage_50": metrics.coverage(sales, q[0.25], q[0.75]),
        "coverage_90": metrics.coverage(sales, q[0.05], q[0.95]),
        "n_scored": float(rows.height),
    }
    if "crps" in rows.columns and rows["crps"].null_count() < rows.height:
        # CRPS is in units of sales: divided by mean sales it compares across data sets, like wQL.
        result["crps"] = float(rows["crps"].mean())
        result["crps_scaled"] = result["crps"] / float(sales.mean())
    return result


BOOTSTRAP_RESAMPLES = 1000


def squared_percentage_error() -> pl.Expr:
    """Each scored row's squared percentage error of the mean, the summand of RMSPE."""
    return ((pl.col(n.SALES) - pl.col(n.MEAN)) / pl.col(n.SALES)) ** 2


def _store_sums(scored: pl.DataFrame, stores: np.ndarray) -> np.ndarray:
    """Per store of ``stores`` [S, 4]: scored days, squared percentage errors, days inside the 50% and 90% intervals."""
    rows = scored.filter(pl.col("scored")).with_columns(
        squared_percentage_error().alias("_pe2"),
        pl.col(n.SALES).is_between(pl.col(n.quantile_column(0.25)), pl.col(n.quantile_column(0.75))).alias("_in50"),
        pl.col(n.SALES).is_between(pl.col(n.quantile_column(0.05)), pl.col(n.quantile_column(0.95))).alias("_in90"),
    )
    sums = rows.group_by(n.STORE).agg(pl.len().alias("_n"), pl.col("_pe2").sum(), pl.col("_in50").sum(), pl.col("_in90").sum())
    frame = pl.DataFrame({n.STORE: stores}, schema={n.STORE: sums.schema[n.STORE]}).join(sums, on=n.STORE, how="left")
    return frame.select("_n", "_pe2", "_in50", "_in90").fill_null(0).to_numpy().astype(np.float64)


def _store_weights(n_stores: int, n_resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).multinomial(n_stores, np.full(n_stores, 1.0 / n_stores), size=n_resamples).astype(np.float64)


def store_bootstrap(scored: pl.DataFrame, n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict[str, float]:
    """Standard errors of RMSPE and of the 50%/90% coverage when the stores are resampled with replacement.

    A store's days are not independent draws (a store whose level the
    forecast misses is missed on all of its days), so with 100 stores the
    standard error of a coverage is a few points: the resampling unit is the store.
    """
    stores = scored.filter(pl.col("scored"))[n.STORE].unique().sort().to_numpy()
    totals = _store_weights(stores.size, n_resamples, seed) @ _store_sums(scored, stores)  # [B, 4]
    days = totals[:, 0]
    return {
        "rmspe_se": float(np.std(np.sqrt(totals[:, 1] / days), ddof=1)),
        "coverage_50_se": float(np.std(totals[:, 2] / days, ddof=1)),
        "coverage_90_se": float(np.std(totals[:, 3] / days, ddof=1)),
    }


def rmspe_ratio_interval(
    scored: pl.DataFrame, reference: pl.DataFrame, level: float = 0.9, n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Central ``level`` interval of RMSPE(scored) / RMSPE(reference) over the same resampled stores (paired)."""
    stores = scored.filter(pl.col("scored"))[n.STORE].unique().sort().to_numpy()
    weights = _store_weights(stores.size, n_resamples, seed)
    a, b = weights @ _store_sums(scored, stores), weights @ _store_sums(reference, stores)
    ratio = np.sqrt(a[:, 1] / a[:, 0]) / np.sqrt(b[:, 1] / b[:, 0])
    low, high = np.quantile(ratio, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def panel_forecast_frame(panel: EncodedPanel, forecast: PanelForecast, levels: tuple[float, ...]) -> pl.DataFrame:
    """A baseline's forecast in the forecast file's columns, quantiles taken from its sample."""
    s_idx, t_idx = np.nonzero(np.isfinite(forecast.mean))
    quantiles = np.quantile(forecast.ensemble[s_idx, t_idx], levels, axis=-1)
    return pl.DataFrame(
        {
            n.STORE: panel.stores[s_idx].astype(np.int32),
            n.DATE: panel.dates[t_idx].astype("datetime64[D]"),
            n.MEAN: forecast.mean[s_idx, t_idx],
            **{n.quantile_column(q): quantiles[i] for i, q in enumerate(levels)},
        }
    ).with_columns(pl.col(n.DATE).cast(pl.Date))


# The model with other pooling, scored as baselines: what partial pooling buys.
MODEL_VARIANTS = {"pooled": "complete", "unpooled": "none", "seed_like": "seed_like"}


def _model_rows(
    encoded, split: BacktestSplit, fit_config: FitConfig, forecast_config: ForecastConfig, key: jax.Array, on_progress
) -> tuple[pl.DataFrame, FitReport]:
    """Fit the model (with ``fit_config``'s pooling) on the split's history; its horizon's scored rows with CRPS and PIT."""
    key_fit, key_forecast = jax.random.split(key)
    fitted, report = fit_history(encoded, fit_config, key_fit, encoded.future.stores, on_progress)
    draw_scores = DrawScores(encoded.future, split.actual)
    frame = forecast_frame(fitted, encoded.future, split.calendar, forecast_config, key_forecast, draw_scores)
    return score_rows(frame, split.actual, draw_scores.frame()), report


def score_columns(rows: pl.DataFrame) -> pl.DataFrame:
    """Scored rows cut to what the scores read: keys, forecast, sales, ``scored`` (and CRPS and PIT when there)."""
    columns = [n.STORE, n.DATE, n.MEAN, *[c for c in rows.columns if c.startswith("q")], n.SALES, "scored"]
    return rows.select(columns + [c for c in ("crps", "pit") if c in rows.columns])


def score_methods(scored: dict[str, pl.DataFrame]) -> tuple[dict[str, dict[str, float]], pl.DataFrame]:
    """Every method's scores over the rows that every method forecast, and all rows stacked with a method column."""
    keys = [n.STORE, n.DATE]
    common = None
    for rows in scored.values():
        forecast_rows = rows.filter(pl.col("scored") & pl.col(n.MEAN).is_finite()).select(keys)
        common = forecast_rows if common is None else common.join(forecast_rows, on=keys, how="inner")
    assert common is not None
    common = common.with_columns(pl.lit(True).alias("_common"))
    results, stacked = {}, []
    for method, rows in scored.items():
        rows = rows.join(common, on=keys, how="left").with_columns(
            (pl.col("scored") & pl.col("_common").fill_null(False)).alias("scored")
        ).drop("_common")
        results[method] = score(rows)
        stacked.append(score_columns(rows).with_columns(pl.lit(method).alias("method")))
    return results, pl.concat(stacked, how="diagonal_relaxed")


def run_backtest(
    train: pl.DataFrame,
    stores: pl.DataFrame,
    fit_config: FitConfig,
    forecast_config: ForecastConfig,
    key: jax.Array,
    horizon_days: int = 48,
    origin: dt.date | None = None,
    on_progress: Callable[[FitProgress], None] = log_progress,
    baselines: tuple[str, ...] = (),
) -> BacktestResult:
    """Fit on the history before ``origin`` (default: ``horizon_days`` before the end), forecast, score;
    with ``baselines`` (names in tasks.evaluate.baselines.BASELINES), score those too, all on the same rows."""
    unknown = [b for b in baselines if b not in BASELINES and b not in MODEL_VARIANTS]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; known: {sorted([*BASELINES, *MODEL_VARIANTS])}")
    origin = origin or default_origin(train, horizon_days)
    split = split_at(train, origin, horizon_days)
    log.info("backtest: fit on %d rows before %s, score the %d days from it", split.history.height, origin, horizon_days)
    spec = build_spec(stores, fit_config.yearly_fourier_order, fit_config.monthly_fourier_order)
    encoded = encode(split.history, stores, split.calendar, spec)
    scored = {}
    scored["model"], report = _model_rows(encoded, split, fit_config, forecast_config, key, on_progress)
    levels = tuple(forecast_config.quantiles)
    for name in baselines:
        log.info("backtest: baseline %s", name)
        if name in MODEL_VARIANTS:
            variant = fit_config.model_copy(update={"pooling": MODEL_VARIANTS[name]})
            # Each variant's key follows from its pooling, so that adding a variant leaves the others' draws alone.
            variant_key = jax.random.fold_in(key, len(variant.pooling))
            scored[name], _ = _model_rows(encoded, split, variant, forecast_config, variant_key, on_progress)
            continue
        baseline = BASELINES[name](encoded.history, encoded.future)
        sample_scores = DrawScores(encoded.future, split.actual)
        sample_scores(np.arange(encoded.future.n_stores), np.moveaxis(baseline.ensemble, -1, 0))
        scored[name] = score_rows(panel_forecast_frame(encoded.future, baseline, levels), split.actual, sample_scores.frame())
    if baselines:
        methods, rows = score_methods(scored)
    else:
        methods, rows = {"model": score(scored["model"])}, scored["model"]
    log.info("backtest from %s: %s", origin, ", ".join(f"{k} {v:.4g}" for k, v in methods["model"].items()))
    return BacktestResult(origin, horizon_days, rows, report, methods)


@dataclass(frozen=True)
class BacktestSuite:
    """Backtests from several origins: each one's result, and every method's scores over all of them."""

    results: tuple[BacktestResult, ...]
    overall: dict[str, dict[str, float]]
    rows: pl.DataFrame  # every origin's scored rows, with ``origin`` and ``method`` columns


def run_backtests(
    train: pl.DataFrame,
    stores: pl.DataFrame,
    fit_config: FitConfig,
    forecast_config: ForecastConfig,
    key: jax.Array,
    origins: tuple[dt.date, ...] = (),
    horizon_days: int = 48,
    baselines: tuple[str, ...] = (),
    on_progress: Callable[[FitProgress], None] = log_progress,
) -> BacktestSuite:
    """``run_backtest`` from each origin (default: one, ``horizon_days`` before the end), then overall scores."""
    origins = tuple(sorted(origins)) or (default_origin(train, horizon_days),)
    results = tuple(
        run_backtest(
            train, stores, fit_config, forecast_config, jax.random.fold_in(key, i), horizon_days, origin, on_progress, baselines
        )
        for i, origin in enumerate(origins)
    )
    rows = pl.concat(
        [r.scored.with_columns(pl.lit(r.origin).alias("origin")) for r in results], how="vertical_relaxed"
    )
    if "method" not in rows.columns:
        rows = rows.with_columns(pl.lit("model").alias("method"))
    methods = rows["method"].unique(maintain_order=True).to_list()
    overall = {m: score(rows.filter(pl.col("method") == m)) for m in methods}
    return BacktestSuite(results, overall, rows)
