"""Scores of panel forecasts (any retailer's store x product series, weekly or daily), on plain arrays.

Every function takes the rows to score as flat arrays (``y`` [N], ``mean`` [N], ``quantiles`` [Q, N]) and
scores all of them: choosing the rows ("every method on the same rows", complete rows only) is the caller's
job, so a non-finite value is an error here rather than a row silently left out. The exceptions are the
relative metrics that are undefined on some rows (``mape``, ``rmse_log``), which say which rows they keep.

``aggregate`` sums series into groups (store total, product total, chain total) so that the same scores can
be computed at aggregate levels.
"""

from __future__ import annotations

import numpy as np

HOLIDAY_WEIGHT = 5.0  # Kaggle Walmart's WMAE: holiday weeks count five times
NAN_POLICIES = ("propagate", "omit")


def _vector(name: str, values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional [N], got shape {array.shape}")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ValueError(f"{name} has {bad} non-finite value(s): select complete rows before scoring")
    return array


def _same_length(y: np.ndarray, **others: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for name, values in others.items():
        array = _vector(name, values)
        if array.shape != y.shape:
            raise ValueError(f"{name} has shape {array.shape}, y has shape {y.shape}")
        out[name] = array
    return out


def _levels(levels: tuple[float, ...] | np.ndarray) -> np.ndarray:
    array = np.asarray(levels, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"levels must be a non-empty sequence of quantile levels, got {levels!r}")
    if ((array <= 0) | (array >= 1)).any():
        raise ValueError(f"quantile levels must lie strictly between 0 and 1, got {levels!r}")
    return array


def _quantile_matrix(y: np.ndarray, quantiles: np.ndarray, levels: np.ndarray) -> np.ndarray:
    q = np.asarray(quantiles, dtype=float)
    if q.shape != (levels.size, y.size):
        raise ValueError(f"quantiles has shape {q.shape}, expected (len(levels), N) = {(levels.size, y.size)}")
    if not np.isfinite(q).all():
        raise ValueError(f"quantiles has {int((~np.isfinite(q)).sum())} non-finite value(s): select complete rows before scoring")
    return q


def _weights(y: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    if weights is None:
        return np.ones_like(y)
    w = _same_length(y, weights=weights)["weights"]
    if (w < 0).any():
        raise ValueError(f"weights must be non-negative, got minimum {w.min()}")
    return w


def pinball(y: np.ndarray, forecast: np.ndarray, level: float) -> np.ndarray:
    """Pinball (quantile) loss of a forecast of the ``level`` quantile, element-wise."""
    diff = np.asarray(y, float) - np.asarray(forecast, float)
    return np.maximum(level * diff, (level - 1.0) * diff)


def wql(y: np.ndarray, quantiles: np.ndarray, levels: tuple[float, ...], weights: np.ndarray | None = None) -> float:
    """Weighted quantile loss (GluonTS's mean wQL over the given levels).

    ``2 * sum_q sum_n w_n pinball_q(y_n, quantiles[q, n]) / (Q * sum_n w_n |y_n|)``: each level's total pinball
    loss relative to the total absolute target (so that series with large sales weigh more, and the score is
    unit-free), averaged over the levels. The factor 2 makes the 0.5 level's loss equal to the absolute error
    of the median divided by the total absolute target.
    """
    y = _vector("y", y)
    lv = _levels(levels)
    q = _quantile_matrix(y, quantiles, lv)
    w = _weights(y, weights)
    denominator = float(np.sum(w * np.abs(y)))
    if denominator <= 0:
        raise ValueError("wql is undefined when sum(weights * |y|) is 0")
    losses = np.array([np.sum(w * pinball(y, q[i], level)) for i, level in enumerate(lv)])
    return float(2.0 * losses.sum() / (lv.size * denominator))


def coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of rows whose actual lies in the closed interval [lower, upper]."""
    y = _vector("y", y)
    bounds = _same_length(y, lower=lower, upper=upper)
    if y.size == 0:
        raise ValueError("coverage needs at least one row")
    return float(np.mean((y >= bounds["lower"]) & (y <= bounds["upper"])))


def calibrated_coverage_sd(n_cells: int, central: float) -> float:
    """The standard deviation of the coverage of ``n_cells`` independent cells by a calibrated forecast's
    central intervals of probability ``central``: how far from nominal such a forecast lands by chance alone
    (binomial; for counts' randomized coverage, ``tasks.evaluate.m5.randomized_coverage``, at most this, since
    a cell's share is a Bernoulli averaged over its randomization). Cells that share a shock (the periods of
    one origin, the groups of one week) move together and vary more: for them this is a lower bound."""
    if n_cells < 1:
        raise ValueError(f"n_cells must be >= 1, got {n_cells}")
    if not 0.0 < central < 1.0:
        raise ValueError(f"central must lie strictly between 0 and 1, got {central}")
    return float(np.sqrt(central * (1.0 - central) / n_cells))


def holiday_weights(is_holiday: np.ndarray) -> np.ndarray:
    """Kaggle Walmart's row weights: 5 for a holiday week, 1 otherwise."""
    return np.where(np.asarray(is_holiday, bool), HOLIDAY_WEIGHT, 1.0)


def wmae(y: np.ndarray, mean: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Weighted mean absolute error ``sum w |y - mean| / sum w`` (Kaggle Walmart with ``holiday_weights``);
    plain MAE without weights."""
    y = _vector("y", y)
    mean = _same_length(y, mean=mean)["mean"]
    w = _weights(y, weights)
    if w.sum() <= 0:
        raise ValueError("wmae needs a positive total weight")
    return float(np.sum(w * np.abs(y - mean)) / w.sum())


def mape(y: np.ndarray, mean: np.ndarray) -> float:
    """Mean absolute percentage error over the rows with y > 0 (undefined at 0, meaningless below)."""
    y = _vector("y", y)
    mean = _same_length(y, mean=mean)["mean"]
    keep = y > 0
    if not keep.any():
        raise ValueError("mape needs at least one row with y > 0")
    return float(np.mean(np.abs(y[keep] - mean[keep]) / y[keep]))


def rmse_log(y: np.ndarray, mean: np.ndarray) -> float:
    """Root mean squared error in log units, ``sqrt(mean((log mean - log y)^2))``, over the rows where both the
    actual and the forecast are positive (the accuracy of a multiplicative, price-response kind of model)."""
    y = _vector("y", y)
    mean = _same_length(y, mean=mean)["mean"]
    keep = (y > 0) & (mean > 0)
    if not keep.any():
        raise ValueError("rmse_log needs at least one row with y > 0 and mean > 0")
    return float(np.sqrt(np.mean((np.log(mean[keep]) - np.log(y[keep])) ** 2)))


def aggregate(values: np.ndarray, group_codes: np.ndarray, n_groups: int | None = None, nan_policy: str = "propagate") -> np.ndarray:
    """Sum series into groups: ``values`` [S, H, ...] and ``group_codes`` [S] (0..G-1) give [G, H, ...].

    ``nan_policy``:

    - ``"propagate"`` (default): a group-period is NaN when any member series is NaN there. The group total
      is then only scored where it is the total of every member, which is what "score complete rows" means
      at an aggregate level.
    - ``"omit"``: NaNs are left out of the sum (a group-period is NaN only when every member is NaN): the
      total of the observed members, e.g. to build an aggregate history from gappy series.

    Sums are right for actuals and mean forecasts, not for quantiles: the sum of the members' q-quantiles is
    the q-quantile of the total only if the members move together perfectly (it overstates the spread of the
    total). Quantiles of a group total come from a forecast of the summed series (or from sample paths).
    A group without members is all zeros under ``"omit"`` and under ``"propagate"``.
    """
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    array = np.asarray(values, dtype=float)
    codes = np.asarray(group_codes)
    if array.ndim < 2:
        raise ValueError(f"values must be [S, H, ...], got shape {array.shape}")
    if codes.shape != (array.shape[0],):
        raise ValueError(f"group_codes has shape {codes.shape}, expected ({array.shape[0]},) to match values' first axis")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"group_codes must be integers 0..G-1, got dtype {codes.dtype}")
    if codes.size and codes.min() < 0:
        raise ValueError(f"group_codes must be non-negative, got {codes.min()}")
    groups = int(codes.max()) + 1 if n_groups is None and codes.size else int(n_groups or 0)
    if codes.size and codes.max() >= groups:
        raise ValueError(f"group code {codes.max()} is not below n_groups={groups}")
    out = np.zeros((groups, *array.shape[1:]))
    np.add.at(out, codes, np.nan_to_num(array, nan=0.0))
    missing = np.isnan(array)
    n_missing = np.zeros(out.shape)
    np.add.at(n_missing, codes, missing.astype(float))
    if nan_policy == "propagate":
        out[n_missing > 0] = np.nan
    else:
        members = np.bincount(codes, minlength=groups).reshape(-1, *([1] * (array.ndim - 1)))
        out[(n_missing >= members) & (members > 0)] = np.nan
    return out


def _level_index(levels: np.ndarray, level: float) -> int:
    hits = np.flatnonzero(np.isclose(levels, level))
    if hits.size == 0:
        raise ValueError(f"quantile level {level} is not among the forecast's levels {tuple(levels.tolist())}")
    return int(hits[0])


def interval(quantiles: np.ndarray, levels: tuple[float, ...], central: float) -> tuple[np.ndarray, np.ndarray]:
    """The central ``central`` interval (e.g. 0.9: the 0.05 and 0.95 quantiles) out of a [Q, ...] quantile array."""
    if not 0 < central < 1:
        raise ValueError(f"an interval's level must lie strictly between 0 and 1, got {central}")
    lv = _levels(levels)
    q = np.asarray(quantiles, dtype=float)
    lo, hi = _level_index(lv, round((1 - central) / 2, 12)), _level_index(lv, round((1 + central) / 2, 12))
    return q[lo], q[hi]


def scores(
    y: np.ndarray,
    mean: np.ndarray,
    quantiles: np.ndarray,
    levels: tuple[float, ...],
    weights: np.ndarray | None = None,
    intervals: tuple[float, ...] = (0.5, 0.9),
) -> dict[str, float]:
    """Every metric for one set of rows (one aggregation level): ``wql``, ``coverage_50``/``coverage_90`` (one
    per central interval in ``intervals``, whose end quantiles must be among ``levels``), ``wmae`` (with
    ``weights``, e.g. ``holiday_weights``; plain MAE without), ``mape`` and ``rmse_log`` (NaN when no row
    qualifies), and ``n`` (rows scored). ``weights`` weigh the wQL as well as the WMAE."""
    y = _vector("y", y)
    mean = _same_length(y, mean=mean)["mean"]
    lv = _levels(levels)
    q = _quantile_matrix(y, quantiles, lv)
    out: dict[str, float] = {"n": float(y.size), "wql": wql(y, q, levels, weights)}
    for central in intervals:
        lower, upper = interval(q, levels, central)
        out[f"coverage_{round(central * 100)}"] = coverage(y, lower, upper)
    out["wmae"] = wmae(y, mean, weights)
    out["mape"] = mape(y, mean) if (y > 0).any() else float("nan")
    out["rmse_log"] = rmse_log(y, mean) if ((y > 0) & (mean > 0)).any() else float("nan")
    return out
