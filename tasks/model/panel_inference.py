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
from dataclasses import replace
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from tasks.model.buckets import power_of_two
from tasks.model.inference import FitProgress, FitResult, FitSettings, Params, SVIChunks, compiled_svi, drive_svi, log_progress
from tasks.model.panel import (
    MIXTURE_COMPONENTS,
    PRIOR_DISPERSION,
    PRIOR_LEVEL_SCALE,
    PRIOR_SHOCK_SCALE,
    PRODUCT_SIDE,
    SHOCK_SITES,
    STORE_SIDE,
    WALK_SITES,
    PanelInputs,
    PanelSite,
    PanelStructure,
    coef_prior_scales,
    layouts,
    log_mean,
    model,
    pad_history,
    pool_weighted,
)


def guide(
    inputs: PanelInputs, structure: PanelStructure, subsample_size: int | None = None, pool_scale: float | jnp.ndarray | None = None
) -> None:
    real, positive, series = layouts(structure)
    for site, size, law in ((PanelSite.GLOBALS, real.size, dist.Normal), (PanelSite.SCALES, positive.size, dist.LogNormal)):
        loc = numpyro.param(f"{site}.loc", jnp.zeros(size))
        scale = numpyro.param(f"{site}.scale", jnp.full(size, 0.05), constraint=constraints.positive)
        numpyro.sample(site, law(loc, scale).to_event(1))
    n_series = inputs.observed.shape[0]
    loc = numpyro.param(f"{PanelSite.SERIES}.loc", jnp.zeros((n_series, series.size)))
    scale = numpyro.param(f"{PanelSite.SERIES}.scale", jnp.full((n_series, series.size), 0.05), constraint=constraints.positive)
    with pool_weighted(pool_scale), numpyro.plate(PanelSite.SERIES_PLATE, n_series, subsample_size=subsample_size, dim=-2) as idx:
        numpyro.sample(PanelSite.SERIES, dist.Normal(loc[idx][:, None, :], scale[idx][:, None, :]).to_event(1))


# The global effects' guide starts this narrow (the series' and the scales' at ``init_scale``). A scale that must
# grow does so in a few hundred steps, pulled by the guide's entropy, which is exact; one that must shrink has only
# the subsampled likelihood to pull it, whose noise outweighs the pull: started at 0.05, the M5 shape's chain-wide
# coefficients ended at a median 0.008, a spread every series shares, and the total's 90% interval was 2.4 times
# as wide as the truth's own (at 0.005: 0.0015 and 1.28 times; M5's 12-level WSPL 0.0797 -> 0.0783).
GLOBALS_INIT_SCALE = 0.005


def series_log_levels(y: np.ndarray, observed: np.ndarray, likelihood: str) -> tuple[np.ndarray, np.ndarray]:
    """Each series' log mean level over its observed cells, and how many it has (a series at a time: a
    streamed fit computes them block by block)."""
    counts = observed.sum(axis=1)
    if likelihood == "nb":
        level = np.log(np.maximum((y * observed).sum(axis=1), 0.5) / np.maximum(counts, 1))
    else:
        level = (np.log(np.where(observed, np.maximum(y, 1e-9), 1.0)) * observed).sum(axis=1) / np.maximum(counts, 1)
    return level, counts


def warm_start(inputs: PanelInputs, structure: PanelStructure, init_scale: float) -> Params:
    """Start values: priors' centres for the globals, each series' mean level split into a store effect, a
    product effect and its own deviation; the latents no history period reaches at their prior."""
    level, counts = series_log_levels(np.asarray(inputs.y), np.asarray(inputs.observed), structure.likelihood)
    start = warm_start_from(level, counts, np.asarray(inputs.series_store), np.asarray(inputs.series_product), structure, init_scale)
    return with_unreached_at_prior(start, inputs, structure, empty_series=counts == 0)


def unreached_history_latents(inputs: PanelInputs, structure: PanelStructure) -> tuple[np.ndarray, np.ndarray]:
    """Which history positions' shocks (bool [n_history]) and which past level steps (bool [n_past_blocks]) no
    history period of ``inputs`` reaches: those of a padded history's empty periods (``pad_history``)."""
    index, block = np.asarray(inputs.history_index), np.asarray(inputs.block)
    in_history = index >= 0
    shocks = np.ones(structure.n_history, bool)
    shocks[index[in_history]] = False
    # a period b blocks back takes the steps n_past - b ... n_past - 1 (``_level_path``): the earliest it reaches
    furthest_back = int(-block[in_history].min(initial=0))
    steps = np.arange(structure.n_past_blocks) < structure.n_past_blocks - furthest_back
    return shocks, steps


def with_unreached_at_prior(params: Params, inputs: PanelInputs, structure: PanelStructure, empty_series: np.ndarray | None = None) -> Params:
    """``params`` whose latents no target reaches start at their prior, loc 0 and scale 1 (nothing pulls them
    elsewhere): those only a padded history's empty periods reach (``unreached_history_latents``: their shocks, the level
    steps before the first period's block), and the series of ``empty_series`` (bool [N]: a padded panel's empty
    rows, a series without a cell); with none, ``params`` as they are."""
    shocks, steps = unreached_history_latents(inputs, structure)
    empty = np.zeros(0, bool) if empty_series is None else np.asarray(empty_series, bool)
    if not shocks.any() and not steps.any() and not empty.any():
        return params
    real, _, series = layouts(structure)
    out = {k: np.array(v) for k, v in params.items()}
    for suffix, value in (("loc", 0.0), ("scale", 1.0)):
        out[f"{PanelSite.SERIES}.{suffix}"][empty] = value

    def at_prior(site: str, layout, entries: str, unused: np.ndarray) -> None:
        start, stop, shape = layout.slice(entries)
        mask = np.broadcast_to(unused, shape).reshape(-1)
        for suffix, value in (("loc", 0.0), ("scale", 1.0)):
            out[f"{site}.{suffix}"][..., start:stop][..., mask] = value

    for kind in structure.shocks:
        at_prior(PanelSite.GLOBALS, real, SHOCK_SITES[kind][0], shocks)
    for side in structure.level_walks:
        at_prior(PanelSite.GLOBALS, real, WALK_SITES[side][0], steps)
    at_prior(PanelSite.SERIES, series, PanelSite.LEVEL_STEPS, steps)
    return out


def warm_start_from(
    series_mean: np.ndarray, counts: np.ndarray, series_store: np.ndarray, series_product: np.ndarray, structure: PanelStructure, init_scale: float
) -> Params:
    """``warm_start`` from each series' log level and observed count (``series_log_levels``)."""
    real, positive, series = layouts(structure)
    _, group_scale, series_scale = coef_prior_scales(structure)
    real_values: dict[str, np.ndarray] = {
        PanelSite.DISPERSION_MEAN: np.float32(PRIOR_DISPERSION[structure.likelihood][0]),
        PanelSite.TAIL_LOGIT: np.full(MIXTURE_COMPONENTS - 1, -2.0),
    }
    log_scales: dict[str, np.ndarray] = {
        PanelSite.SERIES_SCALE: np.log(0.5 * series_scale),
        PanelSite.LEVEL_SCALE: np.log(0.2 * PRIOR_LEVEL_SCALE),
        **{scale: np.log(0.2 * PRIOR_SHOCK_SCALE) for _, scale in SHOCK_SITES.values()},
        **{scale: np.log(0.2 * PRIOR_LEVEL_SCALE) for _, scale in WALK_SITES.values()},
        PanelSite.DISPERSION_SCALE: np.log(0.3),
        PanelSite.TAIL_GAP: np.zeros(MIXTURE_COMPONENTS - 1),
    }
    for side, level, _, _ in structure.group_sites():
        log_scales[PanelSite.group_scale(side, level)] = np.log(0.3 * group_scale)

    n_series = series_mean.shape[0]
    deviation = np.where(counts > 0, series_mean - structure.log_offset, 0.0)
    # Split each series' level into a store and a product effect (additive, by alternating means), so that
    # the fit starts with the groups carrying what they share and a new series starts from them.
    members = {STORE_SIDE: np.asarray(series_store), PRODUCT_SIDE: np.asarray(series_product)}
    sizes = {STORE_SIDE: structure.n_stores, PRODUCT_SIDE: structure.n_products}
    pooled = {STORE_SIDE: structure.store_pooled[0], PRODUCT_SIDE: structure.product_pooled[0]}
    effects = {side: np.zeros(sizes[side]) for side in members}
    has_data = counts > 0
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
        scale_site, raw_site = PanelSite.group_scale(side, 0), PanelSite.group_raw(side, 0)
        log_scales[scale_site] = np.array(log_scales[scale_site], np.float32)
        log_scales[scale_site][0] = np.log(spread)
        raw = np.zeros(real.slice(raw_site)[2], np.float32)
        raw[:, 0] = effects[side] / spread
        real_values[raw_site] = raw
    series_values = np.zeros((n_series, series.size), np.float32)
    start, _, _ = series.slice(PanelSite.SERIES_RAW)
    series_values[:, start] = residual / (0.5 * series_scale[0])
    return {
        f"{PanelSite.GLOBALS}.loc": real.pack(real_values),
        f"{PanelSite.GLOBALS}.scale": np.full(real.size, min(init_scale, GLOBALS_INIT_SCALE), np.float32),
        f"{PanelSite.SCALES}.loc": positive.pack(log_scales),
        f"{PanelSite.SCALES}.scale": np.full(positive.size, init_scale, np.float32),
        f"{PanelSite.SERIES}.loc": series_values,
        f"{PanelSite.SERIES}.scale": np.full((n_series, series.size), init_scale, np.float32),
    }


def first_series(params: Params, n_series: int) -> Params:
    """``params`` of a fit over a panel padded with empty series (``tasks.model.panel.pad_history``) for the
    panel's own ``n_series``."""
    return {k: v[:n_series] if k in (f"{PanelSite.SERIES}.loc", f"{PanelSite.SERIES}.scale") else v for k, v in params.items()}


@lru_cache(maxsize=8)
def _program(structure: PanelStructure, settings: FitSettings, subsample_size: int | None):
    return compiled_svi(
        partial(model, structure=structure, subsample_size=subsample_size),
        partial(guide, structure=structure, subsample_size=subsample_size),
        settings,
    )


def clipped_per_cell(settings: FitSettings, n_observed: int) -> FitSettings:
    """``settings`` whose gradient clip bounds the gradient per observed cell (``clip_norm`` times the cells).

    The panel's objective is a sum over every observed cell (54 million for M5), so the gradient of a
    product's or a series' level runs to the hundreds of thousands in the steps whose subsample holds its
    series, and is otherwise its prior's pull alone. Clipped element-wise at ``clip_norm`` as it came, the
    likelihood's share was cut and the prior's was not: the levels settled short of the data, toward their
    groups (on the M5 shape, 1.7% of the series per step: log forecast on log true mean, slope 0.968; each
    series' 28-day forecast 9% high for the lowest-selling tenth, 3% low for the highest; each state's daily
    total 0.7-1.1% low, against 50% intervals 2.5-2.7% wide). Bounded per cell, the clip only guards against
    an overflow."""
    # the cells rounded up to a power of two: the clip is a constant of the compiled program, which the next night's
    # history (a few more cells) then shares
    return replace(settings, clip_norm=settings.clip_norm * float(power_of_two(n_observed)))


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
    inputs = pad_history(inputs, structure.n_history)
    n_series = inputs.observed.shape[0]
    subsample = settings.subsample_size if settings.subsample_size and settings.subsample_size < n_series else None
    init = warm_start(inputs, structure, settings.init_scale)
    n_observed = int(np.asarray(inputs.observed).sum())
    settings = clipped_per_cell(settings, n_observed)
    program = SVIChunks(*_program(structure, settings, subsample), (inputs,))
    return drive_svi(program, init, n_observed, settings, key, on_progress, series_per_step=subsample or n_series)


def prior_params(params: Params, structure: PanelStructure, series: np.ndarray, groups: dict[str, np.ndarray]) -> Params:
    """``params`` with the given series, and the given groups of each group site, set to their prior.

    A series or a group without a single observed cell has nothing to learn from: its guide should be
    its prior exactly (loc 0, scale 1 of the non-centred variables), not wherever the optimiser left it.
    """
    out = {k: np.array(v) for k, v in params.items()}
    out[f"{PanelSite.SERIES}.loc"][series] = 0.0
    out[f"{PanelSite.SERIES}.scale"][series] = 1.0
    real = layouts(structure)[0]
    for site, rows in groups.items():
        start, _, shape = real.slice(site)
        width = int(np.prod(shape[1:], dtype=np.int64))
        for row in rows:
            out[f"{PanelSite.GLOBALS}.loc"][start + row * width : start + (row + 1) * width] = 0.0
            out[f"{PanelSite.GLOBALS}.scale"][start + row * width : start + (row + 1) * width] = 1.0
    return out


def posterior_mean_demand(params: Params, structure: PanelStructure, inputs: PanelInputs, key: jax.Array, num_draws: int = 200) -> np.ndarray:
    """E[y] = exp(log mu) [S, T] over the history periods of ``inputs``, averaged over ``num_draws`` draws
    of the guide: what the fit says mean demand was (a censored fit: demand, not sales)."""
    real, positive, series = layouts(structure)
    series_shape = np.shape(params[f"{PanelSite.SERIES}.loc"])

    def mean_demand(params: Params, inputs: PanelInputs, key: jax.Array) -> jnp.ndarray:
        keys = jax.random.split(key, 3)

        def draws(site: str, k: jax.Array, shape: tuple[int, ...]) -> jnp.ndarray:
            loc, scale = jnp.asarray(params[f"{site}.loc"]), jnp.asarray(params[f"{site}.scale"])
            return loc + scale * jax.random.normal(k, (num_draws, *shape))

        globals_ = real.unpack(draws(PanelSite.GLOBALS, keys[0], (real.size,)))
        globals_ |= positive.unpack(jnp.exp(draws(PanelSite.SCALES, keys[1], (positive.size,))))
        per_series = series.unpack(draws(PanelSite.SERIES, keys[2], series_shape))
        idx = jnp.arange(inputs.observed.shape[0])
        log_mu = jax.vmap(lambda latent: log_mean(latent, inputs, structure, idx))({**globals_, **per_series})
        return jnp.exp(log_mu).mean(axis=0)

    # One compiled program: op by op, the model's hundreds of operations each dispatch (and compile) alone.
    return np.asarray(jax.jit(mean_demand)(params, inputs, key))
