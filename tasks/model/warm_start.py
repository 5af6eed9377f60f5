"""A closed-form start for SVI: least squares on log sales.

On the log scale the model is nearly linear: log y ~ log mu + noise. A few
batched least-squares solves (global effects with store fixed effects, then
ridge-shrunk store coefficients, then block means of the residual for the
level path, then residual variance for the dispersion) put every variational
location close to where the ELBO wants it. SVI then refines rather than
searches, which is what makes a fit of a million rows take seconds, and it
starts far from the early-step blow-ups a prior draw invites.
"""

from __future__ import annotations

import numpy as np

from tasks.model.store_day import DISPERSION_COMPONENTS, SHOCK_COVARIATES, ModelInputs, ModelStructure, Site

RIDGE = 1.0  # pseudo-observations pulling a store's effects to the population mean
MIN_SCALE = 0.02
GLOBAL_INIT_SCALE = 1e-3
DAY_SHRINK = 20.0  # pseudo-stores: a day seen by few stores keeps a shock near zero
TAIL_LOGIT_START = -1.5  # each wider dispersion component starts at odds e^-1.5 against the narrowest ...
TAIL_GAP_START = 1.0  # ... with a concentration e ~ 2.7 times below the next narrower one


def _design(inputs: ModelInputs, st: ModelStructure) -> tuple[np.ndarray, np.ndarray]:
    """Pooled design [S, T, P] (intercept first) and global design [S, T, G]."""
    date_x = np.asarray(inputs.date_x)
    sd_x = np.asarray(inputs.store_day_x)
    n_stores, n_days = sd_x.shape[:2]
    pooled = np.concatenate(
        [
            np.ones((n_stores, n_days, 1), np.float32),
            np.broadcast_to(date_x[:, list(st.date_pooled)], (n_stores, n_days, len(st.date_pooled))),
            sd_x[..., list(st.store_day_pooled)],
        ],
        axis=2,
    )
    glob = np.concatenate(
        [
            np.broadcast_to(date_x[:, list(st.date_global)], (n_stores, n_days, len(st.date_global))),
            sd_x[..., list(st.store_day_global)],
        ],
        axis=2,
    )
    return pooled, glob


def warm_start(inputs: ModelInputs, st: ModelStructure, init_scale: float) -> dict[str, np.ndarray]:
    """Guide parameters ("<site>.loc" / "<site>.scale") from least squares on log sales."""
    observed = np.asarray(inputs.observed)
    sales = np.asarray(inputs.sales)
    weight = observed.astype(np.float64)
    log_y = np.where(observed, np.log(np.maximum(sales, 1.0)), 0.0) - st.log_offset
    pooled_x, global_x = _design(inputs, st)
    n_stores, n_days, n_pooled = pooled_x.shape
    counts = weight.sum(axis=1)

    # 1. Global effects and mean pooled effects, with a fixed effect per store.
    def within(a: np.ndarray) -> np.ndarray:
        mean = (a * weight[..., None]).sum(axis=1) / np.maximum(counts, 1)[:, None]
        return (a - mean[:, None, :]) * weight[..., None]

    x_within = within(np.concatenate([pooled_x[..., 1:], global_x], axis=2).astype(np.float64))
    y_mean = (log_y * weight).sum(axis=1) / np.maximum(counts, 1)
    y_within = (log_y - y_mean[:, None]) * weight
    flat_x = x_within.reshape(-1, x_within.shape[2])
    gram = flat_x.T @ flat_x + 1e-3 * np.eye(flat_x.shape[1])
    beta = np.linalg.solve(gram, flat_x.T @ y_within.reshape(-1))
    effect_mean, global_coef = beta[: n_pooled - 1], beta[n_pooled - 1 :]

    # 2. Store coefficients by ridge regression towards the mean effects.
    resid = log_y - global_x @ global_coef
    xw = pooled_x * weight[..., None]
    store_gram = np.einsum("stp,stq->spq", xw, pooled_x)
    prior_mean = np.concatenate([[0.0], effect_mean])
    penalty = RIDGE * np.eye(n_pooled)
    penalty[0, 0] = 1e-3
    rhs = np.einsum("stp,st->sp", xw, resid) + penalty @ prior_mean
    store_coef = np.linalg.solve(store_gram + penalty, rhs[..., None])[..., 0]

    # 3. Level path: the residual's mean per time block, relative to the anchor block.
    resid = resid - np.einsum("stp,sp->st", pooled_x, store_coef)
    block = np.asarray(inputs.block) + st.n_past_blocks
    n_blocks = st.n_past_blocks + 1
    one_hot = (block[:, None] == np.arange(n_blocks)[None, :]).astype(np.float64)  # [T, B]
    block_sum = (resid * weight) @ one_hot
    block_n = weight @ one_hot
    shrink = 5.0  # pseudo-days: a block with few observations stays near its neighbours' level
    level = block_sum / (block_n + shrink)
    # Before a store's first observed block (it opened later, or the history was padded) the walk touches no
    # sales: the level stays flat there, and those steps start at their prior and count for no scale.
    first_seen = np.where(block_n.any(axis=1), np.argmax(block_n > 0, axis=1), n_blocks - 1)
    before_first = np.arange(n_blocks)[None, :] < first_seen[:, None]
    level = np.where(before_first, np.take_along_axis(level, first_seen[:, None], axis=1), level)
    level = level - level[:, -1:]
    store_coef[:, 0] += block_sum[:, -1] / (block_n[:, -1] + shrink)
    steps = np.diff(level, axis=1)  # steps_past[j] moves block j to j+1
    untouched_steps = before_first[:, :-1]  # step j moves only blocks <= j
    touched = steps[~untouched_steps]
    level_scale = float(max(np.sqrt(np.mean(touched**2)) if touched.size else MIN_SCALE, MIN_SCALE))

    # 4. Shocks shared by all stores on a day: the day's mean residual, shrunk,
    #    without what the calendar features explain.
    resid = resid - level @ one_hot.T
    day_pos = np.asarray(inputs.day)
    day_effect = (resid * weight).sum(axis=0) / (weight.sum(axis=0) + DAY_SHRINK)
    if inputs.day_basis is not None:
        basis = np.asarray(inputs.day_basis, np.float64)[day_pos]
        day_effect = day_effect - basis @ np.linalg.lstsq(basis, day_effect, rcond=None)[0]
    # The shock scale's log-linear model: for e ~ N(0, s^2), E log|e| = log s - 0.635.
    in_history = day_pos >= 0
    n_cov = len(SHOCK_COVARIATES)
    history_x = (
        np.zeros((st.n_history_days, n_cov))
        if inputs.history_shock_x is None
        else np.asarray(inputs.history_shock_x, np.float64)
    )
    seen = (weight.sum(axis=0) > 0) & in_history
    design = np.concatenate([np.ones((int(seen.sum()), 1)), history_x[day_pos[seen]]], axis=1)
    if seen.sum() > 2 * (n_cov + 1):
        target = np.log(np.abs(day_effect[seen]) + 1e-4) + 0.635
        solution = np.linalg.lstsq(design.T @ design + 1e-3 * np.eye(n_cov + 1), design.T @ target, rcond=None)[0]
        day_scale, shock_coef = float(max(np.exp(solution[0]), MIN_SCALE)), np.clip(solution[1:], -2.0, 2.0)
    else:
        day_scale, shock_coef = float(max(day_effect[seen].std() if seen.any() else 0.0, MIN_SCALE)), np.zeros(n_cov)
    day_raw = np.zeros(st.n_history_days)
    # A history day no store was observed on, and that no calendar basis row ties to the others (the padding of
    # a bucketed history), is a prior draw: it starts at its prior.
    untouched_days = np.ones(st.n_history_days, bool)
    untouched_days[day_pos[seen]] = False
    if inputs.day_basis is not None:
        untouched_days &= ~np.asarray(inputs.day_basis).any(axis=1)
    scale_of_day = day_scale * np.exp(history_x @ shock_coef)
    day_raw[day_pos[in_history]] = day_effect[in_history] / scale_of_day[day_pos[in_history]]

    # 5. Dispersion from the residual variance: var(log y) ~ 1/mu + 1/r.
    resid = resid - day_effect[None, :]
    var = (resid**2 * weight).sum(axis=1) / np.maximum(counts - n_pooled, 1)
    mean_sales = np.exp(st.log_offset + store_coef[:, 0])
    inv_r = np.clip(var - 1.0 / mean_sales, 1e-4, 1.0)
    log_r = -np.log(inv_r)
    log_r[counts < n_pooled + 2] = np.median(log_r[counts >= n_pooled + 2]) if (counts >= n_pooled + 2).any() else 3.0

    # 6. Population: mean, store-attribute shift and spread of the coefficients.
    z = np.asarray(inputs.store_z, np.float64)
    z1 = np.concatenate([np.ones((n_stores, 1)), z], axis=1)
    has_data = counts >= n_pooled + 2
    fit_rows = has_data if has_data.sum() > z1.shape[1] else np.ones(n_stores, bool)
    coef_fit = np.linalg.lstsq(z1[fit_rows], store_coef[fit_rows], rcond=None)[0]
    pooled_mean, store_shift = coef_fit[0], coef_fit[1:]
    deviation = store_coef - z1 @ coef_fit
    pooled_scale = np.maximum(deviation[fit_rows].std(axis=0), MIN_SCALE)
    pooled_raw = deviation / pooled_scale
    dispersion_mean = float(log_r.mean())
    dispersion_scale = float(max(log_r.std(), MIN_SCALE))

    locs = {
        Site.POOLED_MEAN: pooled_mean,
        Site.POOLED_SCALE: np.log(pooled_scale),
        Site.STORE_SHIFT: store_shift,
        Site.GLOBAL_COEF: global_coef,
        Site.LEVEL_SCALE: np.log(level_scale),
        Site.DAY_SCALE: np.log(day_scale),
        Site.DAY_SCALE_COEF: shock_coef,
        Site.DAY_RAW: day_raw,
        Site.DISPERSION_MEAN: dispersion_mean,
        Site.DISPERSION_SCALE: np.log(dispersion_scale),
        Site.TAIL_LOGIT: np.full(DISPERSION_COMPONENTS - 1, TAIL_LOGIT_START),
        Site.TAIL_GAP: np.full(DISPERSION_COMPONENTS - 1, np.log(TAIL_GAP_START)),
        Site.POOLED_RAW: pooled_raw[:, None, :],
        Site.DISPERSION_RAW: ((log_r - dispersion_mean) / dispersion_scale)[:, None],
        Site.LEVEL_STEPS_PAST: (steps / level_scale)[:, None, :],
    }
    params = {}
    for site, loc in locs.items():
        loc = np.asarray(loc, np.float32)
        params[f"{site}.loc"] = loc
        # Globals are pinned down by all stores at once: a wide start only adds noise.
        scale = init_scale if site in Site.STORE else GLOBAL_INIT_SCALE
        params[f"{site}.scale"] = np.full(loc.shape, scale, np.float32)
    params[f"{Site.DAY_RAW}.scale"][untouched_days] = 1.0
    params[f"{Site.LEVEL_STEPS_PAST}.scale"][:, 0, :][untouched_steps] = 1.0
    return params
