"""Baseline forecasters, scored on exactly the rows the model is scored on (tasks.evaluate.backtest).

Each sees the encoded history and future panels (arrays, never frames) and
returns a ``PanelForecast``: a point forecast and a predictive sample per
[store, day], from which the backtest takes quantiles, CRPS and PIT the way
it does for the model. scikit-learn and LightGBM are optional (the ``eval``
extra): the nightly job never needs them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tasks.data.encode import EncodedPanel
from tasks.forecast.draws import DEFAULT_QUANTILES

ENSEMBLE_SIZE = 200
MEDIAN_WEEKS = 12
MISSING_EXTRA = "baselines need scikit-learn and LightGBM: pip install 'bhm-forecast[eval]'"


@dataclass(frozen=True)
class PanelForecast:
    method: str
    mean: np.ndarray  # [S, T] point forecast for the future panel's stores and days
    ensemble: np.ndarray  # [S, T, M] predictive sample


def _weekday(dates: np.ndarray) -> np.ndarray:
    # 1970-01-01 was a Thursday: ISO weekday 1..7 (Monday = 1).
    return (dates.astype("datetime64[D]").astype(np.int64) + 3) % 7 + 1


def _history_positions(history: EncodedPanel, future: EncodedPanel) -> np.ndarray:
    """Each future store's position in the history panel; -1 for a store without history."""
    lookup = {int(s): i for i, s in enumerate(history.stores)}
    return np.array([lookup.get(int(s), -1) for s in future.stores], dtype=np.int64)


def _quantile_sample(values: np.ndarray, size: int) -> np.ndarray:
    """``size`` evenly spaced quantiles of ``values``: a sample of their empirical law."""
    return np.quantile(values, (np.arange(size) + 0.5) / size)


def median_by_weekday(history: EncodedPanel, future: EncodedPanel, weeks: int = MEDIAN_WEEKS) -> PanelForecast:
    """Kaggle's benchmark: each store's median sales on the same weekday over its last ``weeks`` weeks of
    history (all its history when those weeks hold none, all its days when it never had that weekday); the
    spread of those days is the predictive law."""
    recent = history.n_days - weeks * 7
    history_weekday, future_weekday = _weekday(history.dates), _weekday(future.dates)
    positions = _history_positions(history, future)
    mean = np.full((future.n_stores, future.n_days), np.nan)
    ensemble = np.full((future.n_stores, future.n_days, ENSEMBLE_SIZE), np.nan)
    for i, pos in enumerate(positions):
        if pos < 0:
            continue
        observed, sales = history.observed[pos], history.sales[pos]
        for weekday in range(1, 8):
            days = future_weekday == weekday
            same = observed & (history_weekday == weekday)
            window = same & (np.arange(history.n_days) >= recent)
            # A store with a few days of history may not have had this weekday yet: then all its days count.
            values = sales[window if window.any() else same if same.any() else observed]
            if values.size:
                mean[i, days] = np.median(values)
                ensemble[i, days] = _quantile_sample(values, ENSEMBLE_SIZE)
    return PanelForecast("median_by_weekday", mean, ensemble)


def _design(panel: EncodedPanel, store: int) -> np.ndarray:
    """Day features of one store: the calendar's and the store's own (promo, holidays, ...)."""
    return np.concatenate([panel.date_x, panel.store_day_x[store]], axis=1)


def poisson_per_store(history: EncodedPanel, future: EncodedPanel, seed: int = 0) -> PanelForecast:
    """A Poisson regression per store on the same day features as the model, nothing shared."""
    try:
        from sklearn.linear_model import PoissonRegressor
        from threadpoolctl import threadpool_limits
    except ImportError as err:
        raise ImportError(MISSING_EXTRA) from err
    rng = np.random.default_rng(seed)
    positions = _history_positions(history, future)
    mean = np.full((future.n_stores, future.n_days), np.nan)
    # Thousands of tiny fits: threaded BLAS only adds contention (measured: 0.4 s a fit with 2 threads, 2 ms with 1).
    with threadpool_limits(limits=1):
        for i, pos in enumerate(positions):
            observed = history.observed[pos] if pos >= 0 else np.zeros(history.n_days, bool)
            if not observed.any():
                continue
            x, y = _design(history, pos)[observed], history.sales[pos][observed]
            scale = y.mean()  # fit on sales / mean sales: the same model, better conditioned
            model = PoissonRegressor(alpha=1e-4, max_iter=300, solver="newton-cholesky").fit(x, y / scale)
            mean[i] = model.predict(_design(future, i)) * scale
    finite = np.where(np.isfinite(mean), mean, 0.0)
    ensemble = rng.poisson(finite[..., None], size=(*mean.shape, ENSEMBLE_SIZE)).astype(float)
    ensemble[~np.isfinite(mean)] = np.nan
    return PanelForecast("poisson_per_store", mean, ensemble)


def _global_rows(panel: EncodedPanel, cells: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    s, t = cells
    return np.concatenate([panel.date_x[t], panel.store_day_x[s, t], panel.store_z[s], panel.stores[s, None]], axis=1)


def lightgbm_global(
    history: EncodedPanel,
    future: EncodedPanel,
    levels: tuple[float, ...] = DEFAULT_QUANTILES,
    seed: int = 0,
    threads: int | None = None,
) -> PanelForecast:
    """One gradient-boosted model over all stores (calendar, store-day and store features, the store id as a
    category) on log sales: squared error for the point forecast, a quantile objective per level; the
    predictive sample interpolates between the quantiles. ``threads``: LightGBM's (default: 1 on small data,
    else up to 4)."""
    try:
        import lightgbm as lgb
    except ImportError as err:
        raise ImportError(MISSING_EXTRA) from err
    cells = np.nonzero(history.observed)
    x = _global_rows(history, cells)
    y = np.log1p(history.sales[cells])
    store_column = x.shape[1] - 1
    data = lgb.Dataset(x, y, categorical_feature=[store_column], free_raw_data=False)
    s_all, t_all = np.meshgrid(np.arange(future.n_stores), np.arange(future.n_days), indexing="ij")
    x_future = _global_rows(future, (s_all.ravel(), t_all.ravel()))
    # OpenMP threads spin while they wait: on small data or a busy machine one thread is faster.
    if threads is None:  # OpenMP threads spin while they wait: more than the cores is slower on a shared machine
        threads = 1 if y.size < 200_000 else min(4, os.cpu_count() or 1)
    elif threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    common = {
        "learning_rate": 0.05,
        "num_leaves": 63,
        "min_data_in_leaf": 50,
        "verbose": -1,
        "seed": seed,
        "num_threads": threads,
        "force_col_wise": True,
    }

    def fit_predict(params: dict) -> np.ndarray:
        booster = lgb.train({**common, **params}, data, num_boost_round=400)
        return np.expm1(booster.predict(x_future)).reshape(future.n_stores, future.n_days)

    mean = fit_predict({"objective": "regression"})
    quantiles = np.sort(np.stack([fit_predict({"objective": "quantile", "alpha": q}) for q in levels]), axis=0)
    return PanelForecast("lightgbm", mean, _interpolated_sample(quantiles, levels))


def _interpolated_sample(quantiles: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """A sample from the piecewise-linear quantile function through ``quantiles`` ([Q, S, T]), flat beyond the ends."""
    grid = (np.arange(ENSEMBLE_SIZE) + 0.5) / ENSEMBLE_SIZE
    flat = quantiles.reshape(len(levels), -1)
    sample = np.stack([np.interp(grid, levels, flat[:, j]) for j in range(flat.shape[1])])
    return sample.reshape(*quantiles.shape[1:], ENSEMBLE_SIZE)


BASELINES: dict[str, Callable[[EncodedPanel, EncodedPanel], PanelForecast]] = {
    "median_by_weekday": median_by_weekday,
    "poisson_per_store": poisson_per_store,
    "lightgbm": lightgbm_global,
}
