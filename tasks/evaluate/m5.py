"""M5's uncertainty metric: the weighted scaled pinball loss (WSPL) over its 12 levels, by M5's rules.

M5 (the 2020 competition on Walmart's 30,490 store x item series) scores 9 quantiles of every series of 12
aggregation levels (42,840 series): for each series, the pinball loss of each quantile averaged over the
horizon and scaled by the mean absolute one-period change of the series' history (counted from its first
non-zero value), averaged over the 9 quantiles; series are weighted within a level by their share of the
level's dollar sales over the last 28 periods of the history; the WSPL is the mean of the 12 levels'
weighted losses (every level weighs the same). Pure: arrays in, numbers out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.evaluate.panel_metrics import coverage, pinball

M5_QUANTILES = (0.005, 0.025, 0.165, 0.25, 0.5, 0.75, 0.835, 0.975, 0.995)
WEIGHT_PERIODS = 28  # dollar sales over this many last history periods weigh the series

# name -> the hierarchy columns whose combination is a group of the level ("total": one group)
M5_LEVELS: dict[str, tuple[str, ...]] = {
    "total": (),
    "state": ("state",),
    "store": ("store",),
    "category": ("category",),
    "department": ("department",),
    "state x category": ("state", "category"),
    "state x department": ("state", "department"),
    "store x category": ("store", "category"),
    "store x department": ("store", "department"),
    "item": ("item",),
    "item x state": ("item", "state"),
    "item x store": ("item", "store"),
}


def level_codes(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each M5 level's group code per bottom series (dense, 0 .. groups - 1), from the series' codes of
    ``state``, ``store``, ``category``, ``department`` and ``item`` (int [S] each)."""
    missing = {c for cols in M5_LEVELS.values() for c in cols} - set(columns)
    if missing:
        raise ValueError(f"M5's levels need the series' {sorted(missing)} codes too")
    n_series = len(next(iter(columns.values())))
    codes = {}
    for name, cols in M5_LEVELS.items():
        if not cols:
            codes[name] = np.zeros(n_series, np.int64)
            continue
        keys = np.stack([np.asarray(columns[c], np.int64) for c in cols], axis=1)
        codes[name] = np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)
    return codes


def history_scale(history: np.ndarray) -> np.ndarray:
    """Per series [G]: the mean absolute one-period change of ``history`` [G, T] from the series' first
    non-zero value on (M5's denominator); NaN for a series that never sold or has one period since."""
    history = np.asarray(history, np.float64)
    started = np.cumsum(history != 0, axis=1) > 0
    changes = np.abs(np.diff(history, axis=1))
    counted = started[:, :-1]  # a change counts once the series had started before it
    n = counted.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (changes * counted).sum(axis=1) / n, np.nan)


@dataclass(frozen=True)
class LevelScore:
    wspl: float  # the level's weighted scaled pinball loss
    n_series: int
    n_unscaled: int  # series left out: their history has no scale (they never sold); their weight is spread on the rest
    coverage_50: float  # share of cells inside [q 0.25, q 0.75]
    coverage_90: float | None  # inside [q 0.05, q 0.95], when those quantiles are given


def level_score(
    truth: np.ndarray, quantiles: np.ndarray, levels: tuple[float, ...], history: np.ndarray, dollars: np.ndarray
) -> LevelScore:
    """One level's score: ``truth`` [G, H]; ``quantiles`` [Q, G, H] at ``levels`` (M5's 9 at least);
    ``history`` [G, T] the level's series over the history (units); ``dollars`` [G] their dollar sales over
    the history's last ``WEIGHT_PERIODS`` periods."""
    position = {round(q, 6): i for i, q in enumerate(levels)}
    absent = [q for q in M5_QUANTILES if round(q, 6) not in position]
    if absent:
        raise ValueError(f"M5's WSPL needs the quantiles {absent}, got {levels}")
    m5 = [position[round(q, 6)] for q in M5_QUANTILES]
    scale = history_scale(history)
    usable = np.isfinite(scale) & (scale > 0)
    loss = np.mean([pinball(truth, quantiles[i], q).mean(axis=1) for i, q in zip(m5, M5_QUANTILES, strict=True)], axis=0)  # [G]
    weight = np.where(usable, np.asarray(dollars, np.float64), 0.0)
    if weight.sum() <= 0:
        raise ValueError("no series of the level has both a history scale and dollar sales to weigh it")
    spl = np.where(usable, loss / np.where(usable, scale, 1.0), 0.0)

    def inside(low: float, high: float) -> float:
        return coverage(truth.ravel(), quantiles[position[low]].ravel(), quantiles[position[high]].ravel())

    cover_90 = inside(0.05, 0.95) if {0.05, 0.95} <= set(position) else None
    return LevelScore(
        wspl=float((weight * spl).sum() / weight.sum()),
        n_series=int(truth.shape[0]),
        n_unscaled=int((~usable).sum()),
        coverage_50=inside(0.25, 0.75),
        coverage_90=cover_90,
    )


def randomized_coverage(below: np.ndarray, at_most: np.ndarray, central: float) -> float:
    """The expected share of cells whose randomized PIT lies in the central interval of probability ``central``,
    from each cell's forecast P(Y < y) (``below``) and P(Y <= y) (``at_most``) at its actual y.

    For counts, a closed interval [q_low, q_high] holds the actual more often than its nominal probability (a
    forecast of mostly zeros covers every zero): of intermittent series, a calibrated forecast's 50% interval
    covers far more than half. The randomized PIT, uniform between P(Y < y) and P(Y <= y), is uniform on
    [0, 1] for a calibrated forecast of counts too, so this share is ``central`` for one."""
    low, high = 0.5 - central / 2.0, 0.5 + central / 2.0
    below, at_most = np.asarray(below, np.float64), np.asarray(at_most, np.float64)
    overlap = np.clip(np.minimum(at_most, high) - np.maximum(below, low), 0.0, None)
    width = at_most - below
    point = ((below >= low) & (below <= high)).astype(np.float64)  # a continuous cell: its PIT is the one value
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(width > 0, overlap / np.where(width > 0, width, 1.0), point)
    return float(share.mean())
