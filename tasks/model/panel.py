"""The panel model: store x product series, daily or weekly, pooled through both hierarchies at once.

For series s of store i and product j, in period t:

    log mu[s,t] = offset + theta[s] . (1, x_time[t], x_series[s,t]) + level[s,t]
                  + shock[t] + store_shock[i,t] + product_shock[j,t]

    theta[s,c] = m[c] + a_store[i] . B_store[:,c] + a_product[j] . B_product[:,c]
                 + sum over store levels l (store, region, ...)       of tau_l[c] * u_l[group_l(i), c]
                 + sum over product levels l (product, department, ...) of tau_l[c] * v_l[group_l(j), c]
                 + sigma[c] * z[s,c]

Each coefficient column c (the level, each seasonal term, each covariate) is pooled through the store
side, the product side, both, or neither (then one coefficient is shared by every series), as the spec
says. The group effects are crossed: a series sits in one group of every level of both hierarchies,
and a new series starts from the sum of its groups' effects and its attributes' shift (z = 0), a new
product in a known store from its store's and department's effects. Everything is non-centred.

- level: each series' level walks in blocks of ``block_periods`` back from the anchor (the last
  history period), so that recent periods count more; after the anchor the walk goes on from its prior.
  With the spec's ``level_walks``, a walk of each store (product) adds to the levels of all its series: a
  store's traffic that drifts moves its series together, which its totals' intervals need; a chain walk
  adds to every series' level, the one place where a growth of the whole chain costs a few steps.
- shocks: one per history period shared by all series, one per store and period shared by the store's
  series (traffic), and one per product and period shared by the product's series in every store, kept orthogonal to the time design and to the covariates' period means so
  that they cannot absorb a season or promotion effect, and to the anchor block's mean, which is the
  level's to carry; after the anchor they are drawn from their prior. They carry the correlation
  between series that aggregate intervals need.
- padding: a fit's history is padded at its start to a bucket of periods, and its series to a bucket of
  rows (``pad_history``): the padding's shocks, level steps and series touch no target, and the next
  night's fit (a period more, a new series) has the same shapes, so it loads tonight's compiled programs.
- likelihood: units: a scale mixture of negative binomials with a common mean (``tasks.model.negbin``);
  amounts (money): a scale mixture of log-normals with a common mean. Each series has its own dispersion,
  which moves linearly (in log) with the covariates the spec names in ``dispersion_covariates``. Unobserved cells (absent rows,
  masked targets, amounts <= 0) are left out. A censored cell (a stock-out: its sales are a lower bound
  of demand) contributes log P(Y >= y) of the same law instead (``tasks.model.censored``). With the spec's
  ``recency_half_life`` each period's log-likelihood is weighted by its age (``recency_weights``).

This module is pure: no Prefect, no MLflow. ``log_mean`` is the one formula: the model and the
forecast (``tasks.forecast.panel_draws``) both call it; ``log_mean_ahead`` writes it for many draws at
once over the periods after the anchor (the forecast's usual case), tested equal to it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.util import promote_shapes

from tasks.model.buckets import power_of_two, round_up
from tasks.model.censored import lognormal_mixture_log_survival, nb_mixture_log_survival
from tasks.model.negbin import NegativeBinomialScaleMixture

INTERCEPT = "intercept"
STORE_SIDE, PRODUCT_SIDE = "store", "product"
MIXTURE_COMPONENTS = 3


class PanelSite:
    """Names of the panel model's variables, in one place.

    The model has three sample sites (``GLOBALS``: every real global variable, ``SCALES``: every
    positive one, ``SERIES``: each series' variables), each a flat vector that ``Layout`` unpacks
    into the named variables below. Few sites compile several times faster than one per variable.
    """

    GLOBALS = "globals"
    SCALES = "scales"
    SERIES = "series_latent"

    COEF_MEAN = "coef_mean"
    STORE_ATTR = "store_attr_coef"
    PRODUCT_ATTR = "product_attr_coef"
    SERIES_SCALE = "series_scale"
    SERIES_RAW = "series_raw"
    LEVEL_SCALE = "level_scale"
    LEVEL_STEPS = "level_steps"
    SHOCK_SCALE = "shock_scale"
    SHOCK_RAW = "shock_raw"
    STORE_SHOCK_SCALE = "store_shock_scale"
    STORE_SHOCK_RAW = "store_shock_raw"
    PRODUCT_SHOCK_SCALE = "product_shock_scale"
    PRODUCT_SHOCK_RAW = "product_shock_raw"
    STORE_WALK_SCALE = "store_walk_scale"
    STORE_WALK_STEPS = "store_walk_steps"
    PRODUCT_WALK_SCALE = "product_walk_scale"
    PRODUCT_WALK_STEPS = "product_walk_steps"
    CHAIN_WALK_SCALE = "chain_walk_scale"
    CHAIN_WALK_STEPS = "chain_walk_steps"
    DISPERSION_MEAN = "dispersion_mean"
    DISPERSION_SCALE = "dispersion_scale"
    DISPERSION_RAW = "dispersion_raw"
    DISPERSION_COEF = "dispersion_coef"
    TAIL_LOGIT = "tail_logit"
    TAIL_GAP = "tail_gap"
    Y = "y"
    Y_CENSORED = "y_censored"  # a factor: log P(Y >= y) of the censored cells
    SERIES_PLATE = "series"
    PERIODS_PLATE = "periods"

    @staticmethod
    def future(steps_site: str) -> str:
        """The steps of a level walk after the anchor (drawn from the prior by the forecast)."""
        return f"{steps_site}_future"

    LEVEL_STEPS_FUTURE = future(LEVEL_STEPS)

    @staticmethod
    def group_scale(side: str, level: int) -> str:
        return f"group_scale_{side}{level}"

    @staticmethod
    def group_raw(side: str, level: int) -> str:
        return f"group_raw_{side}{level}"


CHAIN = "chain"
SHOCK_KINDS = (CHAIN, STORE_SIDE, PRODUCT_SIDE)
SHOCK_SITES = {
    CHAIN: (PanelSite.SHOCK_RAW, PanelSite.SHOCK_SCALE),
    STORE_SIDE: (PanelSite.STORE_SHOCK_RAW, PanelSite.STORE_SHOCK_SCALE),
    PRODUCT_SIDE: (PanelSite.PRODUCT_SHOCK_RAW, PanelSite.PRODUCT_SHOCK_SCALE),
}
# A fitted model's scales of the shocks ahead, one per SHOCK_KINDS (0 for a kind the model lacks), estimated after
# the fit (``tasks.model.shock_scales``); a model without it draws them at its guide's scales.
SHOCK_SCALES_AHEAD = "shock_scales_ahead"
# A fitted model's scale of the series' own level walk ahead, estimated after the fit (``tasks.model.walk_scales``);
# a model without it draws the walk's steps ahead at its guide's scale.
LEVEL_SCALE_AHEAD = "level_scale_ahead"
# A fitted model's multipliers of the store and product walks' scales ahead, one per store or product, estimated
# after the fit (``tasks.model.walk_scales.group_walk_multipliers``); a model without them draws every group's steps
# ahead at its walk's one scale.
WALK_MULTIPLIERS_AHEAD = {STORE_SIDE: "store_walk_multipliers_ahead", PRODUCT_SIDE: "product_walk_multipliers_ahead"}

# Level walks shared by the series of the chain, of a store or of a product: side -> (steps site, scale site)
WALK_SITES = {
    CHAIN: (PanelSite.CHAIN_WALK_STEPS, PanelSite.CHAIN_WALK_SCALE),
    STORE_SIDE: (PanelSite.STORE_WALK_STEPS, PanelSite.STORE_WALK_SCALE),
    PRODUCT_SIDE: (PanelSite.PRODUCT_WALK_STEPS, PanelSite.PRODUCT_WALK_SCALE),
}

# Sites with one entry per series (the first axis of their guide parameters); the rest are global.
SERIES_SITES = (PanelSite.SERIES_RAW, PanelSite.LEVEL_STEPS, PanelSite.DISPERSION_RAW)


@dataclass(frozen=True)
class PanelStructure:
    """Shapes and choices of a panel model: hashable, so compiled programs are reused per structure."""

    coef_names: tuple[str, ...]  # intercept, time features, series features
    n_time: int
    store_pooled: tuple[bool, ...]  # per coefficient
    product_pooled: tuple[bool, ...]
    varies: tuple[bool, ...]  # per coefficient: a series-level deviation (False: one shared coefficient)
    store_level_sizes: tuple[int, ...]  # groups per store level, the store itself first
    product_level_sizes: tuple[int, ...]
    n_store_attributes: int
    n_product_attributes: int
    n_history: int  # periods the history's latents (shocks, level steps) span: the history's, rounded up to a bucket
    block_periods: int
    likelihood: Literal["nb", "lognormal"]
    log_offset: float  # the model reads it from PanelInputs.log_offset: a constant in a program would change with each night's data
    shocks: tuple[str, ...] = ("chain", "store")  # which period shocks the model has: chain, store, product
    n_future_blocks: int = 0
    n_future: int = 0
    censor_terms: int = 0  # grid of the censored NB survival (tasks.model.censored.survival_terms); 0: no censored cell
    dispersion_features: tuple[int, ...] = ()  # series features the dispersion moves with (a promotion is noisier)
    level_walks: tuple[str, ...] = ()  # level walks shared by the chain's (a store's, a product's) series, beside each series' own
    recency_half_life: float = 0.0  # periods over which a history cell's weight in the likelihood halves; 0: every cell weighs 1

    @property
    def n_coef(self) -> int:
        return len(self.coef_names)

    @property
    def has_dispersion_coef(self) -> bool:
        return bool(self.dispersion_features)

    @property
    def n_past_blocks(self) -> int:
        return (self.n_history - 1) // self.block_periods

    def n_groups(self, side: str) -> int:
        return {CHAIN: 1, STORE_SIDE: self.n_stores, PRODUCT_SIDE: self.n_products}[side]

    @property
    def n_stores(self) -> int:
        return self.store_level_sizes[0]

    @property
    def n_products(self) -> int:
        return self.product_level_sizes[0]

    def group_sites(self) -> list[tuple[str, int, int, tuple[bool, ...]]]:
        """(side, level, number of groups, pooled mask) of every group effect."""
        sites = [(STORE_SIDE, lvl, size, self.store_pooled) for lvl, size in enumerate(self.store_level_sizes)]
        sites += [(PRODUCT_SIDE, lvl, size, self.product_pooled) for lvl, size in enumerate(self.product_level_sizes)]
        return [site for site in sites if any(site[3])]


class PanelInputs(NamedTuple):
    """Arrays the model sees (a pytree). History periods have ``history_index`` >= 0 (their position among the
    structure's ``n_history``); future periods and a padded history's empty periods (``pad_history``) -1."""

    x_time: jnp.ndarray  # [T, Pt]
    x_series: jnp.ndarray  # [S, T, Ps]
    observed: jnp.ndarray  # bool [S, T]
    y: jnp.ndarray | None  # float32 [S, T]
    series_store: jnp.ndarray  # int32 [S]
    series_product: jnp.ndarray  # int32 [S]
    store_groups: jnp.ndarray  # int32 [L_s, n_stores]
    product_groups: jnp.ndarray  # int32 [L_p, n_products]
    store_attributes: jnp.ndarray  # [n_stores, A_s]
    product_attributes: jnp.ndarray  # [n_products, A_p]
    block: jnp.ndarray  # int32 [T]: level block relative to the anchor's (0)
    history_index: jnp.ndarray  # int32 [T]
    shock_basis: jnp.ndarray  # [1 + n_products or 1, n_history, K] orthonormal columns (see shock_basis)
    log_offset: jnp.ndarray  # float32 scalar: the structure's log_offset, passed as data
    # Stock-outs (None: no censored cell): bool [S, T], observed cells whose target is a lower bound of
    # demand; and each series' censored periods, int32 [S, C], padded with -1 (the survival runs on
    # these C cells per series only, not on every cell).
    censored: jnp.ndarray | None = None
    censored_periods: jnp.ndarray | None = None


# --- priors -------------------------------------------------------------------------------------

PRIOR_INTERCEPT = 1.0
PRIOR_EFFECT = 0.5
PRIOR_COVARIATE = 1.0
PRIOR_GROUP_INTERCEPT = 1.5
PRIOR_GROUP_EFFECT = 0.25
PRIOR_SERIES_INTERCEPT = 1.0
PRIOR_SERIES_EFFECT = 0.25
PRIOR_LEVEL_SCALE = 0.1
PRIOR_SHOCK_SCALE = 0.1
PRIOR_DISPERSION_COEF = 0.5  # log dispersion per unit of a covariate as encoded (a flag's 0 -> 1, a numeric's sd)
PRIOR_TAIL_LOGIT = dist.Normal(-2.0, 1.5)
PRIOR_TAIL_GAP = dist.HalfNormal(1.5)
# Dispersion: log concentration for counts; log of the log-scale sd for amounts.
PRIOR_DISPERSION = {"nb": (3.0, 2.0), "lognormal": (-1.5, 1.0)}


def coef_prior_scales(structure: PanelStructure) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prior scales of the population means, the group scales and the series scales, per coefficient."""
    is_covariate = np.array([i > structure.n_time for i in range(structure.n_coef)])
    mean = np.where(is_covariate, PRIOR_COVARIATE, PRIOR_EFFECT)
    mean[0] = PRIOR_INTERCEPT
    group = np.full(structure.n_coef, PRIOR_GROUP_EFFECT)
    group[0] = PRIOR_GROUP_INTERCEPT
    series = np.full(structure.n_coef, PRIOR_SERIES_EFFECT)
    series[0] = PRIOR_SERIES_INTERCEPT
    return mean.astype(np.float32), group.astype(np.float32), series.astype(np.float32)


# --- the formula ----------------------------------------------------------------------------------


def coefficients(latent: dict[str, jnp.ndarray], inputs: PanelInputs, structure: PanelStructure, idx: jnp.ndarray) -> jnp.ndarray:
    """theta [s, P] of the series at ``idx``, from one draw of every latent variable.

    Series-level latents in ``latent`` hold the selected series only ([s, P]); globals are whole.
    """
    store = inputs.series_store[idx]
    product = inputs.series_product[idx]
    theta = latent[PanelSite.COEF_MEAN][None, :]
    if structure.n_store_attributes:
        theta = theta + inputs.store_attributes[store] @ latent[PanelSite.STORE_ATTR]
    if structure.n_product_attributes:
        theta = theta + inputs.product_attributes[product] @ latent[PanelSite.PRODUCT_ATTR]
    for side, level, _, pooled in structure.group_sites():
        groups = (inputs.store_groups if side == STORE_SIDE else inputs.product_groups)[level]
        member = groups[store if side == STORE_SIDE else product]
        effect = latent[PanelSite.group_scale(side, level)] * latent[PanelSite.group_raw(side, level)][member]
        theta = theta + effect * jnp.asarray(pooled, jnp.float32)
    deviation = latent[PanelSite.SERIES_SCALE] * latent[PanelSite.SERIES_RAW]
    return theta + deviation * jnp.asarray(structure.varies, jnp.float32)


def _level_path(steps_past: jnp.ndarray, steps_future: jnp.ndarray | None, block: jnp.ndarray, n_past: int) -> jnp.ndarray:
    """Level [s, T], zero in the anchor's block: past blocks walk backwards, future ones forwards."""
    backwards = -jnp.cumsum(steps_past[:, ::-1], axis=1)[:, ::-1]
    parts = [backwards, jnp.zeros((steps_past.shape[0], 1), steps_past.dtype)]
    if steps_future is not None:
        parts.append(jnp.cumsum(steps_future, axis=1))
    path = jnp.concatenate(parts, axis=1)
    # A product with the blocks' one-hot [blocks, T], not a gather: XLA's gathers (and their gradients'
    # scatters) are slow on a CPU; each column has a single 1, so the result is the gather's exactly.
    one_hot = (block + n_past)[None, :] == jnp.arange(path.shape[1])[:, None]
    return path @ one_hot.astype(path.dtype)


def orthogonal_shocks(raw: jnp.ndarray, scale: jnp.ndarray, basis: jnp.ndarray) -> jnp.ndarray:
    """Shocks over the history periods (last axis), with what the basis spans removed: one basis [T, K]
    for every row of shocks, or one per row [R, T, K]."""
    shock = scale * raw
    if basis.ndim == 3:
        return shock - jnp.einsum("rk,rtk->rt", jnp.einsum("rt,rtk->rk", shock, basis), basis)
    return shock - (shock @ basis) @ basis.T


def log_mean(
    latent: dict[str, jnp.ndarray],
    inputs: PanelInputs,
    structure: PanelStructure,
    idx: jnp.ndarray,
    future_shocks: tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray] | None = None,
) -> jnp.ndarray:
    """log mu [s, T] of the series at ``idx`` over the periods of ``inputs``.

    ``future_shocks``: (chain [T], per store [n_stores, T], per product [n_products, T]) shocks of the
    periods after the anchor, drawn by the caller so that every series of a draw shares them.
    """
    theta = coefficients(latent, inputs, structure, idx)
    n_time = structure.n_time
    x_series = inputs.x_series[idx]
    value = (
        inputs.log_offset
        + theta[:, :1]
        + theta[:, 1 : 1 + n_time] @ inputs.x_time.T
        + jnp.einsum("stf,sf->st", x_series, theta[:, 1 + n_time :])
    )
    members = {CHAIN: None, STORE_SIDE: inputs.series_store[idx], PRODUCT_SIDE: inputs.series_product[idx]}
    for steps_site, scale_site, rows in _walks(structure, members):
        scale = latent[scale_site]
        future = latent.get(PanelSite.future(steps_site))
        path = _level_path(scale * latent[steps_site], None if future is None else scale * future, inputs.block, structure.n_past_blocks)
        value = value + (path if rows is None else path[rows])

    in_history = inputs.history_index >= 0
    position = jnp.maximum(inputs.history_index, 0)
    for i, kind in enumerate(SHOCK_KINDS):
        if kind not in structure.shocks:
            continue
        raw_site, scale_site = SHOCK_SITES[kind]
        per_product = kind == PRODUCT_SIDE and inputs.shock_basis.shape[0] > 1
        basis = inputs.shock_basis[1:] if per_product else inputs.shock_basis[0]
        history = orthogonal_shocks(latent[raw_site], latent[scale_site], basis)  # [T_h] or [K, T_h]
        shock = jnp.where(in_history, history[..., position], 0.0)
        if future_shocks is not None:
            shock = jnp.where(in_history, shock, future_shocks[i])
        value = value + (shock[None, :] if members[kind] is None else shock[members[kind]])
    return value


def log_mean_ahead(
    latent: dict[str, jnp.ndarray], inputs: PanelInputs, structure: PanelStructure, idx: jnp.ndarray, future_shocks: tuple[jnp.ndarray, ...]
) -> jnp.ndarray:
    """``log_mean`` over periods after the anchor only, for D draws at once, the draws on the last axis of
    every array: ``latent``'s [..., D], ``future_shocks``' [..., T, D] (a placeholder for a kind the model
    lacks); log mu [s, T, D]. The history's level steps and shocks cannot reach these periods (the level is
    zero in the anchor's block and walks forwards from it), so they are neither needed nor computed.

    The same formula as ``log_mean`` (a test holds the two equal), in the layout the forecast wants: each
    cell's draws contiguous. Under a vmap over draws, ``log_mean`` gathers each draw's group effects row by
    row and its products come out draws first, to be moved last: M5's chunks take a third more time so.
    """
    store, product = inputs.series_store[idx], inputs.series_product[idx]

    def by_coefficient(mask: tuple[bool, ...]) -> jnp.ndarray:
        return jnp.asarray(mask, jnp.float32)[:, None]

    theta = latent[PanelSite.COEF_MEAN][None]  # [1, P, D]
    if structure.n_store_attributes:
        theta = theta + jnp.einsum("sa,apd->spd", inputs.store_attributes[store], latent[PanelSite.STORE_ATTR])
    if structure.n_product_attributes:
        theta = theta + jnp.einsum("sa,apd->spd", inputs.product_attributes[product], latent[PanelSite.PRODUCT_ATTR])
    for side, level, _, pooled in structure.group_sites():
        groups = (inputs.store_groups if side == STORE_SIDE else inputs.product_groups)[level]
        member = groups[store if side == STORE_SIDE else product]
        effect = latent[PanelSite.group_scale(side, level)][None] * latent[PanelSite.group_raw(side, level)][member]
        theta = theta + effect * by_coefficient(pooled)
    deviation = latent[PanelSite.SERIES_SCALE][None] * latent[PanelSite.SERIES_RAW]
    theta = theta + deviation * by_coefficient(structure.varies)  # [s, P, D]

    n_time = structure.n_time
    value = (
        inputs.log_offset
        + theta[:, :1]
        + jnp.einsum("tp,spd->std", inputs.x_time, theta[:, 1 : 1 + n_time])
        + jnp.einsum("stf,sfd->std", inputs.x_series[idx], theta[:, 1 + n_time :])
    )
    members = {CHAIN: None, STORE_SIDE: store, PRODUCT_SIDE: product}
    for steps_site, scale_site, rows in _walks(structure, members):
        steps = latent.get(PanelSite.future(steps_site))  # [s or groups, B, D]; none without a block ahead
        if steps is not None:
            path = _path_ahead(latent[scale_site] * steps, inputs.block)
            value = value + (path if rows is None else path[rows])
    for shock, kind in zip(future_shocks, SHOCK_KINDS, strict=True):
        if kind in structure.shocks:
            value = value + (shock[None] if members[kind] is None else shock[members[kind]])
    return value


def _walks(structure: PanelStructure, members: dict) -> list[tuple[str, str, jnp.ndarray | None]]:
    """Every level walk as (steps site, scale site, the row of its path each series takes): the series' own
    (None: row for row), then those the chain's (None again: its one row broadcasts), a store's or a product's
    series share."""
    own = (PanelSite.LEVEL_STEPS, PanelSite.LEVEL_SCALE, None)
    return [own, *((*WALK_SITES[side], members[side]) for side in structure.level_walks)]


def log_dispersion(latent: dict[str, jnp.ndarray], x_series: jnp.ndarray, structure: PanelStructure) -> jnp.ndarray:
    """Each cell's log dispersion (NB: log concentration; log-normal: log of the log-scale sd): the series'
    own, plus a linear term in the covariates of ``structure.dispersion_features``, so that a promotion week can be
    noisier than a regular one. ``latent``'s series variables hold the selected series ([s], or [s, D] with
    draws last); ``x_series`` [s, T, F]; the result [s, T] or [s, T, D]."""
    own = latent[PanelSite.DISPERSION_MEAN] + latent[PanelSite.DISPERSION_SCALE] * latent[PanelSite.DISPERSION_RAW]
    own = own[:, None]
    if not structure.has_dispersion_coef:
        return own
    features = structure.dispersion_features
    if features != tuple(range(x_series.shape[-1])):
        x_series = x_series[..., np.asarray(features)]
    return own + jnp.tensordot(x_series, latent[PanelSite.DISPERSION_COEF], axes=([2], [0]))


def _path_ahead(steps: jnp.ndarray, block: jnp.ndarray) -> jnp.ndarray:
    """A walk's level [g, T, D] over periods after the anchor from its steps [g, B, D]: zero in the anchor's
    block (0), then the steps' running sum."""
    walk = jnp.cumsum(steps, axis=1)
    path = jnp.concatenate([jnp.zeros_like(walk[:, :1]), walk], axis=1)
    one_hot = block[None, :] == jnp.arange(path.shape[1])[:, None]
    return jnp.einsum("gbd,bt->gtd", path, one_hot.astype(path.dtype))


# --- likelihoods -----------------------------------------------------------------------------------


class LogNormalScaleMixture(dist.Distribution):
    """A scale mixture of log-normals with a common mean exp(log_mean): for amounts (money).

    Component k (weights softmax(logits)) has log-scale sd exp(log_sd + offsets[k]) and location
    log_mean - sd^2 / 2, so every component, and the mixture, has mean exp(log_mean).
    """

    arg_constraints = {
        "log_mean": constraints.real,
        "log_sd": constraints.real,
        "component_offsets": constraints.real_vector,
        "component_logits": constraints.real_vector,
    }
    support = constraints.positive

    def __init__(self, log_mean, log_sd, component_offsets, component_logits, *, validate_args=None):
        self.log_mean, self.log_sd = promote_shapes(log_mean, log_sd)
        self.component_offsets = jnp.asarray(component_offsets)
        self.component_logits = jnp.asarray(component_logits)
        batch_shape = jax.lax.broadcast_shapes(jnp.shape(log_mean), jnp.shape(log_sd))
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    @property
    def mean(self):
        return jnp.broadcast_to(jnp.exp(self.log_mean), self.batch_shape)

    def sample(self, key, sample_shape=()):
        shape = sample_shape + self.batch_shape
        key_component, key_normal = jax.random.split(key)
        component = jax.random.categorical(key_component, self.component_logits, shape=shape)
        sd = jnp.exp(self.log_sd + self.component_offsets[component])
        return jnp.exp(self.log_mean - 0.5 * sd**2 + sd * jax.random.normal(key_normal, shape))

    def log_prob(self, value):
        # Masked cells hold 0; a safe stand-in keeps their (discarded) terms and gradients finite.
        log_value = jnp.log(jnp.where(value > 0, value, 1.0))
        log_weights = jax.nn.log_softmax(self.component_logits)
        parts = []
        for k in range(self.component_offsets.shape[-1]):
            sd = jnp.exp(self.log_sd + self.component_offsets[k])
            parts.append(log_weights[k] + dist.Normal(self.log_mean - 0.5 * sd**2, sd).log_prob(log_value))
        return jax.nn.logsumexp(jnp.stack(parts), axis=0) - log_value


def mixture_parameters(tail_logit: jnp.ndarray, tail_gap: jnp.ndarray, likelihood: str) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(component logits, component offsets) of the scale mixture: component 0 is the core; each further
    one is wider (a lower NB concentration, a higher log-normal sd) by its cumulative gap."""
    logits = jnp.concatenate([jnp.zeros(tail_logit.shape[:-1] + (1,)), tail_logit], axis=-1)
    gaps = jnp.concatenate([jnp.zeros(tail_gap.shape[:-1] + (1,)), jnp.cumsum(tail_gap, axis=-1)], axis=-1)
    return logits, (-gaps if likelihood == "nb" else gaps)


def likelihood(structure: PanelStructure, log_mu, log_dispersion, tail_logit, tail_gap) -> dist.Distribution:
    logits, offsets = mixture_parameters(tail_logit, tail_gap, structure.likelihood)
    if structure.likelihood == "nb":
        return NegativeBinomialScaleMixture(log_mu, log_dispersion, offsets, logits)
    return LogNormalScaleMixture(log_mu, log_dispersion, offsets, logits)


def log_survival(structure: PanelStructure, y, log_mu, log_dispersion, tail_logit, tail_gap) -> jnp.ndarray:
    """log P(Y >= y) under ``likelihood``'s law, for censored cells. A count above the survival grid
    (``structure.censor_terms``, capped at ``censored.MAX_CENSORED_UNITS``) is lowered to it: demand is
    still at least that much, a weaker but true bound."""
    logits, offsets = mixture_parameters(tail_logit, tail_gap, structure.likelihood)
    if structure.likelihood == "nb":
        if structure.censor_terms < 1:
            raise ValueError(f"censored counts need a survival grid: structure.censor_terms is {structure.censor_terms}")
        y = jnp.minimum(y, structure.censor_terms)
        return nb_mixture_log_survival(y, log_mu, log_dispersion, offsets, logits, structure.censor_terms)
    return lognormal_mixture_log_survival(y, log_mu, log_dispersion, offsets, logits)


# --- the model ------------------------------------------------------------------------------------


def shock_shapes(structure: PanelStructure, n_periods: int) -> dict[str, tuple[int, ...]]:
    """The shape of each period shock the model has, over ``n_periods`` periods."""
    sizes = {CHAIN: (), STORE_SIDE: (structure.n_stores,), PRODUCT_SIDE: (structure.n_products,)}
    return {kind: (*sizes[kind], n_periods) for kind in SHOCK_KINDS if kind in structure.shocks}


@dataclass(frozen=True)
class Layout:
    """Where each named variable lies in a flat vector: (name, offset, shape) entries."""

    entries: tuple[tuple[str, int, tuple[int, ...]], ...]

    @classmethod
    def of(cls, shapes: dict[str, tuple[int, ...]]) -> Layout:
        entries, offset = [], 0
        for name, shape in shapes.items():
            entries.append((name, offset, tuple(shape)))
            offset += int(np.prod(shape, dtype=np.int64))
        return cls(tuple(entries))

    @property
    def size(self) -> int:
        return sum(int(np.prod(shape, dtype=np.int64)) for _, _, shape in self.entries)

    def slice(self, name: str) -> tuple[int, int, tuple[int, ...]]:
        for entry_name, offset, shape in self.entries:
            if entry_name == name:
                return offset, offset + int(np.prod(shape, dtype=np.int64)), shape
        raise KeyError(f"no variable {name!r} in this layout: {[e[0] for e in self.entries]}")

    def unpack(self, flat, axis: int = -1):
        """name -> array from ``flat`` (numpy or JAX), whose axis ``axis`` holds the variables: [..., size] gives
        [..., *shape]; [s, size, D] with ``axis=1`` gives [s, *shape, D]."""
        axis = axis % flat.ndim
        before, after = flat.shape[:axis], flat.shape[axis + 1 :]
        lead = (slice(None),) * axis
        return {
            name: flat[(*lead, slice(offset, offset + int(np.prod(shape, dtype=np.int64))))].reshape(before + shape + after)
            for name, offset, shape in self.entries
        }

    def pack(self, values: dict[str, np.ndarray], batch: tuple[int, ...] = ()) -> np.ndarray:
        """The flat [*batch, size] array of ``values`` (a name it lacks is 0)."""
        out = np.zeros((*batch, self.size), np.float32)
        for name, offset, shape in self.entries:
            if name in values:
                size = int(np.prod(shape, dtype=np.int64))
                out[..., offset : offset + size] = np.broadcast_to(values[name], (*batch, *shape)).reshape(*batch, size)
        return out


def layouts(structure: PanelStructure) -> tuple[Layout, Layout, Layout]:
    """The layouts of the real globals, the positive globals, and one series' variables."""
    p, n_tails = structure.n_coef, MIXTURE_COMPONENTS - 1
    real: dict[str, tuple[int, ...]] = {PanelSite.COEF_MEAN: (p,)}
    positive: dict[str, tuple[int, ...]] = {PanelSite.SERIES_SCALE: (p,), PanelSite.LEVEL_SCALE: ()}
    if structure.n_store_attributes:
        real[PanelSite.STORE_ATTR] = (structure.n_store_attributes, p)
    if structure.n_product_attributes:
        real[PanelSite.PRODUCT_ATTR] = (structure.n_product_attributes, p)
    for side, level, size, _ in structure.group_sites():
        real[PanelSite.group_raw(side, level)] = (size, p)
        positive[PanelSite.group_scale(side, level)] = (p,)
    for kind, shape in shock_shapes(structure, structure.n_history).items():
        raw_site, scale_site = SHOCK_SITES[kind]
        real[raw_site] = shape
        positive[scale_site] = ()
    for side in structure.level_walks:
        steps_site, scale_site = WALK_SITES[side]
        real[steps_site] = (structure.n_groups(side), structure.n_past_blocks)
        positive[scale_site] = ()
    real |= {PanelSite.DISPERSION_MEAN: (), PanelSite.TAIL_LOGIT: (n_tails,)}
    if structure.has_dispersion_coef:
        real[PanelSite.DISPERSION_COEF] = (len(structure.dispersion_features),)
    positive |= {PanelSite.DISPERSION_SCALE: (), PanelSite.TAIL_GAP: (n_tails,)}
    series = {PanelSite.SERIES_RAW: (p,), PanelSite.LEVEL_STEPS: (structure.n_past_blocks,), PanelSite.DISPERSION_RAW: ()}
    return Layout.of(real), Layout.of(positive), Layout.of(series)


def prior_vectors(structure: PanelStructure) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prior (loc, scale) of the real globals (normal) and the scales of the positive ones (half-normal)."""
    real, positive, _ = layouts(structure)
    mean_scale, group_scale, series_scale = coef_prior_scales(structure)
    disp_loc, disp_scale = PRIOR_DISPERSION[structure.likelihood]
    loc = {PanelSite.DISPERSION_MEAN: disp_loc, PanelSite.TAIL_LOGIT: PRIOR_TAIL_LOGIT.loc}
    scale = {name: 1.0 for name, _, _ in real.entries}
    scale |= {
        PanelSite.COEF_MEAN: mean_scale,
        PanelSite.STORE_ATTR: PRIOR_EFFECT,
        PanelSite.PRODUCT_ATTR: PRIOR_EFFECT,
        PanelSite.DISPERSION_MEAN: disp_scale,
        PanelSite.DISPERSION_COEF: PRIOR_DISPERSION_COEF,
        PanelSite.TAIL_LOGIT: PRIOR_TAIL_LOGIT.scale,
    }
    positive_scale = {
        PanelSite.SERIES_SCALE: series_scale,
        PanelSite.LEVEL_SCALE: PRIOR_LEVEL_SCALE,
        PanelSite.DISPERSION_SCALE: 1.0,
        PanelSite.TAIL_GAP: PRIOR_TAIL_GAP.scale,
        **{scale_site: PRIOR_SHOCK_SCALE for _, scale_site in SHOCK_SITES.values()},
        **{scale_site: PRIOR_LEVEL_SCALE for _, scale_site in WALK_SITES.values()},
    }
    for side, level, _, _ in structure.group_sites():
        positive_scale[PanelSite.group_scale(side, level)] = group_scale
    return real.pack(loc), real.pack(scale), positive.pack(positive_scale)


def sample_globals(structure: PanelStructure) -> dict[str, jnp.ndarray]:
    """Every global latent variable, sampled from its prior (under the guide when fitting), by name."""
    real, positive, _ = layouts(structure)
    loc, scale, positive_scale = prior_vectors(structure)
    values = numpyro.sample(PanelSite.GLOBALS, dist.Normal(loc, scale).to_event(1))
    scales = numpyro.sample(PanelSite.SCALES, dist.HalfNormal(positive_scale).to_event(1))
    return {**real.unpack(values), **positive.unpack(scales)}


def scaled(scale: float | jnp.ndarray | None) -> contextlib.AbstractContextManager:
    """Log-densities inside weighted by ``scale``; None: no handler, the program traced as without it."""
    return contextlib.nullcontext() if scale is None else handlers.scale(scale=scale)


def pool_weighted(pool_scale: float | jnp.ndarray | None) -> contextlib.AbstractContextManager:
    """The series-level terms' weight when a fit sees a pool of a larger panel's series (None: the whole
    panel, no handler, the program traced before pools existed)."""
    return scaled(pool_scale)


def recency_weights(inputs: PanelInputs, structure: PanelStructure) -> jnp.ndarray | None:
    """Each period's weight in the likelihood [T]: 1 at the anchor, halving every ``recency_half_life`` periods
    back; None when the half-life is 0 (every period weighs 1).

    A discounted likelihood (West and Harrison's discount factors): an old week tells less about next quarter's
    promotion lift or price response than last month's, so every coefficient follows its recent values, with
    the wider posterior that fewer effective periods give, without a walk of its own in the model."""
    if structure.recency_half_life <= 0:
        return None
    age = (structure.n_history - 1) - inputs.history_index
    return jnp.exp2(-jnp.maximum(age, 0) / structure.recency_half_life)


def model(
    inputs: PanelInputs, structure: PanelStructure, subsample_size: int | None = None, pool_scale: float | jnp.ndarray | None = None
) -> None:
    """The panel model over the history (``inputs.y`` given): the likelihood of every observed cell.

    ``pool_scale``: the series in ``inputs`` are a pool drawn from a larger panel (a streamed fit's blocks),
    whose series-level terms count this many times over (see ``tasks.model.panel_stream``).
    """
    n_series, n_periods = inputs.observed.shape
    latent = sample_globals(structure)
    series_layout = layouts(structure)[2]
    with pool_weighted(pool_scale), numpyro.plate(PanelSite.SERIES_PLATE, n_series, subsample_size=subsample_size, dim=-2) as idx:
        flat = numpyro.sample(PanelSite.SERIES, dist.Normal(0.0, 1.0).expand([1, series_layout.size]).to_event(1))
        series = series_layout.unpack(flat[:, 0, :])
        log_mu = log_mean({**latent, **series}, inputs, structure, idx)
        cell_dispersion = log_dispersion({**latent, **series}, inputs.x_series[idx], structure)
        observed = inputs.observed[idx]
        y = None if inputs.y is None else inputs.y[idx]
        law = likelihood(structure, log_mu, cell_dispersion, latent[PanelSite.TAIL_LOGIT], latent[PanelSite.TAIL_GAP])
        weights = recency_weights(inputs, structure)
        if inputs.censored is not None and y is not None:
            # A stock-out's sales are a lower bound of demand: P(Y >= y) in place of P(Y = y).
            observed = observed & ~inputs.censored[idx]
            periods = inputs.censored_periods[idx]  # [s, C], -1 padded
            valid = periods >= 0
            at = jnp.maximum(periods, 0)
            y_censored = jnp.where(valid, jnp.take_along_axis(y, at, axis=1), 0.0)
            mu_censored = jnp.take_along_axis(log_mu, at, axis=1)
            tails = (latent[PanelSite.TAIL_LOGIT], latent[PanelSite.TAIL_GAP])
            dispersion_censored = jnp.take_along_axis(jnp.broadcast_to(cell_dispersion, log_mu.shape), at, axis=1)
            survival = log_survival(structure, y_censored, mu_censored, dispersion_censored, *tails)
            if weights is not None:
                survival = survival * weights[at]
            numpyro.factor(PanelSite.Y_CENSORED, jnp.where(valid, survival, 0.0).sum(axis=1, keepdims=True))
        with numpyro.plate(PanelSite.PERIODS_PLATE, n_periods, dim=-1), scaled(weights):
            numpyro.sample(PanelSite.Y, law.mask(observed), obs=y)


# --- inputs --------------------------------------------------------------------------------------


def history_periods(n_periods: int, bucket_periods: int) -> int:
    """``n_periods`` rounded up to a multiple of ``bucket_periods``: the history length a fit compiles for, so that
    the next night's history (a period longer) runs tonight's programs."""
    if n_periods < 1 or bucket_periods < 1:
        raise ValueError(f"n_periods and bucket_periods must be >= 1, got {n_periods} and {bucket_periods}")
    return round_up(n_periods, bucket_periods)


def series_rows(n_series: int) -> int:
    """``n_series`` rounded up to a multiple of 1/64th to 1/32nd of it (a power of two; 1 below 64 series): the
    series a fit compiles for, so that a night with a new series (a product's first sale in a store) runs
    tonight's programs, for at most 3% more rows."""
    if n_series < 1:
        raise ValueError(f"n_series must be >= 1, got {n_series}")
    return round_up(n_series, 1 << max(0, n_series.bit_length() - 6))


def censored_width(n_cells: int) -> int:
    """The columns of ``censored_periods`` for series with up to ``n_cells`` censored cells: the power of two at or
    above it (0 for none), so that a night with one stock-out more compiles nothing new."""
    return 0 if n_cells <= 0 else power_of_two(n_cells)


def censored_periods(censored: np.ndarray, width: int | None = None) -> np.ndarray:
    """Each series' censored periods, int32 [S, C], padded with -1; C: ``width``, by default ``censored_width``
    of the most any series has."""
    censored = np.asarray(censored, bool)
    counts = censored.sum(axis=1)
    most = int(counts.max(initial=0))
    width = censored_width(most) if width is None else width
    if width < most:
        raise ValueError(f"a series has {most} censored periods, more than the width {width}")
    out = np.full((censored.shape[0], width), -1, np.int32)
    rows, periods = np.nonzero(censored)
    slot = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
    out[rows, slot] = periods
    return out


def pad_history(inputs: PanelInputs, n_periods: int, n_series: int | None = None) -> PanelInputs:
    """``inputs`` over ``n_periods`` periods: empty periods put before the history's, unobserved, outside the
    history (``history_index`` -1: no shock, no recency weight, in no block of the walk's estimate), with zero
    covariates, so that a fit's arrays keep one shape while the history grows night by night. A period's shock and
    level step that only the padding would reach stay prior draws that touch no target. ``n_series``: also empty
    series after the panel's (no cell, of the first store and product; ``series_rows``), whose latents stay prior
    draws too."""
    n_pad = n_periods - inputs.x_time.shape[0]
    n_more = 0 if n_series is None else n_series - inputs.observed.shape[0]
    if n_pad < 0 or n_more < 0:
        n_had, t_had = inputs.observed.shape
        raise ValueError(f"cannot pad inputs of {n_had} series x {t_had} periods to {n_had if n_series is None else n_series} x {n_periods}")
    if n_pad == 0 and n_more == 0:
        return inputs

    def before(array: jnp.ndarray | None, fill, over_periods: int | None = 1, over_series: bool = True) -> jnp.ndarray | None:
        if array is None:
            return None
        widths = [(0, 0)] * array.ndim
        if over_series:
            widths[0] = (0, n_more)
        if over_periods is not None:
            widths[over_periods] = (n_pad, 0)
        return jnp.pad(array, widths, constant_values=fill)

    periods = inputs.censored_periods
    return inputs._replace(
        x_time=before(inputs.x_time, 0.0, over_periods=0, over_series=False),
        x_series=before(inputs.x_series, 0.0),
        observed=before(inputs.observed, False),
        y=before(inputs.y, 0.0),
        series_store=before(inputs.series_store, 0, over_periods=None),
        series_product=before(inputs.series_product, 0, over_periods=None),
        block=before(inputs.block, inputs.block[0], over_periods=0, over_series=False),  # any block: no target sees these periods
        history_index=before(inputs.history_index, -1, over_periods=0, over_series=False),
        censored=before(inputs.censored, False),
        censored_periods=None if periods is None else before(jnp.where(periods >= 0, periods + n_pad, -1), -1, over_periods=None),
    )


def padded_basis(basis: np.ndarray, n_history: int) -> np.ndarray:
    """A shock basis over the history's periods with zero rows put before them up to ``n_history`` (the padding's
    shocks, which no target sees, are kept off nothing)."""
    n_pad = n_history - basis.shape[1]
    if n_pad < 0:
        raise ValueError(f"cannot pad a shock basis of {basis.shape[1]} periods to {n_history}")
    return np.pad(basis, ((0, 0), (n_pad, 0), (0, 0))) if n_pad else basis


def time_blocks(offsets: np.ndarray, block_periods: int) -> np.ndarray:
    """Signed level block of periods given as offsets from the anchor (anchor = 0, in periods)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    past = -((-offsets) // block_periods)
    future = (offsets - 1) // block_periods + 1
    return np.where(offsets <= 0, past, future).astype(np.int32)


class PeriodSums(NamedTuple):
    """The covariates' sums over observed cells, per period: over all series and per product (None: the
    chain's only). Sums of blocks of series add up to the panel's (``add_period_sums``)."""

    chain: np.ndarray  # float64 [T, F]
    chain_count: np.ndarray  # float64 [T]
    product: np.ndarray | None = None  # float64 [n_products, T, F]
    product_count: np.ndarray | None = None  # float64 [n_products, T]


def period_sums(x_series: np.ndarray, observed: np.ndarray, series_product: np.ndarray | None = None, n_products: int = 0) -> PeriodSums:
    weight = observed.astype(np.float64)
    chain = (x_series * weight[..., None]).sum(axis=0)
    if series_product is None:
        return PeriodSums(chain, weight.sum(axis=0))
    one_hot = (series_product[None, :] == np.arange(n_products)[:, None]).astype(np.float64)  # [P, S]
    n_series, n_periods, n_features = x_series.shape
    product = (one_hot @ (x_series * weight[..., None]).reshape(n_series, -1)).reshape(n_products, n_periods, n_features)
    return PeriodSums(chain, weight.sum(axis=0), product, one_hot @ weight)


def add_period_sums(a: PeriodSums, b: PeriodSums) -> PeriodSums:
    return PeriodSums(*(None if x is None else x + y for x, y in zip(a, b, strict=True)))


def shock_basis(
    x_time: np.ndarray,
    x_series: np.ndarray,
    observed: np.ndarray,
    series_product: np.ndarray | None = None,
    n_products: int = 0,
    anchor_block_periods: int = 0,
) -> np.ndarray:
    """Orthonormal bases [1 + n_products, T, K] of what the design explains, which the period shocks are
    kept off: [0] the time design and the covariates' period means over all series (chain and store
    shocks); [1 + p] the time design and the period means over product p's series (its product shocks),
    so that a product's shock cannot stand in for its own price or promotion. Columns beyond a basis'
    rank are zeros. ``series_product`` None: the chain's basis only.

    ``anchor_block_periods`` > 0: every basis also spans the indicator of the history's last that many
    periods (the level walk's anchor block), so that the shocks average 0 over it. The forecast draws
    its shocks afresh around 0 and continues the level from that block: a rise that lasts through the
    block must be the level's, or the forecast drops it (walmart, origin 2012-02-03: the chain total's
    forecast 3.9% below the actual sales without this, 1.7% with it)."""
    return shock_basis_from_sums(x_time, period_sums(x_series, observed, series_product, n_products), anchor_block_periods)


def shock_basis_from_sums(x_time: np.ndarray, sums: PeriodSums, anchor_block_periods: int = 0) -> np.ndarray:
    """``shock_basis`` from the covariates' period sums (``period_sums``)."""
    n_periods = x_time.shape[0]
    if 0 < anchor_block_periods < n_periods:
        anchor_block = (np.arange(n_periods) >= n_periods - anchor_block_periods).astype(np.float64)
        x_time = np.concatenate([x_time, anchor_block[:, None]], axis=1)
    bases = [_orthonormal(x_time, sums.chain / np.maximum(sums.chain_count, 1.0)[:, None])]
    if sums.product is not None:
        counts = np.maximum(sums.product_count, 1.0)[..., None]
        bases += [_orthonormal(x_time, per_period) for per_period in sums.product / counts]
    # as wide as the design whatever its rank (a covariate constant over the history adds no rank): one shape a night
    width = 1 + x_time.shape[1] + sums.chain.shape[1]
    return np.stack([np.pad(b, ((0, 0), (0, width - b.shape[1]))) for b in bases]).astype(np.float32)


def _orthonormal(x_time: np.ndarray, per_period: np.ndarray) -> np.ndarray:
    design = np.concatenate([np.ones((x_time.shape[0], 1)), x_time, per_period], axis=1)
    u, singular, _ = np.linalg.svd(design, full_matrices=False)
    rank = int((singular > singular[0] * 1e-6).sum())
    return u[:, :rank]
