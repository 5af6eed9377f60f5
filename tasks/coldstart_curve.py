"""The cold-start curve: how accurate and how well calibrated new stores' forecasts are after N days of history.

Hold out a random set of stores; fit the globals on the other stores' history
before the origin; give each held-out store only the first N days of the
28 days before the origin, fit it locally against those globals, and forecast
the horizon from the origin. Every N is scored on the same rows (the held-out
stores' horizon), next to the established stores' forecast of the same days,
and next to baselines given the same N days.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import jax
import numpy as np
import polars as pl

from tasks import names as n
from tasks.backtest import default_origin, panel_forecast_frame, score, score_rows, split_at
from tasks.baselines import BASELINES, PanelForecast
from tasks.config import FitConfig, ForecastConfig
from tasks.encode import build_spec, encode
from tasks.inference import FitProgress
from tasks.pipeline import cold_start, fit_history, forecast_frame
from tasks.validate import ValidatedInputs

log = logging.getLogger(__name__)

WINDOW_DAYS = 28
DEFAULT_DAYS = (1, 3, 7, 14, 28)


@dataclass(frozen=True)
class ColdStartCurve:
    origin: dt.date
    held_out: tuple[int, ...]
    established: dict[str, float]  # the other stores' scores over the same horizon
    points: tuple[dict[str, float | int | str], ...]  # one per (method, N): "method", "days" and the scores


def _no_progress(progress: FitProgress) -> None:
    pass


def _baseline_scores(name: str, history, future, actual: pl.DataFrame, levels: tuple[float, ...]) -> dict[str, float]:
    forecast: PanelForecast = BASELINES[name](history, future)
    return score(score_rows(panel_forecast_frame(future, forecast, levels), actual))


def cold_start_curve(
    train: pl.DataFrame,
    stores: pl.DataFrame,
    fit_config: FitConfig,
    forecast_config: ForecastConfig,
    key: jax.Array,
    n_stores: int = 100,
    days: tuple[int, ...] = DEFAULT_DAYS,
    horizon_days: int = 48,
    baselines: tuple[str, ...] = (),
    seed: int = 0,
) -> ColdStartCurve:
    if max(days) > WINDOW_DAYS or min(days) < 1:
        raise ValueError(f"days must lie in 1..{WINDOW_DAYS}, got {days}")
    origin = default_origin(train, horizon_days)
    window_start = origin - dt.timedelta(days=WINDOW_DAYS)
    split = split_at(train, origin, horizon_days)
    # Held-out stores: open on some day of the window and of the horizon, so that every N has rows to score.
    in_window = split.history.filter(pl.col(n.DATE) >= window_start).group_by(n.STORE).agg(pl.col(n.OPEN).sum())
    eligible = np.intersect1d(in_window.filter(pl.col(n.OPEN) > 0)[n.STORE].to_numpy(), split.actual[n.STORE].unique().to_numpy())
    if eligible.size <= n_stores:
        raise ValueError(f"only {eligible.size} stores can be held out; asked for {n_stores} (and some must stay)")
    held = np.sort(np.random.default_rng(seed).choice(eligible, n_stores, replace=False)).astype(np.int32)
    is_held = pl.col(n.STORE).is_in(held.tolist())

    spec = build_spec(stores, fit_config.yearly_fourier_order, fit_config.monthly_fourier_order)
    encoded = encode(split.history.filter(~is_held), stores, split.calendar.filter(~is_held), spec)
    key_fit, key_forecast, key_local = jax.random.split(key, 3)
    log.info("cold-start curve: global fit without %d held-out stores", held.size)
    fitted, _ = fit_history(encoded, fit_config, key_fit, encoded.future.stores, _no_progress)
    established = score(
        score_rows(forecast_frame(fitted, encoded.future, split.calendar.filter(~is_held), forecast_config, key_forecast), split.actual)
    )

    calendar, actual = split.calendar.filter(is_held), split.actual.filter(is_held)
    levels = tuple(forecast_config.quantiles)
    points: list[dict[str, float | int | str]] = []
    for i, n_days in enumerate(sorted(days)):
        given = split.history.filter(is_held & pl.col(n.DATE).is_between(window_start, window_start + dt.timedelta(days=n_days - 1)))
        inputs = ValidatedInputs(train=given, stores=stores, future=calendar, paths={})
        extended, _, _ = cold_start(fitted, inputs, tuple(held.tolist()), fit_config, jax.random.fold_in(key_local, i), _no_progress)
        held_encoded = encode(given, stores, calendar, spec, history_end=fitted.anchor)
        frame = forecast_frame(extended, held_encoded.future, calendar, forecast_config, jax.random.fold_in(key_forecast, i + 1))
        points.append({"method": "model", "days": n_days, **score(score_rows(frame, actual))})
        # The baselines see the same N days of these stores and, for the global one, every other store's history.
        for name in (b for b in baselines if b in BASELINES):
            pool = pl.concat([split.history.filter(~is_held), given], how="vertical_relaxed") if name == "lightgbm" else given
            both = encode(pool, stores, calendar, spec, history_end=fitted.anchor)
            points.append({"method": name, "days": n_days, **_baseline_scores(name, both.history, both.future, actual, levels)})
        log.info("cold-start curve: %d days done", n_days)
    return ColdStartCurve(origin, tuple(int(s) for s in held), established, tuple(points))
