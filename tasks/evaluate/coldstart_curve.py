"""The cold-start curve: how accurate and how well calibrated new stores' forecasts are after N days of history.

Hold out a random set of stores and fit the globals on the other stores'
history before the origin. Each held-out store then opens N days before the
origin: its window starts there, it is given the first N days of it (its N
most recent days) and the rest of the window, the horizon from the origin, is
forecast and scored. It is fitted locally against the globals fitted without
it. Every N is scored on the held-out stores' horizon, every method on the rows
that all of them forecast (at N = 1, a Sunday before a Monday origin, the
per-store baselines have nothing to go on for stores closed that day), next to

- the same stores fitted locally on their whole history against the same
  globals (what their forecast costs once they are established),
- the other stores' forecast of the same days (the established stores),
- the baselines given the same N days, and the pooling variants of the model
  fitted without the held-out stores (among them ``seed_like``, the seed's
  model: the reference a new store's forecast has to beat).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import jax
import numpy as np
import polars as pl

from tasks import names as n
from tasks.config import COLD_START_DAYS, COLD_START_WINDOW_DAYS, FitConfig, ForecastConfig
from tasks.data.encode import EncodedData, EncodedPanel, build_spec, encode
from tasks.data.validate import ValidatedInputs
from tasks.evaluate.backtest import (
    MODEL_VARIANTS,
    BacktestSplit,
    default_origin,
    panel_forecast_frame,
    score,
    score_columns,
    score_methods,
    score_rows,
    split_at,
    store_bootstrap,
)
from tasks.evaluate.baselines import BASELINES, PanelForecast
from tasks.model.inference import FitProgress
from tasks.model.state import FittedModel
from tasks.pipeline import cold_start, fit_history, forecast_frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ColdStartCurve:
    origin: dt.date
    held_out: tuple[int, ...]
    established: dict[str, float]  # the other stores' scores over the same horizon
    full_history: dict[str, float]  # the held-out stores fitted on their whole history, all their horizon's rows
    points: tuple[dict[str, float | int | str], ...]  # one per (method, N): "method", "days", the scores and their s.e.
    rows: pl.DataFrame  # every scored row with "method" and "days" (null for the whole-history reference)


def _no_progress(progress: FitProgress) -> None:
    pass


def held_out_stores(split: BacktestSplit, n_stores: int, seed: int) -> np.ndarray:
    """A seeded random choice of stores open on some day of the ``COLD_START_WINDOW_DAYS`` before the origin and with
    rows in the horizon."""
    window_start = split.origin - dt.timedelta(days=COLD_START_WINDOW_DAYS)
    in_window = split.history.filter(pl.col(n.DATE) >= window_start).group_by(n.STORE).agg(pl.col(n.OPEN).sum())
    open_stores = in_window.filter(pl.col(n.OPEN) > 0)[n.STORE].to_numpy()
    eligible = np.intersect1d(open_stores, split.actual[n.STORE].unique().to_numpy())
    if eligible.size <= n_stores:
        raise ValueError(f"only {eligible.size} stores can be held out; asked for {n_stores} (and some must stay)")
    return np.sort(np.random.default_rng(seed).choice(eligible, n_stores, replace=False)).astype(np.int32)


def first_days(history: pl.DataFrame, origin: dt.date, n_days: int) -> pl.DataFrame:
    """The rows of a store that opened ``n_days`` before ``origin``: its history's last ``n_days`` calendar days."""
    return history.filter(pl.col(n.DATE).is_between(origin - dt.timedelta(days=n_days), origin - dt.timedelta(days=1)))


def _local_rows(
    fitted: FittedModel,
    given: pl.DataFrame,
    horizon: EncodedPanel,
    stores: pl.DataFrame,
    calendar: pl.DataFrame,
    actual: pl.DataFrame,
    held: np.ndarray,
    fit_config: FitConfig,
    forecast_config: ForecastConfig,
    key: jax.Array,
) -> pl.DataFrame:
    """Local fits of the held-out stores on ``given`` against ``fitted``'s globals; the scored rows of their
    ``horizon`` (the future panel of ``given`` encoded with the calendar)."""
    key_local, key_forecast = jax.random.split(key)
    inputs = ValidatedInputs(train=given, stores=stores, future=calendar, paths={})
    extended, _, _ = cold_start(fitted, inputs, tuple(held.tolist()), fit_config, key_local, _no_progress)
    return score_rows(forecast_frame(extended, horizon, calendar, forecast_config, key_forecast), actual)


def _baseline_rows(name: str, history, future, actual: pl.DataFrame, levels: tuple[float, ...]) -> pl.DataFrame:
    forecast: PanelForecast = BASELINES[name](history, future)
    return score_rows(panel_forecast_frame(future, forecast, levels), actual)


def cold_start_curve(
    train: pl.DataFrame,
    stores: pl.DataFrame,
    fit_config: FitConfig,
    forecast_config: ForecastConfig,
    key: jax.Array,
    n_stores: int = 100,
    days: tuple[int, ...] = COLD_START_DAYS,
    horizon_days: int = 48,
    baselines: tuple[str, ...] = (),
    seed: int = 0,
    origin: dt.date | None = None,
) -> ColdStartCurve:
    """The curve at ``origin`` (default: ``horizon_days`` before the last day of ``train``)."""
    if max(days) > COLD_START_WINDOW_DAYS or min(days) < 1:
        raise ValueError(f"days must lie in 1..{COLD_START_WINDOW_DAYS}, got {days}")
    origin = origin or default_origin(train, horizon_days)
    split = split_at(train, origin, horizon_days)
    held = held_out_stores(split, n_stores, seed)
    is_held = pl.col(n.STORE).is_in(held.tolist())
    held_history = split.history.filter(is_held)
    calendar, actual = split.calendar.filter(is_held), split.actual.filter(is_held)
    levels = tuple(forecast_config.quantiles)

    spec = build_spec(stores, fit_config.yearly_fourier_order, fit_config.monthly_fourier_order)
    encoded = encode(split.history.filter(~is_held), stores, split.calendar.filter(~is_held), spec)
    key_fit, key_forecast, key_local, key_variants = jax.random.split(key, 4)
    log.info("cold-start curve: global fit without %d held-out stores", held.size)
    fitted, _ = fit_history(encoded, fit_config, key_fit, encoded.future.stores, _no_progress)
    established = score(
        score_rows(
            forecast_frame(fitted, encoded.future, split.calendar.filter(~is_held), forecast_config, key_forecast), split.actual
        )
    )
    local = (stores, calendar, actual, held, fit_config, forecast_config)

    def encode_held(rows: pl.DataFrame) -> EncodedData:
        return encode(rows, stores, calendar, spec, history_end=fitted.anchor)

    reference = _local_rows(fitted, held_history, encode_held(held_history).future, *local, jax.random.fold_in(key_local, 0))
    full_history = {**score(reference), **store_bootstrap(reference, seed=seed)}
    rows = [score_columns(reference).with_columns(pl.lit("model").alias("method"), pl.lit(None, pl.Int32).alias("days"))]

    # The pooling variants are fitted without the held-out stores as the model is, then fitted locally the same way.
    variants = {"model": fitted}
    for name in (b for b in baselines if b in MODEL_VARIANTS):
        log.info("cold-start curve: global fit of the %s variant", name)
        variant_config = fit_config.model_copy(update={"pooling": MODEL_VARIANTS[name]})
        variants[name], _ = fit_history(
            encoded, variant_config, jax.random.fold_in(key_variants, len(variants)), None, _no_progress
        )

    points: list[dict[str, float | int | str]] = []
    for i, n_days in enumerate(sorted(days), start=1):
        given = first_days(held_history, origin, n_days)
        own = encode_held(given)
        key_n = jax.random.fold_in(key_local, i)
        scored = {name: _local_rows(model_fit, given, own.future, *local, key_n) for name, model_fit in variants.items()}
        # The baselines see the same N days of these stores and, for the global one, every other store's history.
        for name in (b for b in baselines if b in BASELINES):
            both = encode_held(pl.concat([split.history.filter(~is_held), given], how="vertical_relaxed")) if name == "lightgbm" else own
            scored[name] = _baseline_rows(name, both.history, both.future, actual, levels)
        results, stacked = score_methods(scored)
        for name, scores in results.items():
            bootstrap = store_bootstrap(stacked.filter(pl.col("method") == name), seed=seed)
            points.append({"method": name, "days": n_days, **scores, **bootstrap})
        rows.append(stacked.with_columns(pl.lit(n_days, pl.Int32).alias("days")))
        log.info("cold-start curve: %d days done", n_days)
    return ColdStartCurve(
        origin, tuple(int(s) for s in held), established, full_history, tuple(points), pl.concat(rows, how="diagonal_relaxed")
    )
