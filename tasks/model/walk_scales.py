"""The scale of each series' own level walk ahead, estimated after the fit from the history's block residuals.

Why not the fit's own: a series' level walk steps once a block (13 weeks, 28 days), so that a history of two years
gives each series 7 steps, and its scale is learnt through those steps (non-centred) from a start of 0.02, where
the fit leaves it: on walmart's store x department sales the fit put it at 0.018-0.024 a block over 4 backtest
origins, while the history's own block-to-block changes say 0.03-0.036 (below); the series' 90% intervals covered
85.8% and less the further ahead (88% in the horizon's first week, 83-85% in its last five). Only the steps ahead,
which the forecast draws from their prior, take this estimate; the history's fitted path keeps the fit's scale.

How: with every latent at its guide's centre (the fitted shocks and shared walks included) and the series' own walk
removed, each series gets one residual r per full block b of the history (every period of the block in it): amounts
(the log-normal mixture): the precision-weighted mean of its cells' log y - E[log y] (``cell_terms``); counts: the
relative miss of its total, sum(y - m) / sum(m). A walk of scale sigma under block noise e gives

    v_k = Var(r[b] - r[b + k]) = k sigma^2 + Var(e[b]) + Var(e[b + k]),

a variogram whose increment v_2 - v_1 is sigma^2 whatever the noise: no model of the noise is needed (the
mixture's log-variance, which its tail dominates, puts a typical walmart block's noise at ten times the variance
of the changes the data show). Each v_k is robust: the median of the squared differences over every series and
pair of blocks, over the median of a chi-square with one degree of freedom (a department that closes or moves
makes a few differences of several units, whose squares would swamp a mean). For differences whose variances
differ from series to series the median is of their mixture, not a mean of variances: the estimate is what a
typical series shows, the way the coverage counts every cell alike.

Pure: no Prefect, no MLflow. Series come in batches, as for ``tasks.model.shock_scales``.
"""

from __future__ import annotations

from collections.abc import Iterable

import jax.numpy as jnp
import numpy as np

from tasks.model.inference import Params
from tasks.model.panel import (
    LEVEL_SCALE_AHEAD,
    WALK_MULTIPLIERS_AHEAD,
    WALK_SITES,
    PanelInputs,
    PanelSite,
    PanelStructure,
    layouts,
)
from tasks.model.shock_scales import SeriesBatch, batch_cell_terms, guide_centres, guide_median

CHI2_1_MEDIAN = 0.454936  # the median of a chi-square with one degree of freedom: of z^2, z standard normal
MIN_PAIRS = 30  # differences at each of lags 1 and 2 below which the estimate is left to the fit


def series_block_residuals(params: Params, structure: PanelStructure, batches: Iterable[SeriesBatch]) -> tuple[np.ndarray, np.ndarray]:
    """Each series' residual in each full block of the history, its own walk removed ([S, B], NaN where the
    series has no counted cell in the block; column b is the block b blocks before the anchor's), and which
    rows of the fit's series each row is ([S])."""
    latent, series = guide_centres(params, structure)
    latent = {**latent, PanelSite.LEVEL_SCALE: jnp.zeros(())}
    residuals, rows = [], []
    for batch in batches:
        in_block, full = history_blocks(batch.inputs, structure)
        weight, weighted, _, counted = batch_cell_terms(latent, series, batch, structure)
        weight, weighted = (np.where(counted, t.astype(np.float64), 0.0) @ in_block for t in (weight, weighted))
        with np.errstate(invalid="ignore", divide="ignore"):
            residuals.append(np.where((weight > 0) & full[None, :], weighted / weight, np.nan))
        rows.append(np.asarray(batch.rows))
    if not residuals:
        raise ValueError("series_block_residuals needs at least one batch of series")
    return np.concatenate(residuals), np.concatenate(rows)


def history_blocks(inputs: PanelInputs, structure: PanelStructure) -> tuple[np.ndarray, np.ndarray]:
    """Which history periods lie in each block back from the anchor's (bool [T, B]; column b: b blocks back), and
    which blocks are full (every period of the block in the history, [B])."""
    back = np.where(np.asarray(inputs.history_index) >= 0, -np.asarray(inputs.block), -1)
    in_block = back[:, None] == np.arange(structure.n_past_blocks + 1)[None, :]
    return in_block, in_block.sum(axis=0) == structure.block_periods


def robust_variogram(residuals: np.ndarray, max_lag: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """v_k for k = 1..max_lag (the module's docstring) from residuals [S, B], and the number of differences at each."""
    values, counts = [], []
    for lag in range(1, max_lag + 1):
        differences = (residuals[:, :-lag] - residuals[:, lag:]).ravel() if residuals.shape[1] > lag else np.empty(0)
        differences = differences[np.isfinite(differences)]
        counts.append(differences.size)
        values.append(np.median(differences**2) / CHI2_1_MEDIAN if differences.size else np.nan)
    return np.array(values), np.array(counts)


def estimate_walk_scale(residuals: np.ndarray) -> float | None:
    """sigma = sqrt(v_2 - v_1), 0 when the variogram does not rise; None when fewer than ``MIN_PAIRS``
    differences stand at lag 1 or 2 (a history of under three full blocks)."""
    values, counts = robust_variogram(residuals, max_lag=2)
    if (counts < MIN_PAIRS).any():
        return None
    return float(np.sqrt(max(values[1] - values[0], 0.0)))


def walk_scale_ahead(params: Params, structure: PanelStructure, batches: Iterable[SeriesBatch]) -> float | None:
    """The moment estimate of the scale of the series' own walk ahead (None: too short a history to tell)."""
    residuals, _ = series_block_residuals(params, structure, batches)
    return estimate_walk_scale(residuals)


def fitted_walk_scale(params: Params, structure: PanelStructure) -> float:
    """The fit's own scale of the series' walks."""
    return guide_median(params, structure, PanelSite.LEVEL_SCALE)


def with_walk_scale_ahead(params: Params, scale: float | None) -> Params:
    """``params`` with the scale the forecast draws the series' walk steps at (``LEVEL_SCALE_AHEAD``); without
    ``scale``, ``params`` as they are."""
    if scale is None:
        return params
    return {**params, LEVEL_SCALE_AHEAD: np.asarray(scale, np.float32)}


MIN_BLOCKS = 3  # history blocks below which a group's steps say too little of its drift: every group keeps the walk's scale


def group_walk_multipliers(params: Params, structure: PanelStructure, with_data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each store's and product's multiplier of its walk's scale ahead (side -> [G]), for the store and product
    walks of ``structure``: how far the group's own level moved in the history against the typical group's.

    A walk has one scale for all its groups, but a small department drifts further than a large one (on walmart the
    smaller half of the departments' totals had log errors of sd 0.109 where the forecast said 0.077, the larger half
    0.051 against 0.068). The fit's non-centred steps of a group say how far it moved: m_g^2 is the mean over the
    history's blocks of their second moment under the guide (loc^2 + scale^2), over the median of those of the groups
    with data (``with_data``: side -> bool [G]); groups without data, and every group of a history under
    ``MIN_BLOCKS`` blocks, keep 1. The median keeps a typical group at the walk's scale; a group whose steps the data
    do not pin keeps its prior's second moment (1) and is drawn at least as wide as the typical one.
    """
    if structure.n_past_blocks < MIN_BLOCKS:
        return {}
    real = layouts(structure)[0]
    loc, scale = (real.unpack(np.asarray(params[f"{PanelSite.GLOBALS}.{part}"], np.float64)) for part in ("loc", "scale"))
    multipliers = {}
    for side in structure.level_walks:
        if side not in WALK_MULTIPLIERS_AHEAD:
            continue
        site = WALK_SITES[side][0]
        moment = np.mean(loc[site] ** 2 + scale[site] ** 2, axis=1)
        seen = np.asarray(with_data[side], bool)
        if not seen.any():
            continue
        ratio = np.where(seen, moment / np.median(moment[seen]), 1.0)
        multipliers[side] = np.sqrt(ratio).astype(np.float32)
    return multipliers


def with_group_walk_multipliers(params: Params, multipliers: dict[str, np.ndarray]) -> Params:
    """``params`` with each side's ``WALK_MULTIPLIERS_AHEAD`` entry."""
    return {**params, **{WALK_MULTIPLIERS_AHEAD[side]: values for side, values in multipliers.items()}}
