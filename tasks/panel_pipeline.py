"""The stages of a run on a dataset spec's panel (store x product series) as plain functions.

No Prefect, no MLflow: ``flows/panel.py`` wraps them, the CLI and the backtest call them directly.
read -> encode -> fit -> forecast (series and aggregates) -> the forecast frame -> export.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl

from tasks import names as n
from tasks.config import ForecastConfig, PanelFitConfig
from tasks.data.panel_encode import (
    CROSS_PRICE,
    Dimensions,
    EncodedPanelData,
    PanelArrays,
    PanelEncoding,
    encode_future,
    encode_panel,
)
from tasks.data.panel_ingest import PanelTables
from tasks.data.spec import LEVEL, PRODUCT_SIDE, SEASON, STORE_SIDE, TOTAL, WEEKDAY, PanelSpec
from tasks.forecast import panel_job
from tasks.forecast.panel_draws import AggregateLevel, ChunkPlan, PanelForecastArrays, forecast_panel
from tasks.model import panel_state, state
from tasks.model.censored import MAX_CENSORED_UNITS, survival_terms
from tasks.model.inference import FitProgress, FitResult, log_progress
from tasks.model.panel import (
    INTERCEPT,
    LEVEL_SCALE_AHEAD,
    SHOCK_KINDS,
    SHOCK_SCALES_AHEAD,
    PanelInputs,
    PanelSite,
    PanelStructure,
    censored_periods,
    history_periods,
    pad_history,
    padded_basis,
    recency_weights,
    series_rows,
    shock_basis,
    time_blocks,
)
from tasks.model.panel_inference import first_series, fit_panel, prior_params
from tasks.model.panel_state import FittedPanel
from tasks.model.shock_scales import (
    SeriesBatch,
    fitted_shock_scales,
    in_memory_batches,
    shock_scales_ahead,
    with_shock_scales_ahead,
)
from tasks.model.walk_scales import (
    fitted_walk_scale,
    group_walk_multipliers,
    walk_scale_ahead,
    with_group_walk_multipliers,
    with_walk_scale_ahead,
)

log = logging.getLogger(__name__)

BLOCK_PERIODS = {7: 13, 1: 28}  # level-walk block: a quarter of weeks, four weeks of days


def _effect_of(name: str) -> str:
    """The effect a coefficient belongs to, as the spec's pooling names it."""
    if name == INTERCEPT:
        return LEVEL
    if name.startswith("year_"):
        return SEASON
    if name.startswith("weekday_"):
        return WEEKDAY
    return name


def structure_for(encoded: EncodedPanelData, spec: PanelSpec, config: PanelFitConfig) -> PanelStructure:
    """The model's shape for this data: coefficients, their pooling, hierarchy sizes, the level walk."""
    history = encoded.history
    observed = history.y[history.observed]
    censored = history.y[history.censored] if history.censored is not None else np.zeros(0)
    largest_censored = float(censored.max()) if censored.size else None
    if spec.target_kind == "units":
        log_offset = float(np.log(max(observed.mean(), 1e-3)))
    else:
        log_offset = float(np.log(observed).mean())
    return structure_of(encoded.encoding, encoded.dims, spec, config, history.n_periods, log_offset, largest_censored)


def structure_of(
    encoding: PanelEncoding, dims: Dimensions, spec: PanelSpec, config: PanelFitConfig, n_history: int, log_offset: float,
    largest_censored: float | None,
) -> PanelStructure:
    """``structure_for`` from what it needs of the history: its periods (which the structure rounds up to the
    config's bucket), the log offset (log mean of the observed units, mean log of the amounts) and the largest
    stocked-out target (None: none)."""
    coef_names = (INTERCEPT, *encoding.time_names, *encoding.series_names(spec))
    shared = {c.name for c in spec.covariates if not c.pooled}
    store_pooled, product_pooled, varies = [], [], []
    for name in coef_names:
        effect = _effect_of(name)
        sides = (PRODUCT_SIDE,) if name == CROSS_PRICE else spec.pooled_through(effect)
        is_shared = name in shared or not sides
        store_pooled.append(STORE_SIDE in sides and not is_shared)
        product_pooled.append(PRODUCT_SIDE in sides and not is_shared)
        varies.append(not is_shared)
    likelihood = "nb" if spec.target_kind == "units" else "lognormal"
    return PanelStructure(
        censor_terms=_censor_terms(largest_censored, likelihood),
        coef_names=coef_names,
        n_time=len(encoding.time_names),
        store_pooled=tuple(store_pooled),
        product_pooled=tuple(product_pooled),
        varies=tuple(varies),
        store_level_sizes=tuple(int(g.max(initial=-1)) + 1 for g in dims.store_groups),
        product_level_sizes=tuple(int(g.max(initial=-1)) + 1 for g in dims.product_groups),
        n_store_attributes=dims.store_attributes.shape[1],
        n_product_attributes=dims.product_attributes.shape[1],
        n_history=history_periods(n_history, max(1, config.history_bucket_days // spec.period_days)),
        block_periods=config.block_periods or BLOCK_PERIODS.get(spec.period_days, 13),
        likelihood=likelihood,
        log_offset=log_offset,
        shocks=tuple(spec.shocks if config.shocks is None else config.shocks),
        level_walks=_level_walks(spec, config),
        dispersion_features=_dispersion_features(encoding.series_names(spec), spec, config),
        recency_half_life=float((spec.recency_half_life or 0) if config.recency_half_life is None else config.recency_half_life),
    )


def _level_walks(spec: PanelSpec, config: PanelFitConfig) -> tuple[str, ...]:
    walks = tuple(spec.level_walks if config.level_walks is None else config.level_walks)
    if PRODUCT_SIDE in walks and spec.sales.product is None:
        raise ValueError(f"a product level walk needs a product key, and spec {spec.name!r} has none")
    return walks


def _dispersion_features(series_names: tuple[str, ...], spec: PanelSpec, config: PanelFitConfig) -> tuple[int, ...]:
    """Positions among the series features of the covariates the dispersion moves with."""
    chosen = spec.dispersion_covariates if config.dispersion_covariates is None else config.dispersion_covariates
    if unknown := sorted(set(chosen) - set(series_names)):
        raise ValueError(f"dispersion_covariates {unknown} are not series features of this data: {list(series_names)}")
    return tuple(i for i, name in enumerate(series_names) if name in chosen)


def _censor_terms(largest_censored: float | None, likelihood: str) -> int:
    """The survival grid of the censored counts (0 without any); a count above the cap is lowered to it
    in the likelihood (demand is still at least the cap), which is said here once."""
    if likelihood != "nb" or largest_censored is None:
        return 0
    if largest_censored > MAX_CENSORED_UNITS:
        log.warning(
            "stocked-out periods sold up to %d units, more than %d: their demand enters as at least %d",
            int(largest_censored), MAX_CENSORED_UNITS, MAX_CENSORED_UNITS,
        )  # fmt: skip
    return survival_terms(float(largest_censored))


def model_inputs(encoded: EncodedPanelData, arrays: PanelArrays, structure: PanelStructure, basis: np.ndarray, with_target: bool) -> PanelInputs:
    anchor = np.datetime64(encoded.encoding.anchor, "D")
    offsets = (arrays.periods - anchor).astype(np.int64) // encoded.encoding.period_days
    history_index = np.where(offsets <= 0, structure.n_history - 1 + offsets, -1).astype(np.int32)
    dims = encoded.dims
    return PanelInputs(
        x_time=jnp.asarray(arrays.x_time),
        x_series=jnp.asarray(arrays.x_series),
        observed=jnp.asarray(arrays.observed if with_target else arrays.present),
        y=jnp.asarray(arrays.y) if with_target else None,
        series_store=jnp.asarray(dims.series_store),
        series_product=jnp.asarray(dims.series_product),
        store_groups=jnp.asarray(dims.store_groups),
        product_groups=jnp.asarray(dims.product_groups),
        store_attributes=jnp.asarray(dims.store_attributes),
        product_attributes=jnp.asarray(dims.product_attributes),
        block=jnp.asarray(time_blocks(offsets, structure.block_periods)),
        history_index=jnp.asarray(history_index),
        shock_basis=jnp.asarray(padded_basis(np.asarray(basis), structure.n_history)),
        log_offset=jnp.float32(structure.log_offset),
        **_censoring(arrays if with_target else None),
    )


def _censoring(arrays: PanelArrays | None) -> dict[str, jnp.ndarray]:
    """PanelInputs' censoring fields: none at all without a censored cell, so that such a fit is the
    uncensored model exactly."""
    if arrays is None or arrays.censored is None or not arrays.censored.any():
        return {}
    return {"censored": jnp.asarray(arrays.censored), "censored_periods": jnp.asarray(censored_periods(arrays.censored))}


def _series_codes(dims: Dimensions, side: str) -> np.ndarray:
    return dims.series_store if side == STORE_SIDE else dims.series_product


def _groups_with_data(member: np.ndarray, size: int, has_data: np.ndarray) -> np.ndarray:
    """bool [size]: the groups (``member``: each series' group) with a series that has an observed cell."""
    seen = np.zeros(size, bool)
    seen[np.asarray(member)[has_data]] = True
    return seen


def walk_groups_with_data(dims: Dimensions, has_data: np.ndarray, structure: PanelStructure) -> dict[str, np.ndarray]:
    """Side -> bool [G]: the stores and products (of the walks ``structure`` has) with data."""
    return {
        side: _groups_with_data(_series_codes(dims, side), structure.n_groups(side), has_data)
        for side in (STORE_SIDE, PRODUCT_SIDE) if side in structure.level_walks
    }  # fmt: skip


def unobserved_groups(dims: Dimensions, has_data: np.ndarray, structure: PanelStructure) -> dict[str, np.ndarray]:
    """Group-effect rows (per group site) of groups none of whose series has an observed cell (``has_data``)."""
    rows = {}
    for side, level, size, _ in structure.group_sites():
        groups = dims.store_groups if side == STORE_SIDE else dims.product_groups
        seen = _groups_with_data(groups[level][_series_codes(dims, side)], size, has_data)
        rows[f"{PanelSite.group_raw(side, level)}"] = np.flatnonzero(~seen)
    return rows


def fit_encoded(
    encoded: EncodedPanelData,
    spec: PanelSpec,
    config: PanelFitConfig,
    key: jax.Array,
    on_progress: Callable[[FitProgress], None] = log_progress,
    info: dict | None = None,
) -> tuple[FittedPanel, FitResult]:
    """The global fit over every series of the history; series and groups without data get their prior."""
    history = encoded.history
    if not history.observed.any():
        raise ValueError("the history has no observed target: nothing to fit")
    structure = structure_for(encoded, spec, config)
    by_product = PRODUCT_SIDE in structure.shocks
    basis = shock_basis(
        history.x_time, history.x_series, history.observed,
        encoded.dims.series_product if by_product else None, len(encoded.encoding.product_keys) if by_product else 0,
        structure.block_periods,
    )  # fmt: skip
    basis = padded_basis(basis, structure.n_history)
    n_series = encoded.encoding.n_series
    inputs = model_inputs(encoded, history, structure, basis, with_target=True)
    inputs = pad_history(inputs, structure.n_history, series_rows(n_series) if config.history_bucket_days > 1 else n_series)
    log.info(
        "panel fit: %d series (%d with data), %d periods, %d observed cells (%d stocked out), %d coefficients; "
        "padded to %d series x %d periods (history_bucket_days %d)",
        encoded.encoding.n_series,
        int(history.observed.any(axis=1).sum()),
        history.n_periods,
        int(history.observed.sum()),
        0 if history.censored is None else int(history.censored.sum()),
        structure.n_coef,
        *inputs.observed.shape,
        config.history_bucket_days,
    )
    result = fit_panel(inputs, structure, config.settings(), key, on_progress)
    if config.moment_shock_scales(spec.target_kind):
        result = with_moment_shock_scales(result, structure, in_memory_batches(inputs), recency_weights(inputs, structure))
    if config.moment_walk_scale(spec.target_kind):
        result = with_moment_walk_scale(result, structure, in_memory_batches(inputs))
    result = replace(result, params=first_series(result.params, n_series))
    return fitted_panel(
        result, structure, encoded.encoding, encoded.dims, spec, basis, history.observed.any(axis=1), info,
        config.group_walk_scales(spec.target_kind),
    )  # fmt: skip


def with_moment_shock_scales(
    result: FitResult, structure: PanelStructure, batches: Iterable[SeriesBatch], period_weights: jnp.ndarray | None
) -> FitResult:
    """``result`` whose parameters carry the moment estimates of the shocks' scales ahead (``tasks.model.shock_scales``)."""
    t0 = time.perf_counter()
    scales = shock_scales_ahead(result.params, structure, batches, None if period_weights is None else np.asarray(period_weights))
    if scales:
        fitted = fitted_shock_scales(result.params, structure)
        log.info(
            "scales of the period shocks ahead (moments of the history's group-period residuals; the fit's in brackets): %s; %.1fs",
            ", ".join(f"{kind} {value:.4f} ({fitted[kind]:.4f})" for kind, value in scales.items()),
            time.perf_counter() - t0,
        )
    return replace(result, params=with_shock_scales_ahead(result.params, scales))


def with_moment_walk_scale(result: FitResult, structure: PanelStructure, batches: Iterable[SeriesBatch]) -> FitResult:
    """``result`` whose parameters carry the moment estimate of the series' walk scale ahead (``tasks.model.walk_scales``);
    as it is when the history holds too few full blocks to tell."""
    t0 = time.perf_counter()
    scale, fitted = walk_scale_ahead(result.params, structure, batches), fitted_walk_scale(result.params, structure)
    if scale is None:
        log.info("scale of the series' walks ahead: the fit's %.4f (the history has under three full blocks)", fitted)
    else:
        log.info(
            "scale of the series' walks ahead (the history's block-to-block changes; the fit's in brackets): %.4f (%.4f); %.1fs",
            scale, fitted, time.perf_counter() - t0,
        )  # fmt: skip
    return replace(result, params=with_walk_scale_ahead(result.params, scale))


def fitted_panel(
    result: FitResult, structure: PanelStructure, encoding: PanelEncoding, dims: Dimensions, spec: PanelSpec, basis: np.ndarray,
    has_data: np.ndarray, info: dict | None, group_walks: bool,
) -> tuple[FittedPanel, FitResult]:
    """A global fit's model: series and groups without data at their prior, the fit's summary in its info; with
    ``group_walks``, each store's and product's multiple of its walk's scale ahead (``group_walk_multipliers``)."""
    empty_series = np.flatnonzero(~has_data)
    params = prior_params(result.params, structure, empty_series, unobserved_groups(dims, has_data, structure))
    multipliers = group_walk_multipliers(params, structure, walk_groups_with_data(dims, has_data, structure)) if group_walks else {}
    params = with_group_walk_multipliers(params, multipliers)
    fit_info = {
        "steps": result.n_steps,
        "converged": result.converged,
        "final_loss": float(result.losses[-min(100, result.n_steps) :].mean()),
        "n_series": encoding.n_series,
        "n_series_without_history": int(empty_series.size),
        "compile_seconds": result.compile_seconds,
        "fit_seconds": result.run_seconds,
    }
    if SHOCK_SCALES_AHEAD in params:
        ahead = params[SHOCK_SCALES_AHEAD]
        fit_info["shock_scales_ahead"] = {kind: float(v) for kind, v in zip(SHOCK_KINDS, ahead, strict=True) if kind in structure.shocks}
    if LEVEL_SCALE_AHEAD in params:
        fit_info["level_scale_ahead"] = float(params[LEVEL_SCALE_AHEAD])
    for side, values in multipliers.items():
        low, median, high = (float(q) for q in np.quantile(values, [0.0, 0.5, 1.0]))
        fit_info[f"{side}_walk_multipliers_ahead"] = {"min": low, "median": median, "max": high}
        log.info("%s walks ahead: each %s's multiple of the walk's scale, %.2f to %.2f (median %.2f)", side, side, low, high, median)
    fitted = FittedPanel(params=params, structure=structure, encoding=encoding, spec=spec, shock_basis=basis, info={**(info or {}), **fit_info})
    return fitted, replace(result, params=params)


def aggregate_levels(tables: PanelTables, encoded: EncodedPanelData) -> tuple[AggregateLevel, ...]:
    """The spec's aggregate levels as group codes per series."""
    spec, encoding, dims = tables.spec, encoded.encoding, encoded.dims
    sides = spec.aggregate_sides()
    levels = []
    for name in spec.aggregates:
        side, column = sides[name]
        if side is None:
            levels.append(AggregateLevel(name, (TOTAL,), np.zeros(encoding.n_series, np.int64)))
        elif column is None:
            keys = encoding.store_keys if side == STORE_SIDE else encoding.product_keys
            codes = _series_codes(dims, side)
            levels.append(AggregateLevel(name, tuple(keys), codes.astype(np.int64)))
        else:
            groups = encoding.store_groups if side == STORE_SIDE else encoding.product_groups
            codes_by_key = (dims.store_groups if side == STORE_SIDE else dims.product_groups)[
                spec.hierarchy_levels(side).index(column) + 1
            ]
            per_series = codes_by_key[_series_codes(dims, side)]
            levels.append(AggregateLevel(name, groups[column], per_series.astype(np.int64)))
    return tuple(levels)


def future_model_inputs(fitted: FittedPanel, encoded: EncodedPanelData) -> tuple[PanelStructure, PanelInputs]:
    """The model's structure and inputs for the future table's periods."""
    future = encoded.future
    if future is None:
        raise ValueError("there is no future table to forecast")
    offsets = (future.periods - np.datetime64(encoded.encoding.anchor, "D")).astype(np.int64) // encoded.encoding.period_days
    structure = replace(
        fitted.structure, n_future_blocks=int(time_blocks(offsets, fitted.structure.block_periods).max(initial=0)), n_future=future.n_periods
    )
    return structure, model_inputs(encoded, future, structure, fitted.shock_basis, with_target=False)


def forecast_encoded(
    fitted: FittedPanel,
    encoded: EncodedPanelData,
    aggregates: tuple[AggregateLevel, ...],
    config: ForecastConfig,
    key: jax.Array,
    on_draws: Callable[[np.ndarray, np.ndarray], None] | None = None,
    series_per_partition: int | None = None,
) -> PanelForecastArrays:
    """The forecast in this process; ``series_per_partition`` as a fan-out would cut it (the same numbers)."""
    structure, inputs = future_model_inputs(fitted, encoded)
    return forecast_panel(
        fitted.params,
        structure,
        inputs,
        key,
        config.num_draws,
        config.quantiles,
        config.chunk_stores,
        aggregates,
        wanted=encoded.future.present,
        on_draws=on_draws,
        series_per_partition=series_per_partition,
    )


def write_forecast_job(
    folder: Path,
    fitted: FittedPanel,
    encoded: EncodedPanelData,
    aggregates: tuple[AggregateLevel, ...],
    config: ForecastConfig,
    key: jax.Array,
    series_per_partition: int,
) -> ChunkPlan:
    """The forecast as a job of partitions in ``folder`` (``tasks.forecast.panel_job``), for an engine to run."""
    structure, inputs = future_model_inputs(fitted, encoded)
    plan = ChunkPlan.make(encoded.encoding.n_series, config.chunk_stores, series_per_partition)
    panel_job.write_job(
        folder, fitted.params, structure, inputs, key, plan, config.num_draws, config.quantiles, aggregates, encoded.future.present
    )
    return plan


def _typed_keys(values: list, dtype: pl.DataType) -> pl.Series:
    return pl.Series(values, dtype=dtype)


def forecast_frame(
    tables: PanelTables, encoded: EncodedPanelData, arrays: PanelForecastArrays, aggregates: tuple[AggregateLevel, ...], model_version: str
) -> pl.DataFrame:
    """The forecast file: one row per future-table row (level ``series``), then one per group and period of
    each aggregate level; the input's own key and period column names."""
    spec, encoding, future = tables.spec, encoded.encoding, encoded.future
    store_col, product_col, period_col = spec.sales.store, spec.sales.product, spec.sales.period
    series_code = {pair: i for i, pair in enumerate(encoding.series)}
    store_code = {k: i for i, k in enumerate(encoding.store_keys)}
    product_code = {k: i for i, k in enumerate(encoding.product_keys)}
    rows = tables.future
    products = rows[n.SERIES_PRODUCT].to_list() if product_col else [None] * rows.height
    s_idx = np.array([series_code[(store_code[s], product_code[p])] for s, p in zip(rows[n.SERIES_STORE].to_list(), products, strict=True)])
    t_idx = (rows[n.PERIOD].to_numpy().astype("datetime64[D]") - future.periods[0]).astype(np.int64) // encoding.period_days
    quantile_names = [n.quantile_column(q) for q in arrays.levels]
    key_dtype = tables.future.schema[n.SERIES_STORE]
    product_dtype = tables.future.schema[n.SERIES_PRODUCT] if product_col else None

    series_part = pl.DataFrame(
        {
            n.LEVEL: pl.Series([n.SERIES_LEVEL] * rows.height, dtype=pl.String),
            store_col: rows[n.SERIES_STORE],
            **({product_col: rows[n.SERIES_PRODUCT]} if product_col else {}),
            period_col: rows[n.PERIOD],
            n.GROUP: pl.Series([None] * rows.height, dtype=pl.String),
            n.MEAN: pl.Series(arrays.mean[s_idx, t_idx], dtype=pl.Float32),
            **{name: pl.Series(arrays.quantiles[i, s_idx, t_idx], dtype=pl.Float32) for i, name in enumerate(quantile_names)},
        }
    )
    parts = [series_part]
    sides = spec.aggregate_sides()
    wanted_periods = future.present.any(axis=0)
    for level in aggregates:
        mean, quantiles = arrays.aggregates[level.name]
        side, column = sides[level.name]
        # Only groups and periods the future table asks for (a group with no wanted cell sums to 0).
        wanted = np.zeros(mean.shape, bool)
        for g in range(len(level.labels)):
            members = level.codes == g
            wanted[g] = future.present[members].any(axis=0) if members.any() else False
        wanted &= wanted_periods[None, :]
        g_idx, t_pos = np.nonzero(wanted)
        labels = [level.labels[g] for g in g_idx]
        frame = {
            n.LEVEL: pl.Series([level.name] * g_idx.size, dtype=pl.String),
            store_col: _typed_keys(labels if (side == STORE_SIDE and column is None) else [None] * g_idx.size, key_dtype),
        }
        if product_col:
            frame[product_col] = _typed_keys(
                labels if (side == PRODUCT_SIDE and column is None) else [None] * g_idx.size, product_dtype
            )
        frame[period_col] = pl.Series(future.periods[t_pos].astype("datetime64[D]")).cast(pl.Date)
        frame[n.GROUP] = pl.Series([str(label) for label in labels], dtype=pl.String)
        frame[n.MEAN] = pl.Series(mean[g_idx, t_pos], dtype=pl.Float32)
        for i, name in enumerate(quantile_names):
            frame[name] = pl.Series(quantiles[i, g_idx, t_pos], dtype=pl.Float32)
        parts.append(pl.DataFrame(frame))
    out = pl.concat(parts, how="vertical")
    level_order = {name: i for i, name in enumerate([n.SERIES_LEVEL, *spec.aggregates])}
    out = out.with_columns(pl.lit(model_version).alias(n.MODEL_VERSION))
    keys = [store_col, *([product_col] if product_col else []), period_col]
    return out.sort(
        [pl.col(n.LEVEL).replace_strict(level_order, return_dtype=pl.Int32), n.GROUP, *keys], nulls_last=True
    )


# What a saved model's spec and a forecast's spec must share: the file names and folders may differ.
_MODEL_SPEC_FIELDS = ("frequency", "target_kind", "key_type", "pooling", "cross_price", "yearly_fourier_order", "shocks")


def load_for(directory: Path, spec: PanelSpec) -> FittedPanel:
    """The fitted panel model in ``directory``, checked against the spec of the data it is to forecast."""
    fitted = panel_state.load(directory)
    mine, theirs = fitted.spec, spec
    differences = [name for name in _MODEL_SPEC_FIELDS if getattr(mine, name) != getattr(theirs, name)]
    if [(c.name, c.kind) for c in mine.covariates] != [(c.name, c.kind) for c in theirs.covariates]:
        differences.append("covariates")
    for side in (STORE_SIDE, PRODUCT_SIDE):
        if mine.hierarchy_levels(side) != theirs.hierarchy_levels(side):
            differences.append(f"{side} hierarchy")
    if differences:
        raise ValueError(f"the model in {directory} was fitted with spec {mine.name!r}, which differs from {theirs.name!r} in: {', '.join(differences)}")
    return fitted


def encode_for(tables: PanelTables, fitted: FittedPanel) -> EncodedPanelData:
    """The future table of ``tables`` encoded with a saved model's encoding (no history: the model needs
    none to forecast); its series must all be the model's and its periods must come after the model's last."""
    encoding = fitted.encoding
    if tables.future is None or not tables.future.height:
        raise ValueError("there is no future table to forecast")
    keys = [n.SERIES_STORE, *([n.SERIES_PRODUCT] if tables.spec.sales.product else [])]
    codes = {n.SERIES_STORE: (0, encoding.store_keys), n.SERIES_PRODUCT: (1, encoding.product_keys)}
    known = pl.DataFrame(
        {key: [codes[key][1][pair[codes[key][0]]] for pair in encoding.series] for key in keys},
        schema={key: tables.future.schema[key] for key in keys},
    )
    unknown = tables.future.select(keys).unique().join(known, on=keys, how="anti").sort(keys)
    if unknown.height:
        examples = ", ".join(str(tuple(row)) for row in unknown.head(5).iter_rows())
        raise ValueError(
            f"{unknown.height} series of the future table are not in the model ({examples}): fit a model that knows them "
            "(`bhm train --spec` on data that lists them, or `bhm run --spec`)"
        )
    first_future = tables.future[n.PERIOD].min()
    if first_future <= encoding.anchor_date:
        raise ValueError(f"the future table starts on {first_future}, not after the model's last period {encoding.anchor_date}")
    return encode_future(tables, encoding)


def key_labels(spec: PanelSpec, stores: pl.DataFrame, products: pl.DataFrame | None, side: str) -> dict:
    """Key -> display name, from the dimension table's ``label`` column (empty without one); ``stores`` and
    ``products`` as ``PanelTables`` holds them."""
    table, frame, key = (spec.stores, stores, n.SERIES_STORE) if side == STORE_SIDE else (spec.products, products, n.SERIES_PRODUCT)
    if table is None or table.label is None or frame is None:
        return {}
    return {k: f"{label} ({k})" for k, label in frame.select(key, table.label).iter_rows() if label is not None}


def price_names(spec: PanelSpec) -> tuple[str, ...]:
    return tuple(c.name for c in spec.covariates if c.kind == "price")


def run_info(paths: dict[str, str], spec_text: str, config: PanelFitConfig, seed: int) -> dict:
    """What identifies a fit: data and spec fingerprint, model version, versions."""
    fingerprint = state.file_fingerprint(*[paths[role] for role in sorted(paths) if role != "future"])
    spec_hash = hashlib.sha256(spec_text.encode()).hexdigest()
    settings_hash = hashlib.sha256(f"{config.model_dump_json()}|{seed}|{spec_hash}".encode()).hexdigest()
    return {
        "data_fingerprint": fingerprint,
        "model_version": f"{state.package_versions()['bhm-forecast']}+{fingerprint[:12]}.{settings_hash[:8]}",
        "versions": state.package_versions(),
        "seed": seed,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass(frozen=True)
class PanelRunResult:
    forecast_path: Path
    fitted_dir: Path
    fit: FitResult
    n_series: int
    n_forecast_rows: int
    n_aggregate_rows: int
    n_masked: int
    timings: dict[str, float]


def encode_tables(tables: PanelTables) -> EncodedPanelData:
    t = time.perf_counter()
    encoded = encode_panel(tables)
    log.info(
        "encoded %d series x %d periods (%d masked cells) in %.1fs",
        encoded.encoding.n_series,
        encoded.history.n_periods,
        encoded.n_masked,
        time.perf_counter() - t,
    )
    return encoded
