"""The scales of the period shocks a forecast draws, estimated after the fit from the history's group-period sums.

Why not the fit's own: a shock scale sigma is learnt through the shocks it scales (non-centred), and when sigma is
below the noise of a group's period sum, n, its gradient fades as (sigma / n)^4, the slow end of EM for a
variance component; under a subsample of series per step that faint signal is also buried in the step's noise.
The fit then ends where its first, noisy steps took it: on the 3,049-series M5-shaped demo (51 series a step,
M5's share) the store shocks' scale came out at 0.062, which a store's daily total, whose own noise is about 0.10
(in relative terms), cannot tell from 0; the generator has none, and the stores' and states' intervals were 1.19
and 1.21 times as wide as the truth's, against 1.01 and 1.02 for a calibrated forecast with the model's mean. Shocks of the history keep the fit's scale (their fitted values are the scale
times the raw shocks); only the shocks ahead, drawn from their prior by the forecast, take this estimate.

How: with every other latent at its guide's centre and the shocks at 0, each group's period gets one residual r,
a weighted mean of its observed cells' residuals, with a noise variance u from the model's own likelihood:

- counts (the negative-binomial mixture): r = sum(y - m) / sum(m), the relative miss of the group's total, and
  u = sum(v) / sum(m)^2, v = m + m^2 sum_k w_k / r_k (a cell weighs by its mean m);
- amounts (the log-normal mixture): r = sum(p e) / sum(p), e = log y - E[log y], p = 1 / Var(log y), and
  u = 1 / sum(p) (a cell weighs by its precision: the mixture's log-variance is finite where its variance on the
  natural scale, with walmart's widest series at a log-sd of 2.3 times the tail's 4.7, overflows).

A shock s of the group's period moves every cell's log mean by s, so that E[r^2] ~ sigma^2 + u (counts: sigma^2
(1 + 2u) + u, since r = e^s (1 + noise) - 1), where sigma^2 is the period's total shock variance: the chain's,
its own side's, and the other side's by the squares of its groups' weights (a chain period carries a store shock
by sum_i a_i^2, a store's period a product shock by sum_j a_ij^2, a the cells' weights summed, over their total).
Weighted least squares over every group-period, weights 1 / (u + sigma_0^2)^2 (the precision of r^2; sigma_0^2 the
fit's own, then once more the estimate's) times the period's recency weight, gives each kind's sigma^2, none below
0: a moment estimate of the marginal likelihood's variance components, the way REML estimates them from residuals,
with the means held at the fit's.

Pure: no Prefect, no MLflow. Series come in batches (a block of an in-memory panel, or a block read from disk),
whose sums add up (``add_sums``).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import nnls
from scipy.sparse import csr_matrix

from tasks.model.inference import Params
from tasks.model.panel import (
    CHAIN,
    PRODUCT_SIDE,
    SHOCK_KINDS,
    SHOCK_SCALES_AHEAD,
    SHOCK_SITES,
    STORE_SIDE,
    PanelInputs,
    PanelSite,
    PanelStructure,
    layouts,
    log_dispersion,
    log_mean,
    mixture_parameters,
)

SERIES_PER_BATCH = 2048


class GroupPeriodSums(NamedTuple):
    """Sums over the counted cells of each group and period ([G, T] per kind; the chain's G is 1): of the cells'
    weights a, their weighted residuals a x, the variances of those, and the squares of the weights (a series is
    one store's and one product's, so that a store's squares are its products' shares)."""

    weight: dict[str, np.ndarray]
    weighted: dict[str, np.ndarray]
    variance: dict[str, np.ndarray]
    weight_squares: dict[str, np.ndarray]


def group_period_sums(
    weight: np.ndarray, weighted: np.ndarray, variance: np.ndarray, counted: np.ndarray, store: np.ndarray, product: np.ndarray,
    n_stores: int, n_products: int, kinds: tuple[str, ...],
) -> GroupPeriodSums:
    """The sums of a batch of series ([s, T] arrays, ``cell_terms``; ``store``, ``product`` [s]) for the chain and
    ``kinds``."""
    # unobserved cells hold anything (a masked target, a mean at covariates of no meaning): left out, not weighted by 0
    values = [np.where(counted, np.asarray(a, np.float64), 0.0) for a in (weight, weighted, variance)]
    values.append(values[0] ** 2)
    codes = {CHAIN: (np.zeros(weight.shape[0], np.int64), 1), STORE_SIDE: (store, n_stores), PRODUCT_SIDE: (product, n_products)}
    out: tuple[dict, ...] = ({}, {}, {}, {})
    for kind in dict.fromkeys((CHAIN, *kinds)):
        group, n_groups = codes[kind]
        # a sparse one-hot [groups, series]: one product sums every array (8 times np.add.at's speed on M5's batches)
        members = csr_matrix((np.ones(group.shape[0]), (np.asarray(group, np.int64), np.arange(group.shape[0]))), shape=(n_groups, group.shape[0]))
        for target, value in zip(out, values, strict=True):
            target[kind] = np.asarray(members @ value)
    return GroupPeriodSums(*out)


def add_sums(a: GroupPeriodSums | None, b: GroupPeriodSums) -> GroupPeriodSums:
    if a is None:
        return b
    return GroupPeriodSums(*({k: x[k] + y[k] for k in x} for x, y in zip(a, b, strict=True)))


def _rows(sums: GroupPeriodSums, kind: str, kinds: tuple[str, ...], period_weights: np.ndarray) -> tuple[np.ndarray, ...]:
    """(r^2 - u, the design [n, len(kinds)], u, period weight) of kind's group-periods."""
    total = sums.weight[kind]
    keep = (total > 0) & np.isfinite(sums.variance[kind]) & np.isfinite(sums.weighted[kind])
    safe = np.where(keep, total, 1.0)
    residual = sums.weighted[kind] / safe
    noise = sums.variance[kind] / safe**2
    columns = []
    for shock in kinds:
        if shock == CHAIN or shock == kind:
            share = np.ones_like(total)
        elif kind == CHAIN:  # another side's shocks reach the chain's period by their groups' weights
            share = (sums.weight[shock] ** 2).sum(axis=0, keepdims=True) / safe**2
        else:  # the other side's shocks reach this group's period through its series' weights
            share = sums.weight_squares[kind] / safe**2
        columns.append(share[keep])
    weights = np.broadcast_to(period_weights[None, :], total.shape)[keep]
    return residual[keep] ** 2 - noise[keep], np.stack(columns, axis=1), noise[keep], weights


def estimate_shock_scales(
    sums: GroupPeriodSums, kinds: tuple[str, ...], start: dict[str, float], period_weights: np.ndarray | None = None, relative: bool = True
) -> dict[str, float]:
    """Each kind's shock scale (``kinds``: the model's) from the group-period sums (see the module's docstring);
    ``start``: the fit's own scales, which set the first weights; ``relative``: the residuals are relative misses
    of totals (counts), whose square carries the shock as sigma^2 (1 + 2u), not log residuals (amounts)."""
    if not kinds:
        return {}
    n_periods = sums.weight[CHAIN].shape[1]
    weights_t = np.ones(n_periods) if period_weights is None else np.asarray(period_weights, np.float64)
    if weights_t.shape != (n_periods,):
        raise ValueError(f"period_weights has shape {weights_t.shape}; the sums have {n_periods} periods")
    rows = [_rows(sums, kind, kinds, weights_t) for kind in dict.fromkeys((CHAIN, *kinds))]
    excess = np.concatenate([r[0] for r in rows])
    design = np.concatenate([r[1] for r in rows])
    noise = np.concatenate([r[2] for r in rows])
    period_weight = np.concatenate([r[3] for r in rows])
    if not (period_weight > 0).any():  # no group-period with a counted cell: nothing to estimate from
        return {k: start[k] for k in kinds}
    variances = np.array([start[k] ** 2 for k in kinds])
    scaled_design = design * (1.0 + 2.0 * noise)[:, None] if relative else design
    for _ in range(2):
        weight = period_weight / (noise + design @ variances) ** 2
        root = np.sqrt(weight / weight.sum())
        variances, _ = nnls(scaled_design * root[:, None], excess * root)
    return {k: float(np.sqrt(v)) for k, v in zip(kinds, variances, strict=True)}


def guide_centres(params: Params, structure: PanelStructure) -> tuple[dict[str, jnp.ndarray], dict[str, jnp.ndarray]]:
    """Every global latent at its guide's centre, and the series' latents ([N, ...]) at theirs."""
    real, positive, series = layouts(structure)
    latent = {
        **real.unpack(jnp.asarray(params[f"{PanelSite.GLOBALS}.loc"])),
        **positive.unpack(jnp.exp(jnp.asarray(params[f"{PanelSite.SCALES}.loc"]))),
    }
    return latent, series.unpack(jnp.asarray(params[f"{PanelSite.SERIES}.loc"]))


def centre_latents(params: Params, structure: PanelStructure) -> tuple[dict[str, jnp.ndarray], dict[str, jnp.ndarray]]:
    """``guide_centres`` with the period shocks' scales at 0."""
    latent, series = guide_centres(params, structure)
    return {**latent, **{SHOCK_SITES[kind][1]: jnp.zeros(()) for kind in structure.shocks}}, series


@partial(jax.jit, static_argnames=("structure",))
def cell_terms(
    latent: dict[str, jnp.ndarray], series: dict[str, jnp.ndarray], inputs: PanelInputs, idx: jnp.ndarray, structure: PanelStructure
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Each cell's weight a, weighted residual a x and its variance [s, T], for the series at ``idx`` (``series``:
    their latents, [s, ...]; the module's docstring says which, by likelihood)."""
    latent = {**latent, **series}
    log_mu = log_mean(latent, inputs, structure, idx)
    dispersion = jnp.broadcast_to(log_dispersion(latent, inputs.x_series[idx], structure), log_mu.shape)[..., None]
    logits, offsets = mixture_parameters(latent[PanelSite.TAIL_LOGIT], latent[PanelSite.TAIL_GAP], structure.likelihood)
    weights = jax.nn.softmax(logits)
    y = inputs.y[idx]
    if structure.likelihood == "nb":
        mean = jnp.exp(log_mu)
        variance = mean + mean**2 * (weights * jnp.exp(-(dispersion + offsets))).sum(axis=-1)
        return mean, y - mean, variance
    log_location, log_variance = lognormal_mixture_log_moments(log_mu, dispersion[..., 0], weights, offsets)
    precision = 1.0 / log_variance
    residual = jnp.log(jnp.maximum(y, jnp.finfo(jnp.float32).tiny)) - log_location
    return precision, precision * residual, precision


def lognormal_mixture_log_moments(log_mean, log_sd, weights, offsets) -> tuple[jnp.ndarray, jnp.ndarray]:
    """E[log y] and Var(log y) under the log-normal scale mixture of mean exp(log_mean) (``LogNormalScaleMixture``:
    component k's log-sd exp(log_sd + offsets[k]), its location log_mean - sd_k^2 / 2, weight ``weights[k]``)."""
    half_variance = 0.5 * jnp.exp(2.0 * (log_sd[..., None] + offsets))  # each component's sd^2 / 2: its location's drop
    drop = (weights * half_variance).sum(axis=-1)
    spread = (weights * 2.0 * half_variance).sum(axis=-1) + (weights * half_variance**2).sum(axis=-1) - drop**2
    return log_mean - drop, spread


class SeriesBatch(NamedTuple):
    """Series whose cells the estimate sums: ``inputs`` holds them (and maybe others), ``idx`` their rows in
    ``inputs``, ``rows`` their rows in the fit's per-series parameters."""

    inputs: PanelInputs
    idx: np.ndarray
    rows: np.ndarray


def in_memory_batches(inputs: PanelInputs, batch_size: int = SERIES_PER_BATCH) -> Iterable[SeriesBatch]:
    n_series = inputs.observed.shape[0]
    for start in range(0, n_series, batch_size):
        rows = np.arange(start, min(start + batch_size, n_series))
        yield SeriesBatch(inputs, rows, rows)


def padded_size(n: int) -> int:
    """The power of two at or above ``n`` (at least 64)."""
    return max(64, 1 << (int(n) - 1).bit_length())


def batch_cell_terms(
    latent: dict[str, jnp.ndarray], series: dict[str, jnp.ndarray], batch: SeriesBatch, structure: PanelStructure
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``cell_terms`` of the batch's series ([s, T] each; ``series``: the fit's per-series latents, all rows) and
    which of their cells count (observed, not censored). The batch runs padded to a power of two by repeating its
    last series, so that batches of any sizes (an in-memory panel's last one, blocks read from disk) compile a few
    shapes, not one each."""
    n_series = len(batch.idx)
    padding = np.full(padded_size(n_series) - n_series, -1)
    idx = np.concatenate([batch.idx, np.asarray(batch.idx)[padding]])
    rows = np.concatenate([batch.rows, np.asarray(batch.rows)[padding]])
    terms = cell_terms(latent, {k: v[rows] for k, v in series.items()}, batch.inputs, jnp.asarray(idx), structure)
    idx = idx[:n_series]
    counted = np.asarray(batch.inputs.observed[idx])  # the batch's rows only: an in-memory panel's arrays are whole
    if batch.inputs.censored is not None:
        counted = counted & ~np.asarray(batch.inputs.censored[idx])
    return (*(np.asarray(t[:n_series]) for t in terms), counted)


def shock_scales_ahead(
    params: Params, structure: PanelStructure, batches: Iterable[SeriesBatch], period_weights: np.ndarray | None = None
) -> dict[str, float]:
    """The moment estimate of each period shock's scale (kind -> scale; empty when the model has none)."""
    kinds = tuple(k for k in SHOCK_KINDS if k in structure.shocks)
    if not kinds:
        return {}
    latent, series = centre_latents(params, structure)
    sums = None
    for batch in batches:
        idx = batch.idx
        part = group_period_sums(
            *batch_cell_terms(latent, series, batch, structure),
            np.asarray(batch.inputs.series_store[idx]), np.asarray(batch.inputs.series_product[idx]),
            structure.n_stores, structure.n_products, kinds,
        )  # fmt: skip
        sums = add_sums(sums, part)
    if sums is None:
        raise ValueError("shock_scales_ahead needs at least one batch of series")
    return estimate_shock_scales(sums, kinds, fitted_shock_scales(params, structure), period_weights, relative=structure.likelihood == "nb")


def guide_median(params: Params, structure: PanelStructure, scale_site: str) -> float:
    """The fit's own value of a positive global (a scale; its guide's median)."""
    start = layouts(structure)[1].slice(scale_site)[0]
    return float(np.exp(np.asarray(params[f"{PanelSite.SCALES}.loc"])[start]))


def fitted_shock_scales(params: Params, structure: PanelStructure) -> dict[str, float]:
    """The fit's own scale of each period shock, by kind."""
    return {k: guide_median(params, structure, SHOCK_SITES[k][1]) for k in SHOCK_KINDS if k in structure.shocks}


def with_shock_scales_ahead(params: Params, scales: dict[str, float]) -> Params:
    """``params`` with the scales the forecast draws its shocks at (``SHOCK_SCALES_AHEAD``: one per
    ``SHOCK_KINDS``, 0 for a kind the model lacks, which it never draws); without ``scales``, ``params`` as they are."""
    if not scales:
        return params
    values = np.array([scales.get(kind, 0.0) for kind in SHOCK_KINDS], np.float32)
    return {**params, SHOCK_SCALES_AHEAD: values}
