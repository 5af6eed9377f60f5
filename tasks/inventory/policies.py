"""The ordering policies that ``tasks.inventory.simulate.replay`` compares, as order functions.

Pure NumPy. Each policy is built from a forecast made at the backtest origin for the whole horizon and the
rules of ``InventoryPolicy`` (lead time L, review period R, pack size, minimum order, costs); it is called at
every order day with the replay's actual state and returns the units to order. Every policy aims at the
same critical ratio ``lost_sale_cost / (lost_sale_cost + leftover_cost)`` of the demand over its protection
interval ``[k, k + L + R)`` and orders whole packs, at least the minimum order when it orders at all.

- ``model``: ``orders.order_at`` on the model's joint draws [D, S, H] from the origin, given the replay's
  actual stock and pipeline: the exact cost-minimising pack count over the draws.
- ``point_safety_stock`` (the textbook policy): order up to the sum of the point forecast over the
  protection interval plus ``z * sigma * sqrt(L + R)``, ``z = Phi^-1(critical ratio)``; with a per-period
  sigma [S, H] the safety term is ``z * sqrt(sum of sigma_t^2)`` over the interval (the same formula when
  sigma is constant). The order is the level minus the inventory position (stock on hand plus everything
  on order), rounded up to packs. The textbook's sigma is the standard deviation of the point forecast's
  past errors (``forecast_error_sd``); the evaluation also runs it with the model's own predictive sd.
- ``lightgbm_quantiles``: order up to the sum over the protection periods of each period's quantile at the
  critical ratio (a sum of quantiles is not the quantile of the sum: the common mistake).
- ``seasonal_naive_safety_stock``: the textbook formula around the seasonal naive point forecast, with sigma
  the standard deviation of the series' own historical seasonal-difference errors ``y[t] - y[t - m]``,
  i.e. of that point forecast's one-period errors (``seasonal_difference_sd``).

``Policy.start_stock`` is each policy's own level for the first lead time ``[0, L)`` (the replay's start
state, see ``tasks.inventory.simulate``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from statistics import NormalDist

import numpy as np

from tasks.inventory.orders import InventoryPolicy, order_at
from tasks.inventory.simulate import ReplayState

MIN_OWN_ERRORS = 10  # fewer past errors than this and a series borrows the pooled, scaled ones


def round_to_packs(units: np.ndarray, pack_size: np.ndarray, min_order: np.ndarray) -> np.ndarray:
    """Units rounded up to whole packs; a positive order below the minimum is raised to it (in whole packs)."""
    units = np.maximum(np.asarray(units, np.float64), 0.0)
    packs = np.ceil(units / pack_size - 1e-9)
    smallest = np.where(min_order > 0, np.maximum(np.ceil(min_order / pack_size - 1e-9), 1), 0)
    packs = np.where(packs > 0, np.maximum(packs, smallest), 0)
    return packs * pack_size


def window_sum(values: np.ndarray, start: int, length: np.ndarray) -> np.ndarray:
    """Per series, ``values[s, start : start + length_s].sum()`` ([S, H] -> [S])."""
    values = np.asarray(values, np.float64)
    inside = np.arange(values.shape[1])[None, :] - start
    mask = (inside >= 0) & (inside < np.asarray(length)[:, None])
    return np.where(mask, values, 0.0).sum(axis=1)


def z_score(ratio: np.ndarray) -> np.ndarray:
    return np.array([NormalDist().inv_cdf(float(r)) for r in np.atleast_1d(ratio)])


class Policy:
    """An order function for the replay with its start stock: subclasses set ``level`` or override ``__call__``."""

    name = "policy"

    def __init__(self, rules: InventoryPolicy):
        self.rules = rules
        self.lead = rules.lead_time.astype(int)
        self.review = rules.review_period.astype(int)

    def level(self, start: int, length: np.ndarray) -> np.ndarray:
        """The stock to hold against the demand of ``[start, start + length_s)``, per series [S]."""
        raise NotImplementedError

    def start_stock(self) -> np.ndarray:
        """The policy's level for the first lead time ``[0, L)``, rounded up to packs (no minimum order)."""
        level = self.level(0, self.lead)
        return np.ceil(np.maximum(level, 0.0) / self.rules.pack_size - 1e-9) * self.rules.pack_size

    def __call__(self, state: ReplayState) -> np.ndarray:
        rows = state.rows
        protection = self.lead + self.review
        level = self.level(state.period, protection)[rows]
        position = state.on_hand + window_sum(state.arrivals, state.period, protection[rows])
        return round_to_packs(level - position, self.rules.pack_size[rows], self.rules.min_order[rows])


class OrderUpTo(Policy):
    """Order up to ``sum of the point forecast + z * sqrt(sum of sigma_t^2)`` over the interval."""

    def __init__(self, name: str, rules: InventoryPolicy, point: np.ndarray, sigma: np.ndarray):
        super().__init__(rules)
        self.name = name
        self.point = np.asarray(point, np.float64)
        sigma = np.asarray(sigma, np.float64)
        self.variance = np.broadcast_to((sigma if sigma.ndim == 2 else sigma[:, None]) ** 2, self.point.shape)
        self.z = z_score(rules.critical_ratio)

    def level(self, start: int, length: np.ndarray) -> np.ndarray:
        return window_sum(self.point, start, length) + self.z * np.sqrt(window_sum(self.variance, start, length))


class QuantileSum(Policy):
    """Order up to the sum of the per-period quantiles at the critical ratio."""

    def __init__(self, name: str, rules: InventoryPolicy, quantile: np.ndarray):
        super().__init__(rules)
        self.name = name
        self.quantile = np.asarray(quantile, np.float64)

    def level(self, start: int, length: np.ndarray) -> np.ndarray:
        return window_sum(self.quantile, start, length)


class ModelOrders(Policy):
    """``orders.order_at`` on the joint draws [D, S, H] from the origin, at the replay's actual state."""

    name = "model"

    def __init__(self, rules: InventoryPolicy, draws: np.ndarray):
        super().__init__(rules)
        self.draws = np.asarray(draws)
        if self.draws.ndim != 3 or self.draws.shape[1] != rules.n_series:
            raise ValueError(f"draws must be [D, {rules.n_series}, H], got {self.draws.shape}")

    def level(self, start: int, length: np.ndarray) -> np.ndarray:
        """The critical-ratio order statistic (the ceil(D * ratio)-th smallest) of the draws' sum over the window."""
        offsets = np.arange(self.draws.shape[2])[None, :] - start
        mask = (offsets >= 0) & (offsets < np.asarray(length)[:, None])
        sums = np.where(mask[None], self.draws, 0).sum(axis=2, dtype=np.float64)  # [D, S]
        ratio = self.rules.critical_ratio
        rank = np.clip(np.ceil(sums.shape[0] * ratio).astype(int) - 1, 0, sums.shape[0] - 1)
        return np.take_along_axis(np.sort(sums, axis=0), rank[None, :], axis=0)[0]

    def __call__(self, state: ReplayState) -> np.ndarray:
        rows = state.rows
        every = rows.size == self.rules.n_series and (rows == np.arange(rows.size)).all()
        draws = self.draws if every else self.draws[:, rows]
        rules = self.rules if every else self.rules.select(rows)
        return order_at(draws, rules, state.period, on_hand=state.on_hand, arrivals=state.arrivals).quantity


def model(rules: InventoryPolicy, draws: np.ndarray) -> ModelOrders:
    return ModelOrders(rules, draws)


def point_safety_stock(rules: InventoryPolicy, point: np.ndarray, sigma: np.ndarray, name: str = "point_safety_stock") -> OrderUpTo:
    """The textbook policy around ``point`` [S, H] (here: the model's predictive mean) with ``sigma`` [S] or [S, H]."""
    return OrderUpTo(name, rules, point, sigma)


def lightgbm_quantiles(rules: InventoryPolicy, quantile: np.ndarray) -> QuantileSum:
    """``quantile`` [S, H]: LightGBM's per-period quantile at the rules' critical ratio."""
    return QuantileSum("lightgbm_quantiles", rules, quantile)


def seasonal_naive_safety_stock(rules: InventoryPolicy, point: np.ndarray, sigma: np.ndarray) -> OrderUpTo:
    """The textbook policy around the seasonal naive forecast ``point`` [S, H], ``sigma`` from ``seasonal_difference_sd``."""
    return OrderUpTo("seasonal_naive_safety_stock", rules, point, sigma)


def predictive_sd(draws: np.ndarray) -> np.ndarray:
    """The standard deviation of each series' predictive draws per period [D, S, H] -> [S, H]."""
    return np.asarray(draws, np.float64).std(axis=0)


def seasonal_difference_sd(y: np.ndarray, season_length: int) -> np.ndarray:
    """Per series [S]: ``forecast_error_sd`` of its historical errors ``y[t] - y[t - m]`` (NaN = missing),
    scaled by its mean |y|."""
    y = np.asarray(y, np.float64)
    m = int(season_length)
    errors = y[:, m:] - y[:, :-m] if y.shape[1] > m else np.full((y.shape[0], 0), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a series without any observation: NaN scale
        scale = np.nanmean(np.abs(y), axis=1)
    return forecast_error_sd(errors, scale)


def forecast_error_sd(errors: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Per series [S]: the standard deviation of its forecast errors [S, E] (NaN = no error that period).

    A series with fewer than MIN_OWN_ERRORS errors borrows the pooled errors of the series that have
    enough, each divided by its ``scale`` [S] (its typical size), times its own scale; a series with
    neither errors nor a positive scale gets 0.
    """
    errors = np.asarray(errors, np.float64)
    scale = np.asarray(scale, np.float64)
    count = np.isfinite(errors).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a series without any error: NaN, handled below
        own = np.where(count >= 2, np.sqrt(np.nansum((errors - np.nanmean(errors, axis=1, keepdims=True)) ** 2, axis=1) / np.maximum(count - 1, 1)), np.nan)
    usable = (count >= MIN_OWN_ERRORS) & np.isfinite(scale) & (scale > 0)
    pooled = (errors[usable] / scale[usable, None]).ravel()
    pooled = pooled[np.isfinite(pooled)]
    pooled_sd = float(pooled.std(ddof=1)) if pooled.size > 1 else 0.0
    out = np.where(count >= MIN_OWN_ERRORS, own, np.nan_to_num(scale) * pooled_sd)
    return np.nan_to_num(out)


PolicyFactory = Callable[..., Policy]
