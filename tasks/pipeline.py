"""The stages of the main job as plain functions: fit, forecast, export, run.

No Prefect and no MLflow here: flows wrap these stages as tasks, and the
CLI runs them in process. Arrays in, arrays and frames out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import jax
import numpy as np
import polars as pl

from tasks import names as n
from tasks import state
from tasks.config import FitConfig, ForecastConfig, RunConfig
from tasks.encode import EncodedData, EncodedPanel, build_spec, encode
from tasks.forecast import forecast, select_store_params
from tasks.inference import FitProgress, FitResult, Params, fit_global, fit_local, log_progress
from tasks.model import ModelInputs, ModelStructure, Site, calendar_basis, model_inputs
from tasks.summary import DataSummary, summarize
from tasks.validate import read_validated

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitReport:
    global_fit: FitResult
    local_fit: FitResult | None
    n_global_stores: int
    n_local_stores: int
    n_prior_only_stores: int
    seconds: float


@dataclass(frozen=True)
class RunResult:
    forecast_path: Path
    fitted_dir: Path
    summary: DataSummary
    fit: FitReport
    n_forecast_rows: int
    timings: dict[str, float] = field(default_factory=dict)


def panel_inputs(
    panel: EncodedPanel,
    anchor: dt.date,
    structure: ModelStructure,
    with_sales: bool,
    day_basis: np.ndarray | None = None,
) -> ModelInputs:
    return model_inputs(
        panel.dates,
        panel.date_x,
        panel.store_day_x,
        panel.store_z,
        panel.observed if with_sales else panel.present,
        panel.sales if with_sales else None,
        np.datetime64(anchor, "D"),
        structure.block_days,
        structure.n_history_days,
        day_basis,
    )


def _crop_to_observed(panel: EncodedPanel) -> EncodedPanel:
    """The panel from its first observed day on: a local fit needs no empty past."""
    days = np.flatnonzero(panel.observed.any(axis=0))
    first = int(days[0]) if days.size else panel.n_days - 1
    return EncodedPanel(
        stores=panel.stores,
        dates=panel.dates[first:],
        date_x=panel.date_x[first:],
        store_day_x=panel.store_day_x[:, first:],
        store_z=panel.store_z,
        sales=panel.sales[:, first:],
        observed=panel.observed[:, first:],
        present=panel.present[:, first:],
        open=panel.open[:, first:],
    )


def prior_store_params(n_stores: int, structure: ModelStructure) -> Params:
    """Store-level guide parameters equal to the prior: a store known only by its attributes."""
    shapes = {
        Site.POOLED_RAW: (n_stores, 1, structure.n_pooled),
        Site.DISPERSION_RAW: (n_stores, 1),
        Site.LEVEL_STEPS_PAST: (n_stores, 1, structure.n_past_blocks),
    }
    params: Params = {}
    for site, shape in shapes.items():
        params[f"{site}.loc"] = np.zeros(shape, np.float32)
        params[f"{site}.scale"] = np.ones(shape, np.float32)
    return params


def _concat_store_params(parts: list[Params], globals_from: Params) -> Params:
    merged = {k: v for k, v in globals_from.items() if k.split(".")[0] in Site.GLOBAL}
    for site in Site.STORE:
        for part in ("loc", "scale"):
            key = f"{site}.{part}"
            merged[key] = np.concatenate([p[key] for p in parts], axis=0)
    return merged


def fit_new_stores(
    fitted: state.FittedModel,
    panel: EncodedPanel,
    config: FitConfig,
    key: jax.Array,
    on_progress: Callable[[FitProgress], None] = log_progress,
) -> FitResult:
    """Local fit of the panel's stores against the fitted model's fixed globals, in one program.

    The panel must share the fitted model's history calendar (same anchor);
    it is cropped to its first observed day.
    """
    if panel.dates[-1].astype(dt.date) != fitted.anchor:
        raise ValueError(f"panel ends {panel.dates[-1]}, the fitted model's history ends {fitted.anchor}")
    cropped = _crop_to_observed(panel)
    inputs = panel_inputs(cropped, fitted.anchor, fitted.structure, True, fitted.day_basis)
    return fit_local(inputs, fitted.structure, fitted.params, config.settings(local=True), key, on_progress)


def with_stores(fitted: state.FittedModel, store_ids: np.ndarray, store_params: Params) -> state.FittedModel:
    """The fitted model with more stores' store-level parameters appended."""
    return replace(
        fitted,
        params=_concat_store_params([fitted.params, store_params], fitted.params),
        store_ids=np.concatenate([fitted.store_ids, np.asarray(store_ids, np.int32)]),
    )


def fit_history(
    encoded: EncodedData,
    config: FitConfig,
    key: jax.Array,
    prior_only_stores: np.ndarray | None = None,
    on_progress: Callable[[FitProgress], None] = log_progress,
    info: dict | None = None,
) -> tuple[state.FittedModel, FitReport]:
    """Global fit on stores with enough history, local fits for the rest.

    Stores with at least ``short_history_days`` observed days take part in
    the global fit; the others are fitted locally against the fixed globals,
    all in one program. ``prior_only_stores`` (no history at all) get the
    prior: their forecast is that of a store with their attributes.
    """
    t0 = time.perf_counter()
    history = encoded.history
    n_observed = history.observed.sum(axis=1)
    global_pos = np.flatnonzero(n_observed >= config.short_history_days)
    local_pos = np.flatnonzero(n_observed < config.short_history_days)
    if not global_pos.size:
        raise ValueError(
            f"no store has {config.short_history_days} or more observed days: the global fit needs some "
            f"(most observed days of any store: {int(n_observed.max(initial=0))})"
        )
    anchor = history.dates[-1].astype(dt.date)
    log_offset = float(np.log(history.sales[history.observed].mean()))
    structure = ModelStructure.from_features(encoded.spec.features, history.n_days, config.block_days, log_offset)
    key_global, key_local = jax.random.split(key)
    basis = calendar_basis(history.date_x, history.store_day_x, history.observed)

    log.info("global fit: %d stores, %d observed days", global_pos.size, int(n_observed[global_pos].sum()))
    global_panel = history.select_stores(global_pos)
    global_fit = fit_global(
        panel_inputs(global_panel, anchor, structure, True, basis), structure, config.settings(), key_global, on_progress
    )
    fitted = state.FittedModel(
        params=global_fit.params,
        store_ids=global_panel.stores.astype(np.int32),
        structure=structure,
        spec=encoded.spec,
        anchor=anchor,
        day_basis=basis,
    )

    local_fit = None
    if local_pos.size:
        log.info("local fit: %d stores with fewer than %d observed days", local_pos.size, config.short_history_days)
        local_panel = history.select_stores(local_pos)
        local_fit = fit_new_stores(fitted, local_panel, config, key_local, on_progress)
        fitted = with_stores(fitted, local_panel.stores, local_fit.params)

    prior_only = np.setdiff1d(np.asarray(prior_only_stores if prior_only_stores is not None else [], np.int32), history.stores)
    if prior_only.size:
        log.info("%d stores have no history: they are forecast from the population", prior_only.size)
        fitted = with_stores(fitted, prior_only, prior_store_params(prior_only.size, structure))

    report = FitReport(
        global_fit=global_fit,
        local_fit=local_fit,
        n_global_stores=int(global_pos.size),
        n_local_stores=int(local_pos.size),
        n_prior_only_stores=int(prior_only.size),
        seconds=time.perf_counter() - t0,
    )
    fit_info = {
        "global_steps": global_fit.n_steps,
        "global_converged": global_fit.converged,
        "global_final_loss": float(global_fit.losses[-min(100, global_fit.n_steps) :].mean()),
        "local_steps": local_fit.n_steps if local_fit else 0,
        "n_global_stores": report.n_global_stores,
        "n_local_stores": report.n_local_stores,
        "n_prior_only_stores": report.n_prior_only_stores,
        "fit_seconds": report.seconds,
    }
    return replace(fitted, info={**(info or {}), **fit_info}), report


def forecast_frame(
    fitted: state.FittedModel,
    future_panel: EncodedPanel,
    future: pl.DataFrame,
    config: ForecastConfig,
    key: jax.Array,
) -> pl.DataFrame:
    """One row per future calendar row: the contract columns plus open flags and model version."""
    params = select_store_params(fitted.params, fitted.positions(future_panel.stores))
    inputs = panel_inputs(future_panel, fitted.anchor, fitted.structure, with_sales=False)
    arrays = forecast(params, fitted.structure, inputs, key, config.num_draws, config.quantiles, config.chunk_stores)

    store_pos = {int(s): i for i, s in enumerate(future_panel.stores)}
    rows = future.select(
        *([n.ID] if n.ID in future.columns and future[n.ID].null_count() == 0 else []),
        n.STORE,
        n.DATE,
        n.OPEN,
        *([n.OPEN_WAS_MISSING] if n.OPEN_WAS_MISSING in future.columns else []),
    )
    s_idx = np.array([store_pos[int(s)] for s in rows[n.STORE].to_list()], dtype=np.int64)
    t_idx = (rows[n.DATE].to_numpy().astype("datetime64[D]") - future_panel.dates[0]).astype(np.int64)
    values = {n.MEAN: arrays.mean[s_idx, t_idx]}
    for level, q in zip(arrays.levels, arrays.quantiles, strict=True):
        values[n.quantile_column(level)] = q[s_idx, t_idx]
    return (
        rows.with_columns(pl.Series(name, v, dtype=pl.Float32) for name, v in values.items())
        .with_columns((pl.col(n.OPEN) == 1).alias(n.WAS_OPEN), pl.lit(fitted.model_version).alias(n.MODEL_VERSION))
        .drop(n.OPEN)
        .sort([n.STORE, n.DATE])
    )


def write_parquet_atomic(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write to a temporary name beside ``path`` and rename into place when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        frame.write_parquet(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def run(config: RunConfig, on_progress: Callable[[FitProgress], None] = log_progress) -> RunResult:
    """ingest -> validate -> encode -> global fit -> local fits -> forecast -> export."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    inputs = read_validated(config.train, config.stores, config.future)
    summary = summarize(inputs.train, inputs.stores, inputs.future)
    timings["read_validate"] = time.perf_counter() - t
    log.info("validated: %s", summary.to_text().replace("\n", "; "))

    t = time.perf_counter()
    spec = build_spec(inputs.stores, config.fit.yearly_fourier_order, config.fit.monthly_fourier_order)
    encoded = encode(inputs.train, inputs.stores, inputs.future, spec)
    timings["encode"] = time.perf_counter() - t
    if encoded.future is None:
        raise ValueError(f"{config.future}: the future calendar has no rows")

    fingerprint = state.file_fingerprint(config.train, config.stores)
    # What the fit depends on besides the data: its settings and the seed.
    settings_hash = hashlib.sha256(f"{config.fit.model_dump_json()}|{config.seed}".encode()).hexdigest()
    info = {
        "data_fingerprint": fingerprint,
        "model_version": f"{state.package_versions()['bhm-forecast']}+{fingerprint[:12]}.{settings_hash[:8]}",
        "versions": state.package_versions(),
        "seed": config.seed,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    key_fit, key_forecast = jax.random.split(jax.random.key(config.seed))
    fitted, report = fit_history(encoded, config.fit, key_fit, encoded.future.stores, on_progress, info)
    timings["fit"] = report.seconds
    fitted_dir = state.save(fitted, config.fitted_dir)

    t = time.perf_counter()
    frame = forecast_frame(fitted, encoded.future, inputs.future, config.forecast, key_forecast)
    timings["forecast"] = time.perf_counter() - t
    write_parquet_atomic(frame, config.out)
    log.info("wrote %d forecast rows to %s", frame.height, config.out)
    return RunResult(config.out, fitted_dir, summary, report, frame.height, timings)
