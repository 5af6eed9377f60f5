"""Baselines for any retailer's panel of store x product series, weekly or daily (arrays in, arrays out).

The Bayesian model is compared with these at several backtest origins, every method on the same rows, at the
series level and at aggregate levels. Each baseline takes a ``PanelHistory`` (the target on a regular period
grid, NaN where a period is missing, and the covariates known over history and horizon) and returns a
``BaselineForecast``: a mean and quantiles per series and horizon period.

- ``seasonal_naive``: last season's value, intervals from the series' own seasonal-difference errors.
- ``ets``: statsforecast's AutoETS per series (MSTL + AutoETS for seasons longer than 24 periods).
- ``lightgbm_quantile``: one global LightGBM model per quantile and one for the mean, direct (non-recursive).
- ``loglog_price_regression``: per series, log y on log price and the other covariates, lognormal predictive.

statsforecast and LightGBM are optional (the ``eval`` extra); the two other baselines need only NumPy.
Nothing here seeds a global generator: randomness comes from explicit seeds.

Conventions shared by all baselines:

- A series without any observation in the history gets NaN forecasts from every baseline but LightGBM's,
  which has nothing but codes and covariates to go on and returns NaN too (see ``lightgbm_quantile``), so that
  all methods forecast the same rows.
- NaN covariates are allowed: the regression leaves their rows out of the fit and imputes the series' mean
  in the horizon; LightGBM treats them as missing values.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from statistics import NormalDist

import numpy as np

DEFAULT_LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)
MISSING_EXTRA = "the {name} baseline needs {package}: pip install 'bhm-forecast[eval]'"

MIN_OWN_ERRORS = 10  # seasonal naive: fewer seasonal-difference errors than this and a series borrows the pooled ones
MIN_ETS_OBS = 8  # ets: fewer observations than this and a series gets its mean and spread
LONG_SEASON = 24  # statsforecast's ETS ignores seasons longer than this (as R's forecast::ets does)
LOG_FLOOR_SHARE = 0.01  # log models clip y at this share of the series' median positive value
LGB_TREES = 200
LGB_MAX_ROWS = 60_000  # training rows kept (drawn at random with the seed) to keep the fits to seconds
# One thread by default: OpenMP threads spin while they wait, and on the shared 2-core machine (load 2-6 from other
# work) two threads were 10x slower, not faster (200 trees on 2,300 rows: 0.35 s with one thread, 3.8 s with two;
# the orange-juice panel's 75,000 rows x 8 models: 47 s with one thread, 274 s with two; walmart's, 60,000 rows x 6
# models: 19 s with one thread, 74 s with two, the same forecasts). Pass num_threads on a machine of your own.
LGB_THREADS = 1
ETS_MIN_PARALLEL = 500  # fewer series run in-process: two spawned workers importing statsforecast cost ~10 s
ETS_SANE_MULTIPLE = 10.0  # an ETS quantile beyond this multiple of the series' largest |y| is a broken fit


@dataclass(frozen=True)
class PanelHistory:
    """A panel's history on a regular period grid, with the covariates known over history and horizon.

    ``covariates`` are [S, T + H] for the horizon H a baseline is asked for: a baseline checks the width.
    """

    y: np.ndarray  # float64 [S, T], NaN where the period is missing (absent row or masked)
    periods: np.ndarray  # datetime64[D] [T], regular grid
    season_length: int  # 52 for weekly data, 7 for daily
    covariates: dict[str, np.ndarray]  # name -> float [S, T + H]
    store: np.ndarray  # int [S], 0..n_stores-1
    product: np.ndarray  # int [S], 0..n_products-1
    events: tuple[str, ...] = ()  # covariates that are the spec's dated events (the log-log regression leaves them out)

    def __post_init__(self) -> None:
        y = np.asarray(self.y)
        if y.ndim != 2 or y.shape[1] == 0:
            raise ValueError(f"y must be [S, T] with T >= 1, got shape {y.shape}")
        if not np.issubdtype(y.dtype, np.floating):
            raise ValueError(f"y must be a float array (NaN marks a missing period), got dtype {y.dtype}")
        if np.isinf(y).any():
            raise ValueError(f"y has {int(np.isinf(y).sum())} infinite value(s)")
        n_series, n_periods = y.shape
        periods = np.asarray(self.periods)
        if periods.shape != (n_periods,) or not np.issubdtype(periods.dtype, np.datetime64):
            raise ValueError(f"periods must be datetime64 [T] = [{n_periods}], got shape {periods.shape} and dtype {periods.dtype}")
        steps = np.diff(periods.astype("datetime64[D]").astype(np.int64))
        if steps.size and (steps[0] <= 0 or (steps != steps[0]).any()):
            raise ValueError(f"periods must be a regular increasing grid, got steps (days) {sorted(set(steps.tolist()))}")
        if int(self.season_length) < 1:
            raise ValueError(f"season_length must be >= 1, got {self.season_length}")
        for name in ("store", "product"):
            codes = np.asarray(getattr(self, name))
            if codes.shape != (n_series,) or not np.issubdtype(codes.dtype, np.integer):
                raise ValueError(f"{name} must be int [S] = [{n_series}], got shape {codes.shape} and dtype {codes.dtype}")
            if codes.size and codes.min() < 0:
                raise ValueError(f"{name} codes must be >= 0, got {codes.min()}")
        if unknown := sorted(set(self.events) - set(self.covariates)):
            raise ValueError(f"events {unknown} are not covariates {sorted(self.covariates)}")
        for name, values in self.covariates.items():
            values = np.asarray(values)
            if values.ndim != 2 or values.shape[0] != n_series or values.shape[1] < n_periods:
                raise ValueError(f"covariate {name!r} must be [S, T + H] with S={n_series}, T={n_periods}, got shape {values.shape}")

    @property
    def n_series(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_periods(self) -> int:
        return int(self.y.shape[1])

    @property
    def step_days(self) -> int:
        """Days between periods (7 for weekly data); 1 for a one-period history."""
        p = np.asarray(self.periods).astype("datetime64[D]").astype(np.int64)
        return int(p[1] - p[0]) if p.size > 1 else 1

    def future_periods(self, horizon: int) -> np.ndarray:
        """The ``horizon`` periods after the history, on the same grid."""
        last = np.asarray(self.periods).astype("datetime64[D]")[-1]
        return last + np.arange(1, horizon + 1) * np.timedelta64(self.step_days, "D")


@dataclass(frozen=True)
class BaselineForecast:
    method: str
    mean: np.ndarray  # [S, H]
    quantiles: np.ndarray  # [Q, S, H], non-decreasing along Q
    levels: tuple[float, ...]
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # method-specific fits (e.g. the regression's coefficients)

    def __post_init__(self) -> None:
        if self.mean.ndim != 2:
            raise ValueError(f"{self.method}: mean must be [S, H], got shape {self.mean.shape}")
        if self.quantiles.shape != (len(self.levels), *self.mean.shape):
            raise ValueError(f"{self.method}: quantiles have shape {self.quantiles.shape}, expected {(len(self.levels), *self.mean.shape)}")
        steps = np.diff(self.quantiles, axis=0)
        if (steps[np.isfinite(steps)] < 0).any():
            raise ValueError(f"{self.method}: quantiles decrease along the levels")


# ---------------------------------------------------------------------------------------------------------------
# Checks and shared helpers


def _check_levels(levels: tuple[float, ...]) -> tuple[float, ...]:
    values = tuple(float(q) for q in levels)
    if not values:
        raise ValueError("levels must name at least one quantile level")
    if any(not 0 < q < 1 for q in values):
        raise ValueError(f"quantile levels must lie strictly between 0 and 1, got {levels!r}")
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(f"quantile levels must be strictly increasing, got {levels!r}")
    return values


def _check_request(history: PanelHistory, horizon: int, levels: tuple[float, ...]) -> tuple[float, ...]:
    if int(horizon) != horizon or horizon < 1:
        raise ValueError(f"horizon must be a positive integer, got {horizon!r}")
    width = history.n_periods + int(horizon)
    for name, values in history.covariates.items():
        if np.shape(values)[1] != width:
            raise ValueError(f"covariate {name!r} has {np.shape(values)[1]} periods, expected T + horizon = {width}")
    return _check_levels(levels)


def _last_observed(y: np.ndarray) -> np.ndarray:
    """Each series' last non-NaN value (NaN for a series without any)."""
    return _forward_fill(y)[:, -1]


def _forward_fill(y: np.ndarray) -> np.ndarray:
    """Each period's last observed value at or before it (NaN before the first observation)."""
    idx = np.where(np.isfinite(y), np.arange(y.shape[1])[None, :], 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    filled = np.take_along_axis(y, idx, axis=1)
    seen = np.maximum.accumulate(np.isfinite(y), axis=1)
    return np.where(seen, filled, np.nan)


def _series_scale(y: np.ndarray) -> np.ndarray:
    """Mean absolute value of each series' observations (NaN for a series without any)."""
    observed = np.isfinite(y)
    total = np.where(observed, np.abs(y), 0.0).sum(axis=1)
    count = observed.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _normal_quantiles(levels: tuple[float, ...]) -> np.ndarray:
    return np.array([NormalDist().inv_cdf(q) for q in levels])


def _sorted(quantiles: np.ndarray) -> np.ndarray:
    """Quantiles sorted along the level axis (rounding or separate fits can cross them); NaNs stay NaN."""
    return np.sort(quantiles, axis=0)


# ---------------------------------------------------------------------------------------------------------------
# Seasonal naive


def _seasonal_sources(n_periods: int, horizon: int, season_length: int) -> tuple[np.ndarray, np.ndarray]:
    """For each horizon step h: the history index of the same season in the last observed season(s), and the
    number of seasons back (ceil(h / m)), which widens the intervals beyond one season."""
    h = np.arange(1, horizon + 1)
    seasons_back = -(-h // season_length)
    return n_periods + h - 1 - season_length * seasons_back, seasons_back


def _error_quantiles(errors: np.ndarray, scale: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """Per series [S, Q]: empirical quantiles of its own errors when it has MIN_OWN_ERRORS of them; otherwise
    the quantiles of every series' errors divided by that series' scale, times its own scale (pooled,
    scaled)."""
    q = np.asarray(levels)
    count = np.isfinite(errors).sum(axis=1)
    out = np.full((errors.shape[0], q.size), np.nan)
    own = count >= MIN_OWN_ERRORS
    if own.any():
        out[own] = np.nanquantile(errors[own], q, axis=1).T
    usable = np.isfinite(scale) & (scale > 0)
    pooled = (errors[usable] / scale[usable, None]).ravel()
    pooled = pooled[np.isfinite(pooled)]
    borrowed = np.quantile(pooled, q) if pooled.size else np.zeros(q.size)
    out[~own] = scale[~own, None] * borrowed[None, :]
    return out


def seasonal_naive(history: PanelHistory, horizon: int, levels: tuple[float, ...] = DEFAULT_LEVELS) -> BaselineForecast:
    """The value one season earlier: y[t - m] for a horizon period t (y[t - k m] with k = ceil(h / m) when the
    horizon is longer than a season).

    Fallback: when that value is missing (a missing period, or a history shorter than a season), the series'
    last observed value. A series without any observation gets NaN.

    Quantiles: the point forecast plus empirical quantiles of the series' own historical seasonal-difference
    errors y[t] - y[t - m] (at least MIN_OWN_ERRORS of them), times sqrt(k) beyond one season (a seasonal
    random walk). A series with fewer borrows the errors of all series pooled, each divided by its series'
    mean |y| and multiplied back by its own. When no series has seasonal differences (history of at most one
    season), one-period differences take their place. The mean is the point forecast.
    """
    levels = _check_request(history, horizon, levels)
    y = np.asarray(history.y, dtype=float)
    n_series, n_periods = y.shape
    m = int(history.season_length)
    sources, seasons_back = _seasonal_sources(n_periods, horizon, m)
    point = np.full((n_series, horizon), np.nan)
    valid = sources >= 0
    point[:, valid] = y[:, sources[valid]]
    last = _last_observed(y)
    point = np.where(np.isnan(point), last[:, None], point)

    lag = m if n_periods > m else 1
    errors = y[:, lag:] - y[:, :-lag] if n_periods > lag else np.full((n_series, 0), np.nan)
    if lag == m and not np.isfinite(errors).any() and n_periods > 1:
        errors = y[:, 1:] - y[:, :-1]  # no series has two observations a season apart
    error_q = _error_quantiles(errors, _series_scale(y), levels)
    quantiles = point[None, :, :] + np.sqrt(seasons_back)[None, None, :] * error_q.T[:, :, None]
    return BaselineForecast("seasonal_naive", point, _sorted(quantiles), levels)


# ---------------------------------------------------------------------------------------------------------------
# ETS


def _gap_filled(row: np.ndarray) -> np.ndarray:
    """The series from its first observation on, interior gaps filled by linear interpolation and periods after
    its last observation by that last value (ETS needs a gap-free series)."""
    observed = np.flatnonzero(np.isfinite(row))
    index = np.arange(observed[0], row.size)
    return np.interp(index, observed, row[observed])


def _interval_keys(levels: tuple[float, ...]) -> tuple[list[float], list[tuple[str, float | None]]]:
    """statsforecast's interval levels (percent) for the requested quantiles, and where each quantile comes
    from: ("lo"/"hi", interval level) or ("mean", None) for the median of a symmetric predictive."""
    sources: list[tuple[str, float | None]] = []
    for q in levels:
        if math.isclose(q, 0.5):
            sources.append(("mean", None))
        else:
            sources.append(("lo" if q < 0.5 else "hi", round(100 * abs(1 - 2 * q), 8)))
    intervals = sorted({lv for _, lv in sources if lv is not None})
    return intervals, sources


def _ets_model(n: int, season_length: int):
    """AutoETS, seasonal when the series holds two seasons; MSTL + non-seasonal AutoETS for seasons longer than
    statsforecast's ETS handles."""
    from statsforecast.models import MSTL, AutoETS

    if season_length > 1 and n >= 2 * season_length:
        if season_length > LONG_SEASON:
            return "mstl", MSTL(season_length=season_length, trend_forecaster=AutoETS(model="ZZN"))
        return "ets_seasonal", AutoETS(season_length=season_length)
    return "ets", AutoETS(season_length=1)


def _ets_one(row: np.ndarray, horizon: int, season_length: int, levels: tuple[float, ...]) -> tuple[str, np.ndarray, np.ndarray]:
    """One series' (model used, mean [H], quantiles [Q, H]); ("fallback", NaN, NaN) when it has too few
    observations or every model fails, for the caller's mean-and-spread fallback."""
    from statsforecast.models import AutoETS

    nan = np.full(horizon, np.nan), np.full((len(levels), horizon), np.nan)
    if np.isfinite(row).sum() < MIN_ETS_OBS:
        return ("fallback", *nan)
    series = _gap_filled(row)
    intervals, sources = _interval_keys(levels)
    first_name, first_model = _ets_model(series.size, season_length)
    bound = ETS_SANE_MULTIPLE * np.nanmax(np.abs(row))
    for name, model in ((first_name, first_model), ("ets_additive", AutoETS(model="AZN", season_length=1))):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = model.forecast(y=series, h=horizon, level=intervals or None)
        except Exception:  # noqa: BLE001 - any failure of a fit means: try the simpler model, then the fallback
            continue
        mean = np.asarray(out["mean"], float)
        quantiles = np.stack([mean if side == "mean" else np.asarray(out[f"{side}-{lv}"], float) for side, lv in sources])
        if np.isfinite(quantiles).all() and np.abs(quantiles).max() <= bound:
            return name, mean, quantiles
    return ("fallback", *nan)


def _ets_rows(rows: list[np.ndarray], horizon: int, season_length: int, levels: tuple[float, ...]) -> list[tuple]:
    return [_ets_one(row, horizon, season_length, levels) for row in rows]


def ets(history: PanelHistory, horizon: int, levels: tuple[float, ...] = DEFAULT_LEVELS, n_jobs: int = 1) -> BaselineForecast:
    """statsforecast's AutoETS per series, with its own (Gaussian) prediction intervals.

    Model per series (on the series from its first observation on):

    - seasons up to 24 periods (daily data, m = 7): ``AutoETS(season_length=m)`` when the series spans two
      seasons, else ``AutoETS(season_length=1)``;
    - longer seasons (weekly data, m = 52): ``MSTL(season_length=m, trend_forecaster=AutoETS(model="ZZN"))``
      (STL takes out the yearly cycle, a non-seasonal ETS forecasts the rest, the seasonal component is
      repeated) when the series spans two seasons, else ``AutoETS(season_length=1)``. Why: statsforecast's
      ETS, like R's ``forecast::ets``, ignores seasons longer than 24 periods; ``AutoETS(season_length=52)``
      took 0.26 s a series on 117 weeks (about 15 minutes for walmart's 3,313 series on one core) and missed
      a planted yearly cycle (MAE 22 against 1.3 for MSTL on a cycle of amplitude 30), while MSTL, the
      decomposition statsforecast offers for long and multiple seasons, takes about 25 ms a series. Measured
      by bench/panel_baselines.py on the shared 2-core machine (load 5 from other work): walmart, 3,313
      series x 104 weeks, 100 s with ``n_jobs=2``; orange juice, 913 series x 83 weeks (non-seasonal: under
      two seasons), 20 s in-process, 22-32 s with ``n_jobs=2``. MSTL's intervals leave out the uncertainty of
      the seasonal component: on walmart's last 13 weeks its 90% interval covered 67%.
    - a model that fails, or whose quantiles are non-finite or beyond ETS_SANE_MULTIPLE (10) times the
      series' largest |y|: ``AutoETS(model="AZN", season_length=1)`` (additive errors). Why: on spiky series
      (orange juice sells 100 times more in a deal week) AutoETS picks multiplicative-error models whose
      analytic intervals reached 1e14 for series that never sold 4e5 (wQL 4,600 on the OJ panel). If that
      fails too, or the series has fewer than MIN_ETS_OBS observations: the series' mean with a normal spread
      of its standard deviation (for a single observation, the median coefficient of variation of the other
      series times its value).

    Gaps: ETS needs a gap-free series, so interior missing periods are filled by linear interpolation and the
    periods after the last observation by that last value. The median is the mean (the intervals are
    symmetric). ``n_jobs`` > 1 spreads the series over that many spawned processes (each imports
    statsforecast, a few seconds) when there are at least ETS_MIN_PARALLEL of them; ``extras["model"]`` names the model each series got.
    """
    levels = _check_request(history, horizon, levels)
    try:
        import statsforecast  # noqa: F401
    except ImportError as err:
        raise ImportError(MISSING_EXTRA.format(name="ets", package="statsforecast")) from err
    y = np.asarray(history.y, dtype=float)
    rows = [y[s] for s in range(y.shape[0])]
    m = int(history.season_length)
    if n_jobs > 1 and len(rows) >= ETS_MIN_PARALLEL:
        chunks = [rows[i : i + 64] for i in range(0, len(rows), 64)]
        with ProcessPoolExecutor(max_workers=n_jobs, mp_context=get_context("spawn")) as pool:
            parts = pool.map(partial(_ets_rows, horizon=horizon, season_length=m, levels=levels), chunks)
            results = [r for part in parts for r in part]
    else:
        results = _ets_rows(rows, horizon, m, levels)
    names = np.array([r[0] for r in results])
    mean = np.stack([r[1] for r in results])
    quantiles = np.stack([r[2] for r in results], axis=1)
    fallback = names == "fallback"
    if fallback.any():
        mean[fallback], quantiles[:, fallback] = _mean_and_spread(y, fallback, horizon, levels)
    return BaselineForecast("ets", mean, _sorted(quantiles), levels, extras={"model": names})


def _mean_and_spread(y: np.ndarray, which: np.ndarray, horizon: int, levels: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Mean [n, H] and normal quantiles [Q, n, H] from each chosen series' mean and standard deviation; a
    series with one observation takes the median coefficient of variation of the series with more."""
    count = np.isfinite(y).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN series: NaN mean and sd, as documented
        mu = np.nanmean(y, axis=1)
        sd = np.nanstd(y, axis=1, ddof=1)
        cv = sd / np.abs(mu)
    pooled_cv = np.nanmedian(cv[(count >= 2) & np.isfinite(cv)]) if ((count >= 2) & np.isfinite(cv)).any() else 0.0
    sd = np.where(count >= 2, sd, pooled_cv * np.abs(mu))
    mu, sd = mu[which], sd[which]
    mean = np.repeat(mu[:, None], horizon, axis=1)
    z = _normal_quantiles(levels)
    return mean, mean[None] + z[:, None, None] * sd[None, :, None]


# ---------------------------------------------------------------------------------------------------------------
# LightGBM


def _rolling_windows(season_length: int) -> tuple[int, ...]:
    """Rolling-mean windows (periods before the origin): about a month, a quarter and a year of weeks for weekly
    data; one, four and thirteen seasons otherwise."""
    return (4, 13, 52) if season_length == 52 else (season_length, 4 * season_length, 13 * season_length)


def _season_position(dates: np.ndarray, season_length: int, step_days: int) -> np.ndarray:
    """Week of the year (0..51) for weekly data with a yearly season; otherwise the period's position in its
    season counted on the absolute grid (the weekday for daily data with a weekly season)."""
    days = dates.astype("datetime64[D]")
    if step_days == 7 and season_length == 52:
        day_of_year = (days - days.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64)
        return np.minimum(day_of_year // 7, 51)
    return (days.astype(np.int64) // max(step_days, 1)) % season_length


class _OriginFeatures:
    """What is known at each origin o (the first forecast period; history y[:, :o]): the last observed value,
    rolling means of the last w periods, and the series' scale (mean |y| over the longest window, or over all
    of y[:, :o] when that window holds none)."""

    def __init__(self, y: np.ndarray, windows: tuple[int, ...]):
        self.y = y
        n_series, n_periods = y.shape
        observed = np.isfinite(y)
        zero = np.zeros((n_series, 1))
        csum = np.concatenate([zero, np.cumsum(np.where(observed, y, 0.0), axis=1)], axis=1)  # [S, T + 1]
        cabs = np.concatenate([zero, np.cumsum(np.where(observed, np.abs(y), 0.0), axis=1)], axis=1)
        ccount = np.concatenate([zero, np.cumsum(observed, axis=1)], axis=1)
        self.last = np.concatenate([np.full((n_series, 1), np.nan), _forward_fill(y)], axis=1)  # last[:, o]
        o = np.arange(n_periods + 1)
        self.rolling = {}
        with np.errstate(invalid="ignore", divide="ignore"):
            for w in windows:
                start = np.maximum(o - w, 0)
                count = ccount[:, o] - ccount[:, start]
                self.rolling[w] = np.where(count > 0, (csum[:, o] - csum[:, start]) / count, np.nan)
            w = max(windows)
            start = np.maximum(o - w, 0)
            count = ccount[:, o] - ccount[:, start]
            recent = np.where(count > 0, (cabs[:, o] - cabs[:, start]) / count, np.nan)
            expanding = np.where(ccount > 0, cabs / ccount, np.nan)
        scale = np.where(np.isfinite(recent) & (recent > 0), recent, expanding)
        positive = scale[np.isfinite(scale) & (scale > 0)]
        floor = 1e-3 * np.median(positive) if positive.size else 1.0
        self.scale = np.where(np.isfinite(scale), np.maximum(scale, floor), np.nan)  # [S, T + 1]


def _lightgbm_design(
    history: PanelHistory, known: _OriginFeatures, series: np.ndarray, target: np.ndarray, steps: np.ndarray, position: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Feature rows for (series, target period, horizon step) with the origin at target - step + 1, and each
    row's scale (the target and the level features are divided by it)."""
    y = known.y
    m = int(history.season_length)
    origin = target - steps + 1
    scale = known.scale[series, origin]
    lag_index = target - m * (-(-steps // m))
    lag = np.where(lag_index >= 0, y[series, np.maximum(lag_index, 0)], np.nan)
    columns = {
        "step": steps.astype(float),
        "season_position": position[target].astype(float),
        "store": np.asarray(history.store)[series].astype(float),
        "product": np.asarray(history.product)[series].astype(float),
        "log_scale": np.log(scale),
        "seasonal_lag": lag / scale,
        "last": known.last[series, origin] / scale,
    }
    for w, values in known.rolling.items():
        columns[f"rolling_{w}"] = values[series, origin] / scale
    for name in sorted(history.covariates):
        columns[f"cov_{name}"] = np.asarray(history.covariates[name], float)[series, target]
    return np.column_stack(list(columns.values())), scale, list(columns)


def lightgbm_quantile(
    history: PanelHistory, horizon: int, levels: tuple[float, ...] = DEFAULT_LEVELS, seed: int = 0, num_threads: int | None = None
) -> BaselineForecast:
    """One global LightGBM model per quantile level (objective='quantile') and one for the mean (squared error),
    direct: each horizon period is forecast from features known at the origin, never from forecasts.

    Features of a target period t with origin o (h = t - o + 1): h; the week of the year (weekday for daily
    data); store and product codes (categorical); y[t - k m] (k = ceil(h / m), so always before the origin);
    the last observed value before o; rolling means of the 4/13/52 periods before o (m, 4m, 13m for other
    seasons); the log of the series' scale; every covariate at t. Levels (target, lags, rolling means) are
    divided by the series' scale at the origin (mean |y| over the last 52 periods) so that one model serves
    series three orders of magnitude apart. Rows are not weighted by that scale (which would make the loss
    the pinball loss in the data's units, what wQL scores): with weights LightGBM's quantile objective took
    four times as long (weighted percentiles in every leaf: 2.8 s against 0.7 s for 200 trees on 60,000 rows).

    Training rows: every observed (series, period t >= 1) of the history, each with a horizon step h drawn
    uniformly in 1..min(horizon, t) and its features computed as if the origin were t - h + 1; at most
    LGB_MAX_ROWS of them, drawn at random, and only rows whose series has an observation before that origin.
    A series without any observation gets NaN (no scale). Quantile fits are sorted along the levels where
    they cross. Seeded by ``seed`` only (LightGBM's ``seed`` and ``deterministic``). ``num_threads``: LightGBM's
    threads, LGB_THREADS (1) by default (see there why). Measured by bench/panel_baselines.py on the shared
    2-core machine (load 4-7 from other work), five levels and the mean: walmart (3,313 series x 104 weeks,
    13 ahead) 9.5-19 s, orange juice (913 x 83, 12 ahead) 7-16 s.
    """
    levels = _check_request(history, horizon, levels)
    try:
        import lightgbm as lgb
    except ImportError as err:
        raise ImportError(MISSING_EXTRA.format(name="lightgbm_quantile", package="lightgbm")) from err
    rng = np.random.default_rng(seed)
    y = np.asarray(history.y, dtype=float)
    n_series, n_periods = y.shape
    known = _OriginFeatures(y, _rolling_windows(int(history.season_length)))
    dates = np.concatenate([np.asarray(history.periods).astype("datetime64[D]"), history.future_periods(horizon)])
    position = _season_position(dates, int(history.season_length), history.step_days)

    series, target = np.nonzero(np.isfinite(y[:, 1:]))
    target = target + 1
    steps = 1 + np.floor(rng.random(target.size) * np.minimum(horizon, target)).astype(np.int64)
    keep = np.isfinite(known.scale[series, target - steps + 1])
    series, target, steps = series[keep], target[keep], steps[keep]
    if series.size > LGB_MAX_ROWS:
        pick = np.sort(rng.choice(series.size, LGB_MAX_ROWS, replace=False))
        series, target, steps = series[pick], target[pick], steps[pick]
    if series.size == 0:
        raise ValueError("lightgbm_quantile needs at least one series with two observed periods")
    x, scale, names = _lightgbm_design(history, known, series, target, steps, position)
    label = y[series, target] / scale

    s_all, h_all = np.meshgrid(np.arange(n_series), np.arange(1, horizon + 1), indexing="ij")
    x_future, scale_future, _ = _lightgbm_design(history, known, s_all.ravel(), n_periods + h_all.ravel() - 1, h_all.ravel(), position)

    categorical = [names.index("store"), names.index("product")]
    data = lgb.Dataset(x, label, feature_name=names, categorical_feature=categorical, free_raw_data=False)
    common = {
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.9,
        "verbose": -1,
        "seed": seed,
        "deterministic": True,
        "num_threads": num_threads or LGB_THREADS,
        "max_bin": 63,
        "force_col_wise": True,
    }

    def fit_predict(params: dict) -> np.ndarray:
        booster = lgb.train({**common, **params}, data, num_boost_round=LGB_TREES)
        return (booster.predict(x_future) * scale_future).reshape(n_series, horizon)

    mean = fit_predict({"objective": "regression"})
    quantiles = np.stack([fit_predict({"objective": "quantile", "alpha": q}) for q in levels])
    return BaselineForecast("lightgbm_quantile", mean, _sorted(quantiles), levels)


# ---------------------------------------------------------------------------------------------------------------
# Log-log price regression


def _log_target(row: np.ndarray) -> np.ndarray:
    """log y with y clipped at LOG_FLOOR_SHARE of the series' median positive value (a zero or a return would
    otherwise have no log); NaN stays NaN."""
    positive = row[np.isfinite(row) & (row > 0)]
    floor = LOG_FLOOR_SHARE * np.median(positive) if positive.size else 1.0
    with np.errstate(invalid="ignore"):
        return np.log(np.maximum(row, floor))


def _fit_one(z: np.ndarray, x_hist: np.ndarray, x_future: np.ndarray) -> dict:
    """Least squares of log y on [1, covariates] for one series; covariates constant over the fitted rows are
    dropped, and so are all of them when there are fewer than (columns + 2) rows (then: the mean of log y)."""
    rows = np.isfinite(z) & np.isfinite(x_hist).all(axis=1)
    intercept_only = not rows.any()  # no row with every covariate known: the mean of log y
    if intercept_only:
        rows = np.isfinite(z)
    n = int(rows.sum())
    xr = x_hist[rows]
    varying = np.concatenate([[True], np.ptp(xr[:, 1:], axis=0) > 0])
    if intercept_only or n < int(varying.sum()) + 2:
        varying = np.zeros(x_hist.shape[1], bool)
        varying[0] = True
    cols = np.flatnonzero(varying)
    design = xr[:, cols]
    beta, _, rank, _ = np.linalg.lstsq(design, z[rows], rcond=None)
    resid = z[rows] - design @ beta
    dof = n - rank
    sigma = float(np.sqrt(resid @ resid / dof)) if dof > 0 else np.nan
    xf = x_future[:, cols].copy()
    xf = np.where(np.isfinite(xf), xf, design.mean(axis=0)[None, :])  # an unknown covariate: the series' mean
    leverage = np.einsum("hi,ij,hj->h", xf, np.linalg.pinv(design.T @ design), xf)
    full = np.zeros(x_hist.shape[1])
    full[cols] = beta
    return {"mu": xf @ beta, "leverage": leverage, "sigma": sigma, "coef": full}


def loglog_price_regression(history: PanelHistory, horizon: int, levels: tuple[float, ...] = DEFAULT_LEVELS) -> BaselineForecast:
    """Per series, least squares of log y on an intercept, ``log_price`` (when given) and every other
    covariate, nothing shared: the coefficient of log price is the series' own price elasticity.

    Predictive: lognormal, log y ~ N(x b, s^2 (1 + x (X'X)^-1 x')) with s the residual standard deviation
    (the second term is the uncertainty of the coefficients); quantiles exp(x b + z_q sd), mean
    exp(x b + sd^2 / 2). Series with fewer than (columns + 2) usable rows: the mean of log y and its sd (a
    series with no residual degree of freedom takes the median residual sd of the others). Covariates constant
    over a series' rows are dropped from its fit. The spec's dated events (``history.events``) are left out: a
    series fitted alone sees an event on two or three rows a year, often only one of its shares, and its
    coefficient there extrapolates without bound (walmart's Easter weeks sent a sparse series' mean to 1e37).
    Non-positive y (walmart's returns, zeros) are clipped at LOG_FLOOR_SHARE (1%) of the series' median positive
    value before the log. A series without any observation gets NaN. ``extras``: ``coef_<name>`` [S] per column (``coef_intercept`` first; 0 for a
    dropped column) and ``sigma`` [S].
    """
    levels = _check_request(history, horizon, levels)
    y = np.asarray(history.y, dtype=float)
    n_series, n_periods = y.shape
    others = sorted(c for c in history.covariates if c != "log_price" and c not in history.events)
    names = (["log_price"] if "log_price" in history.covariates else []) + others
    x = np.stack([np.ones((n_series, n_periods + horizon))] + [np.asarray(history.covariates[c], float) for c in names], axis=2)
    fits: list[dict | None] = []
    for s in range(n_series):
        z = _log_target(y[s])
        fits.append(_fit_one(z, x[s, :n_periods], x[s, n_periods:]) if np.isfinite(z).any() else None)
    sigmas = np.array([f["sigma"] if f else np.nan for f in fits])
    pooled = float(np.nanmedian(sigmas)) if np.isfinite(sigmas).any() else 0.0
    z_q = _normal_quantiles(levels)
    mean = np.full((n_series, horizon), np.nan)
    quantiles = np.full((len(levels), n_series, horizon), np.nan)
    coef = np.full((n_series, x.shape[2]), np.nan)
    for s, fit in enumerate(fits):
        if fit is None:
            continue
        sigma = fit["sigma"] if np.isfinite(fit["sigma"]) else pooled
        sd = sigma * np.sqrt(1.0 + fit["leverage"])
        mean[s] = np.exp(fit["mu"] + sd**2 / 2)
        quantiles[:, s] = np.exp(fit["mu"][None, :] + z_q[:, None] * sd[None, :])
        coef[s] = fit["coef"]
        sigmas[s] = sigma
    extras = {f"coef_{name}": coef[:, i] for i, name in enumerate(["intercept", *names])}
    extras["sigma"] = sigmas
    return BaselineForecast("loglog_price_regression", mean, _sorted(quantiles), levels, extras=extras)


PANEL_BASELINES: dict[str, Callable[..., BaselineForecast]] = {
    "seasonal_naive": seasonal_naive,
    "ets": ets,
    "lightgbm_quantile": lightgbm_quantile,
    "loglog_price_regression": loglog_price_regression,
}
