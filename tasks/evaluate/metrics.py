"""Forecast scores on arrays: accuracy of the point forecast, quality of the intervals.

Scores follow Kaggle's Rossmann convention: only days with positive actual
sales count (closed days and zero-sales days are left out).
"""

from __future__ import annotations

import numpy as np


def _scored(actual: np.ndarray) -> np.ndarray:
    return np.isfinite(actual) & (actual > 0)


def rmspe(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Root mean squared percentage error over days with positive sales."""
    actual, predicted = np.asarray(actual, float), np.asarray(predicted, float)
    keep = _scored(actual)
    if not keep.any():
        raise ValueError("rmspe needs at least one day with positive sales")
    return float(np.sqrt(np.mean(((actual[keep] - predicted[keep]) / actual[keep]) ** 2)))


def pinball_loss(actual: np.ndarray, quantile_forecast: np.ndarray, level: float) -> np.ndarray:
    """Pinball (quantile) loss of one quantile forecast, element-wise."""
    diff = np.asarray(actual, float) - np.asarray(quantile_forecast, float)
    return np.maximum(level * diff, (level - 1.0) * diff)


def scaled_quantile_loss(actual: np.ndarray, quantiles: np.ndarray, levels: tuple[float, ...]) -> float:
    """Mean pinball loss over the quantile levels, divided by mean sales (wQL).

    ``quantiles`` has the levels on its first axis.
    """
    actual = np.asarray(actual, float)
    keep = _scored(actual)
    losses = [pinball_loss(actual[keep], np.asarray(q)[keep], level).mean() for q, level in zip(quantiles, levels, strict=True)]
    return float(np.mean(losses) / actual[keep].mean())


def coverage(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of days with positive sales whose actual lies inside [lower, upper]."""
    actual = np.asarray(actual, float)
    keep = _scored(actual)
    return float(np.mean((actual[keep] >= np.asarray(lower)[keep]) & (actual[keep] <= np.asarray(upper)[keep])))
