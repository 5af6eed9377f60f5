"""SVI for the panel model: a mean-field guide, a warm start, and the global fit.

The guide is a mean-field normal (log-normal for the positive scales) whose parameters are plain
arrays keyed ``"<site>.loc"`` / ``"<site>.scale"``; series-level ones have the series on their first
axis, so a fitted model is a dict of arrays (``tasks.model.panel_state`` stores it as ``.npz``). The
global fit subsamples series at each step (the likelihood scaled up by NumPyro's plate), so that a
step's cost does not grow with the number of series. Fitting runs through the project's one SVI loop
(``tasks.model.inference.drive_svi``): compiled chunks of steps, a convergence check between chunks,
``FitDivergedError`` on a non-finite loss.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from tasks.model.inference import FitProgress, FitResult, FitSettings, Params, compiled_svi, drive_svi, log_progress
from tasks.model.panel import (
    MIXTURE_COMPONENTS,
    PRIOR_DISPERSION,
    PRIOR_LEVEL_SCALE,
    PRIOR_SHOCK_SCALE,
    PRODUCT_SIDE,
    SHOCK_SITES,
    STORE_SIDE,
    PanelInputs,
    PanelSite,
    PanelStructure,
    coef_prior_scales,
    model,
    shock_shapes,
)


def global_sites(structure: PanelStructure) -> dict[str, tuple[tuple[int, ...], bool]]:
    """Every global site -> (shape, positive)."""
    p, n_tails = structure.n_coef, MIXTURE_COMPONENTS - 1
    sites: dict[str, tuple[tuple[int, ...], bool]] = {
        PanelSite.COEF_MEAN: ((p,), False),
        PanelSite.SERIES_SCALE: ((p,), True),
        PanelSite.LEVEL_SCALE: ((), True),
    }
    for kind, shape in shock_shapes(structure, structure.n_history).items():
        raw_site, scale_site = SHOCK_SITES[kind]
        sites[scale_site] = ((), True)
        sites[raw_site] = (shape, False)
    if structure.n_store_attributes:
        sites[PanelSite.STORE_ATTR] = ((structure.n_store_attributes, p), False)
    if structure.n_product_attributes:
        sites[PanelSite.PRODUCT_ATTR] = ((structure.n_product_attributes, p), False)
    for side, level, size, _ in structure.group_sites():
        sites[PanelSite.group_scale(side, level)] = ((p,), True)
        sites[PanelSite.group_raw(side, level)] = ((size, p), False)
    sites[PanelSite.DISPERSION_MEAN] = ((), False)
    sites[PanelSite.DISPERSION_SCALE] = ((), True)
    sites[PanelSite.TAIL_LOGIT] = ((n_tails,), False)
    sites[PanelSite.TAIL_GAP] = ((n_tails,), True)
    return sites


def series_sites(structure: PanelStructure) -> dict[str, tuple[int, ...]]:
    """Every series-level site -> its shape per series."""
    return {
        PanelSite.SERIES_RAW: (structure.n_coef,),
        PanelSite.LEVEL_STEPS: (structure.n_past_blocks,),
        PanelSite.DISPERSION_RAW: (),
    }


def _site_law(loc: jnp.ndarray, scale: jnp.ndarray, positive: bool, event_dims: int) -> dist.Distribution:
    law = dist.LogNormal(loc, scale) if positive else dist.Normal(loc, scale)
    return law.to_event(event_dims) if event_dims else law


def guide(inputs: PanelInputs, structure: PanelStructure, subsample_size: int | None = None) -> None:
    for site, (shape, positive) in global_sites(structure).items():
        loc = numpyro.param(f"{site}.loc", jnp.zeros(shape))
        scale = numpyro.param(f"{site}.scale", jnp.full(shape, 0.05), constraint=constraints.positive)
        numpyro.sample(site, _site_law(loc, scale, positive, len(shape)))
    n_series = inputs.observed.shape[0]
    series_params = {}
    for site, shape in series_sites(structure).items():
        series_params[site] = (
            numpyro.param(f"{site}.loc", jnp.zeros((n_series, *shape))),
            numpyro.param(f"{site}.scale", jnp.full((n_series, *shape), 0.05), constraint=constraints.positive),
        )
    with numpyro.plate(PanelSite.SERIES_PLATE, n_series, subsample_size=subsample_size, dim=-2) as idx:
        for site, shape in series_sites(structure).items():
            loc, scale = (part[idx] for part in series_params[site])
            if shape:
                numpyro.sample(site, _site_law(loc[:, None, :], scale[:, None, :], False, 1))
            else:
                numpyro.sample(site, dist.Normal(loc[:, None], scale[:, None]))


def warm_start(inputs: PanelInputs, structure: PanelStructure, init_scale: float) -> Params:
    """Start values: priors' centres for the globals, each series' own mean level for its intercept."""
    _, group_scale, series_scale = coef_prior_scales(structure)
    init_loc = {
        PanelSite.SERIES_SCALE: np.log(0.5 * series_scale),
        PanelSite.LEVEL_SCALE: np.log(0.2 * PRIOR_LEVEL_SCALE),
        **{scale: np.log(0.2 * PRIOR_SHOCK_SCALE) for _, scale in SHOCK_SITES.values()},
        PanelSite.DISPERSION_MEAN: np.float32(PRIOR_DISPERSION[structure.likelihood][0]),
        PanelSite.DISPERSION_SCALE: np.log(0.3),
        PanelSite.TAIL_LOGIT: np.full(MIXTURE_COMPONENTS - 1, -2.0),
        PanelSite.TAIL_GAP: np.zeros(MIXTURE_COMPONENTS - 1),
    }
    for side, level, _, _ in structure.group_sites():
        init_loc[PanelSite.group_scale(side, level)] = np.log(0.3 * group_scale)
    params: Params = {}
    for site, (shape, _) in global_sites(structure).items():
        loc = init_loc.get(site)
        params[f"{site}.loc"] = (np.zeros(shape) if loc is None else np.broadcast_to(loc, shape)).astype(np.float32)
        params[f"{site}.scale"] = np.full(shape, init_scale, np.float32)

    y, observed = np.asarray(inputs.y), np.asarray(inputs.observed)
    n_series = observed.shape[0]
    counts = observed.sum(axis=1)
    if structure.likelihood == "nb":
        series_mean = np.log(np.maximum((y * observed).sum(axis=1), 0.5) / np.maximum(counts, 1))
    else:
        series_mean = (np.log(np.where(observed, np.maximum(y, 1e-9), 1.0)) * observed).sum(axis=1) / np.maximum(counts, 1)
    deviation = np.where(counts > 0, series_mean - structure.log_offset, 0.0)
    for site, shape in series_sites(structure).items():
        params[f"{site}.loc"] = np.zeros((n_series, *shape), np.float32)
        params[f"{site}.scale"] = np.full((n_series, *shape), init_scale, np.float32)
    # Split each series' level into a store and a product effect (additive, by alternating means), so that
    # the fit starts with the groups carrying what they share and a new series starts from them.
    members = {
        STORE_SIDE: np.asarray(inputs.series_store),
        PRODUCT_SIDE: np.asarray(inputs.series_product),
    }
    sizes = {STORE_SIDE: structure.n_stores, PRODUCT_SIDE: structure.n_products}
    pooled = {STORE_SIDE: structure.store_pooled[0], PRODUCT_SIDE: structure.product_pooled[0]}
    effects = {side: np.zeros(sizes[side]) for side in members}
    has_data = counts > 0
    residual = deviation.copy()
    for _ in range(10):
        for side in (PRODUCT_SIDE, STORE_SIDE):
            if not pooled[side]:
                continue
            other = sum(effects[s][members[s]] for s in members if s != side)
            target = np.where(has_data, deviation - other, 0.0)
            total = np.bincount(members[side], weights=target, minlength=sizes[side])
            n = np.bincount(members[side], weights=has_data.astype(float), minlength=sizes[side])
            effects[side] = total / np.maximum(n, 1.0)
    residual = np.where(has_data, deviation - sum(effects[s][members[s]] for s in members), 0.0)
    for side in members:
        if not pooled[side]:
            continue
        spread = max(float(effects[side].std()), 0.05)
        params[f"{PanelSite.group_scale(side, 0)}.loc"][0] = np.log(spread)
        params[f"{PanelSite.group_raw(side, 0)}.loc"][:, 0] = effects[side] / spread
    params[f"{PanelSite.SERIES_RAW}.loc"][:, 0] = residual / (0.5 * series_scale[0])
    return params


@lru_cache(maxsize=8)
def _program(structure: PanelStructure, settings: FitSettings, subsample_size: int | None):
    return compiled_svi(
        partial(model, structure=structure, subsample_size=subsample_size),
        partial(guide, structure=structure, subsample_size=subsample_size),
        settings,
    )


def fit_panel(
    inputs: PanelInputs,
    structure: PanelStructure,
    settings: FitSettings,
    key: jax.Array,
    on_progress: Callable[[FitProgress], None] = log_progress,
) -> FitResult:
    """Fit every latent variable of the panel model to the history in ``inputs``."""
    if inputs.y is None:
        raise ValueError("fit_panel needs the target; got inputs without it")
    n_series = inputs.observed.shape[0]
    subsample = settings.subsample_size if settings.subsample_size and settings.subsample_size < n_series else None
    init = warm_start(inputs, structure, settings.init_scale)
    n_observed = int(np.asarray(inputs.observed).sum())
    svi, init_state, run_chunk = _program(structure, settings, subsample)
    return drive_svi(svi, init_state, run_chunk, (inputs,), init, n_observed, settings, key, on_progress)


def prior_params(params: Params, structure: PanelStructure, series: np.ndarray, groups: dict[str, np.ndarray]) -> Params:
    """``params`` with the given series, and the groups of each group site, set to their prior.

    A series or a group without a single observed cell has nothing to learn from: its guide should be
    its prior exactly (loc 0, scale 1 of the non-centred variables), not wherever the optimiser left it.
    """
    out = {k: np.array(v) for k, v in params.items()}
    for site in series_sites(structure):
        out[f"{site}.loc"][series] = 0.0
        out[f"{site}.scale"][series] = 1.0
    for site, rows in groups.items():
        out[f"{site}.loc"][rows] = 0.0
        out[f"{site}.scale"][rows] = 1.0
    return out
